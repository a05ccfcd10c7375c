"""Expert replication and placement the EPLB way: hot experts get replicas, replicas are packed
onto GPUs so that their loads are even (docs/PARALLELISM.md, "Expert replication").

DeepSeek's Expert Parallelism Load Balancer (github deepseek-ai/EPLB, ``eplb.py``; its global
policy, used when expert groups do not divide into nodes) works in two steps, which this module
follows (its own code, from the description):

1. **replicate**: with E logical experts and E + R physical slots, each of the R extra slots
   goes, one at a time, to the expert whose load per replica is the largest;
2. **pack**: the E + R replicas (each carrying its expert's load divided by its replica count)
   are taken heaviest first and each put on the GPU with the least load among those that still
   have a free slot; every GPU gets (E + R)/ep replicas.

A token that picks expert e is served by one of its c_e replicas, chosen uniformly (vLLM and
SGLang pick a replica per token at random or round robin), so each replica sees q_e / c_e of
the tokens' selections. ``ReplicatedLoad`` exposes the same per-GPU expectations as
``ExpertLoad`` (routed assignments, distinct replicas hit, the probability that a token sends
its vector to a GPU), so the expert GEMMs are priced the same way with or without replicas.

Loads are expected values of a stationary popularity (``moe.routing``): EPLB's input is the
load statistics of past batches; here it is that popularity itself (the best statistics a
rebalancer could have). Rebalancing over time (moving replicas as the popularity drifts) is
left out: the popularity does not drift in simkv.
"""

from __future__ import annotations

import numpy as np

from simkv.perf.expert_parallel import ExpertLoad, pack, selection_probability


def replicate(load: np.ndarray, slots: int) -> np.ndarray:
    """Replica count of each expert: the ``slots - E`` extra slots go one at a time to the
    expert with the largest load per replica (ties: the lowest index)."""
    e = load.size
    if slots < e:
        raise ValueError(f"{slots} expert slots cannot hold {e} experts")
    count = np.ones(e, dtype=np.int64)
    for _ in range(slots - e):
        count[int(np.argmax(load / count))] += 1
    return count


class ReplicatedLoad(ExpertLoad):
    """Expected per-GPU load of one MoE layer when experts have replicas (EPLB)."""

    def __init__(self, num_experts: int, k: int, ep: int, pop: np.ndarray,
                 redundant: int) -> None:
        q = selection_probability(pop, k)
        count = replicate(q, num_experts + redundant)
        # Replica r belongs to expert_of[r]; it sees q / count of the selections.
        expert_of = np.repeat(np.arange(num_experts), count)
        share = (q / count)[expert_of]
        gpu = pack(share, ep)
        self.replicas = count
        self.replica_expert = expert_of
        self.replica_gpu = gpu
        self._share = share
        # The base class's fields: per "expert" arrays are per replica here.
        super().__init__(num_experts, k, ep, pop, gpu)
        self.q = q

    def routed(self, tokens: float) -> np.ndarray:
        return tokens * np.bincount(self.replica_gpu, weights=self._share, minlength=self.ep)

    def touched(self, tokens: float) -> np.ndarray:
        hit = 1.0 - (1.0 - self._share) ** tokens
        return np.bincount(self.replica_gpu, weights=hit, minlength=self.ep)

    def gpu_hit_probability(self) -> np.ndarray:
        """1 - prod over the GPU's replicas of (1 - q_e / c_e) (independence, as ExpertLoad
        does for skewed routing)."""
        miss = np.ones(self.ep)
        np.multiply.at(miss, self.replica_gpu, 1.0 - self._share)
        return 1.0 - miss

    def experts_per_gpu(self) -> int:
        return self.replica_gpu.size // self.ep


def balancedness(load: ExpertLoad, tokens: float) -> float:
    """Mean over max of the GPUs' routed assignments: LMSYS's "GPU balancedness" (the ratio
    of mean to maximum MoE computation, estimated by tokens per GPU)."""
    routed = load.routed(tokens)
    return float(routed.mean() / routed.max())

"""Expert parallelism: which GPU holds which experts, how loaded each is, and the all-to-all.

An MoE instance with expert parallelism ``ep`` spreads each MoE layer's routed experts over
``ep`` GPUs (E/ep whole experts each, not tensor-sliced). Per MoE layer a batch pays:

* **dispatch and combine**: every token's hidden vector goes to each *other* GPU that holds
  one of its k experts, and the results come back (two all-to-alls; DeepEP and vLLM's
  all2all backends send a token once per destination GPU, not once per expert);
* **the experts**: each GPU runs the tokens routed to its experts and reads the weights of
  those of its experts that were hit; the layer waits for the most loaded GPU.

Expert popularity is a routing-skew input: uniform (each token picks k of E experts at
random), Zipf with an exponent over a fixed shuffled expert order, or a per-expert vector
from a file. Everything here is an *expected* value for T tokens (no sampling noise): the
skew parameter is where imbalance enters. docs/CLUSTER.md gives sources and what is left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import comb
from pathlib import Path

import numpy as np

from simkv.config.schema import MoEConfig

__all__ = ["MoEConfig"]


def popularity(cfg: MoEConfig, num_experts: int) -> np.ndarray:
    """Each expert's share of routed tokens (sums to 1)."""
    if cfg.routing == "uniform":
        return np.full(num_experts, 1.0 / num_experts)
    if cfg.routing == "zipf":
        ranks = np.arange(1, num_experts + 1, dtype=np.float64)
        weights = ranks ** -cfg.zipf_exponent
        # NOTE: a fixed shuffle (seed 0) so that expert index and popularity rank are not the
        # same thing: with contiguous placement, rank order would put every hot expert on GPU 0.
        weights = weights[np.random.default_rng(0).permutation(num_experts)]
        return weights / weights.sum()
    if not cfg.popularity_path:
        raise ValueError("moe.routing=file needs moe.popularity_path")
    path = Path(cfg.popularity_path)
    if not path.is_file():
        raise ValueError(f"moe.popularity_path: {path}: file not found")
    text = path.read_text().replace(",", " ").split()
    try:
        values = np.array([float(x) for x in text])
    except ValueError as exc:
        raise ValueError(f"{path}: expected numbers, one per expert ({exc})") from None
    if values.size != num_experts:
        raise ValueError(f"{path}: expected {num_experts} popularity values (one per expert), "
                         f"got {values.size}")
    if (values < 0).any() or not np.isfinite(values).all() or values.sum() <= 0:
        raise ValueError(f"{path}: popularity values must be finite, >= 0 and not all 0")
    return values / values.sum()


def place(pop: np.ndarray, ep: int, how: str) -> np.ndarray:
    """GPU index of every expert (E/ep experts per GPU)."""
    e = pop.size
    per = e // ep
    if how == "contiguous":
        return np.arange(e) // per
    return pack(pop, ep)


def pack(weights: np.ndarray, gpus: int) -> np.ndarray:
    """GPU of each item: heaviest first onto the least loaded GPU with a free slot, every GPU
    getting len(weights)/gpus items (ties: the lowest GPU index).

    One greedy packing for both balanced placements: experts by popularity (``place``) and
    EPLB's replicas by their share of the load (perf/moe_placement.py)."""
    n = weights.size
    if n % gpus:
        raise ValueError(f"{n} experts or replicas do not divide over {gpus} GPUs")
    per = n // gpus
    gpu = np.empty(n, dtype=np.int64)
    total = np.zeros(gpus)
    used = np.zeros(gpus, dtype=np.int64)
    for item in np.argsort(-weights, kind="stable"):
        open_ = np.flatnonzero(used < per)
        g = open_[np.argmin(total[open_])]
        gpu[item] = g
        total[g] += weights[item]
        used[g] += 1
    return gpu


def selection_probability(pop: np.ndarray, k: int) -> np.ndarray:
    """Probability that one token selects each expert, given each expert's share of routed
    tokens: proportional to the share, but a token picks k *distinct* experts, so no
    probability exceeds 1 and they sum to k (an expert too hot for its share is picked by
    every token and the excess goes to the others in proportion)."""
    q = np.zeros_like(pop)
    free = np.ones(pop.size, dtype=bool)
    left = float(k)
    # NOTE: at most E rounds; each round either fits or saturates at least one expert.
    while left > 1e-12 and free.any():
        share = pop[free] / pop[free].sum() * left
        if (share <= 1.0).all():
            q[free] = share
            break
        hot = np.flatnonzero(free)[share > 1.0]
        q[hot] = 1.0
        free[hot] = False
        left = k - q.sum()
    return q


@dataclass(slots=True)
class ExpertLoad:
    """Expected per-GPU load of one MoE layer for T tokens, under one EP degree."""

    num_experts: int
    k: int
    ep: int
    pop: np.ndarray
    gpu_of: np.ndarray
    # Probability that one token selects expert e (sums to k, none above 1).
    q: np.ndarray = field(init=False)
    uniform: bool = field(init=False)

    def __post_init__(self) -> None:
        self.q = selection_probability(self.pop, self.k)
        self.uniform = bool(np.all(self.pop == self.pop[0]))

    def routed(self, tokens: float) -> np.ndarray:
        """Expected (token, expert) assignments landing on each GPU."""
        return tokens * np.bincount(self.gpu_of, weights=self.q, minlength=self.ep)

    def touched(self, tokens: float) -> np.ndarray:
        """Expected distinct experts hit on each GPU: their weights are read."""
        hit = 1.0 - (1.0 - self.q) ** tokens
        return np.bincount(self.gpu_of, weights=hit, minlength=self.ep)

    def gpu_hit_probability(self) -> np.ndarray:
        """Probability that one token sends its hidden vector to each GPU.

        Uniform routing: exact (k of E without replacement: 1 - C(E-m, k) / C(E, k) for a GPU
        of m experts). Otherwise the independence approximation 1 - prod(1 - q_e).
        """
        if self.uniform:
            m = self.num_experts // self.ep
            miss = comb(self.num_experts - m, self.k) / comb(self.num_experts, self.k)
            return np.full(self.ep, 1.0 - miss)
        miss = np.ones(self.ep)
        np.multiply.at(miss, self.gpu_of, 1.0 - self.q)
        return 1.0 - miss


def expert_load(cfg: MoEConfig, num_experts: int, k: int, ep: int) -> ExpertLoad:
    if cfg.placement == "eplb":  # replicas of hot experts (perf/moe_placement.py)
        from simkv.perf.moe_placement import ReplicatedLoad

        slots = num_experts + cfg.redundant_experts
        if slots % ep:
            raise ValueError(f"expert_parallel ({ep}) must divide the model's {num_experts} "
                             f"experts + moe.redundant_experts ({cfg.redundant_experts})")
        return ReplicatedLoad(num_experts, k, ep, popularity(cfg, num_experts),
                              cfg.redundant_experts)
    if num_experts % ep:
        raise ValueError(f"expert_parallel ({ep}) must divide the model's {num_experts} experts")
    pop = popularity(cfg, num_experts)
    return ExpertLoad(num_experts, k, ep, pop, place(pop, ep, cfg.placement))


@dataclass(frozen=True, slots=True)
class AllToAllLinks:
    """Per-GPU bandwidths the all-to-all runs over (bytes/s, seconds)."""

    nvlink_bandwidth: float
    nvlink_latency_s: float
    network_bandwidth: float  # per GPU, across nodes (RDMA NIC)
    network_latency_s: float
    gpus_per_node: int


def all_to_all_bytes(load: ExpertLoad, tokens: float, hidden: int, dispatch_bytes: float
                     ) -> tuple[float, float]:
    """(dispatch, combine) bytes received by the most loaded GPU for one MoE layer.

    Tokens start spread evenly over the EP group (data-parallel attention); a token goes to
    every other GPU holding one of its experts, once per GPU. GPU g receives the tokens of
    the other ep - 1 GPUs' shares that hit it: tokens x (ep - 1)/ep x P(hit g).
    """
    if load.ep == 1 or tokens == 0:
        return 0.0, 0.0
    p = float(load.gpu_hit_probability().max())
    vectors = tokens * (load.ep - 1) / load.ep * p
    return vectors * hidden * dispatch_bytes, vectors * hidden * 2.0


def all_to_all_s(nbytes: float, ep: int, links: AllToAllLinks) -> float:
    """Seconds of one all-to-all in which the busiest GPU receives ``nbytes``.

    Peers on the same node are reached over NVLink, others over the GPU's RDMA NIC; the two
    parts run at once, so the slower one decides.
    """
    if ep == 1 or nbytes == 0:
        return 0.0
    peers = ep - 1
    local = min(ep, links.gpus_per_node) - 1
    remote = peers - local
    t_local = nbytes * local / peers / links.nvlink_bandwidth if local else 0.0
    t_remote = nbytes * remote / peers / links.network_bandwidth if remote else 0.0
    latency = links.network_latency_s if remote else links.nvlink_latency_s
    return latency + max(t_local, t_remote)

"""Attention-FFN disaggregation (MegaScale-Infer, arXiv 2504.02263; Step-3's AFD): an MoE
instance whose attention runs on M GPUs and whose experts run on N other GPUs, with a batch's
micro-batches shuttled between them ("ping-pong pipeline").

Layout (``pools.<name>.afd_expert_gpus=N``): the pool's ``tensor_parallel`` x
``data_parallel_attention`` GPUs are the attention side (each data-parallel rank holds the
attention and router weights, TP within it, and its sequences' KV: no expert weights, so more
KV fits); N expert GPUs hold the routed experts, E/N whole experts each (N <= E), or each
expert split N/E ways by tensor parallelism (N > E, MegaScale-Infer's expert nodes with TP
inside). Per MoE layer a micro-batch of b tokens costs

* Ta: its attention-side work on one attention rank (projections, attention over its share of
  the context, router, shared experts, norms, TP all-reduces), b / M tokens per rank;
* Te: the routed experts on the busiest expert GPU (its tokens' GEMMs, reading the weights of
  its experts that were hit; perf/expert_parallel.py's expected loads);
* Tc: the dispatch (attention -> expert, A2E) or combine (E2A) over the GPUs' RDMA NICs: the
  slower of what one attention GPU sends (its tokens, once per destination expert GPU, split
  over its TP ranks) and what the busiest expert GPU receives (MegaScale-Infer's Eq. 6), plus
  one link latency.

With m micro-batches the attention GPUs, the links and the expert GPUs work on different
micro-batches at once. MegaScale-Infer's iteration latency (its Eq. 5) is
(Ta + Te + 2 Tc) + Tf (m L - 1) with Tf = max(Ta, Te), valid when its pipeline conditions hold
(Tc < Tf and m Tf >= 2 (Tf + Tc), Eqs. 1-3). simkv uses the same form with the slot
S = max(Ta, Te, Tc, (Ta + Te + 2 Tc)/m): equal to Tf when the conditions hold, and otherwise
the resource that cannot keep up (the links, or a micro-batch's own round trip when m is too
small to hide it). Dense layers (DeepSeek's first ones) run on the attention side alone; the
LM head and sampling on the attention ranks.

What is left out: heterogeneous GPUs for the two sides (one pool, one hardware profile);
MegaScale-Infer's M2N library's tail-latency advantages over NCCL (Tc is bandwidth + one
latency); expert load imbalance beyond ``moe.routing``'s expected loads; KV transfers of
prefill on the expert side (none); the expert GPUs' weight loading at start-up is counted as
attention GPUs' (lifecycle uses one weight size per GPU).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from simkv.perf.expert_parallel import ExpertLoad, expert_load
from simkv.perf.roofline import ACT_BYTES, CostModel
from simkv.policies.scheduler.interface import SchedulerOutput

_EXPERT_OPS = ("moe_up_gate", "moe_down", "moe_experts", "moe_all_to_all", "moe_router")


class AFDCost(CostModel):
    """Iteration times of an attention-FFN disaggregated instance (see the module docstring).

    The CostModel it extends is the attention side (tp = TP per attention rank, dp = M ranks);
    the expert side and the ping-pong pipeline are priced here."""

    def __init__(self, model: Any, hw: Any, tensor_parallel: int, engine: Any, *,
                 data_parallel: int, expert_gpus: int, micro_batches: int, moe: Any,
                 network_bandwidth: float, network_latency_s: float) -> None:
        if not model.is_moe:
            raise ValueError(f"afd_expert_gpus needs an MoE model; {model.name} is dense")
        e = model.num_experts
        if not (e % expert_gpus == 0 or expert_gpus % e == 0):
            raise ValueError(f"afd_expert_gpus ({expert_gpus}) must divide the model's {e} "
                             f"experts or be a multiple of them (each expert then split by "
                             f"tensor parallelism)")
        super().__init__(model, hw, tensor_parallel, 1, engine, data_parallel=data_parallel,
                         moe=moe)
        self.expert_gpus = expert_gpus
        self.micro_batches = micro_batches
        self.expert_tp = max(1, expert_gpus // e)
        # Expected loads over the expert GPUs (whole experts) or over the expert groups.
        self.expert_load: ExpertLoad = expert_load(moe, e, model.experts_per_token,
                                                   min(expert_gpus, e))
        self.net_bw = network_bandwidth
        self.net_lat = network_latency_s
        per_gpu = model.expert_params_total * model.weight_bytes_per_param / expert_gpus
        if per_gpu > hw.memory_bytes * 0.95:
            raise ValueError(f"afd_expert_gpus={expert_gpus}: each expert GPU would hold "
                             f"{per_gpu / 2**30:.1f} GiB of experts, more than its "
                             f"{hw.memory_bytes / 2**30:.1f} GiB; use more expert GPUs")
        self._side_cache: dict[float, tuple[float, float, float]] = {}

    # --- memory: the attention side holds no routed expert ------------------------------
    def weight_bytes_per_gpu(self) -> float:
        m = self.model
        experts = m.expert_params_total * m.weight_bytes_per_param
        return (m.weight_bytes - experts) / self.tp

    def expert_bytes_per_gpu(self) -> float:
        m = self.model
        return m.expert_params_total * m.weight_bytes_per_param / self.expert_gpus

    # --- one micro-batch, one MoE layer --------------------------------------------------
    def _attention_side(self, tokens: float, dense: bool = False) -> float:
        """Ta without attention itself: one rank's share of ``tokens`` instance tokens."""
        m = self.model
        t = tokens / self.dp
        ops = self.layer_operators(tokens, dense_mlp=dense)
        s = sum(op.seconds for op in ops if op.name not in _EXPERT_OPS)
        if m.is_moe and not dense:
            s += self._gemm("moe_router", t, m.hidden_size, m.num_experts / self.tp).seconds
        return s + 2.0 * self._allreduce_s(t)

    def _expert_side(self, tokens: float) -> float:
        """Te: the busiest expert GPU's GEMMs for ``tokens`` tokens."""
        m = self.model
        load = self.expert_load
        h, f = m.hidden_size, m.ffn_size / self.expert_tp
        routed = load.routed(tokens)
        touched = load.touched(tokens)
        g = int(np.argmax(routed))
        r, w = float(routed[g]), float(touched[g])
        s = (self._gemm("moe_up_gate", r, h, 2 * f, weight_sets=w).seconds
             + self._gemm("moe_down", r, f, h, weight_sets=w).seconds) if r else 0.0
        if self.expert_tp > 1 and r:  # TP inside an expert's GPUs: an all-reduce of its output
            msg = r * h * ACT_BYTES
            s += (self.hw.nvlink_latency_s
                  + 2.0 * (self.expert_tp - 1) / self.expert_tp * msg / self.hw.nvlink_bandwidth)
        return s

    def _comm(self, tokens: float) -> float:
        """Tc: dispatch or combine of ``tokens`` tokens between the two sides (the larger)."""
        if not tokens:
            return 0.0
        h = self.model.hidden_size
        hit = self.expert_load.gpu_hit_probability()
        per_token = float(hit.sum())  # destination expert GPUs (groups) per token
        send = tokens / self.dp * per_token * h * ACT_BYTES / self.tp
        recv = tokens * float(hit.max()) * h * ACT_BYTES / self.expert_tp
        return self.net_lat + max(send, recv) / self.net_bw

    def _sides(self, tokens: float) -> tuple[float, float, float]:
        """(Ta without attention, Te, Tc) of a micro-batch of ``tokens`` (cached)."""
        hit = self._side_cache.get(tokens)
        if hit is None:
            hit = (self._attention_side(tokens), self._expert_side(tokens), self._comm(tokens))
            self._side_cache[tokens] = hit
        return hit

    def _pipeline(self, ta: Any, te: float, tc: float, m: int) -> Any:
        """MoE layers' time with m micro-batches: (Ta + Te + 2Tc) + S (m L - 1)."""
        layers = self.model.moe_layers
        trip = ta + te + 2.0 * tc
        slot = np.maximum(np.maximum(np.maximum(ta, te), tc), trip / m)
        return trip + slot * (m * layers - 1)

    def _micro(self, sequences: int) -> int:
        per_rank = -(-sequences // self.dp) if sequences else 1
        return max(1, min(self.micro_batches, per_rank))

    def _dense_layers(self, tokens: float) -> float:
        m = self.model
        if not m.num_dense_layers:
            return 0.0
        return m.num_dense_layers * self._attention_side(tokens, dense=True)

    # --- the CostModel interface ---------------------------------------------------------
    def linear_s(self, tokens: int) -> float:
        """Everything but attention and sampling for ``tokens`` tokens (routers' speed)."""
        m = self._micro(tokens)
        ta, te, tc = self._sides(tokens / m)
        return float(self._pipeline(ta, te, tc, m)) + self._dense_layers(tokens)

    def iteration_time(self, out: SchedulerOutput) -> float:
        seqs = len(out.prefills) + out.num_decodes
        m = self._micro(seqs)
        tokens = out.prefill_tokens + out.num_decodes
        ta, te, tc = self._sides(tokens / m)
        split = m * self.dp  # a micro-batch's share on one attention rank
        attn = 0.0
        if out.prefill_tokens:
            attn += self._prefill_attention_s(out.prefill_attn_pairs / split,
                                              out.prefill_kv_tokens / split,
                                              -(-out.prefill_tokens // split))
        if out.num_decodes:
            attn += self._decode_attention(-(-out.num_decodes // split),
                                           float(out.decode_context[0]) / split).seconds
        host = self._prefill_token_s * out.prefill_tokens
        return (float(self._pipeline(ta + attn, te, tc, m)) + self._dense_layers(tokens)
                + self.model.num_dense_layers * attn * m
                + self.sample_s(-(-out.num_sampled // self.dp)) + host)

    def decode_run_times(self, decodes: int, context: Sequence[int], sampled: int
                         ) -> Sequence[float]:
        m = self._micro(decodes)
        ta, te, tc = self._sides(decodes / m)
        split = m * self.dp
        ctx = np.asarray(context, dtype=np.float64) / split
        # Per-layer attention of one micro-batch on one rank, for every iteration of the run.
        per = -(-decodes // split)
        attn = np.asarray(self._roofline_decode_run(0.0, per, ctx), dtype=np.float64) / self.layers
        times = (self._pipeline(ta + attn, te, tc, m) + self._dense_layers(decodes)
                 + self.model.num_dense_layers * attn * m
                 + self.sample_s(-(-sampled // self.dp)))
        return np.asarray(times)

    def sides(self, tokens: float) -> dict[str, float]:
        """(for reports) Ta (without attention), Te and Tc of a micro-batch of ``tokens``."""
        ta, te, tc = self._sides(tokens)
        return {"ta_s": ta, "te_s": te, "tc_s": tc}


def afd_cost(pool: Any, dp: int) -> CostModel:
    """The AFD cost model of a pool whose ``afd_expert_gpus`` > 0."""
    pc, node = pool.cfg, pool.node
    return AFDCost(pool.model, pool.hw, pc.tensor_parallel, pool.sim.engine, data_parallel=dp,
                   expert_gpus=pc.afd_expert_gpus, micro_batches=pc.afd_micro_batches,
                   moe=pool.sim.moe, network_bandwidth=node.gpu_network_bandwidth,
                   network_latency_s=node.gpu_network_latency_s)

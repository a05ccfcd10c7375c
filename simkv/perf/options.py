"""Cost-model options of a run's config: the KV allocator and weight offloading.

Both change what an iteration costs without changing what the scheduler plans, so they are
applied to a pool's cost model once, after it is built (``configure_cost``, called by
engine/pool.py), and leave the plain path untouched when off (the defaults):

* **The KV allocator** (``kv.allocator``, docs/MEMORY.md). ``paged`` (PagedAttention, the
  kernels the hardware profiles' attention efficiencies stand for) costs nothing. ``vattention``
  (arXiv 2405.04437) runs unmodified contiguous kernels, whose attention time relative to the
  paged ones is a factor per phase, and maps physical pages through the CUDA driver as each
  request's KV grows: every ``page_tokens`` new tokens of a request need one page per layer for
  its keys and one for its values, each ``map_latency_us`` of driver time. With ``overlap``
  (vAttention maps the next iteration's pages in a background thread) an iteration takes the
  longer of its compute and its mapping; without, they add. The pages needed are counted as
  their expectation (new tokens x 2 x layers / page tokens), not per page boundary crossed.
* **Weight offloading** (``weights``, FlexGen). ``gpu_fraction`` of the weights stay in HBM
  (``weight_bytes_per_gpu`` is what HBM holds, so the KV pool grows and a model larger than
  HBM fits); the rest crosses PCIe once per iteration for the whole batch, at the slower of
  the GPU's PCIe and the source tier's read bandwidth (its share per GPU of the node). With
  ``overlap`` an iteration takes the longer of its compute and its loads (the next layer's
  weights load while this one computes), else both. When the KV itself is streamed over the
  same PCIe link each step (``offload=dram_stream``/``ssd_stream``), the weights' loads add to
  that stream: an iteration takes the longer of its compute and loads + KV stream.

NOTE: the streamed weights do not go through kv/links.py (they would cost two events per
iteration): they do not contend with KV transfers on the PCIe link.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from simkv.policies.scheduler.interface import SchedulerOutput

if TYPE_CHECKING:
    from simkv.kv.tiers import NodeProfile
    from simkv.perf.roofline import CostModel

Times = Sequence[float] | float


def page_tokens(cost: CostModel, page_kib: int) -> int:
    """Tokens of one request's keys (or values) of one layer that a page holds, on one GPU."""
    per_token = cost.kv_bytes_token_layer / 2.0  # keys or values of one layer
    return max(1, int(page_kib * 1024 // per_token))


def configure_cost(cost: CostModel, sim: Any, node: NodeProfile) -> CostModel:
    """Apply the run's allocator and weight-offload options to ``cost`` (in place)."""
    alloc = sim.kv.allocator
    prefill, decode = alloc.attention_times()
    cost.set_attention_factors(prefill, decode)
    posts: list[Callable[[SchedulerOutput, np.ndarray], np.ndarray]] = []
    if alloc.kind == "vattention" and alloc.map_latency_us > 0:
        per_token = 2.0 * cost.layers / cost.pp / page_tokens(cost, alloc.page_kib)
        map_s = alloc.map_latency_us * 1e-6 * per_token  # seconds of mapping per new token
        posts.append(_stall(lambda out: _new_tokens(out) * map_s, alloc.overlap))
    w = sim.weights
    if w.gpu_fraction < 1.0:
        streamed = cost.weight_bytes_per_gpu() * (1.0 - w.gpu_fraction)
        tier = node.tiers.get(w.source)
        if tier is None:
            raise ValueError(f"weights.source={w.source}: node profile '{node.name}' has no "
                             f"{w.source} tier")
        bw = min(cost.hw.pcie_bandwidth, tier.read_bandwidth / node.gpus_per_node)
        load_s = streamed / bw + cost.hw.pcie_latency_s
        cost._resident = w.gpu_fraction
        from simkv.perf.in_storage import StreamedAttentionCost

        if isinstance(cost, StreamedAttentionCost) and w.overlap:
            # The KV streamed to the GPU each step (offload=dram_stream/ssd_stream) crosses
            # the same PCIe link: the weights overlap the compute, not that stream.
            per_ctx = cost.layers * cost._dattn_m

            def io(out: SchedulerOutput) -> np.ndarray:
                return load_s + per_ctx * _contexts(out)

            posts.append(_stall(io, True))
        else:
            posts.append(_stall(lambda out: np.full(out.num_iterations, load_s), w.overlap))
    if posts:
        inner = cost.run_times

        def run_times(out: SchedulerOutput) -> Times:
            t = np.atleast_1d(np.asarray(inner(out), dtype=np.float64))
            for post in posts:
                t = post(out, t)
            return float(t[0]) if out.num_iterations == 1 else t

        cost.run_times = run_times  # type: ignore[method-assign]
    return cost


def _new_tokens(out: SchedulerOutput) -> np.ndarray:
    """New KV tokens per iteration of ``out``: prefill chunks and decodes."""
    k = out.num_iterations
    first = out.prefill_tokens + out.num_decodes
    rest = out.tail_decodes if out.prefill_tokens else out.num_decodes
    new = np.full(k, float(rest))
    new[0] = first
    return new


def _contexts(out: SchedulerOutput) -> np.ndarray:
    """KV tokens the decodes of each iteration of ``out`` read (0 where none decode)."""
    ctx = np.zeros(out.num_iterations)
    if out.prefill_tokens:
        if out.num_decodes:
            ctx[0] = out.decode_context[0]
        tail = np.asarray(out.tail_context, dtype=np.float64)
        ctx[1:1 + len(tail)] = tail
    elif out.num_decodes:
        ctx[:] = np.asarray(out.decode_context, dtype=np.float64)[:out.num_iterations]
    return ctx


def _stall(extra: Callable[[SchedulerOutput], np.ndarray], overlap: bool
           ) -> Callable[[SchedulerOutput, np.ndarray], np.ndarray]:
    """A per-iteration cost that hides behind the iteration (overlap) or adds to it."""
    if overlap:
        return lambda out, t: np.maximum(t, extra(out))
    return lambda out, t: t + extra(out)

"""What an iteration's collectives put on the links, and what contention on them costs.

The cost model prices every collective from the link bandwidths alone (perf/roofline.py: TP
all-reduces over NVLink, the EP all-to-all's NVLink and RDMA parts, PP activation hops). With
``collectives.on_fabric`` (docs/PARALLELISM.md) an instance's collectives also load the
fabric's links (kv/links.py), so they contend with KV transfers. This module gives, per GPU and
per iteration of ``tokens`` tokens, the bytes each kind of link carries and the seconds of the
iteration that are bandwidth terms on it, so that

* the engine reserves the collectives' average rate on the links for the run they belong to
  (KV transfers get the rest: engine/collectives.py), and
* a collective that finds other traffic on its link gets a fair share of it: its bandwidth
  term takes ``factor`` = bandwidth / (fair share) times as long; ``extra_s`` is the time that
  adds to the iteration.

NVLink carries TP all-reduces, the all-to-all's part to peers on the node, and PP hops inside
a node; a node's RDMA NICs the all-to-all's part to other nodes and PP hops across nodes. The
busiest GPU's all-to-all bytes stand for every GPU's (an upper bound: the layer waits for it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from simkv.perf.all_to_all import DEFAULT as A2A_DEFAULT
from simkv.perf.all_to_all import cost as a2a_cost
from simkv.perf.expert_parallel import all_to_all_bytes

ACT_BYTES = 2


@dataclass(frozen=True, slots=True)
class CollectiveLoad:
    """One iteration's collectives on one GPU: bytes per link kind and how their time reacts
    to contention (``extra_s``)."""

    nvlink_bytes: float = 0.0
    rdma_bytes: float = 0.0
    # Bandwidth terms: seconds on NVLink only, on RDMA only, and the all-to-all's per-layer
    # (local, remote) pairs of which the slower decides (count, local s, remote s).
    nvlink_s: float = 0.0
    rdma_s: float = 0.0
    a2a: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def extra_s(self, f_nvlink: float, f_rdma: float) -> float:
        """Seconds the iteration gains when NVLink runs at 1/f_nvlink and RDMA at 1/f_rdma of
        the bandwidth the cost model priced (factors >= 1)."""
        extra = self.nvlink_s * (f_nvlink - 1.0) + self.rdma_s * (f_rdma - 1.0)
        n, local, remote = self.a2a
        if n:
            extra += n * (max(local * f_nvlink, remote * f_rdma) - max(local, remote))
        return extra


def iteration_load(cost: Any, tokens: float, spans_nodes: bool) -> CollectiveLoad:
    """The collectives of one iteration of ``tokens`` tokens of ``cost``'s layout, per GPU.

    ``spans_nodes``: the instance's GPUs are on more than one node (its PP hops cross RDMA).
    """
    if tokens <= 0:
        return CollectiveLoad()
    m, hw = cost.model, cost.hw
    h = m.hidden_size
    rank = tokens / cost.dp if cost.dp > 1 else tokens
    nv_b = rd_b = nv_s = rd_s = 0.0
    if cost.tp > 1:
        # Two ring all-reduces per layer (after attention and after the MLP), every layer of
        # the instance on the critical path (stages back to back), as linear_s prices them.
        msg = rank * h * ACT_BYTES
        per = 2.0 * (cost.tp - 1) / cost.tp * msg
        count = 2.0 * m.num_layers / cost.pp  # this GPU's layers
        nv_b += count * per
        nv_s += 2.0 * m.num_layers * (cost._allreduce_s(rank) - hw.nvlink_latency_s)
    if cost.pp > 1:
        hop = rank * h * ACT_BYTES
        seconds = (cost.pp - 1) * hop / hw.nvlink_bandwidth
        if spans_nodes:
            rd_b += hop
            rd_s += seconds
        else:
            nv_b += hop
            nv_s += seconds
    a2a = (0.0, 0.0, 0.0)
    load = getattr(cost, "_load", None)
    if cost.ep > 1 and load is not None:
        links = cost._links
        backend = cost._moe_cfg.all_to_all
        layers = float(m.moe_layers)
        peers = cost.ep - 1
        local = min(cost.ep, links.gpus_per_node) - 1
        remote = peers - local
        if backend == A2A_DEFAULT:
            dispatch, combine = all_to_all_bytes(load, tokens, h,
                                                 cost._moe_cfg.dispatch_bytes_per_element)
            both = dispatch + combine
            nv_b += layers * both * local / peers
            rd_b += layers * both * remote / peers
            # Dispatch and combine each take max(local part, remote part) + latency; both
            # split their bytes in the same ratio, so the two maxima pick the same side and
            # add up to the maximum of the sums.
            a2a = (layers, both * local / peers / links.nvlink_bandwidth,
                   both * remote / peers / links.network_bandwidth)
        else:
            nbytes, seconds = a2a_cost(backend, load, tokens, h,
                                       cost._moe_cfg.dispatch_bytes_per_element, links)
            on_rdma = cost.ep > links.gpus_per_node
            if on_rdma:
                rd_b += layers * nbytes
                rd_s += layers * seconds
            else:
                nv_b += layers * nbytes
                nv_s += layers * seconds
    return CollectiveLoad(nv_b, rd_b, nv_s, rd_s, a2a)

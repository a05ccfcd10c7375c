"""An instance's collectives on the cluster's fabric (``collectives.on_fabric``).

For every run an instance plans, the collectives of its iterations (perf/collectives.py: TP
all-reduces and intra-node all-to-all on its GPUs' NVLink links, the all-to-all across nodes
on its nodes' RDMA links, PP hops) do two things on the fabric of kv/links.py:

* **they hold bandwidth**: the run's collective bytes over its duration are reserved on each
  link it uses until the run ends (or is cut), so KV transfers crossing those links share
  what is left (``Fabric.reserve``); at the run's end the bytes of the iterations it ran are
  counted on the links (``collective_bytes``) and the reservation is released;
* **they meet traffic**: a collective whose link carries n transfers and collectives of other
  instances holding ``r`` of its bandwidth B gets B' = (B - r)/(n + 1) while it runs (the
  fabric's fair share), so its bandwidth terms take B/B' times the time the cost model
  priced; the iteration grows by that (perf/collectives.py ``extra_s``), which is where KV
  traffic shows in TPOT.

Rates are sampled when the run is planned and held for the run (the same granularity at which
simkv prices iterations); a transfer starting mid-run slows the next run's collectives, not
this one's. docs/PARALLELISM.md has the model and what it leaves out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from simkv.kv.links import Link
from simkv.perf.collectives import CollectiveLoad, iteration_load

if TYPE_CHECKING:
    from simkv.engine.replica import Replica
    from simkv.engine.topology import Topology
    from simkv.policies.scheduler.interface import SchedulerOutput


class InstanceCollectives:
    def __init__(self, topology: Topology, replica: Replica) -> None:
        self.topology = topology
        self.replica = replica
        self._loads: dict[tuple[int, float, bool], CollectiveLoad] = {}
        # The run in flight: its reservations and the bytes of each of its iterations.
        self._held: list[tuple[Link, float]] = []
        self._bytes: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
        self._where: tuple[list[Link], dict[int, int]] = ([], {})
        self.runs_slowed = 0
        self.extra_s = 0.0

    def _load(self, cost: Any, tokens: float, spans: bool) -> CollectiveLoad:
        key = (id(cost), tokens, spans)
        load = self._loads.get(key)
        if load is None:
            load = self._loads[key] = iteration_load(cost, tokens, spans)
        return load

    def _links(self) -> tuple[list[Link], dict[int, int]]:
        """Its GPUs' NVLink links, and GPUs per node."""
        r, topo = self.replica, self.topology
        hw = r.pool.hw
        gpus = r.slots.gpus
        nv = [topo.nvlink(g, hw.nvlink_bandwidth, hw.nvlink_latency_s) for g in gpus]
        per_node: dict[int, int] = {}
        for g in gpus:
            per_node[g // topo.gpn] = per_node.get(g // topo.gpn, 0) + 1
        return nv, per_node

    @staticmethod
    def _factor(link: Link) -> float:
        """How much longer a collective's bandwidth term takes on ``link`` now."""
        if not link.active and not link.reserved:
            return 1.0
        share = (link.bandwidth - link.reserved) / (link.active + 1)
        return link.bandwidth / share

    def plan(self, out: SchedulerOutput, durations: Any) -> Any:
        """``durations`` of the run ``out`` with contention added; reserve its collectives."""
        r = self.replica
        cost = r.cost
        nv_links, per_node = self._links()
        spans = len(per_node) > 1
        k = out.num_iterations
        first_tokens = out.prefill_tokens + out.num_decodes
        tail_tokens = out.tail_decodes if out.prefill_tokens else out.num_decodes
        first = self._load(cost, first_tokens, spans)
        tail = self._load(cost, tail_tokens, spans) if k > 1 else first
        rdma = [self.topology.rdma[n] for n in per_node]
        f_nv = max((self._factor(x) for x in nv_links), default=1.0)
        f_rd = max((self._factor(x) for x in rdma), default=1.0)
        if f_nv > 1.0 or f_rd > 1.0:
            e0, e1 = first.extra_s(f_nv, f_rd), tail.extra_s(f_nv, f_rd)
            if e0 > 0.0 or e1 > 0.0:
                self.runs_slowed += 1
                self.extra_s += e0 + (k - 1) * e1
                if k == 1:
                    durations = float(durations) + e0
                else:
                    d = np.asarray(durations, dtype=np.float64) + e1
                    d[0] += e0 - e1
                    durations = d
        total = float(durations) if k == 1 else float(np.sum(durations))
        self._bytes = (first.nvlink_bytes, tail.nvlink_bytes, first.rdma_bytes, tail.rdma_bytes)
        self._where = (nv_links, per_node)  # a resize during the run changes the slots
        nv_run = first.nvlink_bytes + (k - 1) * tail.nvlink_bytes
        rd_run = first.rdma_bytes + (k - 1) * tail.rdma_bytes
        held: list[tuple[Link, float]] = []
        if total > 0.0:
            if nv_run > 0.0:
                held += [(x, nv_run / total) for x in nv_links]
            if rd_run > 0.0:
                held += [(self.topology.rdma[n], rd_run * g / total) for n, g in per_node.items()]
        if held:
            self.topology.fabric.reserve(held)
        self._held = held
        return durations

    def end(self, done: int) -> None:
        """The run ended after ``done`` iterations: count their bytes, release the links."""
        nv0, nv1, rd0, rd1 = self._bytes
        nv = nv0 + (done - 1) * nv1
        rd = rd0 + (done - 1) * rd1
        nv_links, per_node = self._where
        for x in nv_links:
            x.collective_bytes += nv
        for n, g in per_node.items():
            self.topology.rdma[n].collective_bytes += rd * g
        if self._held:
            self.topology.fabric.reserve([(x, -rate) for x, rate in self._held])
            self._held = []
        self._bytes = (0.0, 0.0, 0.0, 0.0)


def collective_stats(links: Sequence[Link]) -> dict[str, float]:
    """Collective bytes per kind of link (nvlink, rdma), for summary.json."""
    out: dict[str, float] = {}
    for x in links:
        if x.collective_bytes:
            kind = "nvlink" if x.name.startswith("nvlink") else "rdma"
            out[kind] = out.get(kind, 0.0) + x.collective_bytes
    return dict(sorted(out.items()))

"""The cluster's memory below HBM: lower-tier stores, the links that reach them, transfers.

Built once per run from a node profile and a placement. Replicas are packed onto nodes of
``gpus_per_node`` GPUs in index order. Each replica has a PCIe link (its GPUs' links
together: a tensor-parallel replica moves its KV shards in parallel); each node has a read
and a write link per tier (the drives' aggregate bandwidth) and a NIC. A transfer crosses
the links of its path at once and moves at the rate of the most crowded (kv/links.py):

| move | path |
|---|---|
| HBM -> tier (offload, demotion, write-through) | PCIe of the replica, tier write |
| tier -> HBM (a hit below HBM, a swap-in) | tier read, [NIC of home node, NIC of reader], PCIe |
| tier -> lower tier (demotion) | tier read, lower tier write (same node) |

Stores are per node, or one cluster-wide pool per tier when the placement is ``shared``
(Mooncake): a granule then lives on the node that wrote it and other nodes read it over the
network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import simpy

from simkv.kv.links import Fabric, Link, Transfer
from simkv.kv.stores import TierStats, TierStore
from simkv.kv.tiers import NodeProfile
from simkv.policies.offload.interface import Placement
from simkv.registry import build

GIB = 2**30


@dataclass(slots=True)
class Topology:
    """Where replicas sit and how fast their PCIe links are."""

    replicas: int
    gpus_per_replica: int
    pcie_bandwidth: float  # per GPU, bytes/s
    pcie_latency_s: float

    def nodes(self, gpus_per_node: int) -> int:
        return -(-(self.replicas * self.gpus_per_replica) // gpus_per_node)


class MemoryHierarchy:
    def __init__(self, env: simpy.Environment, node: NodeProfile, placement: Placement,
                 eviction_cfg: Any, topo: Topology, granule_bytes: float,
                 capacity_override_gib: dict[str, float | None],
                 on_transfer: Callable[[Transfer], None] | None = None) -> None:
        self.env = env
        self.node = node
        self.placement = placement
        self.granule_bytes = granule_bytes
        self.fabric = Fabric(env, on_transfer)
        self.num_nodes = topo.nodes(node.gpus_per_node)
        gpr = topo.gpus_per_replica
        self.replica_node = [(r * gpr) // node.gpus_per_node for r in range(topo.replicas)]
        self.pcie = [Link(f"pcie{r}", topo.pcie_bandwidth * gpr, topo.pcie_latency_s)
                     for r in range(topo.replicas)]
        self.nic = [Link(f"nic{n}", node.network_bandwidth, node.network_latency_s)
                    for n in range(self.num_nodes)]
        missing = [t for t in placement.tiers if t not in node.tiers]
        if missing:
            raise ValueError(f"offload needs tiers {missing} that node profile '{node.name}' "
                             f"({node.path}) does not have")
        self.read: dict[tuple[str, int], Link] = {}
        self.write: dict[tuple[str, int], Link] = {}
        for tier, spec in node.tiers.items():
            for n in range(self.num_nodes):
                self.read[tier, n] = Link(f"{tier}_read{n}", spec.read_bandwidth, spec.latency_s)
                self.write[tier, n] = Link(f"{tier}_write{n}", spec.write_bandwidth, spec.latency_s)
        # Stores: tier -> per node (index = node), or one shared store (index 0).
        self.stores: dict[str, list[TierStore]] = {}
        for tier in placement.tiers:
            gib = capacity_override_gib.get(tier)
            per_node = node.tiers[tier].capacity if gib is None else gib * GIB
            granules = int(per_node // granule_bytes)
            if placement.shared:
                self.stores[tier] = [TierStore(tier, granules * self.num_nodes, build(eviction_cfg),
                                               -1, self._evicted)]
            else:
                self.stores[tier] = [TierStore(tier, granules, build(eviction_cfg), n, self._evicted)
                                     for n in range(self.num_nodes)]

    # --- stores and paths -----------------------------------------------------------------
    def store(self, tier: str, node: int) -> TierStore:
        stores = self.stores[tier]
        return stores[0] if self.placement.shared else stores[node]

    def lower_of(self, tier: str) -> str | None:
        tiers = self.placement.tiers
        i = tiers.index(tier)
        return tiers[i + 1] if self.placement.demote and i + 1 < len(tiers) else None

    def path_to_hbm(self, tier: str, home: int, replica: int) -> list[Link]:
        node = self.replica_node[replica]
        path = [self.read[tier, home]]
        if home != node:
            path += [self.nic[home], self.nic[node]]
        path.append(self.pcie[replica])
        return path

    def path_from_hbm(self, replica: int, tier: str) -> list[Link]:
        return [self.pcie[replica], self.write[tier, self.replica_node[replica]]]

    def move(self, nbytes: float, path: list[Link], on_done: Callable[[Transfer], None] | None,
             what: str) -> Transfer | None:
        if nbytes <= 0:
            return None
        return self.fabric.start(nbytes, path, on_done, what)

    # --- demotion between lower tiers -------------------------------------------------------
    def _evicted(self, store: TierStore, key: int, home: int, now: float) -> None:
        lower = self.lower_of(store.tier)
        if lower is None:
            return
        target = self.store(lower, home)
        if target.insert(key, home, now, 1.0):
            self.move(self.granule_bytes, [self.read[store.tier, home], self.write[lower, home]],
                      None, f"demote {store.tier}->{lower}")

    # --- reporting --------------------------------------------------------------------------
    def tier_stats(self) -> dict[str, dict[str, float]]:
        gb = self.granule_bytes
        out: dict[str, dict[str, float]] = {}
        for tier, stores in self.stores.items():
            st = TierStats()
            cap = resident = 0
            for s in stores:
                st.written += s.stats.written
                st.read += s.stats.read
                st.evicted += s.stats.evicted
                st.peak += s.stats.peak
                cap += s.capacity
                resident += len(s.entries)
            out[tier] = {"capacity_bytes": cap * gb, "bytes_written": st.written * gb,
                         "bytes_read": st.read * gb, "bytes_evicted": st.evicted * gb,
                         "bytes_resident_end": resident * gb, "peak_bytes": st.peak * gb}
        return out

    def link_stats(self) -> dict[str, dict[str, float]]:
        links = [*self.pcie, *self.nic, *self.read.values(), *self.write.values()]
        kinds: dict[str, dict[str, float]] = {}
        for link in links:
            kind = link.name.rstrip("0123456789")
            k = kinds.setdefault(kind, {"bytes": 0.0, "busy_s": 0.0, "links": 0})
            k["bytes"] += link.bytes_moved
            k["busy_s"] += link.busy_s
            k["links"] += 1
        return {k: v for k, v in sorted(kinds.items()) if v["bytes"] > 0}

    def check_invariants(self) -> None:
        for stores in self.stores.values():
            for s in stores:
                s.check_invariants()

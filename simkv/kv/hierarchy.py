"""The cluster's memory below HBM: lower-tier stores, the links that reach them, transfers.

Built once per run on the cluster's topology (engine/topology.py: where instances sit, and
the links) and a placement. Each instance has a PCIe link (its GPUs' links together: a
tensor-parallel replica moves its KV shards in parallel); each node has a read and a write
link per tier (the drives' aggregate bandwidth) and a NIC. A transfer crosses
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
from typing import TYPE_CHECKING, Any

from simkv.kv.links import Link, Transfer
from simkv.kv.stores import TierStats, TierStore
from simkv.policies.offload.interface import Placement
from simkv.registry import build

if TYPE_CHECKING:
    from simkv.engine.topology import Topology

GIB = 2**30


def tier_evictions(cfg: Any) -> dict[str, Any]:
    """Each lower tier's eviction config: ``memory.<tier>_eviction``, else
    ``memory.lower_eviction``, else HBM's ``eviction`` (a config of the eviction group)."""
    from simkv.registry import config_for

    mem = cfg.memory
    out: dict[str, Any] = {}
    for tier in ("dram", "ssd", "csd"):
        name = getattr(mem, f"{tier}_eviction", None)
        key = f"memory.{tier}_eviction"
        if name is None:
            name, key = mem.lower_eviction, "memory.lower_eviction"
        if name is None:
            out[tier] = cfg.eviction
            continue
        try:
            out[tier] = config_for("eviction", name)
        except KeyError as exc:
            raise ValueError(f"{key}: {exc.args[0]}") from None
    return out


class MemoryHierarchy:
    def __init__(self, topology: Topology, placement: Placement, eviction_cfg: Any,
                 granule_bytes: float, capacity_override_gib: dict[str, float | None],
                 nvlink: tuple[float, float] | None = None) -> None:
        """``eviction_cfg``: one eviction config for every lower tier, or one per tier
        (``tier_evictions``). ``nvlink``: (bandwidth, latency) of a GPU's NVLink, for reads
        of another instance's HBM cache (``memory.peer_hbm``); None: no such reads."""
        node = topology.node
        self.env = topology.env
        self.node = node
        self.topology = topology
        self.placement = placement
        self.granule_bytes = granule_bytes
        self.fabric = topology.fabric
        self.num_nodes = topology.num_nodes
        # NOTE: the topology's lists, shared: instances started later appear in them.
        self.replica_node = topology.replica_node
        self.pcie = topology.pcie
        self.nic = topology.nic
        self.read = topology.read
        self.write = topology.write
        missing = [t for t in placement.tiers if t not in node.tiers]
        if missing:
            raise ValueError(f"offload needs tiers {missing} that node profile '{node.name}' "
                             f"({node.path}) does not have")
        # Stores: tier -> per node (index = node), or one shared store (index 0).
        self.stores: dict[str, list[TierStore]] = {}
        per_tier = eviction_cfg if isinstance(eviction_cfg, dict) else None
        self.nvlink = nvlink
        # HBM caches of the instances, by id, for peer reads (kv/manager.py registers them).
        self.hbm_caches: dict[int, Any] = {}
        for tier in placement.tiers:
            if per_tier is not None:
                eviction_cfg = per_tier[tier]
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
        return self.topology.link_stats()

    def check_invariants(self) -> None:
        for stores in self.stores.values():
            for s in stores:
                s.check_invariants()

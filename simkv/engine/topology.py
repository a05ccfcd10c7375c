"""Where instances sit, and every link of the cluster (one bandwidth-sharing fabric).

Each pool gets its own nodes (a node has one kind of GPU): enough for its largest size,
``max_instances x`` the largest instance, packed ``gpus_per_node`` GPUs to a node. An
instance takes the lowest run of free GPU slots of its pool (it may span nodes when it is
larger than one); its node is the node of its first GPU. With one pool of equal instances this
packs replica r onto GPUs ``r x gpus .. (r + 1) x gpus - 1``, as before pools existed.

Links (all on one ``Fabric``, so weight loads, KV moves and offload share bandwidth):

| link | one per | carries |
|---|---|---|
| ``pcie{i}`` | instance (its GPUs together) | host <-> GPU: KV tiers, weights from SSD or the store |
| ``loader{i}`` | instance | the weight loader's software throughput (safetensors-class) |
| ``nvlink{n}.{s}`` | GPU slot | GPU <-> GPU on a node: weights from a peer, expert moves |
| ``nic{n}`` | node | the node's storage / front-end network: KV store, model store |
| ``rdma{n}`` | node | GPU-direct network across nodes (weights from a remote peer) |
| ``{tier}_read{n}``, ``{tier}_write{n}`` | node and tier | DRAM, SSD, CSD |
| ``store`` | cluster | the network model store's total read bandwidth |
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import simpy

from simkv.kv.links import Fabric, Link, Transfer
from simkv.kv.tiers import NodeProfile


@dataclass(slots=True)
class Slots:
    """GPU slots of one instance: their global GPU indices (node = index // gpus_per_node)."""

    gpus: list[int]

    def node(self, gpus_per_node: int) -> int:
        return self.gpus[0] // gpus_per_node


_KIND = re.compile(r"[a-z_]+")


class Topology:
    def __init__(self, env: simpy.Environment, node: NodeProfile, pool_gpus: dict[str, int],
                 store_bandwidth: float, store_latency_s: float,
                 on_transfer: Callable[[Transfer], None] | None = None) -> None:
        self.env = env
        self.node = node
        self.gpn = node.gpus_per_node
        self.fabric = Fabric(env, on_transfer)
        # Each pool's GPU range [first, first + count), whole nodes.
        self.pool_range: dict[str, tuple[int, int]] = {}
        first = 0
        for name, gpus in pool_gpus.items():
            nodes = max(1, -(-gpus // self.gpn))
            self.pool_range[name] = (first, nodes * self.gpn)
            first += nodes * self.gpn
        self.num_nodes = first // self.gpn
        self.free = np.ones(first, dtype=bool)
        self.nic = [Link(f"nic{n}", node.network_bandwidth, node.network_latency_s)
                    for n in range(self.num_nodes)]
        rdma_bw = node.gpu_network_bandwidth * self.gpn
        self.rdma = [Link(f"rdma{n}", rdma_bw, node.gpu_network_latency_s)
                     for n in range(self.num_nodes)]
        self.read: dict[tuple[str, int], Link] = {}
        self.write: dict[tuple[str, int], Link] = {}
        for tier, spec in node.tiers.items():
            for n in range(self.num_nodes):
                self.read[tier, n] = Link(f"{tier}_read{n}", spec.read_bandwidth, spec.latency_s)
                self.write[tier, n] = Link(f"{tier}_write{n}", spec.write_bandwidth, spec.latency_s)
        self.store = Link("store", store_bandwidth, store_latency_s)
        self._nvlink: dict[int, Link] = {}
        # Per instance id (ids are dense: list index = id).
        self.pcie: list[Link] = []
        self.loader: list[Link] = []
        self.replica_node: list[int] = []
        self.slots: list[Slots] = []

    # --- GPU slots ----------------------------------------------------------------------
    def allocate(self, pool: str, gpus: int, near: Slots | None = None) -> Slots | None:
        """The lowest run of ``gpus`` free slots of the pool (None when there is none).

        ``near``: prefer slots on the nodes of these (an instance growing in place)."""
        first, count = self.pool_range[pool]
        free = self.free[first:first + count]
        if near is not None:
            # Single free GPUs on the instance's own nodes first: they join over NVLink.
            nodes = {g // self.gpn for g in near.gpus}
            local = [g for n in sorted(nodes) for g in range(n * self.gpn, (n + 1) * self.gpn)
                     if first <= g < first + count and self.free[g]]
            if len(local) >= gpus:
                pick = local[:gpus]
                self.free[pick] = False
                return Slots(pick)
        run = 0
        for i in range(count):
            run = run + 1 if free[i] else 0
            if run == gpus:
                start = first + i - gpus + 1
                self.free[start:start + gpus] = False
                return Slots(list(range(start, start + gpus)))
        if near is not None and int(free.sum()) >= gpus:
            pick = (first + np.flatnonzero(free)[:gpus]).tolist()
            self.free[pick] = False
            return Slots(pick)
        return None

    def release(self, slots: Slots) -> None:
        self.free[slots.gpus] = True

    def attach(self, instance: int, slots: Slots, pcie_bandwidth: float, pcie_latency_s: float,
               loader_bandwidth: float) -> None:
        """Links of a new instance (``instance`` must be the next id)."""
        assert instance == len(self.pcie), "instance ids must be dense"
        gpus = len(slots.gpus)
        self.pcie.append(Link(f"pcie{instance}", pcie_bandwidth * gpus, pcie_latency_s))
        self.loader.append(Link(f"loader{instance}", loader_bandwidth * gpus))
        self.replica_node.append(slots.node(self.gpn))
        self.slots.append(slots)

    def nvlink(self, gpu: int, bandwidth: float, latency_s: float) -> Link:
        link = self._nvlink.get(gpu)
        if link is None:
            link = self._nvlink[gpu] = Link(f"nvlink{gpu // self.gpn}.{gpu % self.gpn}",
                                            bandwidth, latency_s)
        return link

    # --- paths --------------------------------------------------------------------------
    def path_from_ssd(self, instance: int) -> list[Link]:
        node = self.replica_node[instance]
        return [self.read["ssd", node], self.loader[instance], self.pcie[instance]]

    def path_from_dram(self, instance: int) -> list[Link]:
        """A checkpoint cached in the node's DRAM (ServerlessLLM's fastest tier)."""
        node = self.replica_node[instance]
        return [self.read["dram", node], self.loader[instance], self.pcie[instance]]

    def path_from_store(self, instance: int) -> list[Link]:
        node = self.replica_node[instance]
        return [self.store, self.nic[node], self.loader[instance], self.pcie[instance]]

    def path_between_gpus(self, src: int, dst: int, nvlink_bw: float, nvlink_latency_s: float
                          ) -> list[Link]:
        """GPU to GPU: NVLink on one node, the nodes' RDMA NICs otherwise."""
        if src // self.gpn == dst // self.gpn:
            return [self.nvlink(src, nvlink_bw, nvlink_latency_s),
                    self.nvlink(dst, nvlink_bw, nvlink_latency_s)]
        return [self.rdma[src // self.gpn], self.rdma[dst // self.gpn]]

    def links(self) -> list[Link]:
        return [*self.pcie, *self.loader, *self._nvlink.values(), *self.nic, *self.rdma,
                *self.read.values(), *self.write.values(), self.store]

    def link_stats(self) -> dict[str, dict[str, float]]:
        """Bytes and busy time per kind of link (pcie, nic, dram_read, ...), moved ones only."""
        kinds: dict[str, dict[str, float]] = {}
        for link in self.links():
            kind = _KIND.match(link.name).group(0)  # type: ignore[union-attr]
            k = kinds.setdefault(kind, {"bytes": 0.0, "busy_s": 0.0, "links": 0})
            k["bytes"] += link.bytes_moved
            k["busy_s"] += link.busy_s
            k["links"] += 1
        return {k: v for k, v in sorted(kinds.items()) if v["bytes"] > 0}

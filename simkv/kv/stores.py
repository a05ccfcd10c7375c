"""Where cached KV granules live: the HBM cache of a replica and the stores of lower tiers.

Both count granules and delegate the choice of victim to an eviction policy
(policies/eviction/). The HBM cache shares its blocks with the replica's BlockPool (a cached
granule spans ``gblocks`` blocks) and knows pins; a lower-tier store (DRAM, SSD, CSD of a node,
or of the whole cluster for a shared pool) has its own capacity and no pins: reading a
granule copies it.

Every store keeps ``TierStats`` so that bytes balance: written - evicted == resident.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from simkv.kv.block_pool import BlockPool
from simkv.policies.eviction.interface import EvictionPolicy


@dataclass(slots=True)
class TierStats:
    """Granules stored, read out (hits served from this tier), and removed."""

    written: int = 0
    read: int = 0
    evicted: int = 0
    peak: int = 0


class HBMCache:
    """The named, cached granules of one replica's KV pool.

    A granule is pinned while requests (or a tool-call pin) use it, evictable otherwise;
    evictable granules are the pool's reclaimable blocks. ``on_evict`` hears about every
    granule the pool reclaims (to demote it).
    """

    def __init__(self, pool: BlockPool, gblocks: int, policy: EvictionPolicy,
                 on_evict: Callable[[list[int]], None], cost_slope: float = 0.0) -> None:
        self.pool = pool
        self.gb = gblocks
        self.policy = policy
        self.on_evict = on_evict
        self.cost_slope = cost_slope
        self.refs: dict[int, int] = {}
        self.stats = TierStats()
        pool.reclaim = self._reclaim
        # Cache-aware routers' index of which instance holds which granule
        # (policies/router/index.py PrefixHolders), told of every granule added or removed
        # once a router asks; ``owner`` is this instance's id.
        self.holders: Any = None
        self.owner = -1
        # Told when granules entered or left, where other instances read this cache
        # (``memory.peer_hbm``: kv/manager.py); None otherwise. Once per batch: ``_reclaim``
        # tells it, and callers of ``adopt`` and ``drop`` call ``changed`` after theirs.
        self.on_change: Callable[[], None] | None = None

    def __contains__(self, key: int) -> bool:
        return key in self.refs

    def __len__(self) -> int:
        return len(self.refs)

    def cost(self, j: int) -> float:
        """Recompute cost of the granule at position j, relative to granule 0: it attends to
        more context the deeper it is (``cost_slope`` = granule tokens / the context at which
        a token's attention FLOPs equal its linear FLOPs)."""
        return 1.0 + (j + 0.5) * self.cost_slope

    def pin(self, key: int) -> None:
        r = self.refs[key]
        if r == 0:
            self.pool.pinned += self.gb
            self.policy.pin(key)
        self.refs[key] = r + 1

    def pin_hits(self, keys: list[int], now: float) -> None:
        """Pin granules a request found here (each also counts as an access)."""
        # NOTE: pin() inlined, the pool updated once: this runs per granule of every hit.
        refs, policy = self.refs, self.policy
        newly = 0
        for key in keys:
            r = refs[key]
            if r == 0:
                newly += 1
                policy.pin(key)
            refs[key] = r + 1
            policy.access(key, now)
        self.pool.pinned += newly * self.gb

    def unpin_chain(self, keys: tuple[int, ...], now: float) -> None:
        """Release one pin on each granule of a chain (``keys[j]`` at position j).

        NOTE: deepest granule first, so that LRU evicts a chain from its tail (vLLM frees a
        request's blocks in reverse order for the same reason); the pool is updated once.
        """
        refs, admit = self.refs, self.policy.admit
        released = 0
        for j in range(len(keys) - 1, -1, -1):
            key = keys[j]
            r = refs[key] - 1
            refs[key] = r
            if r == 0:
                released += 1
                admit(key, now, self.cost(j))
            elif r < 0:
                raise AssertionError(f"granule {key} unpinned more often than pinned")
        self.pool.pinned -= released * self.gb

    def adopt(self, key: int) -> None:
        """The caller's private blocks of one granule become this cached granule, pinned once
        (the caller calls ``changed`` after its batch)."""
        pool = self.pool
        pool.used -= self.gb
        pool.cached += self.gb
        pool.pinned += self.gb
        self.refs[key] = 1
        if self.holders is not None:
            self.holders.add(key, self.owner)
        st = self.stats
        st.written += 1
        st.peak = max(st.peak, len(self.refs))

    def changed(self) -> None:
        """Granules entered or left (a batch of ``adopt`` or ``drop``): tell who reads them."""
        if self.on_change is not None:
            self.on_change()

    def drop(self, key: int) -> bool:
        """Remove an evictable granule without demoting it (its copy lives below; the caller
        calls ``changed`` after its batch)."""
        if self.refs.get(key, -1) != 0:
            return False
        self._remove(key)
        return True

    def _remove(self, key: int) -> None:
        """Forget an evictable granule everywhere it is counted (pin table, the cluster's
        holders index, the eviction policy, the pool's cached blocks, the stats): one place,
        so a drop and an eviction cannot count it differently."""
        del self.refs[key]
        if self.holders is not None:
            self.holders.remove(key, self.owner)
        self.policy.forget(key)
        self.pool.cached -= self.gb
        self.stats.evicted += 1

    def _reclaim(self, n: int) -> None:
        evicted = []
        while n > 0:
            key = self.policy.victim()
            if key is None:
                raise AssertionError("the KV pool counted evictable blocks the cache does not have")
            self._remove(key)
            n -= self.gb
            evicted.append(key)
        self.changed()
        self.on_evict(evicted)

    def check_invariants(self) -> None:
        pinned = sum(1 for r in self.refs.values() if r > 0)
        if any(r < 0 for r in self.refs.values()):
            raise AssertionError("negative pin count in the HBM cache")
        if pinned * self.gb != self.pool.pinned or len(self.refs) * self.gb != self.pool.cached:
            raise AssertionError(
                f"HBM cache holds {len(self.refs)} granules ({pinned} pinned) but the pool counts "
                f"{self.pool.cached} cached / {self.pool.pinned} pinned blocks")
        if len(self.refs) - pinned != len(self.policy):
            raise AssertionError("evictable granules and eviction candidates differ")
        st = self.stats
        if st.written - st.evicted != len(self.refs):
            raise AssertionError("HBM cache: granules written - evicted != resident")


class TierStore:
    """Granules of one lower tier (DRAM, SSD or CSD), of one node or of the whole cluster.

    ``reserved`` granules of room are held by swapped-out requests (not cached granules).
    ``on_evict(store, key, home, now)`` hears about each granule evicted to make room.
    """

    def __init__(self, tier: str, capacity: int, policy: EvictionPolicy, node: int,
                 on_evict: Callable[[TierStore, int, int, float], None]) -> None:
        self.tier = tier
        self.capacity = capacity
        self.policy = policy
        self.node = node  # -1: a cluster-wide pool
        self.on_evict = on_evict
        self.entries: dict[int, int] = {}  # key -> node whose memory holds it
        self.reserved = 0
        self.stats = TierStats()
        # Told when a granule enters or leaves (the KV managers that read this store, so an
        # instance with requests waiting can replan: KVManager.watch_match).
        self.readers: list[Callable[[], None]] = []

    @property
    def used(self) -> int:
        return len(self.entries) + self.reserved

    def make_room(self, n: int, now: float) -> bool:
        """Evict until ``n`` more granules fit; False if they cannot."""
        evicted = self.stats.evicted
        fits = self._make_room(n, now)
        if self.stats.evicted != evicted:
            self._changed()
        return fits

    def _make_room(self, n: int, now: float) -> bool:
        if n > self.capacity - self.reserved:
            return False
        while len(self.entries) + self.reserved + n > self.capacity:
            key = self.policy.victim()
            if key is None:
                return False
            home = self.entries.pop(key)
            self.policy.forget(key)
            self.stats.evicted += 1
            self.on_evict(self, key, home, now)
        return True

    def insert(self, key: int, home: int, now: float, cost: float) -> bool:
        """Store a granule; False if it was already here or cannot fit (nothing to write)."""
        return self.insert_all(((key, cost),), home, now) == 1

    def insert_all(self, items: Iterable[tuple[int, float]], home: int, now: float) -> int:
        """Store granules ``(key, cost)`` in turn; returns how many were written (those not
        already here that fit). Readers are told once, after the batch."""
        entries, policy, st = self.entries, self.policy, self.stats
        evicted, written = st.evicted, 0
        for key, cost in items:
            if key in entries:
                policy.access(key, now)
                continue
            if not self._make_room(1, now):
                continue
            entries[key] = home
            policy.admit(key, now, cost)
            st.written += 1
            st.peak = max(st.peak, self.used)
            written += 1
        if written or st.evicted != evicted:
            self._changed()
        return written

    def _changed(self) -> None:
        """Granules entered or left: what an admission finds below HBM may differ now."""
        for reader in self.readers:
            reader()

    def drop_home(self, node: int) -> int:
        """Forget every granule held in ``node``'s memory (the node failed); returns how many.
        They count as evicted, so written - evicted == resident still balances."""
        gone = [k for k, home in self.entries.items() if home == node]
        for key in gone:
            del self.entries[key]
            self.policy.forget(key)
        self.stats.evicted += len(gone)
        if gone:
            self._changed()
        return len(gone)

    def check_invariants(self) -> None:
        if not 0 <= self.used <= self.capacity:
            raise AssertionError(f"{self.tier} store uses {self.used} of {self.capacity} granules")
        if len(self.entries) != len(self.policy):
            raise AssertionError(f"{self.tier} store: entries and eviction candidates differ")
        st = self.stats
        if st.written - st.evicted != len(self.entries):
            raise AssertionError(f"{self.tier} store: granules written - evicted != resident")

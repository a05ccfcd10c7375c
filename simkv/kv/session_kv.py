"""What a session's KV does between two of its calls: the tool-call policy's decisions.

A base class of ``KVManager`` (kv/manager.py), split from it along this seam: when a call of
a session ends, the tool-call policy (policies/tool_kv/) may pin its granules in HBM for a
while (Continuum's TTL), write them to a lower tier (offload), or both in turn (prefetch:
written out, then loaded back shortly before the tool call is predicted to return). These
methods keep those pins, offloads and prefetches; the manager calls them from ``release``
and at admission, and the scheduler calls ``start_prefetches`` when it plans.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import simpy

from simkv.engine.events import NORMAL, Wakeup
from simkv.entities.request import Request
from simkv.kv.links import Transfer
from simkv.policies.tool_kv.interface import Prefetch

if TYPE_CHECKING:
    from simkv.kv.block_pool import BlockPool
    from simkv.kv.hierarchy import MemoryHierarchy
    from simkv.kv.manager import KVStats
    from simkv.kv.stores import HBMCache


@dataclass(slots=True)
class _SessionPin:
    keys: tuple[int, ...]
    since: float
    epoch: int


@dataclass(slots=True, eq=False)
class _Prefetch:
    """A session's KV on its way back to HBM before the predicted end of its tool call."""

    session: int
    keys: tuple[int, ...]
    tier: str
    finish: float
    hold_s: float
    flight: bool = False
    moving: tuple[int, ...] = ()  # granules being loaded
    blocks: int = 0  # private blocks held while in flight
    waiter: Callable[[Transfer], None] | None = None  # the next call, if it came mid-flight


class SessionKV:
    """Tool-call pins, offloads and prefetches of one replica's KV manager."""

    # Set by KVManager.__init__.
    env: simpy.Environment
    replica: int
    node: int
    pool: BlockPool
    mem: MemoryHierarchy
    hbm: HBMCache
    gb: int
    granule_bytes: float
    cost: Callable[[int], float]
    stats: KVStats
    session_pins: dict[int, _SessionPin]
    last_finish: dict[int, float]
    on_freed: Callable[[], None]
    on_match_changed: Callable[[], None]
    _pin_epoch: int
    _offload_pins: int
    _prefetches: dict[int, _Prefetch]
    ready: list[_Prefetch]
    private_blocks: int
    prefetch_stats: dict[str, int] | None

    # --- tool-call pins and offloads -----------------------------------------------------------------------
    def _pin_session(self, session: int, keys: tuple[int, ...], ttl: float, now: float) -> None:
        """Keep ``keys`` out of eviction over [now, now + ttl): the KV survives a tool call
        only because the next call comes while it is pinned (Continuum's model).

        A TTL of zero protects nothing, so the KV is released as plain cache at once, exactly
        as ``drop`` does. (A zero-time pin used to outlive the engine's next plan at the same
        instant, the one that admits other requests before the next call can arrive, and gave
        ttl_s=0 a free hand-over: docs/MEMORY.md, "A zero-length tool call".)
        """
        self.end_session_pin(session, now)
        if not keys:
            return
        if ttl <= 0:
            self.hbm.unpin_chain(keys, now)
            return
        self._pin_epoch += 1
        pin = _SessionPin(keys, now, self._pin_epoch)
        self.session_pins[session] = pin
        self.stats.pins += 1

        def expire(_: object) -> None:
            cur = self.session_pins.get(session)
            if cur is not None and cur.epoch == pin.epoch:
                self.stats.pins_expired += 1
                self.end_session_pin(session, self.env.now)
                self.on_freed()

        Wakeup(self.env, ttl, NORMAL, expire)

    def end_session_pin(self, session: int, now: float) -> None:
        """Release a session's tool-call pin (TTL over, session ended, or taken over)."""
        pin = self.session_pins.pop(session, None)
        if pin is None:
            return
        self.stats.pin_block_s += len(pin.keys) * self.gb * (now - pin.since)
        self.hbm.unpin_chain(pin.keys, now)

    def session_ended(self, session: int, now: float) -> None:
        self.last_finish.pop(session, None)
        self._prefetches.pop(session, None)  # one in flight frees its blocks when it lands
        if session in self.session_pins:
            self.end_session_pin(session, now)
            # NOTE: this may run outside the replica's own plan (a session ends when its
            # next call is rejected at dispatch), and a blocked queue may now fit.
            self.on_freed()

    def _take_over_session_pin(self, req: Request, now: float) -> None:
        if req.session >= 0 and req.session in self.session_pins:
            self.stats.pins_taken_over += 1
            self.end_session_pin(req.session, now)

    def _offload(self, keys: tuple[int, ...], tier: str, now: float) -> None:
        if not keys:
            return
        store = self.mem.store(tier, self.node) if tier in self.mem.stores else None
        if store is None:
            raise ValueError(f"tool_kv=offload to '{tier}' needs that tier: choose an offload "
                             f"placement that has it (e.g. offload=ssd), or tool_kv.tier=dram")
        written = store.insert_all(((k, self.cost(j)) for j, k in enumerate(keys)), self.node, now)
        self._offload_pins += len(keys)

        def landed(_: object, notify: bool = True) -> None:
            t = self.env.now
            self._offload_pins -= len(keys)
            self.hbm.unpin_chain(keys, t)
            for k in keys:
                if k in store.entries:
                    self.hbm.drop(k)  # only if nobody else uses it; the copy lives below
            self.hbm.changed()
            if notify:
                self.on_freed()

        nbytes = written * self.granule_bytes
        self.stats.offload_bytes += nbytes
        if nbytes > 0:
            self.mem.move(nbytes, self.mem.path_from_hbm(self.replica, tier), landed, "offload")
        else:
            landed(None, notify=False)  # already below: free now; the caller plans next

    # --- tool-call prefetch (tool_kv=prefetch) -------------------------------------------------
    def _pstats(self) -> dict[str, int]:
        if self.prefetch_stats is None:
            self.prefetch_stats = {"pinned": 0, "offloaded": 0, "started": 0, "landed": 0,
                                   "arrived_before_start": 0, "arrived_in_flight": 0,
                                   "no_room": 0, "nothing_to_load": 0}
        return self.prefetch_stats

    @staticmethod
    def _path_time(path: list, nbytes: float) -> float:
        """Seconds to move ``nbytes`` over ``path`` alone (no contention)."""
        return nbytes / min(link.bandwidth for link in path) + max(link.latency_s for link in path)

    def _prefetch_decision(self, session: int, keys: tuple[int, ...], d: Prefetch, now: float) -> None:
        st = self._pstats()
        if not keys:
            return
        nbytes = len(keys) * self.granule_bytes
        write = self._path_time(self.mem.path_from_hbm(self.replica, d.tier), nbytes)
        load = self._path_time(self.mem.path_to_hbm(d.tier, self.node, self.replica), nbytes)
        if d.at_s <= write + load:
            # Back before it could be written out and read in again: keep it (Continuum's pin).
            st["pinned"] += 1
            self._pin_session(session, keys, d.hold_s, now)
            return
        st["offloaded"] += 1
        self._offload(keys, d.tier, now)
        pf = _Prefetch(session, keys, d.tier, now, d.hold_s)
        self._prefetches[session] = pf
        Wakeup(self.env, d.at_s - load, NORMAL, lambda _: self._prefetch_due(pf))

    def _prefetch_due(self, pf: _Prefetch) -> None:
        """Time to load: ask the replica to replan (the run in flight is cut after its
        iteration), which starts it (``start_prefetches``) before planning, so the blocks it
        takes are never ones a planned run counted on."""
        if self._prefetches.get(pf.session) is pf:
            self.ready.append(pf)
            self.on_freed()

    def start_prefetches(self, room: int) -> None:
        """Start the due prefetches that fit in ``room`` blocks (the scheduler calls this
        when it plans, with the free blocks its decodes do not need next)."""
        ready, self.ready = self.ready, []
        for pf in ready:
            room -= self._prefetch_start(pf, room)

    def _prefetch_start(self, pf: _Prefetch, room: int) -> int:
        if self._prefetches.get(pf.session) is not pf:
            return 0  # the next call came first, or the session ended
        st = self._pstats()
        store = self.mem.store(pf.tier, self.node)
        refs = self.hbm.refs
        moving = tuple(k for k in pf.keys if k in store.entries and k not in refs)
        blocks = self.gb * len(moving)
        if not moving or blocks > room:
            st["nothing_to_load" if not moving else "no_room"] += 1
            del self._prefetches[pf.session]
            return 0
        self.pool.allocate(blocks)
        # Making room in HBM may demote cached granules into this very tier, whose own room
        # then evicts some of ``moving`` there: only those still below are loaded, and the
        # blocks taken for the others go back.
        kept = tuple(k for k in moving if k in store.entries)
        if len(kept) < len(moving):
            self.pool.release(self.gb * (len(moving) - len(kept)))
            moving, blocks = kept, self.gb * len(kept)
            if not moving:
                st["nothing_to_load"] += 1
                del self._prefetches[pf.session]
                return 0
        now = self.env.now
        st["started"] += 1
        self.private_blocks += blocks
        pf.flight, pf.moving, pf.blocks = True, moving, blocks
        by_home: dict[int, int] = {}
        for k in moving:
            store.policy.access(k, now)
            store.stats.read += 1
            by_home[store.entries[k]] = by_home.get(store.entries[k], 0) + 1
        left = [len(by_home)]

        def landed(t: Transfer) -> None:
            left[0] -= 1
            if left[0] == 0:
                self._prefetch_landed(pf, t)

        for home, n in by_home.items():
            nbytes = n * self.granule_bytes
            self.stats.load_bytes += nbytes
            self.mem.move(nbytes, self.mem.path_to_hbm(pf.tier, home, self.replica), landed,
                          "prefetch")
        return blocks

    def _prefetch_arrival(self, req: Request) -> _Prefetch | None:
        """The session's next call is admitted: cancel a prefetch not yet started; one in
        flight hands its blocks to the call, which waits for it (returned)."""
        pf = self._prefetches.get(req.session) if req.session >= 0 else None
        if pf is None:
            return None
        st = self._pstats()
        if not pf.flight:
            st["arrived_before_start"] += 1
            del self._prefetches[req.session]
            return None
        st["arrived_in_flight"] += 1
        # The call allocates the blocks of what it loads (the prefetched granules included).
        self.pool.release(pf.blocks)
        self.private_blocks -= pf.blocks
        pf.blocks = 0
        del self._prefetches[req.session]
        return pf

    def _prefetch_landed(self, pf: _Prefetch, t: Transfer) -> None:
        if pf.waiter is not None:
            pf.waiter(t)  # the call that came mid-flight (its blocks, its granules)
            return
        now = self.env.now
        if self._prefetches.get(pf.session) is not pf:
            self.pool.release(pf.blocks)  # the session ended meanwhile
            self.private_blocks -= pf.blocks
            self.on_freed()
            return
        del self._prefetches[pf.session]
        self._pstats()["landed"] += 1
        self.private_blocks -= pf.blocks
        hbm = self.hbm
        for k in pf.moving:
            if k in hbm.refs:
                self.pool.release(self.gb)  # cached meanwhile: our copy is a duplicate
                hbm.pin(k)
            else:
                hbm.adopt(k)
        hbm.changed()
        ttl = pf.finish + pf.hold_s - now
        if ttl > 0:
            self._pin_session(pf.session, pf.moving, ttl, now)
            # No block is freed, but a queued call finds its KV in HBM now, not below (a
            # run in flight kept it waiting to the run's end: docs/ARCHITECTURE.md).
            self.on_match_changed()
        else:
            hbm.unpin_chain(pf.moving, now)
            self.on_freed()

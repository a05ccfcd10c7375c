"""A replica's KV manager: prefix-cache hits, loads from lower tiers, release, tool-call KV.

The scheduler keeps counting a request's *private* blocks (kv/block_pool.py); this class owns
everything named: the granules of the HBM cache (shared, pinned while used), the lookups in
lower tiers, the transfers that bring KV back, and what happens to a request's KV when it
ends (cached, pinned for a tool call, offloaded, swapped). Its calls, in a request's life:

1. ``match(req)`` at admission: the longest run of leading granules found in some tier, the
   nearest tier first (HBM, then the placement's tiers: DRAM, SSD/CSD), and what using it
   costs in HBM blocks;
2. ``acquire(req, m, now)``: pin the HBM part, allocate and load the rest (the request waits
   in LOADING until every transfer lands; ``on_loaded`` then tells the scheduler);
3. ``publish(req, now)`` when its prefill is done: its full prompt granules become shared
   cache entries (vLLM caches full blocks as they fill), written through below if the
   placement says so;
4. ``release(req, now, finished)`` when it finishes or is preempted: what is still private
   becomes cache, then pins are released, or handed to the tool-call policy.

What a session's KV does between its calls (tool-call pins, offload, prefetch) is in
kv/session_kv.py, a base class of ``KVManager``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import simpy

from simkv.entities.request import LOADING, Request
from simkv.kv.block_pool import BlockPool, blocks_for
from simkv.kv.hierarchy import MemoryHierarchy
from simkv.kv.links import Transfer
from simkv.kv.prefix import granule_id, granule_ids
from simkv.kv.session_kv import SessionKV, _Prefetch, _SessionPin
from simkv.kv.stores import HBMCache, TierStore
from simkv.policies.eviction.interface import EvictionPolicy
from simkv.policies.tool_kv.interface import Offload, Pin, Prefetch, ToolKVPolicy


@dataclass(frozen=True, slots=True, eq=False)
class PeerHBM:
    """Another instance's HBM cache on the same node, as a source of granules (read over
    NVLink when ``memory.peer_hbm`` is on)."""

    manager: KVManager
    tier: str = "peer"


@dataclass(slots=True)
class Match:
    """Leading granules of a request found cached: ``where[j]`` is None for HBM, else a
    store below HBM or a peer instance's HBM."""

    keys: list[int]
    where: list[TierStore | PeerHBM | None]
    pin_blocks: int  # HBM blocks that stop being evictable when pinned
    load_blocks: int  # HBM blocks to allocate for granules loaded from below
    swap_tokens: int = 0  # a swapped-out request: tokens to swap back in (keys empty)


@dataclass(slots=True)
class KVStats:
    """Counters of one replica, summed into summary.json's ``kv`` section."""

    hit_tokens: dict[str, int] = field(default_factory=lambda: {"hbm": 0, "dram": 0, "disk": 0})
    remote_tokens: int = 0
    loads: int = 0
    load_bytes: float = 0.0
    offload_bytes: float = 0.0
    write_through_bytes: float = 0.0
    demote_bytes: float = 0.0
    swap_out_bytes: float = 0.0
    swap_in_bytes: float = 0.0
    swaps: int = 0
    pin_block_s: float = 0.0
    pins: int = 0
    pins_taken_over: int = 0
    pins_expired: int = 0


def _nothing(*_: object) -> None:
    """A callback that does nothing (a lost instance's hooks)."""


def may_hit(req: Request) -> bool:
    """Whether the prefix cache can matter to ``req``: ids shared with others (a trace's
    prefix or a session's context), or KV of its own from before a preemption. For every other
    request the KV manager's calls are no-ops; the scheduler skips them (it asks per request
    on the hot path)."""
    return req.prefix is not None or req.session >= 0 or req.preemptions > 0 or req.pinned_g > 0


class KVManager(SessionKV):
    def __init__(self, replica: int, env: simpy.Environment, pool: BlockPool,
                 hierarchy: MemoryHierarchy, policy: EvictionPolicy, tool: ToolKVPolicy,
                 granule_tokens: int, granule_bytes: float, block_bytes: float,
                 recompute_context: float) -> None:
        bs = pool.block_size
        if granule_tokens % bs:
            raise ValueError(f"kv.prefix_block_tokens ({granule_tokens}) must be a multiple of "
                             f"kv.block_size ({bs})")
        self.replica = replica
        self.env = env
        self.pool = pool
        self.mem = hierarchy
        self.node = hierarchy.replica_node[replica]
        self.placement = hierarchy.placement
        self.G = granule_tokens
        self.gb = granule_tokens // bs
        self.granule_bytes = granule_bytes
        self.block_bytes = block_bytes
        # Recompute cost of a granule grows with the context it attends to (HBMCache.cost).
        self.hbm = HBMCache(pool, self.gb, policy, self._hbm_evicted,
                            cost_slope=granule_tokens / max(recompute_context, 1.0))
        self.cost = self.hbm.cost
        self.tool = tool
        self.lower = [(t, hierarchy.store(t, self.node)) for t in self.placement.tiers]
        self.on_loaded: Callable[[Request], None] = lambda req: None
        self.session_pins: dict[int, _SessionPin] = {}
        self.last_finish: dict[int, float] = {}
        self.swapped: dict[int, tuple[int, int]] = {}  # request id -> (tokens, granules)
        self._pin_epoch = 0
        self._offload_pins = 0  # granules pinned by offload writes in flight
        # Called when memory was freed outside a plan (a pin expired, an offload landed).
        self.on_freed: Callable[[], None] = lambda: None
        # Called when what ``match`` finds changed outside this instance's plans: granules
        # entered or left a tier below HBM (another instance's demotion into the node's DRAM
        # evicts there), a peer's HBM cache (memory.peer_hbm), or this HBM (a prefetch landed,
        # session_kv.py). Set by ``watch_match``: the replica replans if requests wait.
        self.on_match_changed: Callable[[], None] = _nothing
        if hierarchy.nvlink is not None:
            # Its peers on the node read this HBM cache (memory.peer_hbm) when they admit.
            self.hbm.on_change = self._tell_peers
        # Hears about granules a request made cache entries (req, first, end): kvshare's index.
        self.on_publish: Callable[[Request, int, int], None] | None = None
        self.stats = KVStats()
        # Peer reads (memory.peer_hbm): granules read from other instances' HBM over NVLink.
        self.peer_tokens = 0
        self.peer_bytes = 0.0
        hierarchy.hbm_caches[replica] = self
        # Tool-call prefetch (tool_kv=prefetch): per session, and blocks held by loads in flight.
        self._prefetches: dict[int, _Prefetch] = {}
        self.ready: list[_Prefetch] = []  # due, to start at the next plan
        self.private_blocks = 0
        self.prefetch_stats: dict[str, int] | None = None

    # --- what routers may read ----------------------------------------------------------
    def cached_tokens(self, req: Request, lower: bool = False) -> int:
        """Leading prompt tokens of ``req`` whose KV this instance holds in HBM (and, with
        ``lower``, in the tiers below it on its node), without touching anything: routers
        ask every instance this before choosing one."""
        p = req.prefix
        if not p:
            return 0
        refs = self.hbm.refs
        n = 0
        for key in p:
            if key not in refs and not (lower and any(key in s.entries for _, s in self.lower)):
                break
            n += 1
        return min(n * self.G, max(req.prompt_tokens - 1, 0))

    # --- 1. admission -------------------------------------------------------------------
    def match(self, req: Request) -> Match | None:
        if req.session >= 0 and req.session in self.last_finish:
            self.tool.observe_gap(req.arrival - self.last_finish.pop(req.session))
        if req.id in self.swapped:
            tokens = self.swapped[req.id][0]
            return Match([], [], 0, blocks_for(tokens, self.pool.block_size), tokens)
        if req.prefix is None and not req.preemptions:
            return None  # only its own private granules, and it never ran: nothing cached
        n = req.num_tokens // self.G
        if n * self.G >= req.num_tokens:
            n -= 1  # at least one token must be computed to produce logits
        refs = self.hbm.refs
        keys: list[int] = []
        where: list[TierStore | PeerHBM | None] = []
        pin = load = 0
        peers = self._peers() if self.mem.nvlink is not None else ()
        for j in range(n):
            key = granule_id(req, j)
            r = refs.get(key)
            if r is not None:
                where.append(None)
                if r == 0:
                    pin += self.gb
            else:
                for peer in peers:
                    if key in peer.manager.hbm.refs:
                        where.append(peer)
                        load += self.gb
                        break
                else:
                    for _, store in self.lower:
                        if key in store.entries:
                            where.append(store)
                            load += self.gb
                            break
                    else:
                        break
            keys.append(key)
        if not keys:
            return None
        return Match(keys, where, pin, load)

    def acquire(self, req: Request, m: Match, now: float) -> bool:
        """Take the matched KV for ``req``; True if it must wait for transfers (LOADING)."""
        first = req.preemptions == 0
        if m.swap_tokens:
            return self._swap_in(req, m, now)
        hbm = self.hbm
        # NOTE: pin every HBM hit before allocating for the loads: an allocation may reclaim
        # evictable granules, and those we are about to use must not be among them.
        hbm.pin_hits([k for k, where in zip(m.keys, m.where, strict=True) if where is None], now)
        g_tokens = self.G
        groups: dict[tuple[str, int], int] = {}
        hits = {"hbm": 0, "dram": 0, "disk": 0}
        remote = 0
        loads: list[int] = []
        peer_keys: dict[int, list[int]] = {}
        riding = self._prefetch_arrival(req) if self._prefetches else None
        covered = 0
        for key, where in zip(m.keys, m.where, strict=True):
            if where is None:
                hits["hbm"] += g_tokens
                continue
            if isinstance(where, PeerHBM):
                # Another GPU's HBM of this node: an HBM hit, read over NVLink. The peer keeps
                # the granule pinned until it has been read.
                peer = where.manager
                peer.hbm.pin(key)
                peer._offload_pins += 1
                peer_keys.setdefault(peer.replica, []).append(key)
                hits["hbm"] += g_tokens
                loads.append(key)
                continue
            where.policy.access(key, now)
            where.stats.read += 1
            home = where.entries[key]
            hits["dram" if where.tier == "dram" else "disk"] += g_tokens
            if home != self.node:
                remote += g_tokens
            loads.append(key)
            if riding is not None and key in riding.moving:
                covered += 1
                continue  # already on its way (a prefetch in flight): no second load
            groups[where.tier, home] = groups.get((where.tier, home), 0) + 1
        if loads:
            # NOTE: read everything of the lower tiers above first: this allocation may
            # reclaim HBM granules whose demotion evicts from those tiers. The reads have
            # begun, so a granule evicted below now still arrives.
            self.pool.allocate(self.gb * len(loads))
            for key in loads:
                hbm.adopt(key)  # the blocks just allocated become the loaded granules
            hbm.changed()
        g = len(m.keys)
        req.pinned_g = g
        req.shared = g * self.gb
        req.computed = g * g_tokens
        if first:
            req.cached_tokens = req.computed
            req.cached_hbm, req.cached_dram, req.cached_disk = hits["hbm"], hits["dram"], hits["disk"]
            req.cached_remote = remote
        st = self.stats
        for k, v in hits.items():
            st.hit_tokens[k] += v
        st.remote_tokens += remote
        if riding is not None and not covered:
            riding = None  # it carries nothing this call uses: it lands unheeded
        self._take_over_session_pin(req, now)
        if not groups and not peer_keys and riding is None:
            return False
        moves: list[tuple[list, float]] = [
            (self.mem.path_to_hbm(tier, home, self.replica), n * self.granule_bytes)
            for (tier, home), n in groups.items()]
        after: list[Callable[[], None] | None] = [None] * len(moves)
        for src, keys in peer_keys.items():
            peer_moves = self._peer_moves(src, len(keys) * self.granule_bytes)
            moves += peer_moves
            self.peer_tokens += len(keys) * g_tokens
            self.peer_bytes += len(keys) * self.granule_bytes
            done = self._peer_read_done(self.mem.hbm_caches[src], tuple(keys), len(peer_moves))
            after += [done] * len(peer_moves)
        landed = self._start_loads(req, moves, now, "load", after, waits=int(riding is not None))
        if riding is not None:
            riding.waiter = landed
        return True

    def watch_match(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever what ``match`` finds may change outside this instance's
        plans (``on_match_changed``): granules entering or leaving the tiers below HBM it
        reads, or peers' HBM caches, which other instances write."""
        self.on_match_changed = callback
        for _, store in self.lower:
            store.readers.append(callback)

    def unwatch(self) -> None:
        """Stop hearing about KV other instances change (the instance stopped or was lost):
        its callback leaves the stores it read. Called again, nothing happens."""
        callback = self.on_match_changed
        if callback is _nothing:
            return
        for _, store in self.lower:
            if callback in store.readers:
                store.readers.remove(callback)
        self.on_match_changed = _nothing

    # --- peer reads (memory.peer_hbm) -----------------------------------------------------
    def _tell_peers(self) -> None:
        """A granule entered or left this HBM cache: the node's other instances' admissions
        read it (``match``), as they read the node's DRAM."""
        node = self.mem.replica_node
        for r, m in self.mem.hbm_caches.items():
            if r != self.replica and node[r] == self.node:
                m.on_match_changed()

    def _peers(self) -> list[PeerHBM]:
        """Other instances on this node, by id (their HBM caches hold granules we may read)."""
        node = self.mem.replica_node
        return [PeerHBM(m) for r, m in self.mem.hbm_caches.items()
                if r != self.replica and node[r] == self.node]

    def _peer_moves(self, src: int, nbytes: float) -> list[tuple[list, float]]:
        """GPU i of the source instance to GPU i of this one, each its share of the bytes
        (tensor-parallel shards move in parallel), over both GPUs' NVLink links."""
        assert self.mem.nvlink is not None
        bw, lat = self.mem.nvlink
        topo = self.mem.topology
        a, b = topo.slots[src].gpus, topo.slots[self.replica].gpus
        pairs = list(zip(a, b, strict=False)) or [(a[0], b[0])]
        return [(topo.path_between_gpus(s, d, bw, lat), nbytes / len(pairs)) for s, d in pairs]

    def _peer_read_done(self, peer: KVManager, keys: tuple[int, ...], parts: int
                        ) -> Callable[[], None]:
        left = [parts]

        def done() -> None:
            left[0] -= 1
            if left[0] == 0:
                peer._offload_pins -= len(keys)
                peer.hbm.unpin_chain(keys, self.env.now)
                peer.on_freed()
        return done

    def _start_loads(self, req: Request, moves: list[tuple[list, float]], now: float,
                     what: str, after: list[Callable[[], None] | None] | None = None,
                     waits: int = 0) -> Callable[[Transfer], None]:
        """Start ``moves`` for ``req`` (LOADING until all land, and ``waits`` more landings
        someone else reports); returns the landing callback."""
        req.load_epoch += 1
        req.loads_pending = len(moves) + waits
        epoch, t0 = req.load_epoch, now
        st = self.stats
        st.loads += 1

        def landed(_: Transfer) -> None:
            if req.load_epoch != epoch or req.state is not LOADING:
                return  # preempted while loading
            req.loads_pending -= 1
            if req.loads_pending == 0:
                req.kv_wait += self.env.now - t0
                self.on_loaded(req)

        for i, (path, nbytes) in enumerate(moves):
            extra = after[i] if after is not None else None
            if extra is None:
                st.load_bytes += nbytes  # below HBM, over PCIe (peer reads: peer_bytes)
                self.mem.move(nbytes, path, landed, what)
            else:
                self.mem.move(nbytes, path, lambda t, f=extra: (f(), landed(t)), what)
        return landed

    def _swap_in(self, req: Request, m: Match, now: float) -> bool:
        tokens, granules = self.swapped.pop(req.id)
        dram = self.mem.store("dram", self.node)
        dram.reserved -= granules
        blocks = m.load_blocks
        self.pool.allocate(blocks)
        req.blocks = blocks
        req.computed = tokens
        nbytes = blocks * self.block_bytes
        self.stats.swap_in_bytes += nbytes
        self._start_loads(req, [(self.mem.path_to_hbm("dram", self.node, self.replica), nbytes)],
                          now, "swap in")
        return True

    def abort_load(self, req: Request) -> None:
        """``req`` is preempted while LOADING: its transfers land unheeded."""
        req.load_epoch += 1
        req.loads_pending = 0

    # --- 3. prefill done ------------------------------------------------------------------
    def publish(self, req: Request, now: float, preempted: bool = False) -> None:
        """Make the request's full granules up to its computed tokens shared cache entries.

        NOTE: granules with ids private to the request can only ever be hit by the request
        itself (after a preemption) or by its session's next call, so an open-loop request
        publishes only the granules its ``prefix`` names unless it is being preempted: the
        rest are freed at once instead of filling the cache with entries nobody can hit.
        """
        n = req.computed // self.G
        if req.session < 0 and not preempted:
            n = min(n, len(req.prefix) if req.prefix is not None else 0)
        j0 = req.pinned_g
        if n <= j0:
            return
        ids = granule_ids(req, n)
        hbm = self.hbm
        refs = hbm.refs
        gb = self.gb
        new: list[int] = []
        for j in range(j0, n):
            key = ids[j]
            if key in refs:
                hbm.pin(key)
                self.pool.release(gb)  # our private copy duplicates a cached granule
            else:
                hbm.adopt(key)
                new.append(key)
        req.blocks -= gb * (n - j0)
        req.shared += gb * (n - j0)
        req.pinned_g = n
        if new:
            hbm.changed()
        if self.on_publish is not None:
            self.on_publish(req, j0, n)
        if new and self.placement.write_through:
            self._write_below(new, j0, now)

    def _write_below(self, keys: list[int], j0: int, now: float) -> None:
        mem = self.mem
        for tier, store in self.lower:
            written = store.insert_all(((k, self.cost(j0 + i)) for i, k in enumerate(keys)),
                                       self.node, now)
            if written:
                nbytes = written * self.granule_bytes
                self.stats.write_through_bytes += nbytes
                mem.move(nbytes, mem.path_from_hbm(self.replica, tier), None, "write through")

    # --- 4. end of a request --------------------------------------------------------------
    def release(self, req: Request, now: float, finished: bool, may_swap: bool = True) -> int:
        """Let go of ``req``'s KV; returns its private blocks, for the caller to free.

        ``req.blocks`` must be materialised (a decoding request's are kept lazily). A
        preempted request (``finished`` False) is swapped out if the placement swaps.
        """
        if not finished and may_swap and self.placement.swap and self._swap_out(req, now):
            self.hbm.unpin_chain(granule_ids(req, req.pinned_g), now)
        else:
            self.publish(req, now, preempted=not finished)
            decision = None
            if finished and req.session >= 0:
                decision = self.tool.decide(req, now)
                self.last_finish[req.session] = now
            keys = granule_ids(req, req.pinned_g)
            if decision is None:
                self.hbm.unpin_chain(keys, now)
            elif isinstance(decision, Pin):
                self._pin_session(req.session, keys, decision.ttl_s, now)
            elif isinstance(decision, Offload):
                self._offload(keys, decision.tier, now)
            elif isinstance(decision, Prefetch):
                self._prefetch_decision(req.session, keys, decision, now)
        blocks = req.blocks
        req.blocks = req.shared = req.pinned_g = 0
        return blocks

    def lose(self) -> None:
        """The instance is gone, and its HBM with it: requests handed back from now on take
        nothing with them (no publish, no write below, no swap), other instances stop reading
        its cache, and swap space it reserved in DRAM is free again."""
        self.release = self._release_lost  # type: ignore[method-assign]
        self.mem.hbm_caches.pop(self.replica, None)
        self.unwatch()
        if self.swapped:
            dram = self.mem.store("dram", self.node)
            dram.reserved -= sum(g for _, g in self.swapped.values())
            self.swapped.clear()
        self.on_loaded = self.on_freed = _nothing  # type: ignore[assignment]

    @staticmethod
    def _release_lost(req: Request, now: float, finished: bool, may_swap: bool = True) -> int:
        blocks = req.blocks
        req.blocks = req.shared = req.pinned_g = 0
        return blocks

    def _swap_out(self, req: Request, now: float) -> bool:
        tokens = req.computed
        if tokens <= 0:
            return False
        dram = self.mem.store("dram", self.node)
        granules = -(-tokens // self.G)
        if not dram.make_room(granules, now):
            return False  # no swap space: recompute, as vLLM does when swap space runs out
        dram.reserved += granules
        self.swapped[req.id] = (tokens, granules)
        nbytes = blocks_for(tokens, self.pool.block_size) * self.block_bytes
        st = self.stats
        st.swaps += 1
        st.swap_out_bytes += nbytes
        self.mem.move(nbytes, self.mem.path_from_hbm(self.replica, "dram"), None, "swap out")
        return True

    # --- demotion -----------------------------------------------------------------------------
    def _hbm_evicted(self, keys: list[int]) -> None:
        if not (self.placement.demote and self.lower):
            return
        tier, store = self.lower[0]
        now = self.env.now
        written = store.insert_all(((k, 1.0) for k in keys), self.node, now)
        if written:
            nbytes = written * self.granule_bytes
            self.stats.demote_bytes += nbytes
            self.mem.move(nbytes, self.mem.path_from_hbm(self.replica, tier), None, "demote")

    def check_invariants(self, running: list[Request]) -> None:
        """Recount pins from their owners (running requests, tool-call pins), and check the
        tiers below."""
        self.hbm.check_invariants()
        self.mem.check_invariants()
        owners: dict[int, int] = {}
        for r in running:
            if r.shared != r.pinned_g * self.gb:
                raise AssertionError(f"request {r.id}: {r.shared} shared blocks for {r.pinned_g} granules")
            for k in granule_ids(r, r.pinned_g):
                owners[k] = owners.get(k, 0) + 1
        for pin in self.session_pins.values():
            for k in pin.keys:
                owners[k] = owners.get(k, 0) + 1
        pinned = {k: r for k, r in self.hbm.refs.items() if r > 0}
        if pinned != owners:
            # Granules an offload is still writing are pinned by the transfer, not by an owner.
            extra = {k: r - owners.get(k, 0) for k, r in pinned.items() if r != owners.get(k, 0)}
            if any(v < 0 for v in extra.values()) or len(extra) > self._offload_pins:
                raise AssertionError(f"HBM pins do not match their owners: {list(extra.items())[:5]}")

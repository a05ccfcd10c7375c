"""Indexed router state: the same choices as a scan of every serving instance, in O(log n).

A router scans its ``replicas`` list for the instance with the least work; at 1,000
instances that scan is most of a run's time (benchmarks/bench_routers.py). The cluster's
lists of serving instances are ``ServingList``s, which keep indexes beside them:

* ``TokensIndex``: per class of ``work_rate`` (instances of one pool layout on one GPU
  kind), a heap of (outstanding tokens, position). least_outstanding takes the smallest
  (tokens, position) over the classes; least_work the smallest (tokens + size) / rate, which
  within a class is the smallest tokens (division by a fixed rate keeps the order of whole
  numbers below 2^52), then compares the few class tops exactly as the scan does.
* ``PendingIndex``: per class, a heap of (prompt tokens pending prefill, outstanding tokens,
  position), for slo_aware.
* ``PrefixHolders``: which instances hold a granule in HBM (kept by the instances' HBM
  caches once a router asks), hence a bound on any instance's cached tokens for a request
  (the leading granules someone holds). When it is 0 the cache-aware routers are
  least-loaded choices (a heap top). Otherwise the instances holding the request's first
  granule are scored (only those whose bound, their load against the most any instance has
  cached, could beat the best so far are looked up), and every other instance has nothing
  cached: the best of them is the first non-holder of a walk in increasing load
  (``ascending``), which stops as soon as its load alone loses. Exact; O(holders) cheap
  comparisons plus O(log n) heap steps per instance walked.

Keys are refreshed lazily: an instance puts itself in its indexes' ``dirty`` sets whenever
its load may change (a request charged or discharged, a plan, a committed run, a poke, an
interruption, a resize: engine/replica.py), and an index re-keys the dirty instances before
it answers. Heap entries whose key is no longer the instance's are skipped when they reach
the top. Positions are positions in the list, the scan's tie-break; a change of membership
rebuilds the index (instances start and stop rarely). A plain list (a router called by a
test, or the candidates of one model: engine/models.py) is scanned as before.

tests/test_router_index.py checks that every built-in router chooses as its scan does on
random states and that whole runs give identical requests with and without the indexes.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from typing import Any

# A run-wide switch for tests and the benchmark's "before": SIMKV_ROUTER_SCAN=1 scans.
_SCAN = False


def scan_only(on: bool) -> None:
    """Make every router scan its list (the reference the indexes are compared with)."""
    global _SCAN
    _SCAN = on


class ServingList(list):  # type: ignore[type-arg]
    """Serving instances in start order, with the indexes routers keep over them.

    Any change of membership bumps ``version`` and drops the indexes (rebuilt on next use).
    ``holders`` is the cluster's ``PrefixHolders`` (None: cache-aware routers scan).
    """

    def __init__(self, items: Iterable[Any] = (), holders: PrefixHolders | None = None) -> None:
        super().__init__(items)
        self.version = 0
        self.holders = holders
        self._indexes: dict[str, Any] = {}

    def _changed(self) -> None:
        self.version += 1
        for ix in self._indexes.values():
            ix.detach()
        self._indexes.clear()

    def index(self, kind: str) -> Any:
        """This list's index of ``kind`` ("tokens" or "pending"), built on first use; None
        if routers must scan (the switch is on, or an instance cannot be watched)."""
        if _SCAN:
            return None
        ix = self._indexes.get(kind)
        if ix is None:
            if not all(hasattr(r, "watchers") for r in self):
                return None
            ix = (TokensIndex if kind == "tokens" else PendingIndex)(self)
            self._indexes[kind] = ix
        return ix

    def cached_levels(self, prefix: tuple[int, ...], prompt_tokens: int, members: Any
                      ) -> list[tuple[int, set[int]]] | None:
        """The instances of ``members`` (ids) with cached tokens for a request, grouped by
        how many: [(tokens, ids)], most first; None to scan. An instance's hit is the leading
        run of the request's granules it holds (kv/manager.py ``cached_tokens``): the ids
        holding the first k granules are an intersection of sets, taken in C."""
        h = self.holders
        if h is None or _SCAN:
            return None
        return h.levels(prefix, prompt_tokens, members)

    def most_cached(self, prefix: tuple[int, ...], prompt_tokens: int) -> int | None:
        """An upper bound of any instance's cached tokens for a request (its ``prefix`` and
        prompt length), from which granules anyone holds; None to scan."""
        h = self.holders
        if h is None or _SCAN:
            return None
        return h.most_cached(prefix, prompt_tokens)

    # Every mutating method of list, so that no change of membership goes unseen.
    def append(self, x: Any) -> None:
        super().append(x)
        self._changed()

    def extend(self, xs: Iterable[Any]) -> None:
        super().extend(xs)
        self._changed()

    def insert(self, i: Any, x: Any) -> None:
        super().insert(i, x)
        self._changed()

    def remove(self, x: Any) -> None:
        super().remove(x)
        self._changed()

    def pop(self, i: Any = -1) -> Any:
        x = super().pop(i)
        self._changed()
        return x

    def clear(self) -> None:
        super().clear()
        self._changed()

    def sort(self, *a: Any, **kw: Any) -> None:
        super().sort(*a, **kw)
        self._changed()

    def reverse(self) -> None:
        super().reverse()
        self._changed()

    def __setitem__(self, i: Any, x: Any) -> None:
        super().__setitem__(i, x)
        self._changed()

    def __delitem__(self, i: Any) -> None:
        super().__delitem__(i)
        self._changed()

    def __iadd__(self, xs: Iterable[Any]) -> ServingList:  # type: ignore[override,misc]
        super().__iadd__(xs)
        self._changed()
        return self

    def __imul__(self, n: Any) -> ServingList:  # type: ignore[override,misc]
        super().__imul__(n)
        self._changed()
        return self


class _Index:
    """Heaps per work-rate class over one ServingList; subclasses say what the key is."""

    def __init__(self, replicas: ServingList) -> None:
        self.replicas = replicas
        self.pos: dict[int, int] = {r.index: i for i, r in enumerate(replicas)}
        self.dirty: set[Any] = set()
        self.key: dict[int, tuple[int, ...]] = {}
        self.heaps: dict[float, list[tuple[Any, ...]]] = {}
        self.rate: dict[int, float] = {}
        for r in replicas:
            r.watchers.append(self.dirty)
            self._push(r)

    def detach(self) -> None:
        """Stop watching (the list changed: a new index will be built)."""
        for r in self.replicas:
            ws = r.watchers
            for j in range(len(ws) - 1, -1, -1):
                if ws[j] is self.dirty:
                    del ws[j]

    def _key(self, r: Any) -> tuple[int, ...]:
        raise NotImplementedError

    def _push(self, r: Any) -> None:
        k = self._key(r)
        rate = r.work_rate
        i = r.index
        if self.key.get(i) == k and self.rate.get(i) == rate:
            return  # unchanged: its entry is current
        self.key[i] = k
        self.rate[i] = rate
        heap = self.heaps.get(rate)
        if heap is None:
            heap = self.heaps[rate] = []
        heapq.heappush(heap, (*k, self.pos[i], r))

    def refresh(self) -> None:
        dirty = self.dirty
        if dirty:
            for r in dirty:
                if r.index in self.pos:
                    self._push(r)
            dirty.clear()
        n = len(self.replicas)
        if sum(len(h) for h in self.heaps.values()) > 4 * n + 64:
            self._rebuild()

    def _rebuild(self) -> None:
        heaps: dict[float, list[tuple[Any, ...]]] = {}
        for r in self.replicas:
            i = r.index
            heaps.setdefault(self.rate[i], []).append((*self.key[i], self.pos[i], r))
        for h in heaps.values():
            heapq.heapify(h)
        self.heaps = heaps

    def _valid(self, entry: tuple[Any, ...], rate: float) -> bool:
        r = entry[-1]
        i = r.index
        return self.rate.get(i) == rate and self.key[i] == entry[:-2]

    def top(self, rate: float) -> tuple[Any, ...] | None:
        """The class's smallest current entry (key..., position, replica), or None."""
        heap = self.heaps[rate]
        while heap:
            e = heap[0]
            if self._valid(e, rate):
                return e
            heapq.heappop(heap)
        return None

    def tops(self) -> list[tuple[float, tuple[Any, ...]]]:
        """(rate, top entry) per class."""
        self.refresh()
        out = []
        for rate in list(self.heaps):
            e = self.top(rate)
            if e is not None:
                out.append((rate, e))
        return out

    def ascending(self, order: Callable[[float, tuple[Any, ...]], tuple[Any, ...]]
                  ) -> Iterator[tuple[float, tuple[Any, ...]]]:
        """(rate, entry) over every class, in increasing ``order(rate, entry)``, which must
        increase with the entry within a class. Entries are popped as they are yielded and
        pushed back when the caller stops (closing the generator)."""
        self.refresh()
        popped: list[tuple[float, tuple[Any, ...]]] = []
        frontier: list[tuple[tuple[Any, ...], float]] = []
        for rate in self.heaps:
            e = self.top(rate)
            if e is not None:
                frontier.append((order(rate, e), rate))
        heapq.heapify(frontier)
        try:
            while frontier:
                _, rate = heapq.heappop(frontier)
                heap = self.heaps[rate]
                e = heapq.heappop(heap)  # the class's top, valid (top() said so)
                popped.append((rate, e))
                yield rate, e
                nxt = self.top(rate)
                if nxt is not None:
                    heapq.heappush(frontier, (order(rate, nxt), rate))
        finally:
            for rate, e in popped:
                heapq.heappush(self.heaps[rate], e)


class TokensIndex(_Index):
    """Key: outstanding tokens."""

    def _key(self, r: Any) -> tuple[int, ...]:
        return (r.outstanding_tokens,)


class PendingIndex(_Index):
    """Key: (prompt tokens pending prefill, outstanding tokens)."""

    def _key(self, r: Any) -> tuple[int, ...]:
        return (r.pending_prefill_tokens(), r.outstanding_tokens)


_EMPTY: frozenset[int] = frozenset()


class PrefixHolders:
    """Granule id -> ids of the instances holding it in HBM, over the cluster.

    Inactive (nothing kept, nothing hooked) until a router asks; then it reads every
    instance's HBM cache once and the caches report each granule they add or evict
    (kv/stores.py ``HBMCache.holders``). ``kvs`` is the cluster's KV managers by instance id.
    """

    def __init__(self, kvs: list[Any], granule_tokens: int) -> None:
        self.kvs = kvs
        self.granule_tokens = granule_tokens
        self.active = False
        self.by_key: dict[int, set[int]] = {}

    def most_cached(self, prefix: tuple[int, ...], prompt_tokens: int) -> int:
        """At most this many of the request's prompt tokens are cached on any instance: an
        instance's hit is a leading run of its granules (kv/manager.py ``cached_tokens``),
        so it stops at the first granule nobody holds."""
        if not self.active:
            self.activate()
        by_key = self.by_key
        n = 0
        for key in prefix:
            if key not in by_key:
                break
            n += 1
        return min(n * self.granule_tokens, max(prompt_tokens - 1, 0))

    def activate(self) -> None:
        self.active = True
        for kv in self.kvs:
            if kv is not None:
                self.watch(kv)

    def watch(self, kv: Any) -> None:
        """Follow one instance's HBM cache from now on."""
        hbm = kv.hbm
        hbm.holders = self
        hbm.owner = kv.replica
        for key in hbm.refs:
            self.add(key, kv.replica)

    def levels(self, prefix: tuple[int, ...], prompt_tokens: int, members: Any
               ) -> list[tuple[int, set[int]]]:
        if not self.active:
            self.activate()
        by_key = self.by_key
        first = by_key.get(prefix[0]) if prefix else None
        if not first:
            return []
        nested = [first & members]
        for key in prefix[1:]:
            if not nested[-1]:
                break
            nested.append(nested[-1] & by_key.get(key, _EMPTY))
        out = []
        cap = max(prompt_tokens - 1, 0)
        for k in range(len(nested) - 1, -1, -1):
            exact = nested[k] - nested[k + 1] if k + 1 < len(nested) else nested[k]
            if exact:
                out.append((min((k + 1) * self.granule_tokens, cap), exact))
        return out

    def add(self, key: int, owner: int) -> None:
        s = self.by_key.get(key)
        if s is None:
            self.by_key[key] = {owner}
        else:
            s.add(owner)

    def remove(self, key: int, owner: int) -> None:
        s = self.by_key.get(key)
        if s is not None:
            s.discard(owner)
            if not s:
                del self.by_key[key]

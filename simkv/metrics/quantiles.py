"""Exact percentiles of a column too long to hold, in a few passes of bounded memory.

A float64 maps to a 64-bit key whose unsigned order is the float's order; the value at a
given rank is found 16 key bits at a time: one pass counts the values per next 16-bit digit
(65,536 counters) among those that share the digits found so far, which narrows the rank to
one digit. Once a digit holds at most ``COLLECT`` values, one last pass gathers them and
sorts them. Latencies fill a handful of passes whatever the run length; a run of at most
``COLLECT`` values needs none after the first, which keeps them all.

The percentile then interpolates between the two neighbouring order statistics exactly as
``numpy.percentile``'s default (linear) method does, so the numbers are numpy's, bit for bit
(tests/test_summary.py checks it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

COLLECT = 1 << 16
_DIGITS = 1 << 16
_SIGN = np.uint64(1 << 63)


def keys(x: np.ndarray) -> np.ndarray:
    """Order-preserving uint64 keys of float64 values (-0.0 counted as 0.0)."""
    bits = (np.asarray(x, dtype=np.float64) + 0.0).view(np.uint64)
    return np.where(bits >> np.uint64(63) == 1, ~bits, bits | _SIGN)


def value_of(key: int) -> float:
    k = np.uint64(key)
    bits = k & ~_SIGN if k >> np.uint64(63) else ~k
    return float(np.array([bits], dtype=np.uint64).view(np.float64)[0])


def interpolate(n: int, q: float, at: dict[int, float]) -> float:
    """numpy.percentile's linear method, from the order statistics ``at`` (rank -> value)."""
    virtual = np.float64(n - 1) * np.float64(q / 100)
    lo = int(np.floor(virtual))
    hi = min(lo + 1, n - 1)
    a, b = np.float64(at[lo]), np.float64(at[hi])
    gamma = virtual - np.float64(lo)
    diff = b - a
    # NOTE: numpy's _lerp: from the far end when gamma >= 0.5, for monotonicity.
    return float(b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma)


def ranks_for(n: int, percentiles: Sequence[float]) -> set[int]:
    """The order statistics numpy.percentile interpolates between (none for no values)."""
    out: set[int] = set()
    if n == 0:
        return out
    for q in percentiles:
        lo = int(np.floor(np.float64(n - 1) * np.float64(q / 100)))
        out |= {lo, min(lo + 1, n - 1)}
    return out


class OrderStatistics:
    """The values at chosen ranks of a stream of floats, re-read once per ``feed`` pass.

    Usage: ``feed`` every batch of the first pass, then ``choose(ranks)``; while ``more()``,
    feed every batch again (only the same values, in any order) and call ``advance()``.
    """

    def __init__(self, collect: int = COLLECT) -> None:
        self.collect = collect
        self.n = 0
        self.total = 0.0
        self._sums: list[float] = []
        self._small: list[np.ndarray] | None = []
        # (prefix, bits known) -> digit counts, or gathered keys once the group is small.
        self._hist: dict[tuple[int, int], np.ndarray] = {(0, 0): np.zeros(_DIGITS, np.int64)}
        self._gather: dict[tuple[int, int], list[np.ndarray]] = {}
        self._targets: dict[int, tuple[int, int, int]] = {}
        self.found: dict[int, float] = {}
        self._counting = True

    def feed(self, x: np.ndarray) -> None:
        if not x.size:
            return
        k = keys(x)
        if self._counting:
            self.n += x.size
            self._sums.append(float(np.sum(x)))
            if self._small is not None:
                self._small.append(np.asarray(x, dtype=np.float64))
                if self.n > self.collect:
                    self._small = None
        for (prefix, bits), hist in self._hist.items():
            sel = k if bits == 0 else k[(k >> np.uint64(64 - bits)) == np.uint64(prefix)]
            digits = (sel >> np.uint64(48 - bits)) & np.uint64(_DIGITS - 1)
            hist += np.bincount(digits.astype(np.intp), minlength=_DIGITS)
        for (prefix, bits), got in self._gather.items():
            got.append(k[(k >> np.uint64(64 - bits)) == np.uint64(prefix)])

    def mean(self) -> float | None:
        # NOTE: an exactly rounded sum of the per-batch sums: the same bits for the same
        # batches (row groups), within round-off of numpy's mean over one long array.
        return math.fsum(self._sums) / self.n if self.n else None

    def choose(self, ranks: set[int]) -> None:
        """Ranks (0-based) to find, once the first pass has counted the values."""
        self._counting = False
        if self._small is not None:
            values = np.sort(np.concatenate(self._small)) if self._small else np.empty(0)
            self.found = {r: float(values[r]) for r in ranks}
            self._hist = {}
            return
        self._targets = {r: (0, 0, r) for r in ranks}
        self.advance()

    def more(self) -> bool:
        return bool(self._targets)

    def advance(self) -> None:
        """Narrow every rank by the pass just fed; gather or resolve where few values remain."""
        for key, got in self._gather.items():
            ordered = np.sort(np.concatenate(got)) if got else np.empty(0, np.uint64)
            for r, (prefix, bits, rank) in list(self._targets.items()):
                if (prefix, bits) == key:
                    self.found[r] = value_of(int(ordered[rank]))
                    del self._targets[r]
        hist, self._hist, self._gather = self._hist, {}, {}
        for r, (prefix, bits, rank) in list(self._targets.items()):
            counts = hist[prefix, bits]
            cum = np.cumsum(counts)
            digit = int(np.searchsorted(cum, rank, side="right"))
            below = int(cum[digit - 1]) if digit else 0
            prefix, bits, rank = (prefix << 16) | digit, bits + 16, rank - below
            if bits == 64:  # every key bit known: the value itself
                self.found[r] = value_of(prefix)
                del self._targets[r]
                continue
            self._targets[r] = (prefix, bits, rank)
            if int(counts[digit]) <= self.collect:
                self._gather.setdefault((prefix, bits), [])
            else:
                self._hist.setdefault((prefix, bits), np.zeros(_DIGITS, np.int64))

    def percentiles(self, qs: Sequence[float]) -> dict[float, float]:
        return {q: interpolate(self.n, q, self.found) for q in qs}

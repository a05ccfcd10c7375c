"""Large draws in pieces, to the very values one whole draw gives: bounded memory, same results.

A generator that draws a whole trace hour at once holds it in memory: BurstGPT's hourly volumes
have a CV of 2.3, so at 30,000 requests/s an hour can hold 58M requests (about 5 GiB as the
arrival batch of one shard; docs/PERFORMANCE.md, issue 22). Drawing in pieces must not change
a single value, or every result of the workload would move. Three facts of numpy's Generator
make that possible, each checked by tests/test_streamed_draws.py against the whole draw:

* A distribution drawn in consecutive calls gives the same values as one call of the summed
  size, and leaves the bit generator in the same state (``gamma(k, 1, n)`` == the concatenated
  ``gamma(k, 1, n1)``, ``gamma(k, 1, n2)``, ...), whatever each value consumes.
* ``random(n)`` (and ``choice(..., p=...)``, which is ``random(n)`` through a CDF) consumes
  exactly one 64-bit word per value, so a cursor ``n`` values ahead is a copy of the bit
  generator advanced by ``n`` (PCG64's ``advance``): draws that one call makes one after the
  other (a batch's models, then its log types, ...) can be drawn side by side, piece by piece.
* ``np.add.reduce`` of a float64 array is numpy's pairwise sum (numpy 2.3 and later: one tree
  over the whole array; earlier versions sum 8,192-value blocks one after another, and there
  hours are drawn whole, as ``can_stream`` checks): blocks of at most 128 values, halves split
  at ``n // 2`` rounded down to a multiple of 8. ``pairwise_sum`` follows the same
  tree over values drawn in order, summing each subtree of at most ``leaf`` values with numpy,
  so a renewal process conditioned on its count (its gaps over their sum) needs no whole array:
  a first pass sums the gaps, a second (from a copy of the state) places them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

# Values summed by one numpy call in ``pairwise_sum`` (any size gives the same sum; this one
# bounds the pass's memory at 512 KiB).
LEAF = 1 << 16


# Bit generators whose ``advance(k)`` skips exactly k 64-bit words (Philox's skips blocks of
# four; MT19937 and SFC64 have none).
WORDWISE = (np.random.PCG64, np.random.PCG64DXSM)


@functools.cache
def _pairwise_is_numpys() -> bool:
    """Whether this numpy sums a large float64 array as one pairwise tree (numpy 2.3 and
    later; earlier versions add the pairwise sums of 8,192-value blocks one after another),
    checked once on values that span several leaves."""
    x = np.random.default_rng(0).gamma(0.5, 1.0, 3 * LEAF + 1001)
    pos = [0]

    def draw(m: int) -> np.ndarray:
        pos[0] += m
        return x[pos[0] - m:pos[0]]

    return bool(pairwise_sum(draw, len(x)) == np.add.reduce(x))


def can_stream(rng: Any) -> bool:
    """Whether draws from ``rng`` can be made in pieces to the values of one draw: a
    Generator over PCG64 (default_rng's) or PCG64DXSM, with a numpy that sums as
    ``pairwise_sum`` does. Otherwise hours are drawn whole, as before."""
    return isinstance(getattr(rng, "bit_generator", None), WORDWISE) and _pairwise_is_numpys()


def advance(rng: np.random.Generator, words: int) -> None:
    """Move ``rng`` past ``words`` 64-bit words, as drawing that many doubles would: PCG64's
    ``advance`` also drops a buffered 32-bit half, which drawing doubles keeps."""
    bit = rng.bit_generator
    kept = bit.state
    bit.advance(words)
    if kept.get("has_uint32"):
        state = bit.state
        state["has_uint32"], state["uinteger"] = kept["has_uint32"], kept["uinteger"]
        bit.state = state


def copy_at(rng: np.random.Generator, ahead: int = 0) -> np.random.Generator:
    """A Generator at ``rng``'s state, ``ahead`` 64-bit words further (``rng`` is untouched)."""
    bit = type(rng.bit_generator)()
    bit.state = rng.bit_generator.state
    if ahead:
        bit.advance(ahead)
    return np.random.Generator(bit)


def pairwise_sum(draw: Callable[[int], np.ndarray], n: int, leaf: int = LEAF) -> np.float64:
    """``np.add.reduce(x)`` of the ``n`` float64 values that ``draw(m)`` gives ``m`` at a time
    in order, holding at most ``leaf`` of them (the same float: numpy's pairwise tree, whose
    blocks of up to 128 values are summed whole: ``leaf`` is at least that)."""
    if n <= max(leaf, 128):
        return np.add.reduce(draw(n))
    half = n // 2
    half -= half % 8
    return pairwise_sum(draw, half, leaf) + pairwise_sum(draw, n - half, leaf)


class ConditionedRenewal:
    """``offset + cumsum(g)[:n] / g.sum() * span`` for ``g = rng.gamma(shape, 1.0, n + 1)``:
    ``n`` arrival times spread over ``span`` seconds, in pieces.

    Built where the whole draw would be made, it advances ``rng`` exactly as that draw would
    (its first pass, which sums the gaps); ``pieces`` then gives the times from a copy of the
    state before the pass, the running sum carried from piece to piece (numpy's cumulative
    sum adds left to right, so the carried sum is the same float).
    """

    __slots__ = ("_start", "n", "offset", "shape", "span", "total")

    def __init__(self, rng: np.random.Generator, shape: float, n: int, offset: float,
                 span: float) -> None:
        self._start = copy_at(rng)
        self.shape, self.n, self.offset, self.span = shape, n, offset, span
        self.total = pairwise_sum(lambda m: rng.gamma(shape, 1.0, m), n + 1)

    def __len__(self) -> int:
        return self.n

    def pieces(self, size: int) -> Iterator[np.ndarray]:
        """The ``n`` times, at most ``size`` at a time, in order (each call from the start)."""
        rng, carry, done = copy_at(self._start), None, 0
        while done < self.n:
            m = min(size, self.n - done)
            gaps = rng.gamma(self.shape, 1.0, m)
            cum = np.cumsum(gaps if carry is None else np.concatenate(((carry,), gaps)))
            if carry is not None:
                cum = cum[1:]
            carry = cum[-1]
            done += m
            yield self.offset + cum / self.total * self.span

# cython: boundscheck=False, wraparound=False
"""Loops over a decode run's iterations, typed to C by the compiled build (fast_runs.pxd).

A long decode-only run (more than ``run_pricing.SHORT_RUN`` iterations) is priced by numpy:
seven array operations of about a microsecond each for runs of a few hundred iterations
(docs/PERFORMANCE.md: 5-9% of a 1,000-replica run's CPU time); a short one by a list
comprehension, and its end times by ``itertools.accumulate``, on Python floats. When this
module is compiled, fast_runs.pxd types these loops to C doubles and the same values come
from one pass: the same IEEE-754 operations on the same operands in the same order as the
expressions they replace (an integer context is exact in a double below 2**53; setup.py
turns off the compiler's contraction of a multiply and an add into one fused operation), so
the results are bit for bit the same (tests/test_fast_runs.py; tests/test_compiled.py on
whole runs).

Interpreted, these loops are no faster than what they replace (numpy's is slower), so
run_pricing.py and engine/replica.py call them only when this module runs compiled
(``COMPILED``) and keep their own expressions otherwise.
"""

from __future__ import annotations

import numpy as np

# An extension module's __file__ is its shared library (simkv/_accel.py picks which runs).
COMPILED = not __file__.endswith(".py")
_F64 = np.dtype(np.float64)


def roofline_run(base: float, layers: float, ac: float, am: float, q: float, start: int,
                 step: int, k: int) -> np.ndarray:
    """``base + layers * np.maximum(ctx * ac, ctx * am + q)`` over the context
    ``ctx = start, start + step, ...`` (k iterations): run_pricing's constant-efficiency
    decode run, as numpy computes it."""
    out = np.empty(k, dtype=np.float64)
    buf = out  # a C view of ``out`` when compiled
    c = start
    for i in range(k):
        x = c * ac
        y = c * am + q
        # np.maximum(x, y) is x unless y is larger (no NaN here)
        buf[i] = base + layers * (y if y > x else x)
        c += step
    return out



def roofline_short(base: float, layers: float, ac: float, am: float, q: float, start: int,
                   step: int, k: int) -> list[float]:
    """The same values as ``roofline_run``, as a list (a short run: run_pricing's list
    comprehension over ``range(start, start + step * k, step)``)."""
    out = [0.0] * k
    c = start
    for i in range(k):
        x = c * ac
        y = c * am + q
        out[i] = base + layers * (y if y > x else x)
        c += step
    return out


def accumulate_from(now: float, durations: list[float]) -> list[float]:
    """``list(itertools.accumulate(durations, initial=now))[1:]``: a run's iteration end
    times, each the previous end plus the iteration's duration."""
    n = len(durations)
    out = [0.0] * n
    t = now
    for i in range(n):
        t = t + durations[i]
        out[i] = t
    return out


def ends_from(now: float, durations: np.ndarray) -> np.ndarray:
    """``now + np.cumsum(durations)``: a long run's iteration end times (numpy's cumsum adds
    one element after another, as this loop does), in one pass and one array instead of
    numpy's two, for a writeable float64 array; numpy's expression for any other."""
    if durations.dtype != _F64 or not durations.flags.writeable:
        # (a C view takes float64 only, and a read-only array only with a const type)
        return now + durations.cumsum()
    n = durations.shape[0]
    out = np.empty(n, dtype=np.float64)
    buf = out  # C views of both when compiled
    src = durations
    c = 0.0
    for i in range(n):
        c = c + src[i]
        buf[i] = now + c
    return out

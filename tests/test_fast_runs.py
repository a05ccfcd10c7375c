"""The C loop of a long decode run (simkv/perf/fast_runs.py) gives numpy's values, bit for bit.

The compiled build prices long decode runs with fast_runs.roofline_run instead of numpy; a
result that differed in its last bit would change every later event time of the run, so
these tests compare the bits, not approximate values. They run whichever build is installed
(the C loop where it is compiled, its Python definition otherwise: both must agree with
numpy), and whole runs are compared across the two paths by tests/test_compiled.py.
"""

from __future__ import annotations

from itertools import accumulate

import numpy as np
import pytest

from simkv.entities.hardware import load_profile
from simkv.entities.model import ModelSpec
from simkv.perf import fast_runs, run_pricing
from simkv.perf.roofline import CostModel


def _numpy_run(base: float, layers: int, ac: float, am: float, q: float, ctx: range) -> np.ndarray:
    x = np.arange(ctx.start, ctx.stop, ctx.step, dtype=np.float64)
    return base + layers * np.maximum(x * ac, x * am + q)


def _draw(rng: np.random.Generator, k_max: int, k_min: int
          ) -> tuple[float, int, float, float, float, int, int, int, range]:
    """Random prices of a run (base, layers, per-token compute and memory, per-step bytes) and
    its context (start, step, k iterations)."""
    base = float(rng.uniform(0.0, 0.05))
    layers = int(rng.integers(1, 128))
    ac, am = float(rng.uniform(1e-12, 1e-8)), float(rng.uniform(1e-12, 1e-8))
    q = float(rng.uniform(0.0, 1e-5))
    start, step = int(rng.integers(1, 2_000_000)), int(rng.integers(1, 512))
    k = int(rng.integers(k_min, k_max))
    return base, layers, ac, am, q, start, step, k, range(start, start + step * k, step)


def test_roofline_run_equals_numpy_bit_for_bit() -> None:
    rng = np.random.default_rng(7)
    for _ in range(200):
        base, layers, ac, am, q, start, step, k, ctx = _draw(rng, 600, 1)
        got = fast_runs.roofline_run(base, layers, ac, am, q, start, step, k)
        want = _numpy_run(base, layers, ac, am, q, ctx)
        assert got.dtype == np.float64
        assert got.tobytes() == want.tobytes()


def test_roofline_run_takes_the_larger_term_as_numpy_does() -> None:
    # Memory-bound (second term larger) at short contexts, compute-bound at long ones, and a
    # context where the two terms are equal.
    ac, am, q = 2.0, 1.0, 100.0
    got = fast_runs.roofline_run(0.5, 3, ac, am, q, 50, 25, 8)
    assert got.tobytes() == _numpy_run(0.5, 3, ac, am, q, range(50, 250, 25)).tobytes()
    assert got[2] == 0.5 + 3 * 200.0  # context 100: 100 * 2 == 100 * 1 + 100


def test_short_runs_and_end_times_equal_the_python_expressions() -> None:
    rng = np.random.default_rng(11)
    for _ in range(300):
        base, layers, ac, am, q, start, step, k, ctx = _draw(rng, 33, 0)
        got = fast_runs.roofline_short(base, layers, ac, am, q, start, step, k)
        want = [base + layers * (y if (y := c * am + q) > (x := c * ac) else x) for c in ctx]
        assert [v.hex() for v in got] == [v.hex() for v in want]
        now = float(rng.uniform(0.0, 1e6))
        ends = fast_runs.accumulate_from(now, got)
        assert [v.hex() for v in ends] == [v.hex() for v in list(accumulate(got, initial=now))[1:]]


def test_a_long_runs_end_times_equal_numpys() -> None:
    """fast_runs.ends_from is replica.py's ``now + durations.cumsum()``, bit for bit, on
    priced runs and on arrays with a non-unit stride."""
    rng = np.random.default_rng(17)
    for _ in range(200):
        base, layers, ac, am, q, start, step, k, _ = _draw(rng, 2000, 1)
        d = fast_runs.roofline_run(base, layers, ac, am, q, start, step, k)
        now = float(rng.uniform(0.0, 1e7))
        assert fast_runs.ends_from(now, d).tobytes() == (now + d.cumsum()).tobytes()
        every_other = d[::2]
        assert fast_runs.ends_from(now, every_other).tobytes() == (now + every_other.cumsum()).tobytes()
    frozen = np.broadcast_to(np.array([0.1, 0.2, 0.3]), (3,))  # read-only, as numpy allows
    assert fast_runs.ends_from(1.0, frozen).tobytes() == (1.0 + frozen.cumsum()).tobytes()
    single = np.array([0.1, 0.2, 0.3], dtype=np.float32)  # another dtype: numpy's promotion
    assert fast_runs.ends_from(1.0, single).tobytes() == (1.0 + single.cumsum()).tobytes()


@pytest.mark.parametrize("k", [1, 8, 32])
def test_short_decode_runs_price_the_same_with_and_without_the_loop(
        k: int, monkeypatch: pytest.MonkeyPatch) -> None:
    cost = CostModel(ModelSpec(), load_profile("h100_sxm_80gb"), 1)
    ctx = range(9_000, 9_000 + 11 * k, 11)
    monkeypatch.setattr(run_pricing, "_C_RUNS", True)
    looped = cost.decode_run_times(11, ctx, 11)
    monkeypatch.setattr(run_pricing, "_C_RUNS", False)
    listed = cost.decode_run_times(11, ctx, 11)
    assert isinstance(looped, list)
    assert [v.hex() for v in looped] == [v.hex() for v in listed]  # type: ignore[union-attr]


@pytest.mark.parametrize("k", [33, 200, 4096])
def test_long_decode_runs_price_the_same_with_and_without_the_loop(
        k: int, monkeypatch: pytest.MonkeyPatch) -> None:
    cost = CostModel(ModelSpec(), load_profile("h100_sxm_80gb"), 1)
    assert cost._const_dattn
    ctx = range(40_000, 40_000 + 37 * k, 37)
    calls: list[int] = []

    def counted(*args: float) -> np.ndarray:
        calls.append(1)
        return fast_runs.roofline_run(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(run_pricing, "fast_runs", type("M", (), {"roofline_run": counted}))
    monkeypatch.setattr(run_pricing, "_C_RUNS", True)
    looped = cost.decode_run_times(37, ctx, 37)
    assert calls == [1]  # the loop priced it
    monkeypatch.setattr(run_pricing, "_C_RUNS", False)
    vectorised = cost.decode_run_times(37, ctx, 37)
    assert calls == [1]  # numpy did
    assert isinstance(looped, np.ndarray)
    assert isinstance(vectorised, np.ndarray)
    assert looped.tobytes() == vectorised.tobytes()


def test_need_over_counts_each_ticks_full_blocks() -> None:
    """DecodeBatch.need_over (its window loop typed to C integers when compiled) against
    the members' blocks counted tick by tick."""
    from simkv.engine.decode_batch import DecodeBatch
    from simkv.entities.request import Request

    rng = np.random.default_rng(5)
    for bs in (1, 4, 16):
        dec = DecodeBatch(bs)
        reqs = []
        for i in range(40):
            r = Request(i, 0.0, int(rng.integers(1, 300)), 10_000)
            r.computed, r.generated = r.prompt_tokens, 1
            dec.join(r)
            reqs.append(r)
        dec.advance(int(rng.integers(0, 50)))
        for k in range(3 * bs + 2):
            for skip in (0, 1):
                t = dec.ticks + skip
                # a member needs a new block at a tick when its blocks are exactly full
                want = sum(1 for j in range(k) for r in reqs if (r.base + t + j) % bs == 0)
                assert dec.need_over(k, skip) == want

"""The GPU replay script's CPU-side parts: its request streams and its step profiler, the
latter against stand-ins for transformers' classes (CI has neither a GPU nor transformers)."""

from __future__ import annotations

import sys
import types
from typing import ClassVar

import numpy as np
import pytest

from simkv.validation.hf_replay import OUTPUT_KNOTS, PROMPT_KNOTS, StepProfiler, stream


def test_streams_are_seeded_and_follow_the_published_percentiles() -> None:
    a, b = stream(200, 2.0, seed=7), stream(200, 2.0, seed=7)
    assert a == b
    assert a != stream(200, 2.0, seed=8)
    big = stream(20000, 5.0, seed=1)
    t, p, o = (np.array(x) for x in zip(*big, strict=True))
    assert (np.diff(t) > 0).all()
    assert abs(len(t) / t[-1] - 5.0) < 0.2  # Poisson at the asked rate
    assert p.min() >= 1
    assert p.max() <= PROMPT_KNOTS[-1][1]
    assert o.max() <= OUTPUT_KNOTS[-1][1]
    # The Azure 2023 conversation medians: 1,020 prompt and 128 (capped) output tokens.
    assert np.median(p) == pytest.approx(1020, rel=0.03)
    assert np.median(o) == pytest.approx(128, rel=0.03)
    assert np.percentile(p, 25) == pytest.approx(396, rel=0.05)


@pytest.fixture
def fake_transformers(monkeypatch: pytest.MonkeyPatch) -> dict[str, type]:
    class FIFOScheduler:
        batches: ClassVar[list] = []

        def schedule_batch(self, budget: int, cache: int):
            return self.batches.pop(0)

    class ContinuousBatchProcessor:
        def _generation_step(self, model: object) -> None:
            pass

        def update_batch(self) -> None:
            pass

    class ContinuousBatchingIOs:
        def set_graph(self, graph: object) -> None:
            pass

    base = "transformers.generation.continuous_batching"
    classes = {"continuous_api": ContinuousBatchProcessor, "input_outputs": ContinuousBatchingIOs,
               "scheduler": FIFOScheduler}
    for name in ("transformers", "transformers.generation", base):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    for mod, cls in classes.items():
        m = types.ModuleType(f"{base}.{mod}")
        setattr(m, cls.__name__, cls)
        monkeypatch.setitem(sys.modules, f"{base}.{mod}", m)
    return {c.__name__: c for c in classes.values()}


def test_step_profiler_records_each_step_and_marks_graph_captures(
        fake_transformers: dict[str, type]) -> None:
    import time

    sched_cls = fake_transformers["FIFOScheduler"]
    sched_cls.batches = [(["a", "b"], False, 700, 3000), ([], False, 0, 0),
                         (["a", "b", "c"], False, 3, 5000)]
    t0 = time.perf_counter()
    prof = StepProfiler()
    sched, bp = sched_cls(), fake_transformers["ContinuousBatchProcessor"]()
    io = fake_transformers["ContinuousBatchingIOs"]()
    # Step 1: a prefill chunk with one decode, its graph recorded on the way.
    sched.schedule_batch(2048, 10**6)
    bp._generation_step(None)
    io.set_graph(object())
    bp.update_batch()
    # Nothing to schedule: no step.
    sched.schedule_batch(2048, 10**6)
    # Step 2: three decodes.
    sched.schedule_batch(2048, 10**6)
    bp._generation_step(None)
    bp.update_batch()
    rows = prof.take(t0)
    assert [(r["tokens"], r["sequences"], r["kv_read"], r["captured"]) for r in rows] == [
        (700, 2, 3000, 1), (3, 3, 5000, 0)]
    for r in rows:
        assert r["start_s"] > 0
        assert r["prepare_s"] >= 0
        assert r["forward_s"] >= r["step_call_s"] >= 0
    assert rows[1]["start_s"] > rows[0]["start_s"]
    assert prof.take(t0) == []  # taken rows are gone

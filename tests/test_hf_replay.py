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
    # Stand-ins without a cache or request states: the scheduler columns stay empty.
    assert [(r["free_blocks"], r["prefill"], r["evicted"]) for r in rows] == [(None, "", "")] * 2
    for r in rows:
        assert r["start_s"] > 0
        assert r["prepare_s"] >= 0
        assert r["forward_s"] >= r["step_call_s"] >= 0
    assert rows[1]["start_s"] > rows[0]["start_s"]
    assert prof.take(t0) == []  # taken rows are gone


# --- the campaign script (hf_campaign): streams, plans, graph keys ---------------------------

def _azure(tmp_path):  # type: ignore[no-untyped-def]
    rows = "TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(
        f"2023-11-16 18:00:{i:02d}.0,{100 * (i + 1)},{i + 2}\n" for i in range(20))
    for name in ("AzureLLMInferenceTrace_conv.csv", "AzureLLMInferenceTrace_code.csv"):
        (tmp_path / name).write_text(rows)
    return tmp_path


def test_campaign_streams_draw_real_rows_and_are_seeded(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from simkv.validation import hf_campaign as C  # noqa: N812

    data = _azure(tmp_path)
    a = C.stream("conv", 500, 4.0, 11, data, max_prompt=1500, max_output=10)
    assert a == C.stream("conv", 500, 4.0, 11, data, max_prompt=1500, max_output=10)
    t, p, o = (np.array(x) for x in zip(*a, strict=True))
    assert set(p) <= {100 * (i + 1) for i in range(15)} | {1500}  # rows of the file, capped
    assert p.max() == 1500
    assert o.max() == 10
    assert o.min() >= 2
    assert abs(len(t) / t[-1] - 4.0) < 0.5
    b = C.stream("burst", 4000, 4.0, 3, None)  # BurstGPT-shaped: Gamma(0.5) gaps, CV ~1.4
    gaps = np.diff([x[0] for x in b])
    assert gaps.std() / gaps.mean() == pytest.approx(2 ** 0.5, rel=0.1)
    with pytest.raises(ValueError, match="--data"):
        C.stream("code", 5, 1.0, 0, None)


def test_campaign_plan_tags_and_sizes() -> None:
    from simkv.validation import hf_campaign as C  # noqa: N812

    assert C.parse_plan("conv:0.3,2;code:1.5") == [("conv", 0.3), ("conv", 2.0), ("code", 1.5)]
    with pytest.raises(ValueError, match="WORKLOAD"):
        C.parse_plan("chat:1")
    assert C.tag("conv", 0.3, "a") == "conv-0.3-a"
    assert C.stream_size(0.5, 20, 24, 48) == 24
    assert C.stream_size(10, 20, 24, 48) == 48


def test_precapture_plans_hit_distinct_transformers_graph_keys() -> None:
    from simkv.validation.hf_campaign import capture_plans

    plans = capture_plans(2048, 1024 * 256)
    keys = [p.key(64, 16384, 2048, 1024 * 256) for p in plans]
    assert len(keys) == len(set(keys)) == 128
    # Decode steps of up to 64 sequences at 1-4 KV intervals of each longest-sequence bucket.
    assert (64, 65536, 1024) in keys
    assert (64, 16384, 16384) in keys
    # One prompt of 1,000 tokens on nothing cached: query padded to 1,024, KV to one interval,
    # longest sequence 1,024.
    assert (1024, 16384, 1024) in keys
    assert all(q % 64 == 0 and kv % 16384 == 0 and s & (s - 1) == 0 for q, kv, s in keys)


def test_sustained_plans_variants_and_tags() -> None:
    from simkv.validation import hf_campaign as C  # noqa: N812

    assert C.parse_plan_reps("burst:2*2,3,1.5") == [("burst", 2.0, 2), ("burst", 3.0, None),
                                                     ("burst", 1.5, None)]
    assert C.parse_plan("burst:2*2,3") == [("burst", 2.0), ("burst", 3.0)]
    assert C.tag("burst", 2.0, "a", 400) == "burst-sustained-2x-400-a"
    assert C.tag("burst", 2.0, "b", 48) == "burst-transient-2x-48-b"
    assert C.tag("conv", 0.8, "a", 400) == "conv-light-0.8x-400-a"
    got = C.parse_variants("tb512:max_batch_tokens=512;kv64:num_blocks=64,requests=200;"
                           "pf:scheduler_type=prefill_first")
    assert got == [("tb512", {"max_batch_tokens": 512}, {}),
                   ("kv64", {"num_blocks": 64}, {"requests": 200}),
                   ("pf", {"scheduler_type": "prefill_first"}, {})]
    with pytest.raises(ValueError, match="KEY=VALUE"):
        C.parse_variants("tb512:max_batch_tokens")


def test_sustained_capacity_reads_the_middle_of_a_closed_burst() -> None:
    from simkv.validation.hf_campaign import MIDDLE_CAP, sustained_capacity

    # 100 completions: a slow start, 1 per 0.1 s in the middle, a long tail.
    times = [2.0 + 0.02 * i for i in range(25)] + [2.5 + 0.1 * i for i in range(50)] + \
        [7.5 + 1.0 * i for i in range(25)]
    rows = [{"status": "ok", "completion_s": t} for t in times] + [{"status": "missing"}]
    mid, whole = sustained_capacity(rows)
    assert whole == pytest.approx(100 / times[-1])
    assert mid == pytest.approx(min(50 / (times[75] - times[25]), MIDDLE_CAP * whole))
    assert mid > whole
    assert sustained_capacity([]) == (0.0, 0.0)


def test_replay_merges_token_times_across_a_soft_reset() -> None:
    """A soft reset gives the engine's request a new state whose token times start empty; the
    replay keeps the times from before it, so TTFT and every token's time stay measured."""
    import time

    from simkv.validation.hf_replay import replay

    class Out:
        def __init__(self, rid: str, stamps: list[float]) -> None:
            self.request_id, self.timestamps = rid, stamps
            self.generated_tokens = [0] * 5
            self.created_time, self.status = stamps[0], "FINISHED"

    class Manager:
        def __init__(self) -> None:
            self.results: list[Out] = []

        def is_running(self) -> bool:
            return True

        def add_request(self, ids: list[int], request_id: str, max_new_tokens: int,
                        record_timestamps: bool) -> None:
            now = time.perf_counter()
            # r0 was soft reset after 2 tokens: its final state holds only the last 3 times
            self.results.append(Out(request_id, [now + 0.03, now + 0.04, now + 0.05]))

        def get_result(self, timeout: float) -> Out | None:
            return self.results.pop(0) if self.results else None

    class Profiler:
        t_evict = 0.0

        def take(self, t0: float) -> list:
            return []

        def take_events(self) -> tuple[dict, list]:
            if not self.t_evict:
                self.t_evict = time.perf_counter()
                return {}, []
            return ({"r0": [(0, self.t_evict), (4, self.t_evict + 0.02)]},
                    [{"t": self.t_evict + 0.02, "step": 4, "rid": "r0", "kind": "s",
                      "generated_before": 2, "position_offset": 12,
                      # token times just after the replay's start (its t0 is 0.5 s after this)
                      "stamps": [self.t_evict + 0.505, self.t_evict + 0.51]}])

    evictions: list = []
    meta: dict = {}
    rows = replay(Manager(), [(0.0, 10, 5)], timeout=5, profiler=Profiler(), meta=meta,
                  evictions=evictions, steps=[])
    (r,) = rows
    assert r["n_stamps"] == 5
    stamps = [float(x) for x in r["stamps_ms"].split()]
    assert stamps == sorted(stamps)
    assert r["first_token_s"] == pytest.approx(stamps[0] / 1e3, abs=1e-4)
    assert 0 < r["first_token_s"] < float(stamps[2]) / 1e3
    assert r["queued_step"] == 0
    assert r["requeued_steps"] == "4"
    assert r["evictions"].endswith(":s:2")
    assert [e["rid"] for e in evictions] == ["r0"]
    assert "stamps" not in evictions[0]
    assert meta["timed_out"] is False
    assert "t0_unix" in meta


def test_a_campaign_names_the_trace_files_it_lacks_before_the_model_loads(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Only what the warm-up and the plans read: BurstGPT-shaped streams need no file, the
    warm-up needs the conversation file, a code stream the code file."""
    from simkv.validation.hf_streams import AZURE_FILES, missing_trace_files

    assert missing_trace_files(tmp_path, ("burst:2*2",)) == [AZURE_FILES["conv"]]
    (tmp_path / AZURE_FILES["conv"]).write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n")
    assert missing_trace_files(tmp_path, ("burst:2*2,3", "")) == []
    assert missing_trace_files(tmp_path, ("burst:2", "code:1")) == [AZURE_FILES["code"]]

"""Nothing lost, nothing counted twice: every request a workload makes is recorded exactly once.

Open loop: the table holds exactly the requests the generator said it would make. Closed loop
(agents, conversations): the calls recorded are exactly the calls the generator makes for
the seed, which ``materialise`` lists without any engine (each session has its own random
stream, so the calls do not depend on timing). Everywhere: finished + rejected = requests in,
and summary.json agrees with the table.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

import simkv
from simkv.registry import build
from simkv.trace_cli import main as trace_cli
from tests.conftest import small


def _check_totals(res: simkv.SimResult, expected: int) -> pd.DataFrame:
    df = res.requests
    req = res.summary["requests"]
    assert len(df) == expected
    assert sorted(df["request_id"]) == list(range(expected))
    assert req["total"] == expected
    assert req["finished"] + req["rejected"] == expected
    assert req["finished"] == int((df["status"] == "finished").sum())
    assert sum(req["rejected_by_reason"].values()) == req["rejected"]
    return df


@pytest.mark.parametrize("overrides", [
    ["workload=poisson", "workload.num_requests=150"],
    ["workload=burstgpt", "workload.num_requests=150"],  # some rows fail in the trace: rejected
    ["workload=shared_prefix", "workload.num_requests=80", "kv.prefix_block_tokens=512"],
    ["workload=poisson", "workload.num_requests=150", "kv.num_gpu_blocks_override=40"],  # rejections
])
def test_open_loop_requests_are_all_recorded_once(tmp_path, overrides: list[str]) -> None:
    cfg = small(overrides)
    expected = build(cfg.workload).expected_requests()
    df = _check_totals(simkv.simulate(cfg, tmp_path / "run"), expected)
    if "kv.num_gpu_blocks_override=40" in overrides:
        assert (df["status"] == "rejected").any()


@pytest.mark.parametrize("overrides", [
    ["workload=agent", "workload.num_programs=6", "workload.program_rate=2",
     "workload.first_prompt_median=1500", "workload.calls_max=12", "workload.tool_weibull_scale=0.5"],
    ["workload=conversation", "workload.num_conversations=25", "workload.think_mu=0"],
    ["workload=agent", "workload.num_programs=5", "workload.program_rate=2",
     "workload.first_prompt_median=1500", "workload.calls_max=12", "kv.num_gpu_blocks_override=150"],
])
def test_every_generated_call_is_recorded_exactly_once(tmp_path, overrides: list[str]) -> None:
    cfg = small(["cluster.replicas=2", "router=session_affinity", *overrides])
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed).spawn(2)[0])
    calls = build(cfg.workload).materialise(rng)
    made = Counter(zip(calls["session"].tolist(), calls["turn"].tolist(),
                       calls["prompt_tokens"].tolist(), calls["output_tokens"].tolist(), strict=True))
    res = simkv.simulate(cfg, tmp_path / "run")
    df = _check_totals(res, sum(made.values()))
    recorded = Counter(zip(df["session"].tolist(), df["turn"].tolist(), df["prompt_tokens"].tolist(),
                           df["output_tokens"].tolist(), strict=True))
    assert recorded == made
    assert max(made.values()) == 1  # (session, turn) names one call
    assert res.summary["sessions"]["count"] == len(set(calls["session"].tolist()))


def test_a_closed_loop_replay_records_every_call_of_the_trace(tmp_path) -> None:
    out = tmp_path / "chat.parquet"
    assert trace_cli(["generate", "sharegpt", "num_conversations=20", "--out", str(out)]) == 0
    trace = pd.read_parquet(out)
    res = simkv.simulate(small(["workload=trace", f"workload.path={out}", "workload.closed_loop=true",
                                "router=session_affinity", "cluster.replicas=2"]), tmp_path / "run")
    df = _check_totals(res, len(trace))
    key = ["session", "turn", "prompt_tokens", "output_tokens"]
    pd.testing.assert_frame_equal(df[key].sort_values(key).reset_index(drop=True),
                                  trace[key].sort_values(key).reset_index(drop=True),
                                  check_dtype=False)


@pytest.mark.slow
def test_a_generated_trace_replays_as_the_run_it_came_from(tmp_path) -> None:
    # The generator live, and its trace replayed closed-loop: the same calls share the same
    # prefixes (the trace carries the hashes), so the cache hits and latencies are the same.
    base = ["router=session_affinity", "cluster.replicas=2"]
    gen = ["workload=sharegpt", "workload.num_conversations=40", "workload.conversation_rate=2"]
    live = simkv.simulate(small([*base, *gen]), tmp_path / "live")
    out = tmp_path / "chat.parquet"
    assert trace_cli(["generate", "sharegpt", "num_conversations=40", "conversation_rate=2",
                      "--out", str(out)]) == 0
    replay = simkv.simulate(small([*base, "workload=trace", f"workload.path={out}",
                                   "workload.closed_loop=true"]), tmp_path / "replay")
    a, b = live.summary, replay.summary
    assert a["prefix_cache"]["hit_rate_all"] > 0.5
    assert b["prefix_cache"]["cached_tokens_all"] == a["prefix_cache"]["cached_tokens_all"]
    assert b["requests"] == a["requests"]
    assert b["ttft_s"]["p50"] == pytest.approx(a["ttft_s"]["p50"], rel=1e-9)

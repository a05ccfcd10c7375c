"""Workloads: real-format readers, generators against their sources, closed loops, CLI."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pandas as pd
import pytest

import simkv
from simkv.trace_cli import main as trace_cli
from simkv.workload import (
    AgentWorkloadConfig,
    BurstGPTWorkload,
    BurstGPTWorkloadConfig,
    SharedPrefixWorkload,
    SharedPrefixWorkloadConfig,
    TraceWorkload,
    TraceWorkloadConfig,
)
from simkv.workload.readers import TraceError, read
from simkv.workload.stats import TraceSummary, ks_distance
from tests.conftest import SHARED_DATA, small

needs_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not present")


def stream(path, fmt: str, **kw) -> TraceSummary:
    return TraceSummary(read(path, fmt, **kw))


# --- real files ---------------------------------------------------------------------------
@needs_data
def test_azure_reader_matches_published_figures() -> None:
    s = stream(SHARED_DATA / "azure_llm_2023" / "AzureLLMInferenceTrace_code.csv", "azure")
    # azure_llm_2023 STATS (section 4): 8,819 requests over 3,435.9 s, means 2,047.8 / 27.9.
    assert s.arrival.size == 8819
    assert s.arrival[-1] - s.arrival[0] == pytest.approx(3435.9, abs=0.1)
    assert s.prompt.mean() == pytest.approx(2047.8, abs=0.1)
    assert s.output.mean() == pytest.approx(27.9, abs=0.1)


@needs_data
def test_mooncake_reader_keeps_prefix_hashes() -> None:
    batches = list(read(SHARED_DATA / "conversations" / "mooncake_fast25_conversation_trace.jsonl",
                        "mooncake"))
    s = TraceSummary(batches)
    assert s.arrival.size == 12031
    assert s.prompt.mean() == pytest.approx(12035, abs=1)
    assert s.output.mean() == pytest.approx(342.6, abs=0.1)
    first = batches[0].prefix[0]
    assert first[0] == 0
    assert len(first) == -(-6758 // 512)


@needs_data
def test_burstgpt_reader_on_the_real_head_sample() -> None:
    batches = list(read(SHARED_DATA / "burstgpt" / "sample" / "BurstGPT_1_first33rows.csv", "burstgpt"))
    s = TraceSummary(batches)
    assert s.arrival.size == 33
    assert s.models["GPT-4"] == 8  # STATS.md: 8 GPT-4 rows, 1 failed row
    assert s.failed == 1
    assert s.logs["Conversation log"] == 33


@needs_data
def test_agent_reader_rebuilds_programs_and_tool_gaps() -> None:
    s = stream(SHARED_DATA / "agentic" / "exgentic_swebench_claude_code_shard12.jsonl", "agent")
    d = s.to_dict()
    # AGENTIC_STATS: 46 programs, 2,294 calls, 49.9 calls per program.
    assert d["sessions"]["count"] == 46
    assert d["requests"] == 2294
    assert d["sessions"]["calls_per_session"]["mean"] == pytest.approx(49.87, abs=0.01)
    assert (s.think >= 0).all()


@needs_data
def test_agent_trace_replays_closed_loop(tmp_path) -> None:
    path = SHARED_DATA / "agentic" / "exgentic_swebench_claude_code_shard12.jsonl"
    cfg = small(["workload=trace", f"workload.path={path}", "workload.format=agent",
                 "workload.closed_loop=true", "workload.failed=drop", "cluster.replicas=4"])
    df = simkv.simulate(cfg, tmp_path).requests
    done = df[df["status"] == "finished"].sort_values(["session", "turn"])
    assert done["session"].nunique() == 46
    for _, prog in done.groupby("session"):
        gaps = prog["arrival_s"].to_numpy()[1:] - prog["completion_s"].to_numpy()[:-1]
        assert (gaps >= -1e-9).all(), "a call arrived before its predecessor completed"


# --- malformed real formats ------------------------------------------------------------------
BURST_HEADER = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"


@pytest.mark.parametrize(
    ("fmt", "text", "message"),
    [
        ("burstgpt", "Timestamp,Model,Request tokens\n5,ChatGPT,10\n",
         r"missing column\(s\) \['Response tokens', 'Log Type'\] for format 'burstgpt'"),
        ("burstgpt", BURST_HEADER + "5,ChatGPT,472,18,490,API log\n9,ChatGPT,many,18,490,API log\n",
         r"row 2, column 'Request tokens': expected a number, got 'many'"),
        ("burstgpt", BURST_HEADER + "5,ChatGPT,472,-3,490,API log\n",
         r"row 1, column 'Response tokens': expected a whole number >= 0, got -3"),
        ("burstgpt", BURST_HEADER + "50,ChatGPT,472,18,490,API log\n45,GPT-4,1,2,3,API log\n",
         r"row 2, column 'Timestamp': expected non-decreasing times, got 45 after 50"),
        ("azure", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.97,10,5\nyesterday,10,5\n",
         r"row 2, column 'TIMESTAMP': expected a date and time"),
        ("mooncake", '{"timestamp": 0, "input_length": 10, "output_length": 5}\n{"timestamp": 3, "input_len',
         r"line 2: not valid JSON"),
        ("mooncake", '{"timestamp": 0, "input_length": 0, "output_length": 5}\n',
         r"row 1, column 'input_length': expected a whole number >= 1, got 0"),
    ],
)
def test_malformed_real_formats(tmp_path, fmt: str, text: str, message: str) -> None:
    path = tmp_path / ("bad.jsonl" if fmt == "mooncake" else "bad.csv")
    path.write_text(text)
    with pytest.raises(TraceError, match=message):
        list(read(path, fmt))


def test_unknown_format_lists_choices(tmp_path) -> None:
    (tmp_path / "x.csv").write_text("a\n1\n")
    with pytest.raises(TraceError, match="valid choices: native, burstgpt, azure, mooncake, agent"):
        list(read(tmp_path / "x.csv", "splitwise"))


# --- filters and scaling ---------------------------------------------------------------------
def _burst_file(tmp_path, n: int = 400) -> str:
    rng = np.random.default_rng(3)
    rows = [BURST_HEADER.strip()]
    for i in range(n):
        model = "GPT-4" if i % 4 == 0 else "ChatGPT"
        log = "API log" if i % 3 else "Conversation log"
        resp = 0 if i % 10 == 0 else int(rng.integers(1, 300))
        rows.append(f"{1000 + i * 2},{model},{int(rng.integers(1, 900))},{resp},0,{log}")
    path = tmp_path / "burst.csv"
    path.write_text("\n".join(rows) + "\n")
    return str(path)


def _arrivals(cfg: TraceWorkloadConfig, seed: int = 0) -> list:
    return list(TraceWorkload(cfg).arrivals(np.random.default_rng(seed)))


def test_filters_window_failed_and_rate(tmp_path) -> None:
    path = _burst_file(tmp_path)
    gpt4 = _arrivals(TraceWorkloadConfig(path=path, format="burstgpt", models=["GPT-4"]))
    assert set(gpt4[0].model) == {"GPT-4"}
    assert len(gpt4[0]) == 100
    api = _arrivals(TraceWorkloadConfig(path=path, format="burstgpt", log_types=["API log"]))
    assert set(api[0].log_type) == {"API log"}
    window = _arrivals(TraceWorkloadConfig(path=path, format="burstgpt", start_s=1100, end_s=1200))
    assert len(window[0]) == 50
    assert window[0].arrival_s[0] == 0.0
    dropped = _arrivals(TraceWorkloadConfig(path=path, format="burstgpt", failed="drop"))
    assert len(dropped[0]) == 360
    assert dropped[0].failed is None
    kept = _arrivals(TraceWorkloadConfig(path=path, format="burstgpt"))
    assert int(kept[0].failed.sum()) == 40
    fast = _arrivals(TraceWorkloadConfig(path=path, format="burstgpt", target_rate=50.0))
    t = fast[0].arrival_s
    assert (len(t) - 1) / (t[-1] - t[0]) == pytest.approx(50.0, rel=0.01)
    half = _arrivals(TraceWorkloadConfig(path=path, format="burstgpt", sample=0.5), seed=1)
    assert 150 < len(half[0]) < 250


def test_failed_trace_rows_are_recorded_not_served(tmp_path) -> None:
    path = _burst_file(tmp_path, 60)
    res = simkv.simulate(small(["workload=trace", f"workload.path={path}", "workload.format=burstgpt"]),
                         tmp_path / "out")
    df = res.requests
    assert (df["reject_reason"] == "failed_in_trace").sum() == 6
    assert set(df["model"]) == {"GPT-4", "ChatGPT"}


# --- the BurstGPT-shaped generator against the published figures ------------------------------
def test_burstgpt_hourly_volume_matches_the_real_trace() -> None:
    w = BurstGPTWorkload(BurstGPTWorkloadConfig(hour_s=3600, mean_rate=978.6 / 3600))
    v = w.hourly_volumes(np.random.default_rng(7), 40_000)
    # BurstGPT_1 (STATS.md section 3): 978.6 requests/hour, CV 2.338, 28.3% empty hours.
    # Tolerances: the sampling error of 40k heavy-tailed hours (CV of the CV ~ 3%).
    assert v.mean() == pytest.approx(978.6, rel=0.05)
    assert v.std() / v.mean() == pytest.approx(2.338, rel=0.10)
    assert (v == 0).mean() == pytest.approx(0.2834, abs=0.01)


def test_burstgpt_requests_match_published_lengths_shares_and_failures() -> None:
    w = BurstGPTWorkload(BurstGPTWorkloadConfig(num_requests=200_000))
    bs = list(w.arrivals(np.random.default_rng(11)))
    p = np.concatenate([b.prompt_tokens for b in bs])
    o = np.concatenate([b.output_tokens for b in bs])
    # Head-60k percentiles of BurstGPT_1 (STATS.md section 2): p50-p95 within 3%, p99 within
    # 10% (above p99 the quantile function climbs to the max, so 200k draws estimate p99 to
    # about 5%, one standard error); means within 3%.
    np.testing.assert_allclose(np.percentile(p, [50, 90, 95]), [74, 1291, 1697], rtol=0.03)
    np.testing.assert_allclose(np.percentile(o, [50, 90, 95]), [14, 401, 510], rtol=0.03)
    assert np.percentile(p, 99) == pytest.approx(3023, rel=0.10)
    assert np.percentile(o, 99) == pytest.approx(757, rel=0.10)
    assert p.mean() == pytest.approx(374.06, rel=0.03)
    assert o.mean() == pytest.approx(122.32, rel=0.03)
    models = np.concatenate([np.array(b.model) for b in bs])
    logs = np.concatenate([np.array(b.log_type) for b in bs])
    failed = np.concatenate([b.failed for b in bs])
    assert (models == "GPT-4").mean() == pytest.approx(0.1532, abs=0.005)
    assert (logs == "API log").mean() == pytest.approx(0.8962, abs=0.005)
    assert failed.mean() == pytest.approx(0.0178, abs=0.002)
    # Within an hour: Gamma renewal with shape 0.5, gaps CV ~ 1/sqrt(0.5) = 1.41.
    # Gaps are compared within an hour, in units of that hour's mean gap (hours differ in
    # volume by orders of magnitude).
    t = np.concatenate([b.arrival_s for b in bs])
    hour = np.floor(t / 10.0).astype(np.int64)[1:]
    gaps = np.diff(t)
    same = np.diff(np.floor(t / 10.0)) == 0
    counts = np.bincount(hour[same], minlength=int(hour.max()) + 1)
    means = np.bincount(hour[same], weights=gaps[same], minlength=len(counts)) / np.maximum(counts, 1)
    busy = same & (counts[hour] >= 50)
    normalised = gaps[busy] / means[hour[busy]]
    assert normalised.std() == pytest.approx(1.41, rel=0.1)


@needs_data
def test_burstgpt_replay_reproduces_the_real_hourly_series() -> None:
    path = SHARED_DATA / "burstgpt" / "derived" / "burstgpt1_sessions_by_trace_hour_gap15m.csv"
    w = BurstGPTWorkload(BurstGPTWorkloadConfig(volume="replay", volume_path=str(path),
                                                hour_s=3600, mean_rate=978.6 / 3600))
    v = w.hourly_volumes(np.random.default_rng(0), 1461)
    assert v.sum() == pytest.approx(1_429_737, rel=1e-4)  # scaled to the rounded mean 978.6
    assert v.std() / v.mean() == pytest.approx(2.338, abs=0.001)
    gen = BurstGPTWorkload(BurstGPTWorkloadConfig(hour_s=3600, mean_rate=978.6 / 3600))
    fake = gen.hourly_volumes(np.random.default_rng(1), 1461)
    assert ks_distance(v, fake) < 0.15  # the i.i.d. Gamma fit of the hourly volumes


# --- closed-loop generators -------------------------------------------------------------------
def test_agent_programs_are_closed_loop_with_growing_context(tmp_path) -> None:
    cfg = small(["workload=swebench", "workload.num_programs=12", "workload.program_rate=1",
                 "workload.calls_shape=4", "workload.calls_scale=2", "cluster.replicas=2"])
    df = simkv.simulate(cfg, tmp_path).requests.sort_values(["session", "turn"])
    assert df["session"].nunique() == 12
    for _, prog in df.groupby("session"):
        assert list(prog["turn"]) == list(range(len(prog)))
        gaps = prog["arrival_s"].to_numpy()[1:] - prog["completion_s"].to_numpy()[:-1]
        assert (gaps >= -1e-9).all()
        prompts = prog["prompt_tokens"].to_numpy()
        first = prompts[0]
        # Each call extends the previous context, or resets to the first prompt.
        assert all(b >= a + 1 or b == first for a, b in itertools.pairwise(prompts))


def test_conversations_carry_the_whole_history(tmp_path) -> None:
    cfg = small(["workload=sharegpt", "workload.num_conversations=20", "workload.think_mu=0"])
    df = simkv.simulate(cfg, tmp_path).requests.sort_values(["session", "turn"])
    for _, chat in df.groupby("session"):
        p, o = chat["prompt_tokens"].to_numpy(), chat["output_tokens"].to_numpy()
        assert (p[1:] > p[:-1] + o[:-1]).all()  # history + a new user message


@pytest.mark.slow
def test_agent_generator_reproduces_its_source_shape() -> None:
    # Structural numbers of the SWE-bench preset against AGENTIC_STATS (tolerances: sampling).
    cfg = simkv.compose(["workload=swebench", "workload.num_programs=3000"]).workload
    assert isinstance(cfg, AgentWorkloadConfig)
    from simkv.workload.agents import AgentWorkload

    c = AgentWorkload(cfg).materialise(np.random.default_rng(5))
    calls = np.bincount(c["session"])
    assert calls.mean() == pytest.approx(49.9, rel=0.05)
    first = c["prompt_tokens"][c["turn"] == 0]
    assert np.median(first) == pytest.approx(16856, rel=0.02)
    think = c["think_s"][c["turn"] > 0]
    assert (think == 0).mean() == pytest.approx(0.32, abs=0.02)
    assert think[think > 0].mean() == pytest.approx(9.2, rel=0.08)


def test_shared_prefix_batch_builds_a_prefix_tree() -> None:
    cfg = SharedPrefixWorkloadConfig(num_requests=300, num_prefixes=4, root_tokens=1024,
                                     block_tokens=256)
    (b,) = SharedPrefixWorkload(cfg).arrivals(np.random.default_rng(0))
    assert (b.arrival_s == 0).all()
    chains = b.prefix
    assert all(c[:4] == (0, 1, 2, 3) for c in chains)  # the 1024-token root: 4 shared blocks
    for g in range(4):
        members = [c for c, s in zip(chains, b.session, strict=True) if s == g]
        common = min(len(c) for c in members)
        shared = sum(all(c[j] == members[0][j] for c in members) for j in range(common))
        assert shared >= 4 + 1  # the group's own prefix is shared too
    own_blocks = [c[-1] for c in chains]
    assert len(set(own_blocks)) == len(own_blocks)  # suffixes are unique
    assert all(len(c) == -(-int(p) // 256) for c, p in zip(chains, b.prompt_tokens, strict=True))


# --- the simkv-trace command -----------------------------------------------------------------------
@pytest.mark.slow
def test_trace_cli_generate_stats_and_replay(tmp_path, capsys) -> None:
    out = tmp_path / "g.parquet"
    assert trace_cli(["generate", "burstgpt", "num_requests=5000", "--out", str(out)]) == 0
    assert trace_cli(["stats", str(out), "--plot", str(tmp_path / "g.png")]) == 0
    text = capsys.readouterr().out
    assert "requests      5,000" in text
    assert "ChatGPT" in text
    assert "failed" in text
    assert (tmp_path / "g.png").stat().st_size > 10_000
    res = simkv.simulate(small(["workload=trace", f"workload.path={out}", "cluster.replicas=4"]),
                         tmp_path / "run")
    assert len(res.requests) == 5000
    assert (res.requests["reject_reason"] == "failed_in_trace").sum() > 50


def test_trace_cli_generated_sessions_replay_closed_loop(tmp_path) -> None:
    out = tmp_path / "chat.parquet"
    assert trace_cli(["generate", "sharegpt", "num_conversations=30", "--out", str(out)]) == 0
    t = pd.read_parquet(out)
    assert (t.loc[t["turn"] > 0, "think_s"] > 0).all()
    res = simkv.simulate(small(["workload=trace", f"workload.path={out}", "workload.closed_loop=true"]),
                         tmp_path / "run")
    df = res.requests.sort_values(["session", "turn"])
    for _, chat in df.groupby("session"):
        gaps = chat["arrival_s"].to_numpy()[1:] - chat["completion_s"].to_numpy()[:-1]
        think = t[t["session"] == chat["session"].iloc[0]].sort_values("turn")["think_s"].to_numpy()[1:]
        np.testing.assert_allclose(gaps, think, rtol=1e-9, atol=1e-9)


@needs_data
def test_trace_cli_convert_real_azure(tmp_path, capsys) -> None:
    out = tmp_path / "azure.parquet"
    src = SHARED_DATA / "azure_llm_2023" / "AzureLLMInferenceTrace_conv.csv"
    assert trace_cli(["convert", str(src), "--format", "azure", "--out", str(out)]) == 0
    t = pd.read_parquet(out)
    assert len(t) == 19366
    assert t["prompt_tokens"].mean() == pytest.approx(1154.7, abs=0.1)


def test_trace_cli_reports_errors(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("arrival_s,prompt_tokens,output_tokens\n0,x,1\n")
    assert trace_cli(["stats", str(bad)]) == 2
    assert "row 1, column 'prompt_tokens'" in capsys.readouterr().err


def test_dataclass_workload_configs_validate() -> None:
    with pytest.raises(ValueError, match="volume_path"):
        BurstGPTWorkloadConfig(volume="replay")
    with pytest.raises(ValueError, match="workload.format"):
        TraceWorkloadConfig(path="x", format="csvish")
    assert dataclasses.replace(BurstGPTWorkloadConfig(), num_requests=5).num_requests == 5

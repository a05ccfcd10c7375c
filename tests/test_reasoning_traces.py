"""Reasoning and RL-rollout workloads; ServeGen and inference-perf read as traces, bad rows
named (docs/WORKLOADS.md, docs/TRACE_FORMAT.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import simkv
from simkv.workload import ReasoningWorkload, ReasoningWorkloadConfig
from simkv.workload.readers import TraceError, read
from simkv.workload.reasoning import R1_OUTPUT
from tests.conftest import small


def _servegen(folder: Path, rate: float = 2.0, windows: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for cid in (0, 1):
        rows = [f"{w * 600},{rate * (cid + 1)},1.0,Gamma,1.0,{1 / (rate * (cid + 1))}"
                for w in range(windows)]
        rows.append(f"{windows * 600},0,0,,0,0")
        (folder / f"chunk-{cid}-trace.csv").write_text("\n".join(rows) + "\n")
        dist = {"input_tokens": str({100: 0.5, 300: 0.5}),
                "output_tokens": str({50: 0.25, 2000: 0.75}), "reason_ratio": str({0: 1.0})}
        (folder / f"chunk-{cid}-dataset.json").write_text(json.dumps({"0": dist}))
    return folder


def _inference_perf(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


IPERF = """\
load:
  type: constant
  interval: 2
  stages:
    - rate: 4
      duration: 10
    - rate: 8
      duration: 5
data:
  type: shared_prefix
  shared_prefix:
    num_groups: 3
    num_prompts_per_group: 4
    system_prompt_len: 1100
    question_len: 40
    output_len: 60
"""


def test_reasoning_lengths_follow_servegens_r1_quantiles() -> None:
    w = ReasoningWorkload(ReasoningWorkloadConfig(num_requests=40000))
    b = next(iter(w.arrivals(np.random.default_rng(0))))
    for q, tokens in R1_OUTPUT[1:-1]:
        assert (b.output_tokens <= tokens).mean() == pytest.approx(q, abs=0.01)
    gaps = np.diff(b.arrival_s)
    assert gaps.mean() == pytest.approx(1 / 16, rel=0.03)  # ServeGen R1's mean rate
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.05)


def test_rollout_steps_wait_for_their_slowest_sample_and_share_prompts(tmp_path) -> None:
    res = simkv.simulate(small(["workload=rollout", "workload.steps=3", "workload.prompts=3",
                                "workload.samples=4", "workload.train_s=1.5",
                                "router=session_affinity"]), tmp_path)
    df = res.requests
    assert len(df) == 36
    assert (df["status"] == "finished").all()
    steps = df.groupby("turn")
    for s in (1, 2):
        start = steps.get_group(s)["arrival_s"]
        assert start.nunique() == 1
        assert start.iloc[0] == pytest.approx(steps.get_group(s - 1)["completion_s"].max() + 1.5)
    assert df.groupby(["turn", "session"])["prompt_tokens"].nunique().max() == 1
    assert df["cached_tokens"].sum() > 0  # samples of a prompt reuse its KV


def test_servegen_folder_reads_as_a_trace_with_its_rates(tmp_path) -> None:
    folder = _servegen(tmp_path / "r1")
    cols = list(read(folder, "servegen", seed=1))
    t = np.concatenate([c.arrival_s for c in cols])
    assert np.all(np.diff(t) >= 0)
    # Clients at 2 and 4 req/s over three 600 s windows.
    assert len(t) == pytest.approx(6 * 1800, rel=0.02)
    out = np.concatenate([c.output_tokens for c in cols])
    assert set(np.unique(out)) == {50.0, 2000.0}
    assert (out == 2000).mean() == pytest.approx(0.75, abs=0.02)
    again = np.concatenate([c.arrival_s for c in read(folder, "servegen", seed=1)])
    assert np.array_equal(t, again)
    res = simkv.simulate(small(["workload=trace", "workload.format=servegen",
                                f"workload.path={folder}", "workload.limit=200"]), tmp_path / "run")
    assert len(res.requests) == 200


@pytest.mark.parametrize(("edit", "message"), [
    (("trace", "0,2.0,1.0,Gamma,1.0,0.5", "0,abc,1.0,Gamma,1.0,0.5"),
     "chunk-0-trace.csv: row 1, column 'rate': expected a number, got 'abc'"),
    (("trace", "600,2.0,1.0,Gamma,1.0,0.5", "600,2.0,1.0,Pareto,1.0,0.5"),
     "chunk-0-trace.csv: row 2, column 'pattern': expected one of Gamma, Weibull or empty, got 'Pareto'"),
    (("trace", "600,2.0,1.0,Gamma,1.0,0.5", "0,2.0,1.0,Gamma,1.0,0.5"),
     "chunk-0-trace.csv: row 2, column 'timestamp': expected increasing window starts, got 0 after 0"),
    (("data", "0.75", "0.5"),
     "chunk-0-dataset.json: time stamp '0', field 'output_tokens': expected probabilities summing to 1, got 0.75"),
])
def test_servegen_bad_rows_are_named(tmp_path, edit, message) -> None:
    folder = _servegen(tmp_path / "r1")
    which, old, new = edit
    f = folder / ("chunk-0-trace.csv" if which == "trace" else "chunk-0-dataset.json")
    f.write_text(f.read_text().replace(old, new, 1))
    with pytest.raises(TraceError) as exc:
        list(read(folder, "servegen"))
    assert str(exc.value) == f"{f.parent}/{message}"


def test_inference_perf_stages_and_shared_prefixes(tmp_path) -> None:
    cfg = _inference_perf(tmp_path / "ip.yaml", IPERF)
    cols = list(read(cfg, "inference_perf", seed=3, block_tokens=512))
    t = np.concatenate([c.arrival_s for c in cols])
    assert len(t) == 4 * 10 + 8 * 5
    assert t[:40] == pytest.approx(np.arange(40) / 4)
    assert t[40] == pytest.approx(12.0)  # the second stage starts after the 2 s interval
    prefix = [p for c in cols for p in c.prefix]
    session = np.concatenate([c.session for c in cols])
    assert all(p is not None and len(p) == 2 for p in prefix)  # 1100 tokens: 2 whole blocks
    for g in range(3):
        assert len({prefix[i] for i in np.flatnonzero(session == g)}) == 1
    assert len(set(prefix)) == 3
    res = simkv.simulate(small(["workload=trace", "workload.format=inference_perf",
                                f"workload.path={cfg}"]), tmp_path / "run")
    assert len(res.requests) == 80
    assert res.requests["cached_tokens"].sum() > 0


@pytest.mark.parametrize(("old", "new", "message"), [
    ("rate: 8", "rate: -8", "load.stages[1].rate: expected a number > 0, got -8"),
    ("type: constant", "type: concurrent", "load.type: expected constant or poisson"),
    ("type: shared_prefix", "type: shareGPT", "data.type: 'shareGPT' draws prompts from a dataset"),
    ("question_len: 40", "question_len: {min: 50, max: 10}", "data.shared_prefix.question_len.min: expected <= max (10), got 50"),
    ("output_len: 60", "output_len: {type: zipf}", "data.shared_prefix.output_len.type: expected one of"),
])
def test_inference_perf_bad_values_are_named(tmp_path, old, new, message) -> None:
    cfg = _inference_perf(tmp_path / "ip.yaml", IPERF.replace(old, new))
    with pytest.raises(TraceError) as exc:
        list(read(cfg, "inference_perf"))
    assert str(exc.value).startswith(f"{cfg}: {message}")
    assert "\n" not in str(exc.value)


def test_skipping_bad_rows_cannot_act_on_distributions(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"workload\.on_bad_row=skip cannot act"):
        simkv.simulate(small(["workload=trace", "workload.format=servegen",
                              f"workload.path={tmp_path}", "workload.on_bad_row=skip"]), tmp_path)

"""Replaying a trace file; malformed files fail with file, row and column, or are skipped."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import simkv
from simkv.workload import TraceError, TraceWorkload, TraceWorkloadConfig
from tests.conftest import small

GOOD = "arrival_s,prompt_tokens,output_tokens\n0.0,100,10\n0.5,200,20\n1.0,300,30\n"


def read(path, **kw) -> pd.DataFrame:
    wl = TraceWorkload(TraceWorkloadConfig(path=str(path), **kw))
    frames = [pd.DataFrame({"arrival_s": b.arrival_s, "prompt": b.prompt_tokens,
                            "output": b.output_tokens}) for b in wl.arrivals(np.random.default_rng())]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def test_csv_and_parquet_replay_the_same(tmp_path) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text(GOOD)
    pq_path = tmp_path / "t.parquet"
    pd.read_csv(csv).to_parquet(pq_path)
    a, b = read(csv), read(pq_path)
    pd.testing.assert_frame_equal(a, b)
    assert list(a["prompt"]) == [100, 200, 300]


def test_speedup_and_limit(tmp_path) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text(GOOD)
    df = read(csv, speedup=2.0, limit=2)
    assert list(df["arrival_s"]) == [0.0, 0.25]


def test_trace_runs_end_to_end(tmp_path) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text(GOOD)
    res = simkv.simulate(small(["workload=trace", f"workload.path={csv}"]), tmp_path / "out")
    assert list(res.requests.sort_values("request_id")["prompt_tokens"]) == [100, 200, 300]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("arrival_s,prompt_tokens\n0,1\n", r"missing column\(s\) \['output_tokens'\]"),
        ("arrival_s,prompt_tokens,output_tokens\n0,100,10\n1,abc,10\n",
         r"row 2, column 'prompt_tokens': expected a number, got 'abc'"),
        ("arrival_s,prompt_tokens,output_tokens\n0,100,10\n1,-5,10\n",
         r"row 2, column 'prompt_tokens': expected a whole number >= 1, got -5"),
        ("arrival_s,prompt_tokens,output_tokens\n0,100,10\n1,100,\n",
         r"row 2, column 'output_tokens': expected a number, got an empty cell"),
        ("arrival_s,prompt_tokens,output_tokens\n0,100,10\n5,100,10\n3,100,10\n",
         r"row 3, column 'arrival_s': expected non-decreasing times, got 3 after 5"),
        ("arrival_s,prompt_tokens,output_tokens\n0,100,2.5\n",
         r"row 1, column 'output_tokens': expected a whole number >= 1, got 2.5"),
    ],
)
def test_malformed_rows_name_file_row_and_column(tmp_path, text: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(TraceError, match=message) as err:
        read(path)
    assert str(path) in str(err.value)


def test_skip_mode_drops_and_counts_bad_rows(tmp_path) -> None:
    path = tmp_path / "bad.csv"
    # Bad: 'abc', -1, the empty cell, and 0.5 (earlier than the good row at 1).
    path.write_text("arrival_s,prompt_tokens,output_tokens\n0,100,10\n1,abc,10\n2,-1,5\n"
                    "3,100,\n1,100,10\n0.5,100,10\n4,100,10\n")
    wl = TraceWorkload(TraceWorkloadConfig(path=str(path), on_bad_row="skip"))
    batches = list(wl.arrivals(np.random.default_rng()))
    assert list(np.concatenate([b.arrival_s for b in batches])) == [0.0, 1.0, 4.0]
    assert wl.skipped_rows == 4
    res = simkv.simulate(small(["workload=trace", f"workload.path={path}",
                                "workload.on_bad_row=skip"]), tmp_path / "out")
    assert res.summary["engine"]["skipped_trace_rows"] == 4
    assert res.summary["requests"]["finished"] == 3


def test_missing_file_and_missing_path(tmp_path) -> None:
    with pytest.raises(TraceError, match="trace file not found"):
        read(tmp_path / "nope.csv")
    with pytest.raises(Exception, match="workload.path"):
        simkv.simulate(small(["workload=trace"]), tmp_path / "x")


def test_a_failed_run_keeps_what_it_wrote(tmp_path, monkeypatch) -> None:
    # The bad row is in a later chunk of the file: the requests served before the error are
    # kept, and run.json records the failure.
    from simkv.workload import readers

    monkeypatch.setattr(readers, "CSV_BLOCK_BYTES", 4096)
    n = 3000
    rows = [f"{i * 0.01},{50},{5}" for i in range(n)] + ["1e9,bad,5"]
    path = tmp_path / "big.csv"
    path.write_text("arrival_s,prompt_tokens,output_tokens\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out"
    with pytest.raises(TraceError, match=f"row {n + 1}, column 'prompt_tokens'"):
        simkv.simulate(small(["workload=trace", f"workload.path={path}", "cluster.replicas=2"]), out)
    import json

    import pyarrow.parquet as pq

    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "error"
    assert run["error"].endswith(f"row {n + 1}, column 'prompt_tokens': expected a number, got 'bad'")
    assert "TraceError" in run["traceback"]
    # Not under the complete name: what was finished is kept, marked partial.
    assert not (out / "requests.parquet").exists()
    kept = out / "requests.partial.parquet"
    assert 0 < pd.read_parquet(kept).shape[0] < n
    footer = pq.read_metadata(kept).metadata
    assert footer[b"simkv.status"] == b"partial"
    assert int(footer[b"simkv.rows"]) == pd.read_parquet(kept).shape[0]
    assert run["tables"] == {"requests": "requests.partial.parquet",
                             "instances": "instances.partial.parquet"}
    assert not (out / "summary.json").exists()

"""trace.json (output.trace=true) follows the Trace Event Format that Perfetto and
chrome://tracing read, and its events are the run's tables: instances' states, engine runs,
transfers and a sample of requests. (ui.perfetto.dev cannot be reached from here; the
format's rules are checked instead: the JSON object form, the phases used, pid/tid names as
metadata events, microsecond times, no overlapping complete events on one thread except
nested ones.)"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import simkv
from simkv.metrics.trace import (
    PID_INSTANCE0,
    PID_REQUESTS,
    PID_TRANSFERS,
    TID_ENGINE,
    TID_LIFECYCLE,
    request_sample,
)
from tests.conftest import small

PHASES = {"X", "B", "E", "i", "C", "M"}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trace")
    # Agents whose KV goes to DRAM during tool calls: transfers, sessions, two instances.
    cfg = small(["cluster.replicas=2", "workload=swebench", "workload.num_programs=6",
                 "workload.program_rate=2", "router=session_affinity", "tool_kv=offload",
                 "offload=dram", "output.trace=true"])
    simkv.simulate(cfg, out)
    return out


def events(run: Path) -> list[dict]:
    doc = json.loads((run / "trace.json").read_text())
    assert isinstance(doc, dict)
    assert isinstance(doc["traceEvents"], list)
    assert doc["displayTimeUnit"] in ("ms", "ns")
    return doc["traceEvents"]


def test_every_event_is_well_formed_and_every_thread_is_named(run: Path) -> None:
    evs = events(run)
    names: dict[tuple, str] = {}
    for e in evs:
        assert e["ph"] in PHASES, e
        assert isinstance(e["pid"], int)
        assert isinstance(e["name"], str)
        if e["ph"] == "M":
            if e["name"] in ("process_name", "thread_name"):
                names[(e["pid"], e.get("tid"))] = e["args"]["name"]
            continue
        assert isinstance(e["ts"], int | float)
        assert e["ts"] >= 0
        if e["ph"] == "X":
            assert isinstance(e["dur"], int | float)
            assert e["dur"] >= 0
        if e["ph"] == "C":
            assert all(isinstance(v, int | float) for v in e["args"].values())
        if e["ph"] == "i":
            assert e["s"] in ("g", "p", "t")
    for e in evs:
        if e["ph"] != "M":
            assert (e["pid"], None) in names, e
            if e["ph"] != "C":  # counters belong to the process
                assert (e["pid"], e["tid"]) in names, e
    # Complete events of one thread nest or follow each other (what the viewers draw).
    by_thread = defaultdict(list)
    for e in evs:
        if e["ph"] == "X":
            by_thread[(e["pid"], e["tid"])].append((e["ts"], -e["dur"], e["ts"] + e["dur"]))
    for spans in by_thread.values():
        stack: list[float] = []
        for ts, _, end in sorted(spans):
            while stack and stack[-1] <= ts + 1e-3:  # (float sums of ns-rounded times)
                stack.pop()
            assert not stack or end <= stack[-1] + 1e-3, "overlapping, not nested"
            stack.append(end)


def test_engine_runs_and_lifecycle_are_the_tables(run: Path) -> None:
    evs = events(run)
    iters = pq.read_table(run / "iterations.parquet").to_pylist()
    steps = sorted((e["pid"] - PID_INSTANCE0, e["ts"], e["dur"], e["args"]["decode_sequences"],
                    e["args"]["prefill_tokens"], e["args"]["iterations"])
                   for e in evs if e["ph"] == "X" and e["pid"] >= PID_INSTANCE0 and e["tid"] == TID_ENGINE)
    want = sorted((r["replica"], round(r["start_s"] * 1e6, 3),
                   round(round((r["start_s"] + r["duration_s"]) * 1e6, 3) - round(r["start_s"] * 1e6, 3), 3),
                   r["decode_sequences"], r["prefill_tokens"], r["iterations"]) for r in iters)
    assert len(iters) > 10
    assert steps == want
    rows = pq.read_table(run / "instances.parquet").to_pylist()
    states = sorted((e["pid"] - PID_INSTANCE0, e["ts"], e["name"])
                    for e in evs if e["pid"] >= PID_INSTANCE0 and e["ph"] in ("X", "i") and e["tid"] == TID_LIFECYCLE)
    assert states == sorted((r["instance"], round(r["time_s"] * 1e6, 3), r["to_state"]) for r in rows)
    assert {s[0] for s in states} == {0, 1}
    assert "serving" in {s[2] for s in states}


def test_transfers_and_the_request_sample_are_the_tables(run: Path) -> None:
    evs = events(run)
    transfers = pq.read_table(run / "transfers.parquet").to_pylist()
    assert transfers
    got = sorted((e["ts"], e["dur"], e["name"], e["args"]["bytes"])
                 for e in evs if e["pid"] == PID_TRANSFERS and e["ph"] == "X")
    assert got == sorted((round(t["start_s"] * 1e6, 3),
                          round(round(t["end_s"] * 1e6, 3) - round(t["start_s"] * 1e6, 3), 3),
                          t["what"], t["bytes"]) for t in transfers)
    sample = request_sample(run)
    finished = {r["request_id"]: r for r in sample if r["status"] == "finished"}
    drawn = {int(e["name"].split()[1]): e for e in evs
             if e["pid"] == PID_REQUESTS and e["ph"] == "X" and e["name"].startswith("request ")}
    assert set(drawn) == set(finished)
    for rid, e in drawn.items():
        r = finished[rid]
        assert e["ts"] == round(r["arrival_s"] * 1e6, 3)
        assert e["args"]["instance"] == r["replica"]
    phases = [e for e in evs if e["pid"] == PID_REQUESTS and e["name"] in ("queued", "prefill", "decode")]
    assert len(phases) == 3 * len(finished)


def test_the_trace_is_deterministic(run: Path, tmp_path: Path) -> None:
    cfg = simkv.load_results(run).config
    again = small(["cluster.replicas=2", "workload=swebench", "workload.num_programs=6",
                   "workload.program_rate=2", "router=session_affinity", "tool_kv=offload",
                   "offload=dram", "output.trace=true"])
    simkv.simulate(again, tmp_path / "again")
    assert cfg["output"]["trace"] is True
    assert (tmp_path / "again" / "trace.json").read_bytes() == (run / "trace.json").read_bytes()

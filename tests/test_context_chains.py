"""Prefix reuse of traces without prefix hashes: chains derived from each session's growing
context (issue 18, item 12; docs/TRACE_FORMAT.md). Before, a real agent trace replayed
closed-loop hit the prefix cache 0% of the time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import simkv
from simkv.workload.base import ArrivalBatch
from simkv.workload.context_chains import ContextChains
from tests.conftest import SHARED_DATA

BASE = ["workload=trace", "workload.format=agent", "workload.closed_loop=true",
        "router=session_affinity", "output.plot=false", "output.progress=false"]
SHARD = SHARED_DATA / "agentic" / "exgentic_swebench_claude_code_shard12.jsonl"


def _spans(path: Path, programs: dict[str, list[tuple[int, int]]]) -> None:
    """An agent trace (Exgentic span format): each program's calls 1 s apart, 2 s of tool
    time between one's end and the next's start."""
    rows = []
    for k, (sid, calls) in enumerate(programs.items()):
        t = 10.0 * k
        for j, (p, o) in enumerate(calls):
            rows.append({"session_id": sid, "span_index": j, "start_time_s": t,
                         "end_time_s": t + 1.0, "input_tokens": p, "output_tokens": o,
                         "request_model": "m"})
            t += 3.0
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_chains_follow_the_context_an_agent_sends() -> None:
    c = ContextChains(512)
    b = ArrivalBatch(np.zeros(4), np.array([1000, 1200, 600, 3000]), np.array([100, 400, 50, 10]),
                     session=np.array([0, 0, 0, 1]))
    first, grown, reset, other = c.derive(b)
    assert first == (0, 1)  # 1,100 tokens: two whole granules
    # 1,200 >= 1,100: the whole previous context repeats (2 granules), then one of its own.
    assert grown == (0, 1, 2)
    # 600 < 1,600: the agent reset; it keeps its first prompt's leading granule only.
    assert reset == (0,)
    assert other is not None
    assert set(other).isdisjoint(grown)  # another session shares nothing


@pytest.mark.slow  # among the quick subset's slowest (CONTRIBUTING.md)
def test_a_synthetic_agent_trace_reuses_its_growing_context(tmp_path: Path) -> None:
    trace = tmp_path / "agents.jsonl"
    _spans(trace, {"a": [(1000, 100), (1200, 100), (600, 50)], "b": [(2000, 20), (2100, 20)]})
    res = simkv.simulate(simkv.compose([*BASE, f"workload.path={trace}"]), tmp_path / "run")
    df = res.requests.sort_values(["session", "turn"])
    got = {(int(s), int(t)): int(c) for s, t, c in df[["session", "turn", "cached_tokens"]].itertuples(index=False)}
    # Sessions are numbered in name order: a = 0, b = 1. Hits are whole 512-token granules.
    assert got == {(0, 0): 0, (0, 1): 1024, (0, 2): 512, (1, 0): 0, (1, 1): 1536}


@pytest.mark.skipif(not SHARD.is_file(), reason=f"{SHARD} is absent")
def test_the_swebench_shard_replayed_closed_loop_hits_the_prefix_cache(tmp_path: Path) -> None:
    s = simkv.simulate(simkv.compose([*BASE, f"workload.path={SHARD}"]), tmp_path).summary
    # 46 Claude Code programs whose every call extends its context: most tokens repeat.
    assert s["requests"]["total"] == 2294
    assert s["prefix_cache"]["hit_rate_all"] > 0.8

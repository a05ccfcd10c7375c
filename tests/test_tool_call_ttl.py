"""A zero-length tool call under a TTL pin (issue 18, item 11).

Continuum keeps an agent's KV in HBM across a tool call only because the next call arrives
while the KV is pinned. A TTL of zero pins nothing, so it must act exactly as dropping the KV
to plain prefix cache; with zero tool time the next call then hits only if the engine's next
plan has not evicted the blocks meanwhile, as in a real engine (docs/MEMORY.md).
"""

from __future__ import annotations

import tempfile

import pandas as pd

import simkv

# Four SWE-bench-shaped programs whose every tool call takes no time, on one instance whose
# KV pool is small enough that the engine's next plan evicts what a dropped call leaves.
ZERO_TOOL_TIME = ["workload=swebench", "workload.num_programs=4", "workload.program_rate=1",
                  "workload.calls_min=4", "workload.calls_max=8", "workload.tool_weibull_scale=0",
                  "router=session_affinity", "cluster.replicas=1", "scheduler=continuum",
                  "kv.num_gpu_blocks_override=3000", "output.plot=false", "output.progress=false"]


def _run(extra: list[str]) -> tuple[pd.DataFrame, dict]:
    with tempfile.TemporaryDirectory() as d:
        res = simkv.simulate(simkv.compose(ZERO_TOOL_TIME + extra), d)
        return res.requests.sort_values("request_id").reset_index(drop=True), res.summary


def test_a_zero_ttl_pin_is_exactly_dropping_the_kv() -> None:
    drop, s_drop = _run(["tool_kv=drop"])
    pinned, s_pin = _run(["tool_kv=ttl_pin", "tool_kv.ttl_s=0"])
    # Not a vacuous comparison: dropping loses part of the context to the next plan here.
    assert s_drop["prefix_cache"]["hit_rate_all"] < 0.5
    pd.testing.assert_frame_equal(pinned, drop)
    assert s_pin["sessions"]["jct_s"] == s_drop["sessions"]["jct_s"]
    c = s_pin["memory"]["counters"]
    assert c["pins"] == 0
    assert c["pin_block_s"] == 0.0


def test_a_positive_ttl_keeps_the_kv_for_a_call_that_comes_at_once() -> None:
    """The mechanism Continuum has: the call arriving at once takes its pin over."""
    _, s_drop = _run(["tool_kv=drop"])
    _, s_pin = _run(["tool_kv=ttl_pin", "tool_kv.ttl_s=5"])
    assert s_pin["memory"]["counters"]["pins_taken_over"] > 0
    assert s_pin["prefix_cache"]["hit_rate_all"] > s_drop["prefix_cache"]["hit_rate_all"]

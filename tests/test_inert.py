"""Options that cannot act on a run's workload or cluster say so in one line, and the line
is true: the run's requests come out identical to the run without the option."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import simkv
from tests.conftest import small

TWO = ["cluster.replicas=2"]
NO_SHARING = "no two requests share KV (no prefix ids, no session follow-ups)"

# (option overrides, the run it must equal, the lines it prints). The workload is Poisson:
# no sessions, no tool calls, no prefix ids.
CASES = [
    (["scheduler=continuum", "tool_kv=ttl_pin"], [], [
        "scheduler=continuum: the workload has no multi-call programs, so it orders requests as scheduler=vllm does",
        "tool_kv=ttl_pin: the workload has no tool calls (no call of a session follows another), so it changes nothing"]),
    (["offload=write_through"], [], [
        f"offload=write_through: {NO_SHARING}, so KV written below HBM is never read back: it changes nothing"]),
    (["offload=cluster"], [], [
        f"offload=cluster: {NO_SHARING}, so KV written below HBM is never read back: it changes nothing"]),
    # (tool_kv=prefetch on a workload without sessions is refused before the run: issue 18)
    (["tool_kv=offload", "offload=dram", "eviction=cost_aware"], [], [
        f"eviction=cost_aware: {NO_SHARING}, so which cached KV leaves first changes nothing",
        f"offload=dram: {NO_SHARING}, so KV written below HBM is never read back: it changes nothing",
        "tool_kv=offload: the workload has no tool calls (no call of a session follows another), so it changes nothing"]),
    (["memory.peer_hbm=true", "memory.link_sharing=max_min"], [], [
        f"memory.peer_hbm=true: {NO_SHARING}, so no instance reads another's cache",
        "memory.link_sharing=max_min: no link ever carried two transfers at once, so how links are shared changes nothing"]),
    (["energy.enabled=true", "energy.sm_clock_mhz=1980"], ["energy.enabled=true"], [
        "energy.sm_clock_mhz=1980: no step of pool default drew more power or ran faster than it allows, so it changed nothing"]),
    (["router=session_affinity"], ["router=least_outstanding"], [
        "router=session_affinity: the workload has no sessions, so it routes every request as router=least_outstanding does"]),
]


def _run(overrides: list[str], out: Path) -> simkv.SimResult:
    return simkv.simulate(small([*TWO, *overrides]), out)


@pytest.mark.parametrize(("option", "same_as", "lines"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_an_option_with_nothing_to_act_on_says_so_and_changes_nothing(
        tmp_path: Path, option: list[str], same_as: list[str], lines: list[str]) -> None:
    result = _run(option, tmp_path / "with")
    base = _run(same_as, tmp_path / "without")
    assert result.summary["warnings"] == lines
    assert json.loads((tmp_path / "with" / "run.json").read_text())["warnings"] == lines
    assert "warnings" not in base.summary
    got, want = (pq.read_table(p / "requests.parquet") for p in (tmp_path / "with", tmp_path / "without"))
    assert got.column_names == want.column_names
    for col in want.column_names:  # NaN (times a request never reached) equals NaN here
        np.testing.assert_array_equal(got.column(col).to_numpy(), want.column(col).to_numpy(),
                                      err_msg=f"the line says the option changed nothing; {col} differs")


def test_options_that_act_say_nothing(tmp_path: Path) -> None:
    """Agent programs have tool calls and shared context: the same options act, no line."""
    agents = ["workload=swebench", "workload.num_programs=4", "workload.program_rate=2",
              "router=session_affinity", "scheduler=continuum", "tool_kv=ttl_pin", "offload=dram",
              "eviction=cost_aware"]
    result = simkv.simulate(small([*TWO, *agents]), tmp_path / "agents")
    assert "warnings" not in result.summary


@pytest.mark.slow
def test_the_command_prints_the_line_after_its_table(tmp_path: Path) -> None:
    from tests.test_cli_and_determinism import simkv_cmd

    # With the plot on: the PDF's font subsetting used to fill cli.log with fontTools INFO.
    p = simkv_cmd("offload=write_through", "workload=poisson", "workload.num_requests=30",
                  "output.progress=false", f"hydra.run.dir={tmp_path / 'r'}", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("warning: offload=write_through: no two requests share KV") == 1
    assert "warning" not in p.stderr
    log = (tmp_path / "r" / "cli.log").read_text()
    assert "offload=write_through: no two requests share KV" in log
    assert (tmp_path / "r" / "latency.pdf").is_file()
    assert "fontTools" not in log

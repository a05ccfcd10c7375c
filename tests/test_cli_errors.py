"""One-line errors where Hydra's advice and hand-written argument parsing used to end in
"internal error": a key typo (with or without Hydra's suggested ``+``), simkv-trace's
workload keys, and simkv-calibrate on argparse subcommands."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import simkv
from simkv.config.bounds import ConfigError
from simkv.entry import guarded


@pytest.mark.parametrize(("override", "message"), [
    ("cluster.replica=2", "cluster.replica: no such key in cluster (ClusterConfig); did you mean cluster.replicas or cluster.min_replicas or cluster.max_replicas? (docs/CONFIG.md lists every key)"),
    # Hydra's own advice, followed: the key is still not simkv's (it was an internal error).
    ("+cluster.replica=2", "cluster.replica: no such key in cluster (ClusterConfig); did you mean cluster.replicas or cluster.min_replicas or cluster.max_replicas? ('+' cannot add a key to simkv's typed config; docs/CONFIG.md lists them)"),
    ("++cluster.replica=2", "cluster.replica: no such key in cluster (ClusterConfig); did you mean cluster.replicas or cluster.min_replicas or cluster.max_replicas? ('+' cannot add a key to simkv's typed config; docs/CONFIG.md lists them)"),
    ("clusters.replicas=2", "clusters: no such key in the config (SimConfig); did you mean cluster? (docs/CONFIG.md lists every key)"),
    ("workload.num_request=10", "workload.num_request: no such key in workload (BurstGPTWorkloadConfig); did you mean workload.num_requests? (docs/CONFIG.md lists every key)"),
    # A mapping's missing entry, and a pool the preset does not have: these listed the top
    # level's keys as if they were the mapping's (and a pool's keys were never suggested).
    ("speculative=eagle speculative.acceptance_by_log_type.x=0.5", "speculative.acceptance_by_log_type.x: speculative.acceptance_by_log_type is a mapping with no entry 'x'; add one with '+speculative.acceptance_by_log_type.x=<value>'"),
    ("pools.h100.instances=2", "pools.h100: the chosen pools preset has no pool 'h100'; choose one that has it (pools=h100_a100, pd_split, ...: docs/CLUSTER.md) before setting pools.h100.*"),
    # A list indexed by a name: "invalid literal for int() with base 10: 'x'", no key named.
    ("workload.models.x=1", "workload.models.x: workload.models is a list, indexed by position; set an entry (workload.models.0=...) or the whole list (workload.models=[...])"),
    ("pools=h100_a100 pools.h100.instance=2", "pools.h100.instance: no such key in pools.h100 (PoolConfig); did you mean pools.h100.instances or pools.h100.min_instances or pools.h100.max_instances? (docs/CONFIG.md lists every key)"),
])
def test_a_key_typo_is_one_line_naming_the_keys_it_could_be(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        simkv.compose(override.split())
    assert str(err.value) == message


def test_hydra_keys_may_still_be_added() -> None:
    simkv.compose(["+hydra.job.env_set.SIMKV_X=1"])  # launcher options are Hydra's, not simkv's


def _run(*cmd: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / cmd[0]
    return subprocess.run([str(exe), *cmd[1:]], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_the_commands_answer_a_typo_in_one_line(tmp_path: Path) -> None:
    p = _run("simkv", "+cluster.replica=2", "output.plot=false", "output.progress=false", cwd=tmp_path)
    assert (p.returncode, p.stderr.count("\n")) == (2, 1), p.stderr
    assert p.stderr.startswith("simkv: error: cluster.replica: no such key in cluster")
    p = _run("simkv-trace", "generate", "burstgpt", "num_request=10", "--out", "x.parquet", cwd=tmp_path)
    assert (p.returncode, p.stderr.count("\n")) == (2, 1), p.stderr
    assert p.stderr.startswith("simkv-trace: error: workload.num_request: no such key in workload "
                               "(BurstGPTWorkloadConfig); did you mean workload.num_requests?")


def test_calibrate_help_exits_0_and_lists_its_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    from simkv.calibration.cli import main

    for argv in (["--help"], ["run", "--help"], ["fit", "--help"], ["power-fit", "--help"]):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 0
    out = capsys.readouterr().out
    assert "{run,fit,power-fit}" in out
    assert "usage: simkv-calibrate run [-h] --out OUT" in out
    assert "usage: simkv-calibrate fit [-h] --raw RAW [--base BASE] --out OUT" in out


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None
                    and __import__("torch").cuda.is_available(), reason="a GPU is here: run would run")
def test_calibrate_run_without_a_gpu_says_what_to_install(monkeypatch, capsys, tmp_path) -> None:
    from simkv.calibration.cli import main

    monkeypatch.setattr(sys, "argv", ["simkv-calibrate", "run", "--out", str(tmp_path / "c")])
    assert guarded("simkv-calibrate", main) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("simkv-calibrate: error: ")
    assert "simkv-calibrate run needs torch and triton on a CUDA GPU: pip install 'simkv[kernels]'" in err
    assert not (tmp_path / "c").exists()

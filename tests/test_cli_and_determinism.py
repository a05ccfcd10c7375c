"""The `simkv` command as a user runs it, and byte-identical results across processes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

# The default workload (BurstGPT-shaped), made tiny.
TINY = ["cluster.replicas=1", "workload.num_requests=60", "workload.mean_rate=10", "output.progress=false"]


def simkv_cmd(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "simkv"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "simkv.cli"]
    return subprocess.run([*cmd, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


@pytest.mark.slow
def test_cli_single_run_writes_results_and_prints_summary(tmp_path) -> None:
    out = tmp_path / "run"
    p = simkv_cmd(*TINY, f"hydra.run.dir={out}", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "TTFT" in p.stdout
    assert "TPOT" in p.stdout
    assert "goodput" in p.stdout
    assert str(out) in p.stdout
    for name in ("requests.parquet", "summary.json", "config.json", "run.json", "latency.png"):
        assert (out / name).is_file(), name
    meta = pq.read_schema(out / "requests.parquet").metadata
    config = json.loads(meta[b"simkv.config"])
    assert config["workload"]["num_requests"] == 60
    assert meta[b"simkv.config_hash"].decode() == json.loads((out / "summary.json").read_text())["config_hash"]
    assert pq.read_table(out / "requests.parquet").num_rows == 60


@pytest.mark.slow
def test_cli_multirun_sweeps_groups_into_separate_folders(tmp_path) -> None:
    p = simkv_cmd("-m", "workload.num_requests=40", "output.progress=false", "output.plot=false",
                  "cluster.replicas=1,2", "router=round_robin,least_outstanding",
                  f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    # Once for the sweep, after its last job (it was printed by every job).
    assert p.stdout.count("compare the sweep: simkv-compare") == 1
    assert p.stdout.rstrip().endswith(f"compare the sweep: simkv-compare {tmp_path / 'sweep'}")
    runs = sorted(d.name for d in (tmp_path / "sweep").iterdir() if d.is_dir())
    # Job number first (every job its own folder), then what was swept.
    assert sorted(name.split("_", 1)[0] for name in runs) == ["0", "1", "2", "3"]
    assert sorted(name.split("_", 1)[1] for name in runs) == [
        f"cluster.replicas={n},router={r},workload.num_requests=40"
        for n in (1, 2) for r in ("least_outstanding", "round_robin")
    ]
    for name in runs:
        summary = json.loads((tmp_path / "sweep" / name / "summary.json").read_text())
        assert summary["requests"]["finished"] == 40


@pytest.mark.slow
def test_cli_other_model_and_hardware(tmp_path) -> None:
    p = simkv_cmd("model=llama3_70b", "hardware=a100_80gb", "cluster.replicas=2",
                  "cluster.tensor_parallel=4", "workload.num_requests=40", "workload.mean_rate=2",
                  "output.progress=false", "output.plot=false", f"hydra.run.dir={tmp_path / 'r'}",
                  cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["requests"]["finished"] == 40
    assert summary["gpu_hours"] > 0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["model=llama4_9000b"], "Available options in 'model'"),
        (["router=random_walk"], "least_outstanding"),
        (["model=llama3_70b", "hardware=a100_80gb"], "does not fit: per GPU 131.4 GiB of weights"),
        (["cluster.replicas=two"], "cluster.replicas"),
    ],
)
def test_cli_errors_name_the_problem(tmp_path, args: list[str], message: str) -> None:
    p = simkv_cmd(*TINY, *args, f"hydra.run.dir={tmp_path / 'r'}", cwd=tmp_path)
    assert p.returncode != 0
    assert message in p.stderr + p.stdout


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_same_config_and_seed_give_identical_bytes_across_processes(tmp_path) -> None:
    digests = []
    for i, hash_seed in enumerate(("1", "2")):
        out = tmp_path / f"r{i}"
        p = simkv_cmd(*TINY, "cluster.replicas=3", "router=least_outstanding", "seed=7",
                      "output.iterations=true", f"hydra.run.dir={out}", cwd=tmp_path,
                      env={"PYTHONHASHSEED": hash_seed})
        assert p.returncode == 0, p.stderr
        digests.append(tuple(_digest(out / n) for n in
                             ("requests.parquet", "iterations.parquet", "summary.json", "config.json")))
    assert digests[0] == digests[1]
    other = tmp_path / "other"
    p = simkv_cmd(*TINY, "cluster.replicas=3", "router=least_outstanding", "seed=8",
                  f"hydra.run.dir={other}", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert _digest(other / "requests.parquet") != digests[0][0]

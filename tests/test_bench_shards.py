"""benchmarks/bench_shards.py at a tiny size: a sharded run against one process, and one shard
alone (--only-shard), as docs/PERFORMANCE.md runs them at full size."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_shards.py"
TINY = ["--requests", "1500", "--replicas", "8", "--rate-per-gpu", "1.0", "--shards", "2"]


def _run(*args: str) -> str:
    p = subprocess.run([sys.executable, str(BENCH), *TINY, *args], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout


@pytest.mark.slow
def test_sharded_against_one_process() -> None:
    out = _run()
    assert "2 shards: wall" in out
    assert "one process: wall" in out
    assert "requests row for row equal to one process's (by request id): True" in out


@pytest.mark.slow
def test_one_shard_alone() -> None:
    out = _run("--only-shard", "1")
    assert "shard 1 of 2 alone (about 750 requests)" in out
    assert "its run: CPU" in out


def test_a_shard_that_does_not_exist_is_refused() -> None:
    p = subprocess.run([sys.executable, str(BENCH), *TINY, "--only-shard", "2"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    assert "--only-shard 2: a shard of 0..1" in p.stderr

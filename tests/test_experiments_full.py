"""The committed full-size results of the experiments cheap enough for CI are what the code
produces now. In a file of its own so that `pytest -n auto --dist loadfile` runs it on one
worker while the quick suite (tests/test_experiments.py) runs on the other: together they
were the last two minutes of CI's run, one after the other."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"

# The full-size experiments cheap enough for CI (seconds each here, measured 2026-12-07 at a
# load of ~4 on 2 cores: see experiments/README.md); the others are verified by hand with
# `python experiments/run_all.py --verify --only NAME` when their code or the engine changes.
FULL_IN_CI = ("h2o", "kvshare", "leoam", "vattention", "flexgen", "workload_fit", "instinfer")


@pytest.mark.slow
def test_committed_full_size_results_of_the_cheap_experiments_are_current(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, str(EXPERIMENTS / "run_all.py"), "--verify", "--jobs", "2",
                        "--only", *FULL_IN_CI], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    for name in FULL_IN_CI:
        assert f"{name}: identical to" in p.stdout or f"{name}: skipped" in p.stdout, name

"""Every experiment in quick mode, through run_all.py, as CI's check that the papers'
figures still regenerate (experiments/README.md has the contract)."""

from __future__ import annotations

import inspect
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
sys.path.insert(0, str(EXPERIMENTS))

import suite  # noqa: E402

# The quick suite must stay well inside CI's budget (measured: about 2 minutes here).
BUDGET_S = 420


def test_every_experiment_follows_the_contract() -> None:
    for name in suite.EXPERIMENTS:
        module = suite.load(name)
        assert list(inspect.signature(module.run).parameters) == ["quick"], name
        for optional in ("figure", "headline"):
            if hasattr(module, optional):
                assert list(inspect.signature(getattr(module, optional)).parameters) == ["df"], name
    # No experiment left out of the list: every script with a run(quick) is in it.
    scripts = {p.stem for p in EXPERIMENTS.glob("*.py")} - {"suite", "run_all", "kv_common", "rules23",
                                                            "verdict"}
    assert scripts == set(suite.EXPERIMENTS)


def test_shared_data_is_found_from_the_environment_or_the_parents(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SIMKV_DATA", str(tmp_path))
    assert suite.data_dir() == tmp_path
    monkeypatch.setenv("SIMKV_DATA", str(tmp_path / "missing"))
    assert suite.data_dir() is None
    monkeypatch.delenv("SIMKV_DATA")
    found = suite.data_dir()
    assert found is None or found.name == "data"


@pytest.mark.slow
def test_quick_suite_regenerates_every_figure_and_results_md(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, str(EXPERIMENTS / "run_all.py"), "--quick", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=BUDGET_S + 120, cwd=tmp_path)
    wall = time.perf_counter() - t0
    assert p.returncode == 0, p.stderr[-3000:]
    assert wall < BUDGET_S, f"the quick suite took {wall:.0f} s (budget {BUDGET_S} s)"
    results = (tmp_path / "RESULTS.md").read_text()
    data = suite.data_dir() is not None
    for name in suite.EXPERIMENTS:
        module = suite.load(name)
        if suite.needs_data(module) and not data:
            assert f"| {name} | | | | | skipped | needs shared/data" in results
            continue
        df = pd.read_csv(tmp_path / f"{name}.csv")
        assert len(df) > 0, name
        if hasattr(module, "figure"):
            for suffix in ("png", "pdf"):
                assert (tmp_path / f"{name}.{suffix}").stat().st_size > 1000, (name, suffix)
        if hasattr(module, "headline"):
            assert f"\n| {name} | " in results, name
    assert "**disagrees**" in results or "agrees" in results

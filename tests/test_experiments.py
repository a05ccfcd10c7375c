"""Every experiment in quick mode, through run_all.py, as CI's check that the papers'
figures still regenerate and that the committed results are what the code produces
(experiments/README.md has the contract): the quick CSVs byte for byte against
experiments/results/quick/, and the full-size CSVs of the cheap experiments through
``run_all.py --verify``."""

from __future__ import annotations

import inspect
import resource
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
sys.path.insert(0, str(EXPERIMENTS))

import run_all  # noqa: E402
import suite  # noqa: E402

# The quick suite must stay well inside CI's budget. Counted in CPU seconds of the child (user +
# system), not wall time: on this shared 2-core machine the wall time measures the neighbours
# (the same suite took 210 s of wall at a load of 5 and 439 s at 7, for ~130 s of CPU).
BUDGET_S = 420


def test_every_experiment_follows_the_contract() -> None:
    for name in suite.EXPERIMENTS:
        module = suite.load(name)
        assert list(inspect.signature(module.run).parameters) == ["quick"], name
        for optional in ("figure", "headline"):
            if hasattr(module, optional):
                assert list(inspect.signature(getattr(module, optional)).parameters) == ["df"], name
    # No experiment left out of the list: every script with a run(quick) is in it.
    scripts = {p.stem for p in EXPERIMENTS.glob("*.py")} - {"suite", "run_all", "kv_common", "verdict"}
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
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    # Two experiments at a time (CI has two cores): the outputs are the same bytes as one at a
    # time, which the byte comparison with the committed quick CSVs below checks.
    p = subprocess.run([sys.executable, str(EXPERIMENTS / "run_all.py"), "--quick", "--jobs", "2",
                        "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=4 * BUDGET_S, cwd=tmp_path)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert p.returncode == 0, p.stderr[-3000:]
    assert cpu < BUDGET_S, f"the quick suite took {cpu:.0f} s of CPU (budget {BUDGET_S} s)"
    results = (tmp_path / "RESULTS.md").read_text()
    data = suite.data_dir() is not None
    for name in suite.EXPERIMENTS:
        module = suite.load(name)
        if suite.needs_data(module) and not data:
            assert f"| {name} | | | | | | skipped | | needs shared/data" in results
            continue
        df = pd.read_csv(tmp_path / f"{name}.csv")
        assert len(df) > 0, name
        # Deterministic runs: the committed quick CSV is what the code produces now.
        committed = EXPERIMENTS / "results" / "quick" / f"{name}.csv"
        assert run_all.same_results(tmp_path / f"{name}.csv", committed, run_all.timing_columns(name)), (
            f"{committed.relative_to(ROOT)} is stale: re-run `python experiments/run_all.py --quick` "
            f"and commit the CSV (or `run_all.py --verify --quick --only {name}` to see the cell)")
        if hasattr(module, "figure"):
            for suffix in ("png", "pdf"):
                assert (tmp_path / f"{name}.{suffix}").stat().st_size > 1000, (name, suffix)
        if hasattr(module, "headline"):
            assert f"\n| {name} | " in results, name
    assert "**disagrees**" in results or "agrees" in results


def test_verify_names_the_stale_cell(tmp_path: Path) -> None:
    """--verify's report on a changed CSV says which cell changed (no simulation here)."""
    new, old = tmp_path / "new.csv", tmp_path / "old.csv"
    pd.DataFrame({"system": ["a", "b"], "x": [1.0, 2.5]}).to_csv(new, index=False)
    pd.DataFrame({"system": ["a", "b"], "x": [1.0, 2.0]}).to_csv(old, index=False)
    assert run_all.first_difference(new, old) == "row 1, column x: 2.5 now, 2.0 committed"
    pd.DataFrame({"system": ["a"], "y": [1.0]}).to_csv(old, index=False)
    assert "columns differ" in run_all.first_difference(new, old)

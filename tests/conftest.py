"""Shared fixtures: small configs that run in milliseconds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

import simkv
from simkv.config.schema import SimConfig

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def small(overrides: list[str] | None = None) -> SimConfig:
    """A tiny, quiet run: 1 replica, 200 Poisson requests, no plot or progress bar."""
    overrides = list(overrides or [])
    base = ["cluster.replicas=1", "output.plot=false", "output.progress=false"]
    if not any(o.startswith("workload=") for o in overrides):
        base += ["workload=poisson", "workload.num_requests=200", "workload.rate=20"]
    return simkv.compose(base + overrides)


@pytest.fixture
def small_cfg() -> SimConfig:
    return small()


# The longest tests, started first: with `pytest -n auto` (the README's command) a worker picks
# them up at the start instead of finishing on one of them alone while the others idle. The
# quick suite of experiments alone is ~40% of the suite's CPU (`--durations`, 2026-12-07).
LONGEST_FIRST = (
    "tests/test_experiments.py::test_quick_suite_regenerates_every_figure_and_results_md",
    "tests/test_experiments_full.py::test_committed_full_size_results_of_the_cheap_experiments_are_current",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Move LONGEST_FIRST to the front; every other test keeps its order (the documented
    commands of one page depend on the ones before them)."""
    first = [i for i in items if i.nodeid in LONGEST_FIRST]
    if first:
        items[:] = first + [i for i in items if i.nodeid not in LONGEST_FIRST]



def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:  # type: ignore[no-untyped-def]
    """The quick subset (`pytest -m "not slow"`) has a budget of 2 minutes on this project's
    2-core machines (CONTRIBUTING.md): say so when a run of it went over, and what to do."""
    if config.getoption("markexpr", "") != "not slow":
        return
    start = getattr(terminalreporter, "_session_start", None)  # (pytest's own clock, 8+)
    elapsed = getattr(start, "elapsed", None)
    took = elapsed().seconds if elapsed is not None else None
    if took is not None and took > 120:
        terminalreporter.write_line(
            f"the quick subset took {took:.0f} s, over its 2-minute budget (on an idle 2-core "
            f"machine; load inflates it): mark the slowest tests @pytest.mark.slow "
            f"(pytest -m 'not slow' --durations=20 lists them)", yellow=True)

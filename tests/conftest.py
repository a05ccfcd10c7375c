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


"""Shared fixtures: small configs that run in milliseconds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

import simkv  # noqa: E402
from simkv.config.schema import SimConfig  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def small(overrides: list[str] | None = None) -> SimConfig:
    """A tiny, quiet run: 1 replica, 200 requests, no plot or progress bar."""
    base = ["cluster.replicas=1", "workload.num_requests=200", "workload.rate=20",
            "output.plot=false", "output.progress=false"]
    return simkv.compose(base + list(overrides or []))


@pytest.fixture
def small_cfg() -> SimConfig:
    return small()

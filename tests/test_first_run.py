"""What a newcomer's first run prints, and what the README says about it, hold together."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import simkv
from simkv.metrics.reasons import explain
from simkv.metrics.summary import format_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_rejections_print_their_reasons_and_the_knob() -> None:
    burst = {"workload": {"name": "burstgpt", "failure_rate": 0.0178}}
    assert explain({"failed_in_trace": 64}, burst) == (
        "64 failed in the trace: BurstGPT's 1.78% failed calls; workload.failure_rate=0 to drop")
    trace = {"workload": {"name": "trace", "failed": "keep"}}
    assert explain({"failed_in_trace": 3, "max_model_len": 5}, trace) == (
        "5 prompt + output longer than model.max_model_len: a model with a longer context; "
        "3 failed in the trace: the trace marks them failed; workload.failed=drop to leave them out")
    assert explain({"something_new": 2}) == "2 something_new"


@pytest.mark.slow
def test_the_readme_explains_the_default_runs_numbers(tmp_path: Path) -> None:
    """The README's paragraph on the first run (40 req/s vs the measured throughput, the
    empty first hour, the burst, the rejections) quotes this run."""
    cfg = simkv.compose(["output.plot=false", "output.progress=false"])
    result = simkv.simulate(cfg, tmp_path / "default")
    table = format_table(result.summary, result.config)
    text = " ".join(README.read_text().split())
    thr = re.search(r"throughput \S+ req/s", table).group(0)
    assert f"`{thr}` is below the 40" in text
    rejected = re.search(r"\d+ rejected \([^)]*\)", table).group(0)
    assert rejected == ("64 rejected (64 failed in the trace: BurstGPT's 1.78% failed calls; "
                        "workload.failure_rate=0 to drop)")
    assert "`64 rejected` are by design" in text
    r = result.requests
    hour_s = result.config["workload"]["hour_s"]
    hours = np.bincount((r["arrival_s"] // hour_s).astype(int))
    assert len(hours) == 11
    assert "cover only 11 trace hours" in text
    assert hours[0] == 0
    assert (hours == 0).sum() == 4
    assert "the first hour and three others are empty" in text
    assert f"one hour brings {hours.max():,} requests ({hours.max() / hour_s:.0f} req/s" in text
    assert f"the run spans {result.summary['makespan_s']:.0f} s" in text

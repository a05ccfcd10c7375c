"""Figures, goodput over busy time and progress: what a user sees of a run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import simkv
from simkv.metrics.plots import job_completion_times
from simkv.metrics.summary import BUSY_WINDOW_S
from tests.conftest import small


@pytest.mark.slow
def test_simulate_leaves_the_matplotlib_backend_alone(tmp_path: Path) -> None:
    """A notebook's inline backend (or a user's window) survives simulate(): the run's
    figures are Figure objects, pyplot is never imported, no backend is selected."""
    code = f"""
import sys, matplotlib
matplotlib.use("svg")  # the user's choice, not simkv's Agg
import simkv
cfg = simkv.compose(["cluster.replicas=1", "workload=poisson", "workload.num_requests=40",
                     "output.progress=false"])
simkv.simulate(cfg, {str(tmp_path / "run")!r})
print(matplotlib.rcParams._get("backend"), "matplotlib.pyplot" in sys.modules)
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={"PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["svg", "False"]
    for name in ("latency.png", "latency.pdf"):
        assert (tmp_path / "run" / name).stat().st_size > 1000
    assert (tmp_path / "run" / "latency.pdf").read_bytes().startswith(b"%PDF")


@pytest.mark.slow  # among the quick subset's slowest (CONTRIBUTING.md)
def test_latency_figure_has_slo_lines_legends_and_a_jct_panel_for_sessions(tmp_path: Path) -> None:
    from simkv.metrics.plots import latency_figure

    res = simkv.simulate(small(["workload=swebench", "workload.num_programs=6", "slo.ttft_s=0.5",
                                "slo.tpot_s=0.05"]), tmp_path)
    fig = latency_figure(tmp_path / "requests.parquet", res.summary, "t")
    visible = [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]
    labels = [ax.get_xlabel() for ax in visible]
    assert any(label.startswith("job completion time") for label in labels)
    ttft = next(ax for ax in visible if ax.get_xlabel() == "TTFT (ms)")
    assert "SLO 500 ms" in [t.get_text() for t in ttft.get_legend().get_texts()]
    tpot = next(ax for ax in visible if ax.get_xlabel() == "TPOT (ms)")
    assert "SLO 50 ms" in [t.get_text() for t in tpot.get_legend().get_texts()]
    # The JCT panel plots summary.json's sessions, one value per completed session.
    jct = job_completion_times(tmp_path / "requests.parquet")
    assert jct.size == res.summary["sessions"]["complete"] == 6
    assert np.percentile(jct, 90) == pytest.approx(res.summary["sessions"]["jct_s"]["p90"])
    # An open-loop run has no JCT panel.
    res = simkv.simulate(small(), tmp_path / "open")
    fig = latency_figure(tmp_path / "open" / "requests.parquet", res.summary, "t")
    assert not any(ax.get_xlabel().startswith("job completion") for ax in fig.axes)


def test_log_axes_label_their_decades_in_plain_text(tmp_path: Path) -> None:
    """A log latency axis reads "10", "100", "1,000" (ms): plain text, not mathtext
    ($10^{3}$), whose parsing was a tenth of the per-run figure's drawing (PERFORMANCE.md)."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from simkv.metrics.plots import latency_figure

    n = 200
    ttft = np.geomspace(0.01, 10.0, n)  # 10 ms to 10 s: a log axis
    arrival = np.arange(n, dtype=float)
    pq.write_table(pa.table({
        "status": ["finished"] * n, "arrival_s": arrival, "completion_s": arrival + ttft + 1.0,
        "output_tokens": np.full(n, 10, np.int32), "session": np.full(n, -1, np.int64),
        "ttft_s": ttft, "tpot_s": np.linspace(0.02, 0.03, n), "e2e_s": ttft + 1.0}),
        tmp_path / "requests.parquet")
    fig = latency_figure(tmp_path / "requests.parquet", {"ttft_s": {"p50": 0.1}}, "t")
    fig.savefig(io.BytesIO(), format="png")  # ticks and their labels are made when drawn
    ttft_ax = next(ax for ax in fig.axes if ax.get_xlabel() == "TTFT (ms)")
    assert ttft_ax.get_xscale() == "log"
    lo, hi = ttft_ax.get_xlim()
    labels = [t.get_text() for t in ttft_ax.get_xticklabels() if lo <= t.get_position()[0] <= hi]
    assert labels == ["10", "100", "1,000", "10,000"]
    tpot_ax = next(ax for ax in fig.axes if ax.get_xlabel() == "TPOT (ms)")
    assert tpot_ax.get_xscale() == "linear"  # 20 to 30 ms: no log axis to label


def test_goodput_over_busy_time_ignores_idle_hours(tmp_path: Path) -> None:
    """Two bursts an hour apart: over the makespan the rate is diluted by the idle hour,
    over busy time it is the rate while serving; both are in summary.json."""
    trace = tmp_path / "t.csv"
    arrivals = [0.1 * i for i in range(50)] + [3600 + 0.1 * i for i in range(50)]
    trace.write_text("arrival_s,prompt_tokens,output_tokens\n"
                     + "".join(f"{a},100,20\n" for a in arrivals))
    res = simkv.simulate(small(["workload=trace", f"workload.path={trace}", "workload.format=native"]),
                         tmp_path / "run")
    s = res.summary
    busy = s["busy"]
    assert busy["window_s"] == BUSY_WINDOW_S
    # Each burst lasts seconds: its 60 s window, the run's first and last windows clipped to
    # the first arrival and the last completion.
    assert BUSY_WINDOW_S <= busy["busy_s"] <= 2 * BUSY_WINDOW_S
    assert busy["fraction_of_makespan"] < 0.05
    met = s["goodput"]["fraction_met"] * s["requests"]["finished"]
    assert s["goodput"]["requests_per_busy_s"] == pytest.approx(met / busy["busy_s"])
    assert s["goodput"]["requests_per_s"] == pytest.approx(met / s["makespan_s"])
    assert s["throughput"]["requests_per_busy_s"] > 20 * s["throughput"]["requests_per_s"]
    from simkv.metrics.summary import format_table

    table = format_table(s)
    assert "over busy time" in table
    assert "0.00 req/s" not in table  # small rates keep their digits


def test_busy_time_of_a_run_without_idle_time_is_its_makespan(tmp_path: Path) -> None:
    s = simkv.simulate(small(["workload.num_requests=400"]), tmp_path / "run").summary
    assert s["busy"]["busy_s"] == pytest.approx(s["makespan_s"])
    assert s["goodput"]["requests_per_busy_s"] == pytest.approx(s["goodput"]["requests_per_s"])


@pytest.mark.slow  # among the quick subset's slowest (CONTRIBUTING.md)
def test_closed_loop_progress_counts_sessions_to_their_total(tmp_path: Path) -> None:
    from simkv.registry import build
    from simkv.runner import _Progress

    cfg = small(["workload=swebench", "workload.num_programs=5"])
    wl = build(cfg.workload)
    p = _Progress(wl, enabled=False)
    assert (p.total, p.unit) == (5, "session")
    # Through a run: the workload reports every session done at the end.
    seen: list[int] = []

    class Spy(_Progress):
        def close(self, done: int) -> None:
            seen.append(self.sessions.sessions_done())
            super().close(done)

    import simkv.runner as runner

    orig = runner._Progress
    runner._Progress = Spy
    try:
        simkv.simulate(cfg, tmp_path)
    finally:
        runner._Progress = orig
    assert seen == [5]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["sessions"]["count"] == 5

"""The latency figure as a matplotlib Figure (notebooks, ``SimResult.figure()``): latency
distributions and throughput over time, because people look first. A run writes the same
panels, from the same numbers, as latency.png and latency.pdf without matplotlib
(metrics/latency_canvas.py).

Drawn from requests.parquet streamed in batches (metrics/figure_data.py: ranges, then
histograms), so a run of any length plots in bounded memory. The curves are histograms (2,000 bins per
distribution: finer than the figure's pixels); the percentile lines are summary.json's exact
values, the SLO lines the run's ``slo`` section. Workloads with sessions (agent programs,
conversations) get a panel of job completion times: one value per session, drawn as an
empirical CDF (matplotlib's ``ecdf``).

The figure is a ``matplotlib.figure.Figure`` built without pyplot (simkv/metrics/style.py), so
drawing it never changes the process's matplotlib backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullLocator

from simkv.metrics import style
from simkv.metrics.figure_data import BINS, PANELS, job_completion_times, latency_data, run_title

__all__ = ["BINS", "PANELS", "job_completion_times", "latency_figure", "plot_run", "run_title"]


def _decade(x: float, _pos: Any = None) -> str:
    """A log axis's tick label as plain text ("10", "1,000", "0.1"): matplotlib's default
    writes mathtext ($10^{3}$), and parsing it (pyparsing) was a tenth of the figure's
    drawing, which every run pays (docs/PERFORMANCE.md)."""
    return f"{x:,.0f}" if x >= 1 else f"{x:g}"


def latency_figure(requests_path: Path, summary: dict[str, Any], title: str = "") -> Figure:
    """The run's latency figure: TTFT, TPOT and E2E CDFs with p50/p90/p99 and the SLOs,
    throughput and arrivals over time, and job completion times for session workloads."""
    data = latency_data(requests_path, summary)
    edges, counts, log, bins, jct = data.edges, data.counts, data.log, data.bins, data.jct
    tok, arr = data.tokens, data.arrivals
    timed = len(bins) > 0
    slo = summary.get("goodput", {}).get("slo", {})

    with style.context():
        ncols = 3 if jct.size else 2
        # Placed by hand, not by the layout engine: this figure is drawn after every run, and
        # constrained layout plus a tight bounding box drew it three times per format.
        w, h = 5.0 * ncols, 7.5
        fig, axes = style.figure(2, ncols, size=(w, h), layout=None)
        fig.subplots_adjust(left=0.75 / w, right=1 - 0.75 / w, bottom=0.55 / h, top=1 - 0.5 / h,
                            wspace=0.3, hspace=0.25)
        flat = list(axes.flat)
        for ax, (col, label) in zip(flat[:3], PANELS, strict=True):
            if col in edges and counts[col].sum():
                c = counts[col]
                ax.plot(edges[col][1:] * 1e3, np.cumsum(c) / c.sum(), lw=1.5, label="CDF")
                for i, p in enumerate((50, 90, 99)):
                    x = summary.get(col, {}).get(f"p{p}")
                    if x is not None:
                        ax.axvline(x * 1e3, ls=":", c="grey", lw=0.8,
                                   label="p50 / p90 / p99" if i == 0 else None)
                        ax.text(x * 1e3, 0.02 + p / 500, f"p{p}", fontsize=7, color="grey")
                if col in slo:
                    ax.axvline(slo[col] * 1e3, c=style.SLO, lw=1.2,
                               label=f"SLO {slo[col] * 1e3:g} ms")
                if log[col]:
                    ax.set_xscale("log")
                    # Decades only: minor ticks are most of a log axis's drawing time.
                    ax.xaxis.set_minor_locator(NullLocator())
                    ax.xaxis.set_major_formatter(FuncFormatter(_decade))
                ax.legend(loc="lower right")
            ax.set_xlabel(f"{label} (ms)")
            ax.set_ylabel("fraction of requests")
        ax = flat[3]
        if timed:
            width = data.width()
            ax.plot(bins[:-1], tok / width, label="output tokens/s (completed)")
            ax2 = ax.twinx()
            ax2.plot(bins[:-1], arr / width, c=style.PALETTE[1], lw=1, label="arrivals/s")
            ax2.set_ylabel("arrivals/s")
            ax2.grid(False)
            handles = ax.get_legend_handles_labels()
            more = ax2.get_legend_handles_labels()
            ax.legend(handles[0] + more[0], handles[1] + more[1], loc="upper right")
        ax.set_xlabel("simulated time (s)")
        ax.set_ylabel("output tokens/s")
        if jct.size:
            ax = flat[4]
            ax.ecdf(jct, label=f"{jct.size} sessions")
            jd = summary["sessions"].get("jct_s", {})
            if jd.get("p90") is not None:
                ax.axvline(jd["p90"], ls=":", c="grey", lw=0.8, label=f"p90 {jd['p90']:.1f} s")
            ax.set_xlabel("job completion time (s): first arrival to last completion")
            ax.set_ylabel("fraction of sessions")
            ax.legend(loc="lower right")
            flat[5].set_visible(False)
        fig.suptitle(title, y=1 - 0.15 / h)
    return fig


def plot_run(requests_path: Path, summary: dict[str, Any], path: Path, title: str) -> None:
    """Write the latency figure to ``path`` (its suffix picks the format)."""
    style.save(latency_figure(requests_path, summary, title), path, formats=(path.suffix.lstrip("."),))

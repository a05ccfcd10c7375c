"""latency.png (and latency.pdf): latency distributions and throughput over time, because
people look first.

Drawn from requests.parquet streamed in batches (two passes: ranges, then histograms), so a
run of any length plots in bounded memory. The curves are histograms (2,000 bins per
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

from simkv.columns import equal, to_numpy
from simkv.metrics import style
from simkv.metrics.summary import _Sessions, batches

BINS = 2000
PANELS = (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("e2e_s", "E2E latency"))


def _batches(path: Path) -> Any:
    cols = ["status", "arrival_s", "completion_s", "output_tokens", "session", *(c for c, _ in PANELS)]
    for b in batches(path, cols):
        done = equal(b.column("status"), "finished")
        out = to_numpy(b.column("output_tokens"))[done]
        values = {col: to_numpy(b.column(col))[done] for col, _ in PANELS}
        values["tpot_s"] = values["tpot_s"][out > 1]  # undefined for one-token outputs
        yield b, done, out, values


def job_completion_times(requests_path: Path) -> np.ndarray:
    """Seconds from each session's first arrival to its last completion, over sessions
    whose every call finished (summary.json's ``sessions.jct_s`` is their distribution)."""
    sessions = _Sessions()
    for b, done, _, _ in _batches(requests_path):
        sessions.add(to_numpy(b.column("session")), to_numpy(b.column("arrival_s")),
                     to_numpy(b.column("completion_s")), done)
    sessions.merge()
    if not len(sessions.ids):
        return np.empty(0)
    first, last, ok, _ = sessions.cols
    return (last - first)[ok]


def run_title(config: dict[str, Any]) -> str:
    """What ran, in one line (a figure's title): model, GPUs, scheduler, router, workload."""
    c = config.get("cluster", {})
    hw = config.get("hardware", {})
    where = (f"pools {', '.join(config['pools'])}" if config.get("pools") else
             f"{c.get('replicas', 1)} x {hw.get('profile') or hw.get('path')}"
             + (f" (TP{c['tensor_parallel']})" if c.get("tensor_parallel", 1) > 1 else ""))

    def name(key: str) -> str:
        return str((config.get(key) or {}).get("name", "?"))

    return (f"{config.get('model', {}).get('name', '?')} on {where}: {name('scheduler')} scheduler, "
            f"{name('router')} router, {name('workload')} workload")


def _decade(x: float, _pos: Any = None) -> str:
    """A log axis's tick label as plain text ("10", "1,000", "0.1"): matplotlib's default
    writes mathtext ($10^{3}$), and parsing it (pyparsing) was a tenth of the figure's
    drawing, which every run pays (docs/PERFORMANCE.md)."""
    return f"{x:,.0f}" if x >= 1 else f"{x:g}"


def latency_figure(requests_path: Path, summary: dict[str, Any], title: str = "") -> Figure:
    """The run's latency figure: TTFT, TPOT and E2E CDFs with p50/p90/p99 and the SLOs,
    throughput and arrivals over time, and job completion times for session workloads."""
    lo = dict.fromkeys((c for c, _ in PANELS), np.inf)
    hi = dict.fromkeys((c for c, _ in PANELS), -np.inf)
    t0, t1 = np.inf, -np.inf
    n_done = 0
    for b, done, _, values in _batches(requests_path):
        arrival, completion = to_numpy(b.column("arrival_s")), to_numpy(b.column("completion_s"))[done]
        if arrival.size:
            t0 = min(t0, float(arrival.min()))
        if completion.size:
            t1 = max(t1, float(completion.max()))
            n_done += completion.size
        for col, v in values.items():
            if v.size:
                lo[col], hi[col] = min(lo[col], float(v.min())), max(hi[col], float(v.max()))
    log = {c: hi[c] > 20 * max(lo[c], 1e-9) for c in lo}
    edges = {c: (np.geomspace(max(lo[c], 1e-9), hi[c], BINS + 1) if log[c]
                 else np.linspace(lo[c], hi[c] + 1e-12, BINS + 1)) for c in lo if np.isfinite(lo[c])}
    counts = {c: np.zeros(BINS, np.int64) for c in edges}
    timed = n_done > 0
    bins = np.linspace(t0, t1, min(100, max(10, n_done // 20))) if timed else np.empty(0)
    tok = np.zeros(max(len(bins) - 1, 0))
    arr = np.zeros(max(len(bins) - 1, 0))
    for b, done, out, values in _batches(requests_path):
        for col, v in values.items():
            if col in edges:
                counts[col] += np.histogram(np.clip(v, edges[col][0], edges[col][-1]),
                                            bins=edges[col])[0]
        if timed:
            tok += np.histogram(to_numpy(b.column("completion_s"))[done], bins=bins, weights=out)[0]
            arr += np.histogram(to_numpy(b.column("arrival_s")), bins=bins)[0]
    jct = job_completion_times(requests_path) if summary.get("sessions", {}).get("count") else np.empty(0)
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
            width = bins[1] - bins[0] if len(bins) > 1 else max(t1 - t0, 1e-9)
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

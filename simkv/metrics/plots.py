"""latency.png: latency distributions and throughput over time, because people look first.

Drawn from requests.parquet streamed in batches (two passes: ranges, then histograms), so a
run of any length plots in bounded memory. The curves are histograms (2,000 bins per
distribution: finer than the figure's pixels); the percentile lines are summary.json's exact
values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc

from simkv.metrics.summary import batches

BINS = 2000
PANELS = (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("e2e_s", "E2E latency"))


def _batches(path: Path) -> Any:
    cols = ["status", "arrival_s", "completion_s", "output_tokens", "ttft_s", "tpot_s", "e2e_s"]
    for b in batches(path, cols):
        done = pc.equal(b.column("status"), "finished").to_numpy(zero_copy_only=False)
        out = b.column("output_tokens").to_numpy()[done]
        values = {col: b.column(col).to_numpy()[done] for col, _ in PANELS}
        values["tpot_s"] = values["tpot_s"][out > 1]  # undefined for one-token outputs
        yield (b.column("arrival_s").to_numpy(), b.column("completion_s").to_numpy()[done],
               out, values)


def plot_run(requests_path: Path, summary: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lo = dict.fromkeys((c for c, _ in PANELS), np.inf)
    hi = dict.fromkeys((c for c, _ in PANELS), -np.inf)
    t0, t1 = np.inf, -np.inf
    n_done = 0
    for arrival, completion, _, values in _batches(requests_path):
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
    for arrival, completion, out, values in _batches(requests_path):
        for col, v in values.items():
            if col in edges:
                counts[col] += np.histogram(np.clip(v, edges[col][0], edges[col][-1]),
                                            bins=edges[col])[0]
        if timed:
            tok += np.histogram(completion, bins=bins, weights=out)[0]
            arr += np.histogram(arrival, bins=bins)[0]

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    for ax, (col, label) in zip(axes.flat[:3], PANELS, strict=True):
        if col in edges and counts[col].sum():
            c = counts[col]
            ax.plot(edges[col][1:] * 1e3, np.cumsum(c) / c.sum(), lw=1.5)
            for p in (50, 90, 99):
                x = summary.get(col, {}).get(f"p{p}")
                if x is not None:
                    ax.axvline(x * 1e3, ls=":", c="grey", lw=0.8)
                    ax.text(x * 1e3, 0.02 + p / 500, f"p{p}", fontsize=7, color="grey")
            if log[col]:
                ax.set_xscale("log")
        ax.set_xlabel(f"{label} (ms)")
        ax.set_ylabel("fraction of requests")
        ax.grid(alpha=0.3)
    ax = axes.flat[3]
    if timed:
        width = bins[1] - bins[0] if len(bins) > 1 else max(t1 - t0, 1e-9)
        ax.plot(bins[:-1], tok / width, label="output tokens/s (completed)")
        ax2 = ax.twinx()
        ax2.plot(bins[:-1], arr / width, c="tab:orange", lw=1, label="arrivals/s")
        ax2.set_ylabel("arrivals/s", color="tab:orange")
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("output tokens/s")
    ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)

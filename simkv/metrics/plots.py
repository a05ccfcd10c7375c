"""latency.png: latency distributions and throughput over time, because people look first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def plot_run(requests: pd.DataFrame, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = requests[requests["status"] == "finished"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    for ax, col, label in zip(axes.flat[:3], ("ttft_s", "tpot_s", "e2e_s"),
                              ("TTFT", "TPOT", "E2E latency"), strict=True):
        v = np.sort(done[col].to_numpy())
        if col == "tpot_s":
            v = np.sort(done.loc[done["output_tokens"] > 1, col].to_numpy())
        if v.size:
            ax.plot(v * 1e3, np.arange(1, v.size + 1) / v.size, lw=1.5)
            for p in (50, 90, 99):
                x = np.percentile(v, p) * 1e3
                ax.axvline(x, ls=":", c="grey", lw=0.8)
                ax.text(x, 0.02 + p / 500, f"p{p}", fontsize=7, color="grey")
            if v[-1] > 20 * max(v[0], 1e-9):
                ax.set_xscale("log")
        ax.set_xlabel(f"{label} (ms)")
        ax.set_ylabel("fraction of requests")
        ax.grid(alpha=0.3)
    ax = axes.flat[3]
    if len(done):
        end = done["completion_s"].to_numpy()
        span = max(end.max() - requests["arrival_s"].min(), 1e-9)
        bins = np.linspace(requests["arrival_s"].min(), end.max(), min(100, max(10, len(done) // 20)))
        width = bins[1] - bins[0] if len(bins) > 1 else span
        tok, _ = np.histogram(end, bins=bins, weights=done["output_tokens"].to_numpy())
        arr, _ = np.histogram(requests["arrival_s"].to_numpy(), bins=bins)
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

"""Fit the hourly-volume parameters of the BurstGPT generator from the real hourly aggregates.

    python workloads/fit_burstgpt.py \
        [../shared/data/burstgpt/derived/burstgpt1_sessions_by_trace_hour_gap15m.csv]

Reads the per-trace-hour session aggregates of the full BurstGPT_1.csv (requests per hour =
avg_turns x session_count; hours missing from the file had no request), and prints the
numbers embedded in workloads/burstgpt.yaml: the share of empty hours and a Gamma fitted to
the non-empty hours by moments (so that the generated series has the real mean and CV).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT = (Path(__file__).resolve().parents[2] / "shared" / "data" / "burstgpt" / "derived"
           / "burstgpt1_sessions_by_trace_hour_gap15m.csv")


def hourly_counts(path: Path) -> np.ndarray:
    df = pd.read_csv(path)
    hours = (df["time_bin"] // 3600).astype(int)
    counts = np.zeros(int(hours.max()) + 1)
    counts[hours.to_numpy()] = np.rint(df["avg_turns"] * df["session_count"])
    return counts


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT
    c = hourly_counts(path)
    nz = c[c > 0]
    mean, cv = c.mean(), c.std() / c.mean()
    m, v = nz.mean(), nz.var()
    print(f"hours {len(c)}, requests {c.sum():.0f}, empty share {1 - len(nz) / len(c):.4f}")
    print(f"requests/hour mean {mean:.1f}, CV {cv:.3f}")
    print(f"non-empty hours: Gamma by moments shape {m * m / v:.4f}, scale {v / m:.1f}")


if __name__ == "__main__":
    main()

"""What the latency figure shows, as numpy arrays: read from requests.parquet in two streamed
passes (ranges, then histograms), with no plotting library imported.

Both drawings of the figure use it: the run's latency.png and latency.pdf (metrics/canvas.py,
drawn without matplotlib) and the matplotlib Figure of notebooks and ``SimResult.figure()``
(metrics/plots.py), so the two show the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from simkv.columns import equal, to_numpy
from simkv.metrics.summary import _Sessions, batches

# Bins per latency distribution: finer than the figure's pixels.
BINS = 2000
PANELS = (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("e2e_s", "E2E latency"))


# A file of at most this many rows is read once and its columns kept for the second pass
# (at most ~12 MiB); a longer one is read twice, in bounded memory.
ONE_PASS_ROWS = 262_144


def _batches(path: Path) -> Any:
    cols = ["status", "arrival_s", "completion_s", "output_tokens", "session", *(c for c, _ in PANELS)]
    for b in batches(path, cols):
        done = equal(b.column("status"), "finished")
        out = to_numpy(b.column("output_tokens"))[done]
        values = {col: to_numpy(b.column(col))[done] for col, _ in PANELS}
        values["tpot_s"] = values["tpot_s"][out > 1]  # undefined for one-token outputs
        yield b, done, out, values


def _series(path: Path) -> Any:
    """Per row group: arrivals, completions and output tokens of finished requests, and the
    latency values of each panel."""
    for b, done, out, values in _batches(path):
        yield to_numpy(b.column("arrival_s")), to_numpy(b.column("completion_s"))[done], out, values


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


@dataclass
class LatencyData:
    """The figure's numbers. ``edges[col]``/``counts[col]``: a histogram of BINS bins per
    latency column with values (log-spaced where ``log[col]``); ``bins``: the edges of the
    time series, ``tokens``/``arrivals`` its output tokens of completed requests and its
    arrivals per bin; ``jct``: job completion times (sessions only)."""

    edges: dict[str, np.ndarray] = field(default_factory=dict)
    counts: dict[str, np.ndarray] = field(default_factory=dict)
    log: dict[str, bool] = field(default_factory=dict)
    bins: np.ndarray = field(default_factory=lambda: np.empty(0))
    tokens: np.ndarray = field(default_factory=lambda: np.empty(0))
    arrivals: np.ndarray = field(default_factory=lambda: np.empty(0))
    span: tuple[float, float] = (0.0, 0.0)
    jct: np.ndarray = field(default_factory=lambda: np.empty(0))

    def cdf(self, col: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(x in ms, fraction of requests at or below x), or None where nothing is shown."""
        if col not in self.edges or not self.counts[col].sum():
            return None
        c = self.counts[col]
        return self.edges[col][1:] * 1e3, np.cumsum(c) / c.sum()

    def width(self) -> float:
        """Seconds per bin of the time series."""
        t0, t1 = self.span
        return float(self.bins[1] - self.bins[0]) if len(self.bins) > 1 else max(t1 - t0, 1e-9)


def latency_data(requests_path: Path, summary: dict[str, Any]) -> LatencyData:
    """Histograms of TTFT, TPOT and E2E latency, throughput and arrivals over time, and job
    completion times where the summary counts sessions."""
    lo = dict.fromkeys((c for c, _ in PANELS), np.inf)
    hi = dict.fromkeys((c for c, _ in PANELS), -np.inf)
    t0, t1 = np.inf, -np.inf
    n_done = 0
    import pyarrow.parquet as pq

    kept: list[Any] | None = [] if pq.ParquetFile(requests_path).metadata.num_rows <= ONE_PASS_ROWS else None
    for arrival, completion, out, values in _series(requests_path):
        if kept is not None:
            kept.append((arrival, completion, out, values))
        if arrival.size:
            t0 = min(t0, float(arrival.min()))
        if completion.size:
            t1 = max(t1, float(completion.max()))
            n_done += completion.size
        for col, v in values.items():
            if v.size:
                lo[col], hi[col] = min(lo[col], float(v.min())), max(hi[col], float(v.max()))
    log = {c: bool(hi[c] > 20 * max(lo[c], 1e-9)) for c in lo}
    edges = {c: (np.geomspace(max(lo[c], 1e-9), hi[c], BINS + 1) if log[c]
                 else np.linspace(lo[c], hi[c] + 1e-12, BINS + 1)) for c in lo if np.isfinite(lo[c])}
    counts = {c: np.zeros(BINS, np.int64) for c in edges}
    timed = n_done > 0
    bins = np.linspace(t0, t1, min(100, max(10, n_done // 20))) if timed else np.empty(0)
    tok = np.zeros(max(len(bins) - 1, 0))
    arr = np.zeros(max(len(bins) - 1, 0))
    for arrival, completion, out, values in (kept if kept is not None else _series(requests_path)):
        for col, v in values.items():
            if col in edges:
                counts[col] += np.histogram(np.clip(v, edges[col][0], edges[col][-1]),
                                            bins=edges[col])[0]
        if timed:
            tok += np.histogram(completion, bins=bins, weights=out)[0]
            arr += np.histogram(arrival, bins=bins)[0]
    jct = job_completion_times(requests_path) if summary.get("sessions", {}).get("count") else np.empty(0)
    return LatencyData(edges, counts, log, bins, tok, arr, (float(t0), float(t1)) if timed else (0.0, 0.0),
                       jct)

"""Statistics and plots of a trace, the numbers people check a workload by."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from simkv.workload.readers import Columns

PCTS = (10, 25, 50, 75, 90, 95, 99)


def _dist(x: np.ndarray) -> dict[str, float]:
    if not x.size:
        return {}
    p = np.percentile(x, PCTS)
    return {"mean": float(x.mean()), **{f"p{q}": float(v) for q, v in zip(PCTS, p, strict=True)},
            "max": float(x.max())}


def ks_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov distance (max gap between the empirical CDFs)."""
    from scipy.stats import ks_2samp

    return float(ks_2samp(a, b).statistic)


class TraceSummary:
    """Collects the columns of a trace stream (numbers only) and summarises them."""

    def __init__(self, batches: Iterable[Columns]) -> None:
        parts: dict[str, list[np.ndarray]] = {"t": [], "p": [], "o": [], "s": [], "k": [], "think": []}
        self.models: Counter[str] = Counter()
        self.logs: Counter[str] = Counter()
        self.failed = 0
        self.skipped = 0
        for c in batches:
            parts["t"].append(c.arrival_s)
            parts["p"].append(c.prompt_tokens)
            parts["o"].append(c.output_tokens)
            if c.session is not None:
                parts["s"].append(c.session)
                parts["k"].append(c.turn if c.turn is not None else np.zeros(len(c.session)))
                if c.think_s is not None:
                    parts["think"].append(c.think_s)
            if c.model is not None:
                self.models.update(m for m in c.model if m)
            if c.log_type is not None:
                self.logs.update(x for x in c.log_type if x)
            if c.failed is not None:
                self.failed += int(c.failed.sum())
            self.skipped += c.skipped
        cat = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in parts.items()}
        self.arrival, self.prompt, self.output = cat["t"], cat["p"], cat["o"]
        self.session, self.turn, self.think = cat["s"], cat["k"], cat["think"]

    def to_dict(self) -> dict[str, Any]:
        n = int(self.arrival.size)
        span = float(self.arrival[-1] - self.arrival[0]) if n > 1 else 0.0
        gaps = np.diff(self.arrival)
        out: dict[str, Any] = {
            "requests": n,
            "span_s": span,
            "mean_rate_per_s": n / span if span > 0 else None,
            "interarrival_cv": float(gaps.std() / gaps.mean()) if gaps.size and gaps.mean() > 0 else None,
            "prompt_tokens": _dist(self.prompt),
            "output_tokens": _dist(self.output[self.output > 0] if self.failed else self.output),
            "failed_share": self.failed / n if n else 0.0,
            "skipped_rows": self.skipped,
        }
        if span >= 2 * 3600:
            per_hour = np.bincount(((self.arrival - self.arrival[0]) // 3600).astype(np.int64))
            out["requests_per_hour"] = {"mean": float(per_hour.mean()),
                                        "cv": float(per_hour.std() / per_hour.mean()),
                                        "empty_share": float((per_hour == 0).mean())}
        if span >= 120:
            per_min = np.bincount(((self.arrival - self.arrival[0]) // 60).astype(np.int64))
            out["requests_per_minute"] = {"mean": float(per_min.mean()),
                                          "cv": float(per_min.std() / per_min.mean())}
        for name, counter in (("models", self.models), ("log_types", self.logs)):
            if counter:
                out[name] = {k: v / n for k, v in sorted(counter.items())}
        if self.session.size:
            real = self.session[self.session >= 0]
            if real.size:
                calls = np.bincount(real.astype(np.int64))
                calls = calls[calls > 0]
                out["sessions"] = {"count": int(calls.size), "calls_per_session": _dist(calls)}
                if self.think.size:
                    later = self.think[(self.session >= 0) & (self.turn > 0)]
                    out["sessions"]["think_s"] = _dist(later)
        return out


def format_stats(d: dict[str, Any]) -> str:
    lines = [f"requests      {d['requests']:,} over {d['span_s']:,.1f} s"
             + (f" ({d['mean_rate_per_s']:.3f}/s)" if d.get("mean_rate_per_s") else "")]
    if d.get("interarrival_cv") is not None:
        lines.append(f"inter-arrival CV {d['interarrival_cv']:.3f}")
    for key in ("requests_per_hour", "requests_per_minute"):
        if key in d:
            v = d[key]
            extra = f", empty {v['empty_share']:.1%}" if "empty_share" in v else ""
            lines.append(f"{key.replace('_', ' '):<20}mean {v['mean']:.1f}, CV {v['cv']:.3f}{extra}")
    for key in ("prompt_tokens", "output_tokens"):
        v = d[key]
        if v:
            lines.append(f"{key.replace('_', ' '):<14}mean {v['mean']:.1f}  p50 {v['p50']:.0f}  "
                         f"p90 {v['p90']:.0f}  p99 {v['p99']:.0f}  max {v['max']:.0f}")
    if d.get("failed_share"):
        lines.append(f"failed        {d['failed_share']:.3%}")
    for key in ("models", "log_types"):
        if key in d:
            lines.append(f"{key:<14}" + ", ".join(f"{k or '(none)'} {v:.2%}" for k, v in d[key].items()))
    if "sessions" in d:
        s = d["sessions"]
        lines.append(f"sessions      {s['count']:,}; calls per session mean "
                     f"{s['calls_per_session']['mean']:.1f}, p50 {s['calls_per_session']['p50']:.0f}")
        if s.get("think_s"):
            lines.append(f"think/tool s  mean {s['think_s']['mean']:.2f}, p50 {s['think_s']['p50']:.2f}, "
                         f"p90 {s['think_s']['p90']:.2f}")
    if d.get("skipped_rows"):
        lines.append(f"skipped rows  {d['skipped_rows']}")
    return "\n".join(lines)


def plot_trace(s: TraceSummary, path: Path, title: str) -> None:
    """Arrivals over time and the CDFs of lengths and gaps (and the PDF beside ``path``)."""
    from simkv.metrics import style

    t = s.arrival - (s.arrival[0] if s.arrival.size else 0.0)
    span = float(t[-1]) if t.size else 1.0
    width = 3600.0 if span > 6 * 3600 else (60.0 if span > 600 else max(span / 100, 1e-3))
    counts = np.bincount((t // width).astype(np.int64)) if t.size else np.zeros(1)
    with style.context():
        fig, ax = style.figure(2, 2, size=(11, 7.5))
        ax[0, 0].plot(np.arange(len(counts)) * width, counts / width, lw=1)
        ax[0, 0].set_xlabel("time (s)")
        ax[0, 0].set_ylabel(f"arrivals/s (per {width:g} s)")
        for a, x, label in ((ax[0, 1], s.prompt, "prompt tokens"), (ax[1, 0], s.output, "output tokens")):
            v = x[x > 0]
            if v.size:
                a.ecdf(v)
                a.set_xscale("log")
            a.set_xlabel(label)
            a.set_ylabel("fraction of requests")
        gaps = np.diff(s.arrival)
        gaps = gaps[gaps > 0]
        if gaps.size:
            ax[1, 1].ecdf(gaps)
            ax[1, 1].set_xscale("log")
        ax[1, 1].set_xlabel("inter-arrival time (s), positive gaps")
        ax[1, 1].set_ylabel("fraction")
        fig.suptitle(title)
    style.save(fig, path)

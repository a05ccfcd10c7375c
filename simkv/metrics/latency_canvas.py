"""The run's latency.png and latency.pdf, drawn on metrics/canvas.py without matplotlib.

The same panels as ``plots.latency_figure`` (the matplotlib Figure of notebooks and
``SimResult.figure()``), from the same numbers (metrics/figure_data.py) and in simkv's style
(simkv.mplstyle's colours, sizes and grid): TTFT, TPOT and E2E CDFs with the p50/p90/p99
lines of summary.json and the SLO lines, throughput and arrivals over time on twin axes, and
for session workloads the job completion times' empirical CDF. Axes are placed by hand,
ticks chosen as matplotlib's MaxNLocator chooses them (1, 2, 2.5, 5 times a power of ten),
log axes labelled by decade in plain text.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from simkv.metrics.canvas import Canvas, Color, rgb
from simkv.metrics.figure_data import PANELS, LatencyData

# simkv.mplstyle (read there by matplotlib; repeated here so this module needs no matplotlib).
PALETTE = ("#0072B2", "#E69F00")
SLO = "#D55E00"
GREY = rgb("#808080")
BLACK: Color = (0.0, 0.0, 0.0)
GRID = rgb("#b0b0b0", 0.3)
DPI = 110
TITLE, LABEL, TICK, LEGEND, NOTE = 11.0, 9.0, 8.0, 8.0, 7.0
LW, THIN, SPINE = 1.5, 0.8, 0.8
TICK_LEN, TICK_PAD, LABEL_PAD = 3.5, 3.5, 4.0
MAX_POINTS = 2000  # per curve: finer than the panel's pixels


def dotted(lw: float) -> tuple[float, float]:
    """matplotlib's ``:`` at line width ``lw``."""
    return (lw, 1.65 * lw)


def nice_ticks(lo: float, hi: float, nbins: int) -> list[float]:
    """Ticks in [lo, hi] at a step of 1, 2, 2.5, 5 or 10 times a power of ten, at most
    ``nbins`` intervals (matplotlib's MaxNLocator)."""
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / max(nbins, 1)
    scale = 10 ** math.floor(math.log10(raw))
    step = next(s * scale for s in (1, 2, 2.5, 5, 10) if s * scale >= raw * (1 - 1e-9))
    first = math.ceil(lo / step - 1e-9)
    ticks = [i * step for i in range(first, math.floor(hi / step + 1e-9) + 1)]
    return [0.0 if abs(t) < step * 1e-9 else t for t in ticks]


def tick_label(v: float, ticks: list[float]) -> str:
    """As matplotlib's ScalarFormatter writes them: the decimals the step needs."""
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else abs(v) or 1.0
    scaled = [step * 10 ** d for d in range(7)]
    decimals = next((d for d, s in enumerate(scaled) if abs(s - round(s)) < 1e-6 * s), 6)
    return f"{v:.{decimals}f}"


def decade(x: float) -> str:
    """A log axis's label in plain text ("10", "1,000", "0.1"), as plots._decade."""
    return f"{x:,.0f}" if x >= 1 else f"{x:g}"


class Axis:
    """One axis's limits (with matplotlib's 5% margins) and scale."""

    def __init__(self, lo: float, hi: float, log: bool) -> None:
        self.log = log
        if log:
            lo, hi = math.log10(lo), math.log10(hi)
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        pad = 0.05 * (hi - lo)
        self.lo, self.hi = lo - pad, hi + pad

    def frac(self, v: np.ndarray | float) -> Any:
        """Where values fall, 0 at the low limit and 1 at the high one."""
        v = np.log10(np.maximum(v, 1e-300)) if self.log else np.asarray(v, float)
        return (v - self.lo) / (self.hi - self.lo)

    def ticks(self, nbins: int) -> tuple[list[float], list[str]]:
        if not self.log:
            ticks = nice_ticks(self.lo, self.hi, nbins)
            return ticks, [tick_label(t, ticks) for t in ticks]
        lo, hi = math.ceil(self.lo - 1e-9), math.floor(self.hi + 1e-9)
        ticks = [10.0 ** e for e in range(lo, hi + 1)]
        if len(ticks) < 3:  # under two decades shown: 2 and 5 times them too
            ticks = sorted(m * 10.0 ** e for e in range(lo - 1, hi + 1) for m in (1, 2, 5)
                           if self.lo - 1e-9 <= math.log10(m * 10.0 ** e) <= self.hi + 1e-9)
        return ticks, [decade(t) for t in ticks]


class Panel:
    """An axes box on the canvas (points), its x axis and one or two y axes."""

    def __init__(self, canvas: Canvas, box: tuple[float, float, float, float]) -> None:
        self.c = canvas
        self.x0, self.y0, self.w, self.h = box
        self.legend: list[tuple[str, Color, float, tuple[float, float] | None]] = []

    def px(self, ax: Axis, v: Any) -> Any:
        return self.x0 + ax.frac(v) * self.w

    def py(self, ax: Axis, v: Any) -> Any:
        return self.y0 + ax.frac(v) * self.h

    def x_ticks(self, xa: Axis) -> tuple[list[float], list[str]]:
        """The x axis's ticks, fewer where their labels would not fit side by side (long
        numbers: matplotlib would write an offset or a power of ten instead)."""
        nbins = max(1, min(9, int(self.w / (TICK * 3))))
        while True:
            ticks, labels = xa.ticks(nbins)
            width = sum(self.c.text_width(s, TICK) + TICK for s in labels)
            if nbins == 1 or xa.log or width <= self.w:
                return ticks, labels
            nbins -= 1

    def frame(self, xa: Axis, ya: Axis, xlabel: str, ylabel: str, right: Axis | None = None,
              right_label: str = "") -> None:
        """Grid, spines, ticks and their labels, and the axis labels."""
        c = self.c
        xt, xl = self.x_ticks(xa)
        yt, yl = ya.ticks(max(1, min(9, int(self.h / (TICK * 2)))))
        xt_in = [(t, s) for t, s in zip(xt, xl, strict=True) if 0 <= xa.frac(t) <= 1 + 1e-9]
        yt_in = [(t, s) for t, s in zip(yt, yl, strict=True) if 0 <= ya.frac(t) <= 1 + 1e-9]
        for t, _ in xt_in:
            x = self.px(xa, t)
            c.line([x, x], [self.y0, self.y0 + self.h], GRID, THIN)
        for t, _ in yt_in:
            y = self.py(ya, t)
            c.line([self.x0, self.x0 + self.w], [y, y], GRID, THIN)
        c.line([self.x0, self.x0], [self.y0, self.y0 + self.h], BLACK, SPINE)
        c.line([self.x0, self.x0 + self.w], [self.y0, self.y0], BLACK, SPINE)
        for t, s in xt_in:
            x = self.px(xa, t)
            c.line([x, x], [self.y0, self.y0 - TICK_LEN], BLACK, SPINE)
            c.text(x, self.y0 - TICK_LEN - TICK_PAD, s, TICK, ha="center", va="top")
        widest = 0.0
        for t, s in yt_in:
            y = self.py(ya, t)
            c.line([self.x0, self.x0 - TICK_LEN], [y, y], BLACK, SPINE)
            c.text(self.x0 - TICK_LEN - TICK_PAD, y, s, TICK, ha="right", va="center")
            widest = max(widest, c.text_width(s, TICK))
        c.text(self.x0 + self.w / 2, self.y0 - TICK_LEN - TICK_PAD - 1.0 * TICK - LABEL_PAD, xlabel,
               LABEL, ha="center", va="top")
        c.text(self.x0 - TICK_LEN - TICK_PAD - widest - LABEL_PAD, self.y0 + self.h / 2, ylabel,
               LABEL, ha="center", va="bottom", rotation=90)
        if right is not None:
            xr = self.x0 + self.w
            c.line([xr, xr], [self.y0, self.y0 + self.h], BLACK, SPINE)
            rt, rl = right.ticks(max(1, min(9, int(self.h / (TICK * 2)))))
            widest = 0.0
            for t, s in zip(rt, rl, strict=True):
                if 0 <= right.frac(t) <= 1 + 1e-9:
                    y = self.py(right, t)
                    c.line([xr, xr + TICK_LEN], [y, y], BLACK, SPINE)
                    c.text(xr + TICK_LEN + TICK_PAD, y, s, TICK, va="center")
                    widest = max(widest, c.text_width(s, TICK))
            c.text(xr + TICK_LEN + TICK_PAD + widest + LABEL_PAD, self.y0 + self.h / 2, right_label,
                   LABEL, ha="center", va="top", rotation=90)

    def curve(self, xa: Axis, ya: Axis, x: np.ndarray, y: np.ndarray, color: Color,
              lw: float = LW, label: str | None = None) -> None:
        if len(x) > MAX_POINTS:  # evenly spaced samples, the last point kept
            keep = np.unique(np.linspace(0, len(x) - 1, MAX_POINTS).round().astype(np.int64))
            x, y = x[keep], y[keep]
        self.c.line(self.px(xa, x), self.py(ya, y), color, lw)
        if label:
            self.legend.append((label, color, lw, None))

    def vline(self, xa: Axis, x: float, color: Color, lw: float,
              dash: tuple[float, float] | None = None, label: str | None = None) -> None:
        px = float(self.px(xa, x))
        self.c.line([px, px], [self.y0, self.y0 + self.h], color, lw, dash)
        if label:
            self.legend.append((label, color, lw, dash))

    def draw_legend(self, corner: str) -> None:
        """matplotlib's frameless legend in the lower or upper right corner."""
        if not self.legend:
            return
        fs = LEGEND
        text_w = max(self.c.text_width(label, fs) for label, *_ in self.legend)
        right = self.x0 + self.w - 0.5 * fs - 0.4 * fs
        text_x = right - text_w
        line_x1 = text_x - 0.8 * fs
        line_x0 = line_x1 - 2.0 * fs
        row = 1.5 * fs  # a line of text and the label spacing
        n = len(self.legend)
        if corner == "lower right":
            top = self.y0 + 0.5 * fs + 0.4 * fs + n * fs + (n - 1) * 0.5 * fs
        else:
            top = self.y0 + self.h - 0.5 * fs - 0.4 * fs
        for i, (label, color, lw, dash) in enumerate(self.legend):
            mid = top - i * row - 0.5 * fs
            self.c.line([line_x0, line_x1], [mid, mid], color, lw, dash)
            self.c.text(text_x, mid, label, fs, va="center")


def draw(data: LatencyData, summary: dict[str, Any], title: str) -> Canvas:
    """The figure as a display list (latency_figure's panels and layout)."""
    jct = data.jct
    ncols = 3 if jct.size else 2
    w_in, h_in = 5.0 * ncols, 7.5
    width, height = w_in * 72, h_in * 72
    c = Canvas(width, height)
    # Fig.subplots_adjust(left=0.75/w, right=1-0.75/w, bottom=0.55/h, top=1-0.5/h,
    # wspace=0.3, hspace=0.25), as plots.latency_figure places its axes.
    left, right, bottom, top = 0.75 * 72, width - 0.75 * 72, 0.55 * 72, height - 0.5 * 72
    aw = (right - left) / (ncols + 0.3 * (ncols - 1))
    ah = (top - bottom) / (2 + 0.25)
    boxes = [(left + col * aw * 1.3, top - (row + 1) * ah - row * 0.25 * ah, aw, ah)
             for row in range(2) for col in range(ncols)]
    slo = summary.get("goodput", {}).get("slo", {})
    blue = rgb(PALETTE[0])
    for box, (col, label) in zip(boxes[:3], PANELS, strict=True):
        p = Panel(c, box)
        cdf = data.cdf(col)
        marks = [summary.get(col, {}).get(f"p{q}") for q in (50, 90, 99)]
        marks_ms = [m * 1e3 for m in marks if m is not None]
        if cdf is None:
            xa, ya = Axis(0.0, 1.0, False), Axis(0.0, 1.0, False)
            p.frame(xa, ya, f"{label} (ms)", "fraction of requests")
            continue
        x, y = cdf
        xs = [float(x[0]), float(x[-1]), *marks_ms] + ([slo[col] * 1e3] if col in slo else [])
        log = data.log[col]
        xa = Axis(min(v for v in xs if v > 0) if log else min(xs), max(xs), log)
        ya = Axis(0.0, 1.0, False)
        p.frame(xa, ya, f"{label} (ms)", "fraction of requests")
        p.curve(xa, ya, x, y, blue, label="CDF")
        first = True
        for q, m in zip((50, 90, 99), marks, strict=True):
            if m is None:
                continue
            p.vline(xa, m * 1e3, GREY, THIN, dotted(THIN), "p50 / p90 / p99" if first else None)
            first = False
            c.text(float(p.px(xa, m * 1e3)), float(p.py(ya, 0.02 + q / 500)), f"p{q}", NOTE, GREY)
        if col in slo:
            p.vline(xa, slo[col] * 1e3, rgb(SLO), 1.2, label=f"SLO {slo[col] * 1e3:g} ms")
        p.draw_legend("lower right")
    p = Panel(c, boxes[3])
    if len(data.bins) > 1:
        t = data.bins[:-1]
        tok, arr = data.tokens / data.width(), data.arrivals / data.width()
        xa = Axis(float(t[0]), float(t[-1]), False)
        ya = Axis(float(tok.min()), float(tok.max()), False)
        ra = Axis(float(arr.min()), float(arr.max()), False)
        p.frame(xa, ya, "simulated time (s)", "output tokens/s", ra, "arrivals/s")
        p.curve(xa, ya, t, tok, blue, label="output tokens/s (completed)")
        p.curve(xa, ra, t, arr, rgb(PALETTE[1]), lw=1.0, label="arrivals/s")
        p.draw_legend("upper right")
    else:
        p.frame(Axis(0.0, 1.0, False), Axis(0.0, 1.0, False), "simulated time (s)", "output tokens/s")
    if jct.size:
        p = Panel(c, boxes[4])
        xs = np.sort(jct)
        ys = np.arange(1, len(xs) + 1) / len(xs)
        # The empirical CDF as steps: up at each value (matplotlib's ecdf).
        sx = np.repeat(xs, 2)
        sy = np.concatenate([[0.0], np.repeat(ys, 2)[:-1]])
        jd = summary["sessions"].get("jct_s", {})
        p90 = jd.get("p90")
        xa = Axis(float(xs[0]), max(float(xs[-1]), p90 or 0.0), False)
        ya = Axis(0.0, 1.0, False)
        p.frame(xa, ya, "job completion time (s): first arrival to last completion", "fraction of sessions")
        p.curve(xa, ya, sx, sy, blue, label=f"{jct.size} sessions")
        if p90 is not None:
            p.vline(xa, p90, GREY, THIN, dotted(THIN), f"p90 {p90:.1f} s")
        p.draw_legend("lower right")
    c.text(width / 2, height - 0.15 * 72, title, TITLE, ha="center", va="top")
    return c


def write(requests_path: Path, summary: dict[str, Any], title: str, out: Path,
          formats: tuple[str, ...] = ("png", "pdf")) -> list[Path]:
    """latency.png and latency.pdf (``out``'s stem) of a finished run."""
    from simkv.metrics.figure_data import latency_data
    from simkv.output import write_whole

    canvas = draw(latency_data(requests_path, summary), summary, title)
    written = []
    for fmt in formats:
        path = out.with_suffix(f".{fmt}")
        if fmt == "png":
            write_whole(path, lambda tmp: canvas.png(tmp, DPI))
        else:
            write_whole(path, canvas.pdf)
        written.append(path)
    return written

"""One look for every figure simkv draws (runs, sweeps, experiments, notebooks).

Figures are ``matplotlib.figure.Figure`` objects built without pyplot: creating one never
selects a backend, so ``simulate()`` inside a notebook or a user's script leaves their
matplotlib as it was (their plots keep showing inline or in a window), and a Figure returned
from a function displays inline in Jupyter like any other.

``save(fig, path)`` writes the PNG and, beside it, the same figure as PDF for papers; both
without a creation date, so a figure redrawn from the same data gives the same bytes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl
from matplotlib.figure import Figure

# The style itself is simkv.mplstyle beside this file (shipped in the package), so a user's
# own figures and the notebooks can take it: ``plt.style.use(style.STYLE)``.
STYLE = str(Path(__file__).with_name("simkv.mplstyle"))
RC: dict[str, Any] = dict(mpl.rc_params_from_file(STYLE, use_default_template=False))
# Colour-blind safe (Okabe-Ito), in the order lines and bars take them (the style's cycle).
PALETTE = tuple(mpl.colors.to_hex(c) for c in RC["axes.prop_cycle"].by_key()["color"])
# The colour of a baseline (vLLM's default, "no cache") beside the policies compared to it.
BASELINE = "#888888"
SLO = "#D55E00"
DPI = int(RC["savefig.dpi"])


@contextlib.contextmanager
def context() -> Iterator[None]:
    """simkv's rcParams for the figures built and saved inside the block (only there)."""
    with mpl.rc_context(RC):
        yield


def figure(nrows: int = 1, ncols: int = 1, *, size: tuple[float, float] | None = None,
           squeeze: bool = True, layout: str | None = "constrained", **kw: Any
           ) -> tuple[Figure, Any]:
    """A Figure and its axes, like ``pyplot.subplots`` but with no pyplot (no backend).

    Call inside ``context()`` so the axes take simkv's style. ``layout=None``: the caller
    places the axes (``Figure.subplots_adjust``) and ``save`` writes the figure as placed,
    without the layout engine's and the tight bounding box's extra drawing passes (for the
    figure every run draws: docs/PERFORMANCE.md).
    """
    fig = Figure(figsize=size or (5.0 * ncols, 3.6 * nrows), layout=layout)
    axes = fig.subplots(nrows, ncols, squeeze=squeeze, **kw)
    return fig, axes


def save(fig: Figure, path: str | Path, *, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Write ``fig`` as ``path`` (its suffix decides the first format) and the other formats
    beside it (``latency.png`` -> ``latency.pdf``); returns the paths written."""
    path = Path(path)
    suffix = path.suffix.lstrip(".") or formats[0]
    written = []
    # A figure placed by hand (no layout engine) is written as placed: the tight bounding box
    # would draw it once more only to measure it.
    placed = {"savefig.bbox": "standard"} if fig.get_layout_engine() is None else {}
    for fmt in dict.fromkeys((suffix, *formats)):
        out = path.with_suffix(f".{fmt}")
        with context(), mpl.rc_context(placed):
            fig.savefig(out, format=fmt, dpi=DPI, metadata=_no_dates(fmt))
        written.append(out)
    return written


def _no_dates(fmt: str) -> dict[str, Any]:
    """Metadata that keeps the bytes of a redrawn figure the same (no date, no version)."""
    if fmt == "pdf":
        return {"CreationDate": None, "Producer": None, "Creator": None}
    if fmt == "svg":
        return {"Date": None, "Creator": None}
    if fmt == "png":
        return {"Software": None}
    return {}


def legend_outside(fig: Figure, axes: Sequence[Any], ncol: int = 4) -> None:
    """One legend for all panels, below them (handles deduplicated by label)."""
    seen: dict[str, Any] = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, h)
    if seen:
        fig.legend(list(seen.values()), list(seen), loc="outside lower center", ncol=ncol)

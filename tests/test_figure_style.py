"""One figure style a user can reuse (simkv.mplstyle, shipped), figures titled by what ran,
a short repr, and no figure that misleads (bars on a log axis, an empty panel)."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import matplotlib as mpl
import matplotlib.style
import pandas as pd
import pytest

import simkv
from simkv.metrics import style
from tests.conftest import small

ROOT = Path(__file__).resolve().parents[1]


def test_the_style_is_a_shipped_mplstyle_that_pyplot_takes() -> None:
    assert Path(style.STYLE).is_file()
    assert Path(style.STYLE).parent == Path(style.__file__).parent
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "metrics/*.mplstyle" in data["simkv"]
    with mpl.rc_context():
        mpl.style.use(style.STYLE)
        colors = tuple(mpl.colors.to_hex(c) for c in mpl.rcParams["axes.prop_cycle"].by_key()["color"])
        assert colors == style.PALETTE
        assert mpl.rcParams["pdf.fonttype"] == 42
    with style.context():  # simkv's own figures take the same file
        assert mpl.rcParams["axes.spines.top"] is False


def test_a_results_figure_is_titled_by_what_ran_and_its_repr_is_one_line(tmp_path: Path) -> None:
    result = simkv.simulate(small(["cluster.replicas=2"]), tmp_path / "tmpq8tlc_67")
    title = result.figure()._suptitle.get_text()
    assert title == "llama3_8b on 2 x h100_sxm_80gb: vllm scheduler, round_robin router, poisson workload"
    text = repr(result)
    assert "\n" not in text
    assert len(text) < 300
    assert text.startswith(f"SimResult({str(tmp_path / 'tmpq8tlc_67')!r}, status='ok', llama3_8b on 2 x")
    assert "200 finished" in text


@pytest.mark.slow  # among the quick subset's slowest (CONTRIBUTING.md)
def test_compare_draws_no_panel_for_a_metric_no_run_has(tmp_path: Path) -> None:
    from simkv.metrics.compare import plot

    df = pd.DataFrame({"router": ["a", "b"], "run": ["0", "1"], "jct_mean_s": [float("nan")] * 2,
                       "ttft_p99_s": [0.5, 0.7], "hit_rate": [0.0, 0.0]})
    captured = {}
    real = style.save

    def save(fig, path, **kw):  # type: ignore[no-untyped-def]
        captured["fig"] = fig
        return real(fig, path, **kw)

    style_save = pytest.MonkeyPatch()
    style_save.setattr(style, "save", save)
    try:
        plot(df, ["router"], tmp_path / "compare.png")
    finally:
        style_save.undo()
    assert [ax.get_xlabel() for ax in captured["fig"].axes] == ["ttft_p99_s"]


@pytest.mark.slow
def test_no_experiment_figure_draws_bars_on_a_log_axis() -> None:
    """A bar on a log axis has no zero to start from: its length says where the axis begins."""
    sys.path.insert(0, str(ROOT / "experiments"))
    import suite

    for name in suite.EXPERIMENTS:
        module = suite.load(name)
        csv = suite.RESULTS / f"{name}.csv"
        if not hasattr(module, "figure") or not csv.is_file():
            continue
        fig = module.figure(pd.read_csv(csv))
        for ax in (fig.axes if fig is not None else []):
            bars = [c for c in ax.containers if isinstance(c, mpl.container.BarContainer)]
            if not bars:
                continue
            horizontal = bars[0].orientation == "horizontal"
            scale = ax.get_xscale() if horizontal else ax.get_yscale()
            assert scale == "linear", f"{name}: bars on a {scale} axis ({ax.get_title() or ax.get_xlabel()})"

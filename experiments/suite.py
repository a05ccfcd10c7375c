"""The experiment contract, the list of experiments, and running one or all of them.

An experiment is a module ``experiments/<name>.py`` that exposes

    run(quick: bool) -> pandas.DataFrame    the whole result as one table (several parts: a
                                            ``part`` column); quick: seconds, for CI; full:
                                            the paper figure's size
    figure(df) -> Figure | None             optional: the figure, from that table alone
    headline(df) -> list[Headline]          optional: the paper's claim beside simkv's number,
                                            judged by a Rule the module declares (verdict.py)
    NEEDS_DATA = True                       optional: it reads /work/shared/data (data_dir())

and one line in ``EXPERIMENTS`` below. ``python experiments/<name>.py [--quick]`` runs one
(``cli``), ``python experiments/run_all.py [--quick]`` runs all and writes RESULTS.md.
Because the figure and the headline are computed from the table only, ``run_all.py
--from-results`` redraws every figure and RESULTS.md from the committed CSVs without
simulating anything (experiments/README.md).
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
from verdict import (  # noqa: F401 (the experiments import these from suite)
    Headline,
    Lever,
    Param,
    Position,
    Rule,
    Setting,
    Swept,
    Tier,
    Verdict,
)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

# Every experiment, in the order of RESULTS.md. A new one is one line here.
EXPERIMENTS = (
    "load_sweep",
    "memory_policies",
    "instinfer",
    "workload_fit",
    "burstgpt",
    "heterogeneous",
    "elastic_moe",
    "disaggregation",
    "cache_routing",
    "infinite_llm",
    "h2o",
    "sentencekv",
    "epicache",
    "elastic_cache",
    "scalekv",
    "kvshare",
    "batchllm",
    "leoam",
    "vattention",
    "flexgen",
    "prefetch",
    "pipeline",
    "contention",
    "moe_ep",
    "afd",
    "tp_resize",
    "search_vidur",
    "speculative",
    "priority",
    "llumnix",
    "rollout",
    "failures",
    "spot",
    "many_models",
    "energy",
)


@dataclass
class Outcome:
    """What running (or redrawing) one experiment produced."""

    name: str
    table: pd.DataFrame | None = None
    headlines: list[Headline] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    skipped: str = ""


@dataclass
class Run:
    """One simulation's results, read before its temporary folder goes away."""

    summary: dict[str, Any]
    requests: pd.DataFrame
    instances: pd.DataFrame


def simulate(overrides: list[str]) -> Run:
    """Compose ``overrides`` (plot and progress bar off) and run them in a temporary folder."""
    import tempfile

    import simkv

    cfg = simkv.compose(["output.plot=false", "output.progress=false", *overrides])
    with tempfile.TemporaryDirectory() as d:
        res = simkv.simulate(cfg, d)
        return Run(res.summary, res.requests, pd.read_parquet(Path(d) / "instances.parquet"))


def data_dir() -> Path | None:
    """The shared data folder: ``$SIMKV_DATA``, else the first ``shared/data`` found in the
    parents of this checkout (``../shared/data`` in CI, ``/work/shared/data`` from a
    worktree under /work/wt), else None."""
    env = os.environ.get("SIMKV_DATA")
    if env:
        return Path(env) if Path(env).is_dir() else None
    for parent in HERE.parents:
        candidate = parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return None


def load(name: str) -> ModuleType:
    """Import ``experiments/<name>.py`` (the folder is put on sys.path: the scripts import
    their helpers, kv_common, by plain name, as when run directly)."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    return importlib.import_module(name)


def needs_data(module: ModuleType) -> bool:
    return bool(getattr(module, "NEEDS_DATA", False))


def save_outputs(name: str, module: ModuleType, df: pd.DataFrame, out: Path, suffix: str = "",
                 write_csv: bool = True) -> list[Path]:
    """``<out>/<name><suffix>.csv`` and, if the module draws one, its figure as PNG and PDF."""
    from simkv.metrics import style

    out.mkdir(parents=True, exist_ok=True)
    csv = out / f"{name}{suffix}.csv"
    if write_csv:
        df.to_csv(csv, index=False, float_format="%.6g")
    files = [csv]
    draw = getattr(module, "figure", None)
    if draw is not None:
        with style.context():
            fig = draw(df)
        if fig is not None:
            files += style.save(fig, out / f"{name}{suffix}.png")
        elif (out / f"{name}{suffix}.png").is_file():  # kept from the run that had the data
            files.append(out / f"{name}{suffix}.png")
    return files


def headlines(module: ModuleType, df: pd.DataFrame) -> list[Headline]:
    make = getattr(module, "headline", None)
    return list(make(df)) if make is not None else []


def run_one(name: str, quick: bool, out: Path, suffix: str = "") -> Outcome:
    module = load(name)
    if needs_data(module) and data_dir() is None:
        return Outcome(name, skipped="needs shared/data (set SIMKV_DATA), not found")
    t0 = time.perf_counter()
    df = module.run(quick)
    seconds = time.perf_counter() - t0
    files = save_outputs(name, module, df, out, suffix)
    return Outcome(name, df, headlines(module, df), files, seconds)


def redraw(name: str, results: Path = RESULTS) -> Outcome:
    """Figure and headline from the committed ``results/<name>.csv``, nothing simulated."""
    module = load(name)
    csv = results / f"{name}.csv"
    if not csv.is_file():
        return Outcome(name, skipped=f"no {csv.relative_to(HERE.parent)} (not run at full size yet)")
    df = pd.read_csv(csv)
    files = save_outputs(name, module, df, results, write_csv=False)  # the CSV stays as run
    return Outcome(name, df, headlines(module, df), files)


def fmt(x: Any, digits: int = 3) -> str:
    """A number as people read it in a table (3 significant digits, no float noise)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, int | float):
        return f"{x:.{digits}g}" if abs(x) < 10 ** digits else f"{x:,.0f}"
    return str(x)


def show(outcome: Outcome) -> None:
    df = outcome.table
    if df is not None:
        with pd.option_context("display.width", 220, "display.max_columns", 30,
                               "display.float_format", "{:.4g}".format):
            print(df.to_string(index=False))
    for h in outcome.headlines:
        print(f"\n{h.paper}: {h.claim}\n  paper {h.paper_value}; simkv {h.simkv_value} -> "
              f"{h.verdict.value} [{h.tier.value}] ({h.reason()})")
    for path in outcome.files:
        print(f"wrote {path}")


def cli(name: str, argv: list[str] | None = None) -> Outcome:
    """``python experiments/<name>.py [--quick] [--out DIR]``: run one experiment."""
    module = load(name)
    ap = argparse.ArgumentParser(description=(module.__doc__ or name).split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (seconds), for CI")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    outcome = run_one(name, args.quick, args.out, "_quick" if args.quick else "")
    if outcome.skipped:
        print(f"{name}: skipped: {outcome.skipped}")
    show(outcome)
    return outcome

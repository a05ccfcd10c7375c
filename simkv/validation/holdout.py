"""Fit on some engine runs, predict others: the held-out protocol of issue 14.

    simkv-validate --fit validation/hf_h200_2026-11-30/{llama3_8b,qwen2_5_7b} \
        --predict validation/hf_h200_2026-11-30/qwen2_5_14b
    simkv-validate --protocol validation/hf_h200_2026-11-30      # every split, side by side

A *run* is one engine process of ``simkv.validation.hf_campaign`` (one model shape: a folder
with ``engine.json``); a *stream* is one replay in it (``requests_<workload>-<load>-<rep>.csv``
and the engine's steps during it, ``iterations_<same>.csv``); each stream was replayed twice
(reps ``a`` and ``b``: the same arrivals and lengths, other token ids).

The engine's costs are fitted on profiled *steps* only, never on request latencies, in the
model's own dimensions so one fit serves every shape (``step_columns``): host time per step,
per sequence and per KV token read (Python: shape-free); GPU time per dense GEMM FLOP of each
prefill token; a fixed GPU time per layer; the padded masked attention of transformers' paged
SDPA per padded KV token and layer: a constant, per KV element and per query-head element x
(tiled, padded) query token; and for MoE layers a fixed time and one per routed expert FLOP
(their grouped GEMMs).
GEMMs, small operators and the LM head are priced by the hardware profile (the
calibrated H200's shape GEMM model), not fitted. Steps that recorded a CUDA graph are left out
of every fit (a start-up cost: hf_campaign pre-captures a key grid; what is left is counted).

Splits, each scored on streams whose steps were not in its fit:

* in-sample: fit on every step, predict every stream (labelled so);
* leave-one-run-out: fit on reps ``a``, predict reps ``b``, and the reverse;
* leave-one-load-out: per (shape, workload, load), fit on all other streams' steps;
* leave-one-shape-out: per shape, fit on the other shapes' steps only;

beside the engine's own run-to-run spread: per request, rep ``b``'s TTFT, TPOT and E2E as a
"prediction" of rep ``a``'s (and the reverse). Errors are absolute percentage errors per
request, median and P90, per stream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from simkv.config.schema import EngineConfig
from simkv.validation.campaign import TAG, Run, find_runs, load_run, read_requests, read_steps
from simkv.validation.compare import METRICS, errors
from simkv.validation.stepfit import (
    CAPTURE,
    COLUMNS,
    QUERY_TILES,
    StepData,
    cost_model,
    engine_base,
    fit_engine,
    for_run,
    predict_stream,
    price,
    sim_config,
    step_columns,
    step_data,
    step_errors,
)

__all__ = ["CAPTURE", "COLUMNS", "QUERY_TILES", "TAG", "Run", "StepData", "cost_model",
           "engine_base", "evaluate", "find_runs", "fit_engine", "fit_predict", "for_run",
           "load_run", "predict_stream", "price", "read_requests", "read_steps", "sim_config",
           "spread", "step_columns", "step_data", "step_errors", "summarise"]


# --- the splits -------------------------------------------------------------------------------

Mask = Callable[[StepData], np.ndarray]


@dataclass
class Split:
    """One fit and what it predicts: a fit mask per run and the streams scored."""

    name: str
    label: str
    fit_on: Mask
    scored: list[tuple[Run, str]]


def splits(runs: list[Run]) -> list[Split]:
    """In-sample, leave-one-run-out, leave-one-load-out and leave-one-shape-out splits."""
    every = [(r, t) for r in runs for t, *_ in r.streams()]
    out = [Split("in-sample", "all", lambda s: np.ones(len(s.tags), bool), every)]
    for rep, other in (("b", "a"), ("a", "b")):
        out.append(Split("leave-one-run-out", f"fit {other} -> {rep}",
                         lambda s, rep=rep: ~np.char.endswith(s.tags.astype(str), f"-{rep}"),
                         [(r, t) for r, t in every if r.meta[t].rep == rep]))
    for r in runs:
        for key in dict.fromkeys(m.key for m in r.meta.values()):
            tags = [t for t, m in r.meta.items() if m.key == key]
            out.append(Split("leave-one-load-out", f"{r.name} {key}",
                             lambda s, r=r, tags=tags: ~((s.run is r) & np.isin(s.tags, tags)),
                             [(r, t) for t in tags]))
    for r in runs:
        out.append(Split("leave-one-shape-out", r.name,
                         lambda s, r=r: np.full(len(s.tags), s.run.shape != r.shape),
                         [(r, t) for t, *_ in r.streams()]))
    return out


def spread(runs: list[Run]) -> pd.DataFrame:
    """The engine's run-to-run spread: per request of each stream, APE of the other rep's
    measurement taken as a prediction (both directions), median and P90 per stream."""
    rows = []
    for r in runs:
        for t, wl, load, rep in r.streams():
            other = t[:-1] + ("b" if rep == "a" else "a")
            if other not in r.requests:
                continue
            a, b = r.requests[t], r.requests[other]
            n = min(len(a), len(b))
            e = errors(a.iloc[:n].reset_index(drop=True), b.iloc[:n].reset_index(drop=True))
            rows.append({"run": r.name, "stream": r.meta[t].key, "workload": wl, "load": load,
                         "rep": rep, **{f"{m}_median": e[m]["median_ape"] for m in METRICS},
                         "e2e_p90": e["e2e"]["p90_ape"]})
    return pd.DataFrame(rows)


def measured_only(d: pd.DataFrame) -> pd.DataFrame:
    """The requests the engine finished in the measured window."""
    return d[d["measured"]].reset_index(drop=True) if "measured" in d else d


def phase_noise(runs: list[Run]) -> pd.DataFrame:
    """Per stream, the median TTFT error of an exact step model with a random step phase
    (``compare.phase_floor``): what no replay of arrivals can remove at light loads."""
    from simkv.validation.compare import phase_floor

    rows = []
    for r in runs:
        for t, wl, load, rep in r.streams():
            if t in r.steps:
                rows.append({"run": r.name, "stream": r.meta[t].key, "workload": wl, "load": load,
                             "rep": rep, "ttft_phase": phase_floor(measured_only(r.requests[t]),
                                                                  r.steps[t])})
    return pd.DataFrame(rows)


def score(r: Run, t: str, profile: str | None, engine: EngineConfig, split: str, label: str
          ) -> dict[str, object]:
    """One stream predicted: request errors, and the schedule and captures beside them."""
    from simkv.validation.schedule import agreement, compare_steps

    m = r.meta[t]
    pred = predict_stream(r, t, profile, engine)
    e = errors(r.requests[t], pred)
    sim = pred.attrs["steps"]
    row: dict[str, object] = {
        "split": split, "label": label, "run": r.name, "shape": r.shape, "stream": m.key,
        "workload": m.workload, "load": m.load, "rep": m.rep, "regime": m.regime,
        "requests": len(r.requests[t]), "evictions_sim": int(pred["evictions"].sum()),
        "captures_sim": int(sim["sim_captured"].sum()),
        **{f"{k}_median": e[k]["median_ape"] for k in METRICS},
        **{f"{k}_p90": e[k]["p90_ape"] for k in METRICS}}
    steps = r.steps.get(t)
    if steps is not None:
        row["captures"] = int(steps["captured"].sum())
        if "agree" not in steps:
            from simkv.validation.stepfit import plans

            plans(r, t)  # the schedule replayed on the engine's clock
        if "agree" in steps:
            row["schedule_replayed"] = 100.0 * float(steps["agree"].mean())
        row["schedule_free"] = agreement(compare_steps(steps, sim))["agree"]
        row["steps"], row["steps_sim"] = len(steps), len(sim)
    if t in r.evictions:
        row["evictions"] = r.evictions[t]
    return row


def evaluate(runs: list[Run], profile: str | None, which: tuple[str, ...] | None = None,
             progress: Callable[[str], None] | None = None,
             moe_prior: dict[str, float] | None = None
             ) -> tuple[pd.DataFrame, dict[str, EngineConfig]]:
    """Every split's per-stream errors (one row per scored stream) and its fitted engine."""
    data = [step_data(r, profile) for r in runs if r.steps]
    if not data:
        raise ValueError("no run has a step profile (iterations_<stream>.csv) to fit the "
                         "engine's costs on; predict request-level folders with an engine "
                         "preset: simkv-validate predict --engine NAME FOLDER")
    rows, fits = [], {}
    for sp in splits(runs):
        if which and sp.name not in which:
            continue
        engine = fit_engine(((s, sp.fit_on(s)) for s in data), moe_prior)
        fits[f"{sp.name}: {sp.label}"] = engine
        if progress:
            progress(f"{sp.name}: {sp.label}")
        rows += [score(r, t, profile, engine, sp.name, sp.label) for r, t in sp.scored]
    return pd.DataFrame(rows), fits


def fit_predict(fit_runs: list[Run], predict_runs: list[Run], profile: str | None,
                moe_prior: dict[str, float] | None = None) -> tuple[pd.DataFrame, EngineConfig]:
    """``--fit DIR... --predict DIR...``: one fit on the first runs' steps, every stream of the
    second predicted."""
    data = [step_data(r, profile) for r in fit_runs if r.steps]
    if not data:
        raise ValueError("the --fit folders have no step profile (iterations_<stream>.csv)")
    engine = fit_engine(((s, np.ones(len(s.tags), bool)) for s in data), moe_prior)
    rows = [score(r, t, profile, engine, "fit -> predict", "") for r in predict_runs
            for t, *_ in r.streams()]
    return pd.DataFrame(rows), engine


def preset_predict(name: str, runs: list[Run], profile: str | None
                   ) -> tuple[pd.DataFrame, EngineConfig]:
    """``predict --engine NAME``: every stream of ``runs`` predicted with an engine preset
    (simkv/conf/engine/NAME.yaml), no fit: how a user without step profiles predicts."""
    from simkv.config.store import compose

    engine = compose([f"engine={name}"]).engine
    rows = [score(r, t, profile, engine, "preset", name) for r in runs
            for t, *_ in r.streams()]
    return pd.DataFrame(rows), engine


# --- tables -----------------------------------------------------------------------------------

SPLIT_ORDER = ("in-sample", "leave-one-run-out", "leave-one-load-out", "leave-one-shape-out",
               "fit -> predict", "preset")


def summarise(df: pd.DataFrame, spread_df: pd.DataFrame | None = None,
              phase_df: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (run, stream): each split's median over its scored replays of the
    per-replay median APE (TTFT, TPOT, E2E) and P90 E2E, beside the engine's spread and the
    TTFT phase noise."""
    keys = ["run", "stream"]
    cols = ["ttft_median", "tpot_median", "e2e_median", "e2e_p90"]
    out = None
    for sp in (s for s in SPLIT_ORDER if s in set(df["split"])):
        g = df[df["split"] == sp].groupby(keys)[cols].median()
        g.columns = pd.MultiIndex.from_product([[sp], ["TTFT", "TPOT", "E2E", "E2E P90"]])
        out = g if out is None else out.join(g, how="outer")
    if spread_df is not None and len(spread_df):
        s = spread_df.groupby(keys)[cols].median()
        s.columns = pd.MultiIndex.from_product([["engine spread"], ["TTFT", "TPOT", "E2E", "E2E P90"]])
        out = s if out is None else out.join(s, how="left")
    if phase_df is not None and len(phase_df):
        ph = phase_df.groupby(keys)[["ttft_phase"]].median()
        ph.columns = pd.MultiIndex.from_product([["TTFT phase noise"], ["TTFT"]])
        out = ph if out is None else out.join(ph, how="left")
    assert out is not None
    return out.sort_index()


def markdown(summary: pd.DataFrame, metrics: tuple[str, ...] = ("TTFT", "TPOT", "E2E", "E2E P90")
             ) -> str:
    """The summary as a markdown table: one column per split, cells 'TTFT / TPOT / E2E / P90'."""
    splits_ = list(dict.fromkeys(summary.columns.get_level_values(0)))
    lines = ["| run | stream | " + " | ".join(splits_) + " |", "|" + "---|" * (2 + len(splits_))]
    for (run, stream), row in summary.iterrows():
        cells = []
        for sp in splits_:
            ms = ("TTFT",) if sp == "TTFT phase noise" else metrics
            vals = [row.get((sp, m), np.nan) for m in ms]
            cells.append(" / ".join("-" if pd.isna(v) else f"{v:.1f}" for v in vals))
        lines.append(f"| {run} | {stream} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def schedule_table(df: pd.DataFrame) -> str:
    """Per (run, stream), over the scored replays of the first split: steps whose sequences
    and query tokens equal the engine's, replayed on the engine's clock and on simkv's own;
    CUDA-graph captures and evictions, measured and predicted."""
    first = next(s for s in SPLIT_ORDER if s in set(df["split"]))
    d = df[df["split"] == first]
    lines = ["| run | stream | steps (engine / simkv) | schedule equal, engine's clock | "
             "on simkv's clock | captures (engine / simkv) | evictions (engine / simkv) |",
             "|---|---|---|---|---|---|---|"]

    def total(g: pd.DataFrame, c: str) -> str:
        return "-" if c not in g or g[c].isna().all() else f"{int(g[c].sum())}"

    def pct(g: pd.DataFrame, c: str) -> str:
        if c not in g or g[c].isna().all():
            return "-"
        w = g["steps"].fillna(0).to_numpy()
        return f"{float(np.average(g[c].fillna(0), weights=w)) if w.sum() else float('nan'):.1f}%"

    for (run, stream), g in d.groupby(["run", "stream"]):
        lines.append(f"| {run} | {stream} | {total(g, 'steps')} / {total(g, 'steps_sim')} | "
                     f"{pct(g, 'schedule_replayed')} | {pct(g, 'schedule_free')} | "
                     f"{total(g, 'captures')} / {total(g, 'captures_sim')} | "
                     f"{total(g, 'evictions')} / {total(g, 'evictions_sim')} |")
    return "\n".join(lines)


def describe(e: EngineConfig) -> str:
    """The fitted engine, in the units people read them in."""
    return (f"host: {e.iteration_overhead_s * 1e3:.2f} ms/step + "
            f"{e.per_sequence_overhead_s * 1e6:.0f} us/sequence + "
            f"{e.per_prefill_token_overhead_s * 1e6:.2f} us/prefill token + "
            f"{e.prefill_flop_s * 1e15:.3f} fs/prefill GEMM FLOP + "
            f"{e.per_context_token_overhead_s * 1e9:.1f} ns/KV token; GPU: "
            f"{e.per_layer_overhead_s * 1e6:.0f} us/layer; padded attention per padded KV token "
            f"and layer: {e.padded_kv_layer_s * 1e9:.2f} ns + "
            f"{e.padded_kv_element_s * 1e12:.3f} ps/KV element + "
            f"{e.padded_query_element_s * 1e15:.2f} fs/query-head element x query token "
            f"(queries in tiles of {e.attention_query_tile or 1}); MoE: "
            f"{e.moe_layer_overhead_s * 1e6:.0f} us/layer + "
            f"{e.moe_expert_flop_s * 1e15:.3f} fs/routed expert FLOP; CUDA-graph capture: "
            f"{e.graph_capture_s * 1e3:.1f} ms + {e.graph_capture_layer_s * 1e3:.2f} ms/layer + "
            f"{e.graph_capture_moe_layer_s * 1e3:.2f} ms/MoE layer + "
            f"{e.graph_capture_factor:.2f} x the step")


def report(df: pd.DataFrame, runs_scored: list[Run], csv: str | None = None) -> None:
    """Print the error table, the schedule table, and write the per-stream CSV."""
    print("median APE per request, % (TTFT / TPOT / E2E / P90 E2E), median over a stream's reps")
    print(markdown(summarise(df, spread(runs_scored), phase_noise(runs_scored))))
    print()
    print(schedule_table(df))
    if csv:
        df.to_csv(csv, index=False)
        print(f"per-stream errors: {csv}")


def main(argv: list[str] | None = None) -> None:
    """The held-out commands of ``simkv-validate`` (simkv/validation/cli.py)."""
    from simkv.validation.cli import main as cli_main

    cli_main(argv)

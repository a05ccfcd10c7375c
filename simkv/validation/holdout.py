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
per sequence, per prefill token and per KV token read (Python: shape-free); a fixed GPU time
per layer; the padded masked attention of transformers' paged SDPA per padded KV token and
layer: a constant, per KV element and per query-head element x (tiled, padded) query token;
and for MoE layers a fixed time and one per routed expert FLOP (their grouped GEMMs).
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

import dataclasses
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from simkv.config.schema import EngineConfig, SimConfig
from simkv.entities.model import ModelSpec
from simkv.validation.compare import METRICS, REQUEST_COLUMNS, TRANSFORMERS_KV_PADDING, errors

TAG = re.compile(r"^(?P<workload>[a-z_]+)-(?P<load>[0-9.]+)-(?P<rep>[a-z])$")
# Query tiles the padded attention's products may count in; the fit keeps the best.
QUERY_TILES = (1, 64, 128, 256, 512, 1024)
# Fitted columns of a step and the engine parameter each coefficient sets.
COLUMNS = {"one": "iteration_overhead_s", "sequences": "per_sequence_overhead_s",
           "prefill": "per_prefill_token_overhead_s", "kv": "per_context_token_overhead_s",
           "layers": "per_layer_overhead_s", "kv_layer": "padded_kv_layer_s",
           "kv_elem": "padded_kv_element_s", "query_elem": "padded_query_element_s",
           "moe_layers": "moe_layer_overhead_s", "moe_flops": "moe_expert_flop_s"}


@dataclass
class Run:
    """One engine process: its shape, limits, and streams (requests and steps by tag)."""

    folder: Path
    shape: str
    spec: ModelSpec
    tp: int
    engine: dict[str, Any]
    requests: dict[str, pd.DataFrame] = field(default_factory=dict)
    steps: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.folder.name

    def streams(self) -> list[tuple[str, str, float, str]]:
        """(tag, workload, load, rep) of every stream, in file order."""
        out = []
        for t in self.requests:
            m = TAG.match(t)
            if m:
                out.append((t, m["workload"], float(m["load"]), m["rep"]))
        return out


def read_requests(path: Path) -> pd.DataFrame:
    d = pd.read_csv(path)
    missing = REQUEST_COLUMNS - set(d.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    d = d[d["status"].astype(str) != "missing"].sort_values("id").reset_index(drop=True)
    d["ttft"] = d["first_token_s"] - d["arrival_s"]
    d["e2e"] = d["completion_s"] - d["arrival_s"]
    d["tpot"] = (d["completion_s"] - d["first_token_s"]) / (d["output_tokens"] - 1)
    return d


def read_steps(path: Path) -> pd.DataFrame:
    d = pd.read_csv(path)
    d["step_s"] = d["prepare_s"] + d["forward_s"]
    d["prefill"] = np.where(d["tokens"] > d["sequences"], d["tokens"] - d["sequences"] + 1, 0)
    d["decodes"] = d["tokens"] - d["prefill"]
    return d


def load_run(folder: Path | str) -> Run:
    """An ``hf_campaign`` output folder (one model shape)."""
    folder = Path(folder)
    if not (folder / "engine.json").is_file():
        raise FileNotFoundError(f"{folder}: no engine.json; expected an output folder of "
                                "python -m simkv.validation.hf_campaign")
    e = json.loads((folder / "engine.json").read_text())
    if "model_spec" not in e:
        raise ValueError(f"{folder}: engine.json has no model_spec (a run of hf_replay, not "
                         "hf_campaign: use simkv-validate FOLDER for those)")
    spec = ModelSpec(**e["model_spec"])
    run = Run(folder, e["shape"], spec, int(e.get("tp", 1)), e)
    for path in sorted(folder.glob("requests_*.csv")):
        t = path.stem.removeprefix("requests_")
        if not TAG.match(t):
            continue  # capacity probes
        run.requests[t] = read_requests(path)
        steps = folder / f"iterations_{t}.csv"
        if steps.is_file():
            run.steps[t] = read_steps(steps)
    return run


def find_runs(root: Path | str) -> list[Run]:
    """Every hf_campaign folder under ``root`` (or ``root`` itself)."""
    root = Path(root)
    if (root / "engine.json").is_file():
        return [load_run(root)]
    return [load_run(p.parent) for p in sorted(root.glob("*/engine.json"))]


# --- the engine as a simkv configuration ----------------------------------------------------

def engine_base(run: Run) -> EngineConfig:
    """The engine's padding as transformers resolved it (engine.json), no fitted cost yet."""
    cb, res = run.engine.get("cb_config", {}), run.engine.get("cb_resolved", {})
    graphs = bool(cb.get("use_cuda_graph"))
    return EngineConfig(
        iteration_overhead_s=0.0, per_sequence_overhead_s=0.0,
        kv_padding_tokens=int(res.get("kv_padding_interval_size") or TRANSFORMERS_KV_PADDING)
        if graphs else 0,
        query_padding_tokens=int(res.get("q_padding_interval_size") or 64) if graphs else 0,
        padded_logits_rows=int(res.get("max_requests_per_batch") or 1024) if graphs else 0)


def sim_config(run: Run, profile: str, engine: EngineConfig) -> SimConfig:
    from simkv.config.schema import ClusterConfig, HardwareConfig, KVConfig, OutputConfig
    from simkv.policies.router import RoundRobinConfig
    from simkv.validation.schedule import limits
    from simkv.workload import TraceWorkloadConfig

    e = run.engine
    return SimConfig(
        model=run.spec,
        hardware=HardwareConfig(profile=profile),
        cluster=ClusterConfig(replicas=1, tensor_parallel=run.tp),
        kv=KVConfig(block_size=int(e["PagedAttentionCache.block_size"]),
                    num_gpu_blocks_override=int(e["PagedAttentionCache.num_blocks"]),
                    prefix_caching=False),
        scheduler=limits(e).config(),
        router=RoundRobinConfig(),
        workload=TraceWorkloadConfig(path="", rebase=False),
        engine=engine,
        output=OutputConfig(plot=False, progress=False),
    )


def cost_model(run: Run, profile: str, engine: EngineConfig) -> Any:
    from simkv.entities.hardware import load_profile
    from simkv.perf.roofline import CostModel

    return CostModel(run.spec, load_profile(profile), tensor_parallel=run.tp, engine=engine)


def price(steps: pd.DataFrame, cost: Any) -> np.ndarray:
    """simkv's time for each profiled step under ``cost`` (a CostModel)."""
    from simkv.policies.scheduler.interface import SchedulerOutput

    times = np.empty(len(steps))
    cols = zip(steps["prefill"], steps["decodes"], steps["kv_read"], strict=True)
    for i, (p, n, past) in enumerate(cols):
        p, n, past = int(p), int(n), int(past)
        out = SchedulerOutput(prefill_tokens=p, num_decodes=n, num_sampled=n + (p > 0))
        if p:
            out.prefill_attn_pairs = p * (p + 1) / 2
            out.prefill_kv_tokens = p + (past if not n else 0)
        if n:
            out.decode_context = (past + n,)
        times[i] = cost.iteration_time(out)
    return times


def step_columns(steps: pd.DataFrame, run: Run, engine: EngineConfig, tile: int) -> pd.DataFrame:
    """The fitted columns of each step, in the model's dimensions (``COLUMNS``)."""
    m, tp = run.spec, run.tp
    heads, kv_heads = m.num_heads / tp, max(1.0, m.num_kv_heads / tp)
    layers, d = float(m.num_layers), float(m.head_dim)
    tokens = steps["tokens"].to_numpy(float)
    kv_read = steps["kv_read"].to_numpy(float)
    pad, qpad = engine.kv_padding_tokens, engine.query_padding_tokens
    padded = np.maximum(1.0, np.ceil(kv_read / pad)) * pad if pad else kv_read + tokens
    q = np.ceil(tokens / qpad) * qpad if qpad else tokens
    q_tiled = np.ceil(q / tile) * tile
    moe = float(m.moe_layers) if m.is_moe else 0.0
    return pd.DataFrame({
        "one": np.ones(len(steps)), "sequences": steps["sequences"].to_numpy(float),
        "prefill": steps["prefill"].to_numpy(float), "kv": kv_read + tokens,
        "layers": np.full(len(steps), layers),
        "kv_layer": layers * padded, "kv_elem": layers * padded * kv_heads * d,
        "query_elem": layers * padded * q_tiled * heads * d,
        # MoE layers: routing and its kernels, and the routed experts' FLOPs on this GPU.
        "moe_layers": np.full(len(steps), moe),
        "moe_flops": moe * q * 6.0 * m.experts_per_token * m.hidden_size * m.ffn_size / tp},
        index=steps.index)


@dataclass
class StepData:
    """A run's steady steps, their measured times and simkv's unfitted GPU price."""

    run: Run
    tags: np.ndarray
    measured: np.ndarray
    base: np.ndarray
    columns: dict[int, np.ndarray]  # by query tile


def step_data(run: Run, profile: str) -> StepData:
    """Every steady step of a run (no CUDA graph recorded), priced once."""
    frames = [d.assign(tag=t) for t, d in run.steps.items()]
    d = pd.concat(frames, ignore_index=True)
    d = d[d["captured"] == 0].reset_index(drop=True)
    engine = engine_base(run)
    base = price(d, cost_model(run, profile, engine))
    cols = {tile: step_columns(d, run, engine, tile).to_numpy() for tile in QUERY_TILES}
    return StepData(run, d["tag"].to_numpy(), d["step_s"].to_numpy(), base, cols)


def fit_engine(data: Iterable[tuple[StepData, np.ndarray]]) -> EngineConfig:
    """Non-negative least squares of each step's time beyond simkv's GPU price on
    ``step_columns``, relative (each row divided by its measured time, so short decode steps
    weigh as much as long prefill ones), pooled over runs of any shape; the query tile is
    the one of ``QUERY_TILES`` with the least residual. ``data``: (a run's steps, a mask of
    the steps to fit on)."""
    from scipy.optimize import lsq_linear

    data = [(s, mask) for s, mask in data if mask.any()]
    if not data:
        raise ValueError("no steps to fit on")
    best: tuple[float, int, np.ndarray] | None = None
    for tile in QUERY_TILES:
        x = np.vstack([s.columns[tile][mask] / s.measured[mask, None] for s, mask in data])
        y = np.concatenate([(s.measured[mask] - s.base[mask]) / s.measured[mask] for s, mask in data])
        seen = np.abs(x).max(axis=0) > 0  # a term none of the fitted steps has stays 0
        coef = np.zeros(x.shape[1])
        scale = np.abs(x[:, seen]).max(axis=0)  # well-conditioned columns
        sol = lsq_linear(x[:, seen] / scale, y, bounds=(0.0, np.inf), method="bvls")
        coef[seen] = sol.x / scale
        if best is None or sol.cost < best[0]:
            best = (float(sol.cost), tile, coef)
    assert best is not None
    _, tile, coef = best
    fitted = {COLUMNS[c]: float(v) for c, v in zip(COLUMNS, coef, strict=True)}
    return EngineConfig(**fitted, attention_query_tile=tile if tile > 1 else 0)


def for_run(engine: EngineConfig, run: Run) -> EngineConfig:
    """A fitted engine with this run's own padding (from its engine.json)."""
    base = engine_base(run)
    return dataclasses.replace(engine, kv_padding_tokens=base.kv_padding_tokens,
                               query_padding_tokens=base.query_padding_tokens,
                               padded_logits_rows=base.padded_logits_rows)


def predict_stream(run: Run, tag: str, profile: str, engine: EngineConfig) -> pd.DataFrame:
    from simkv.validation.compare import predict

    return predict(run.requests[tag], sim_config(run, profile, for_run(engine, run)))


def step_errors(s: StepData, engine: EngineConfig, profile: str, mask: np.ndarray) -> dict[str, float]:
    """Median APE of simkv's price of each held-out step, decode-only and prefill steps."""
    cost = cost_model(s.run, profile, for_run(engine, s.run))
    frames = [d.assign(tag=t) for t, d in s.run.steps.items()]
    d = pd.concat(frames, ignore_index=True)
    d = d[d["captured"] == 0].reset_index(drop=True)[mask]
    ape = np.abs(price(d, cost) / d["step_s"].to_numpy() - 1) * 100
    pre = (d["prefill"] > 0).to_numpy()
    return {"decode_steps": float(np.median(ape[~pre])) if (~pre).any() else float("nan"),
            "prefill_steps": float(np.median(ape[pre])) if pre.any() else float("nan")}


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
                         [(r, t) for r, t in every if t.endswith(f"-{rep}")]))
    for r in runs:
        for wl, load in dict.fromkeys((w, ld) for _, w, ld, _ in r.streams()):
            prefix = f"{wl}-{load:g}-"
            out.append(Split("leave-one-load-out", f"{r.name} {wl} {load:g}",
                             lambda s, r=r, prefix=prefix: ~((s.run is r)
                                                            & np.char.startswith(s.tags.astype(str), prefix)),
                             [(r, t) for t, *_ in r.streams() if t.startswith(prefix)]))
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
            rows.append({"run": r.name, "workload": wl, "load": load, "rep": rep,
                         **{f"{m}_median": e[m]["median_ape"] for m in METRICS},
                         "e2e_p90": e["e2e"]["p90_ape"]})
    return pd.DataFrame(rows)


def phase_noise(runs: list[Run]) -> pd.DataFrame:
    """Per stream, the median TTFT error of an exact step model with a random step phase
    (``compare.phase_floor``): what no replay of arrivals can remove at light loads."""
    from simkv.validation.compare import phase_floor

    rows = []
    for r in runs:
        for t, wl, load, rep in r.streams():
            if t in r.steps:
                rows.append({"run": r.name, "workload": wl, "load": load, "rep": rep,
                             "ttft_phase": phase_floor(r.requests[t], r.steps[t])})
    return pd.DataFrame(rows)


def evaluate(runs: list[Run], profile: str, which: tuple[str, ...] | None = None,
             progress: Callable[[str], None] | None = None) -> tuple[pd.DataFrame, dict[str, EngineConfig]]:
    """Every split's per-stream errors (one row per scored stream) and its fitted engine."""
    data = [step_data(r, profile) for r in runs]
    rows, fits = [], {}
    for sp in splits(runs):
        if which and sp.name not in which:
            continue
        engine = fit_engine((s, sp.fit_on(s)) for s in data)
        fits[f"{sp.name}: {sp.label}"] = engine
        if progress:
            progress(f"{sp.name}: {sp.label}")
        for r, t in sp.scored:
            m = TAG.match(t)
            assert m is not None
            e = errors(r.requests[t], predict_stream(r, t, profile, engine))
            steps = r.steps.get(t)
            rows.append({"split": sp.name, "label": sp.label, "run": r.name, "shape": r.shape,
                         "workload": m["workload"], "load": float(m["load"]), "rep": m["rep"],
                         "captures": int(steps["captured"].sum()) if steps is not None else 0,
                         **{f"{k}_median": e[k]["median_ape"] for k in METRICS},
                         **{f"{k}_p90": e[k]["p90_ape"] for k in METRICS}})
    return pd.DataFrame(rows), fits


def fit_predict(fit_runs: list[Run], predict_runs: list[Run], profile: str
                ) -> tuple[pd.DataFrame, EngineConfig]:
    """``--fit DIR... --predict DIR...``: one fit on the first runs' steps, every stream of the
    second predicted."""
    engine = fit_engine((s, np.ones(len(s.tags), bool))
                        for s in (step_data(r, profile) for r in fit_runs))
    rows = []
    for r in predict_runs:
        for t, wl, load, rep in r.streams():
            e = errors(r.requests[t], predict_stream(r, t, profile, engine))
            rows.append({"split": "fit -> predict", "label": "", "run": r.name, "shape": r.shape,
                         "workload": wl, "load": load, "rep": rep,
                         "captures": int(r.steps[t]["captured"].sum()) if t in r.steps else 0,
                         **{f"{k}_median": e[k]["median_ape"] for k in METRICS},
                         **{f"{k}_p90": e[k]["p90_ape"] for k in METRICS}})
    return pd.DataFrame(rows), engine


# --- tables -----------------------------------------------------------------------------------

SPLIT_ORDER = ("in-sample", "leave-one-run-out", "leave-one-load-out", "leave-one-shape-out",
               "fit -> predict")


def summarise(df: pd.DataFrame, spread_df: pd.DataFrame | None = None,
              phase_df: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (shape, workload, load): each split's median over its scored streams of
    the per-stream median APE (TTFT, TPOT, E2E) and P90 E2E, beside the engine's spread and
    the TTFT phase noise."""
    keys = ["run", "workload", "load"]
    out = None
    for sp in (s for s in SPLIT_ORDER if s in set(df["split"])):
        g = df[df["split"] == sp].groupby(keys)[
            ["ttft_median", "tpot_median", "e2e_median", "e2e_p90"]].median()
        g.columns = pd.MultiIndex.from_product([[sp], ["TTFT", "TPOT", "E2E", "E2E P90"]])
        out = g if out is None else out.join(g, how="outer")
    if spread_df is not None and len(spread_df):
        s = spread_df.groupby(keys)[["ttft_median", "tpot_median", "e2e_median", "e2e_p90"]].median()
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
    head = "| run | workload | load | " + " | ".join(splits_) + " |"
    lines = [head, "|" + "---|" * (3 + len(splits_)),
             "", ]
    lines.pop()
    for (run, wl, load), row in summary.iterrows():
        cells = []
        for sp in splits_:
            ms = ("TTFT",) if sp == "TTFT phase noise" else metrics
            vals = [row.get((sp, m), np.nan) for m in ms]
            cells.append(" / ".join("-" if pd.isna(v) else f"{v:.1f}" for v in vals))
        lines.append(f"| {run} | {wl} | {load:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def describe(e: EngineConfig) -> str:
    """The fitted engine, in the units people read them in."""
    return (f"host: {e.iteration_overhead_s * 1e3:.2f} ms/step + "
            f"{e.per_sequence_overhead_s * 1e6:.0f} us/sequence + "
            f"{e.per_prefill_token_overhead_s * 1e6:.2f} us/prefill token + "
            f"{e.per_context_token_overhead_s * 1e9:.1f} ns/KV token; GPU: "
            f"{e.per_layer_overhead_s * 1e6:.0f} us/layer; padded attention per padded KV token "
            f"and layer: {e.padded_kv_layer_s * 1e9:.2f} ns + "
            f"{e.padded_kv_element_s * 1e12:.3f} ps/KV element + "
            f"{e.padded_query_element_s * 1e15:.2f} fs/query-head element x query token "
            f"(queries in tiles of {e.attention_query_tile or 1}); MoE: "
            f"{e.moe_layer_overhead_s * 1e6:.0f} us/layer + "
            f"{e.moe_expert_flop_s * 1e15:.3f} fs/routed expert FLOP")


def main(argv: list[str] | None = None) -> None:
    """``simkv-validate --fit DIR... --predict DIR...`` or ``--protocol ROOT``."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fit", nargs="+", default=[], help="hf_campaign folders to fit on")
    ap.add_argument("--predict", nargs="+", default=[], help="hf_campaign folders to predict")
    ap.add_argument("--protocol", default=None, metavar="ROOT",
                    help="every split over the hf_campaign folders under ROOT")
    ap.add_argument("--splits", nargs="+", default=None, choices=SPLIT_ORDER[:4])
    ap.add_argument("--exclude", nargs="*", default=[], help="run names left out of --protocol")
    ap.add_argument("--profile", default="h200_calibrated")
    ap.add_argument("--csv", default=None, help="write the per-stream errors here")
    args = ap.parse_args(argv)
    if args.protocol:
        runs = [r for r in find_runs(args.protocol) if r.name not in args.exclude]
        runs_scored = runs
        df, fits = evaluate(runs, args.profile, tuple(args.splits) if args.splits else None,
                            progress=lambda s: print(f"  fitted {s}", flush=True))
        sp = spread(runs)
        print(f"in-sample fit: {describe(fits['in-sample: all'])}" if "in-sample: all" in fits else "")
    else:
        if not args.fit or not args.predict:
            raise SystemExit("give --fit DIR... and --predict DIR..., or --protocol ROOT")
        df, engine = fit_predict([load_run(f) for f in args.fit], [load_run(f) for f in args.predict],
                                 args.profile)
        runs_scored = [load_run(f) for f in args.predict]
        sp = spread(runs_scored)
        print(f"fit: {describe(engine)}")
    print("median APE per request, % (TTFT / TPOT / E2E / P90 E2E), median over a stream's reps")
    print(markdown(summarise(df, sp, phase_noise(runs_scored))))
    if args.csv:
        df.to_csv(args.csv, index=False)
        print(f"per-stream errors: {args.csv}")

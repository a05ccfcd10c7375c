"""Compare simkv's predictions with measurements of a real serving engine, request by request.

    simkv-validate validation/hf_h100_2026-11-25_cudagraph_warm2 [--plot docs/img/validation.png]

The engine is modelled as a simkv configuration: its own KV block count, block size and token
budget (read from its ``engine.json``), chunked-prefill continuous batching, its KV padding
(CUDA graphs), and engine costs beyond the GPU roofline. Those costs are fitted on the
engine's profiled steps (``iterations_*.csv``, ``--fit steps``): host time per step, per
sequence, per prefill token and per KV token read, and the dense padded attention of
transformers' paged SDPA; without step profiles, on the light load's requests. No request
latency is fitted with step profiles: every load is a prediction. Errors are absolute
percentage errors per request of TTFT, TPOT and E2E, summarised by median and 90th percentile.
"""
from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from simkv.config.schema import (
    ClusterConfig,
    EngineConfig,
    HardwareConfig,
    KVConfig,
    OutputConfig,
    SimConfig,
)
from simkv.policies.router import RoundRobinConfig
from simkv.policies.scheduler import VLLMSchedulerConfig
from simkv.runner import simulate
from simkv.workload import TraceWorkloadConfig

METRICS = ("ttft", "tpot", "e2e")


REQUEST_COLUMNS = {"id", "status", "arrival_s", "submit_s", "first_token_s", "completion_s",
                   "prompt_tokens", "output_tokens"}


def load_measured(folder: Path) -> dict[str, pd.DataFrame]:
    out = {}
    for path in sorted(folder.glob("requests_*.csv")):
        if path.stem == "requests_probe":  # the closed burst that measured the capacity
            continue
        d = pd.read_csv(path)
        missing = REQUEST_COLUMNS - set(d.columns)
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}; expected "
                             "the requests_<load>.csv of simkv.validation.hf_replay")
        d = d[d["status"] != "missing"].sort_values("id").reset_index(drop=True)
        d["ttft"] = d["first_token_s"] - d["arrival_s"]
        d["e2e"] = d["completion_s"] - d["arrival_s"]
        d["tpot"] = (d["completion_s"] - d["first_token_s"]) / (d["output_tokens"] - 1)
        out[path.stem.removeprefix("requests_")] = d
    return out


# transformers 5.17's kv_padding_interval_size when CUDA graphs are on and none is given
# (generation/continuous_batching/initialization.py: 64 blocks of 256 tokens).
TRANSFORMERS_KV_PADDING = 16384


def engine_kv_padding(folder: Path) -> int:
    """The KV padding of the engine's steps: with CUDA graphs, transformers pads the KV a
    step reads to a multiple of its interval (one graph per padded shape); eager, none."""
    cb = json.loads((folder / "engine.json").read_text()).get("cb_config", {})
    if not cb.get("use_cuda_graph") and not cb.get("default_compile_level"):
        return 0
    return int(cb.get("kv_padding_interval_size") or TRANSFORMERS_KV_PADDING)


def engine_config(folder: Path, profile: str, engine: EngineConfig | None = None) -> SimConfig:
    """The engine as a simkv configuration: its own KV blocks, block size and token budget
    (from ``engine.json``), its KV padding, and the host and attention costs in ``engine``."""
    e = json.loads((folder / "engine.json").read_text())
    budget = int(e["PagedAttentionCache.max_batch_tokens"])
    engine = engine or EngineConfig()
    engine = dataclasses.replace(engine, kv_padding_tokens=engine_kv_padding(folder))
    return SimConfig(
        hardware=HardwareConfig(profile=profile),
        cluster=ClusterConfig(replicas=1),
        kv=KVConfig(block_size=int(e["PagedAttentionCache.block_size"]),
                    num_gpu_blocks_override=int(e["PagedAttentionCache.num_blocks"])),
        scheduler=VLLMSchedulerConfig(max_num_seqs=min(256, budget), max_num_batched_tokens=budget,
                                      chunked_prefill=True),
        router=RoundRobinConfig(),
        workload=TraceWorkloadConfig(path="", rebase=False),
        engine=engine,
        output=OutputConfig(plot=False, progress=False),
    )


def predict(measured: pd.DataFrame, cfg: SimConfig) -> pd.DataFrame:
    with tempfile.TemporaryDirectory() as d:
        trace = Path(d) / "trace.csv"
        measured[["arrival_s", "prompt_tokens", "output_tokens"]].to_csv(trace, index=False)
        cfg = dataclasses.replace(cfg, workload=dataclasses.replace(cfg.workload, path=str(trace)))
        req = simulate(cfg, Path(d) / "out").requests.sort_values("request_id").reset_index(drop=True)
    out = pd.DataFrame({"ttft": req["ttft_s"], "tpot": req["tpot_s"], "e2e": req["e2e_s"]})
    if "preemptions" in req:
        out["evictions"] = req["preemptions"].to_numpy()
    return out


def errors(measured: pd.DataFrame, predicted: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Absolute percentage error per request (rows aligned), median and P90; only the rows
    measured in both (a ``measured`` column: requests a cut replay did not finish)."""
    keep = np.ones(len(measured), bool)
    for d in (measured, predicted):
        if "measured" in d:
            keep &= d["measured"].to_numpy(bool)
    out = {}
    for m in METRICS:
        ape = np.abs(predicted[m].to_numpy()[keep] / measured[m].to_numpy()[keep] - 1) * 100
        out[m] = {"median_ape": float(np.median(ape)), "p90_ape": float(np.percentile(ape, 90))}
    return out


def host_costs(a: float, b: float, c: float = 0.0) -> EngineConfig:
    return EngineConfig(iteration_overhead_s=a, per_sequence_overhead_s=b,
                        per_prefill_token_overhead_s=c)


def fit_overheads(folder: Path, light: pd.DataFrame, profile: str) -> EngineConfig:
    """Grid search of the host costs (per iteration, per sequence, per prefill token)
    minimising the light load's median TPOT and TTFT errors (the one load used for fitting)."""
    best = (np.inf, host_costs(0.0, 0.0))
    for c in (0.0, 2e-5, 4e-5, 8e-5):
        for a in np.arange(0.080, 0.141, 0.004):
            for b in (0.0, 2.5e-4, 5e-4, 7.5e-4, 1e-3, 1.5e-3):
                engine = host_costs(float(a), b, c)
                e = errors(light, predict(light, engine_config(folder, profile, engine)))
                score = e["tpot"]["median_ape"] + e["ttft"]["median_ape"]
                if score < best[0]:
                    best = (score, engine)
    return best[1]


# Context per decoding sequence assumed when pricing a profiled iteration: the streams' mean
# prompt (~1,000 tokens) plus half a mean output; attention is a small part of these steps.
PROFILE_CONTEXT = 1100


def load_iterations(folder: Path) -> pd.DataFrame:
    """The engine's profiled steps (``hf_replay --profile-steps``), all loads.

    ``step_s`` is one engine iteration: the host's preparation plus launch-to-update when
    the profile has them (the generation-loop profiler: idle waits excluded), else a forward
    pass plus the gap to the next one (the forward-pass profiler of the first runs).
    A step with more tokens than sequences is read as one prefill chunk plus decodes.
    """
    frames = []
    for path in sorted(folder.glob("iterations_*.csv")):
        load = path.stem.removeprefix("iterations_")
        if load == "probe":
            continue
        d = pd.read_csv(path)
        if "prepare_s" in d:
            d["step_s"] = d["prepare_s"] + d["forward_s"]
        else:
            d["step_s"] = d["start_s"].shift(-1).fillna(np.inf) - d["start_s"]
            d = d.iloc[:-1]  # the last step has no successor
        d["load"] = load
        frames.append(d)
    if not frames:
        raise FileNotFoundError(f"no iterations_*.csv in {folder}: run hf_replay --profile-steps")
    d = pd.concat(frames, ignore_index=True)
    d["prefill"] = np.where(d["tokens"] > d["sequences"], d["tokens"] - d["sequences"] + 1, 0)
    d["decodes"] = d["tokens"] - d["prefill"]
    return d


# What each fitted column of a step is, and the engine parameter its coefficient sets.
STEP_TERMS = {"one": "iteration_overhead_s", "sequences": "per_sequence_overhead_s",
              "prefill": "per_prefill_token_overhead_s",
              "kv": "per_context_token_overhead_s", "padded_kv": "padded_kv_token_s",
              "padded_kv_q": "padded_kv_query_token_s"}


def nonnegative_lstsq(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares with coefficients >= 0 (scipy.optimize.nnls, Lawson-Hanson)."""
    from scipy.optimize import nnls

    return nnls(np.asarray(x, float), np.asarray(y, float))[0]


# Query tiles tried for the dense attention (1 = none); the step fit keeps the best.
QUERY_TILES = (1, 64, 128, 256, 512, 1024)


def step_design(d: pd.DataFrame, pad: int, tile: int = 1) -> pd.DataFrame:
    """The columns a step's time beyond simkv's GPU time is regressed on: per step, per
    sequence, per prefill token and, where the profile records the KV each step read, per
    KV token (host index building) and, for an engine that pads it, padded KV tokens and
    padded KV tokens x query tokens (dense masked attention)."""
    cols = {"one": np.ones(len(d)), "sequences": d["sequences"].to_numpy(float),
            "prefill": d["prefill"].to_numpy(float)}
    if "kv_read" in d:
        kv = (d["kv_read"] + d["tokens"]).to_numpy(float)
        cols["kv"] = kv
        if pad:
            padded = np.maximum(1.0, np.ceil(d["kv_read"].to_numpy(float) / pad)) * pad
            cols["padded_kv"] = padded
            cols["padded_kv_q"] = padded * np.ceil(d["tokens"].to_numpy(float) / tile) * tile
    return pd.DataFrame(cols, index=d.index)


def price_steps(d: pd.DataFrame, cfg: SimConfig) -> np.ndarray:
    """simkv's time for each profiled step (``load_iterations`` rows) under ``cfg``'s model,
    hardware profile and engine costs."""
    from simkv.entities.hardware import load_profile
    from simkv.perf.roofline import CostModel
    from simkv.policies.scheduler.interface import SchedulerOutput

    cost = CostModel(cfg.model, load_profile(cfg.hardware.profile), engine=cfg.engine)
    kv_read = d.get("kv_read")
    times = []
    for i, (p, n) in enumerate(zip(d["prefill"], d["decodes"], strict=True)):
        out = SchedulerOutput(prefill_tokens=int(p), num_decodes=int(n), num_sampled=int(n) + (p > 0))
        # Context: what the step read when the profile has it, else an assumed mean.
        past = int(kv_read.iloc[i]) if kv_read is not None else int(n) * PROFILE_CONTEXT
        if p:
            out.prefill_attn_pairs = p * (p + 1) / 2
            out.prefill_kv_tokens = int(p) + (past if not n else 0)
        if n:
            out.decode_context = (past + int(n),)
        times.append(cost.iteration_time(out))
    return np.asarray(times)


def fit_from_iterations(folder: Path, profile: str) -> EngineConfig:
    """Engine costs from the engine's own step times: what a step took beyond simkv's GPU
    time for it (GEMMs and LM head from the profile; attention too unless the engine pads
    its KV, whose dense attention is then fitted), regressed on ``step_design`` by
    non-negative least squares; with padding, the attention's query tile is the one of
    ``QUERY_TILES`` whose fit leaves the least squared residual (a model choice made on
    steps too).

    NOTE: fits engine steps, not request latencies: every load's requests stay a prediction.
    Steps that recorded a CUDA graph are left out (``captured``), and without that column
    steps slower than 3x the median (first-time kernel compilation).
    """
    pad = engine_kv_padding(folder)
    d = load_iterations(folder)
    d = d[d["captured"] == 0] if "captured" in d else d[d["step_s"] < 3 * d["step_s"].median()]
    y = d["step_s"].to_numpy() - price_steps(d, engine_config(folder, profile, host_costs(0.0, 0.0)))
    best: tuple[float, int, pd.Index, np.ndarray] | None = None
    for tile in QUERY_TILES if pad and "kv_read" in d else (1,):
        x = step_design(d, pad, tile)
        coef = nonnegative_lstsq(x.to_numpy(), y)
        sse = float(((y - x.to_numpy() @ coef) ** 2).sum())
        if best is None or sse < best[0]:
            best = (sse, tile, x.columns, coef)
    assert best is not None
    _, tile, columns, coef = best
    fitted = {STEP_TERMS[c]: float(v) for c, v in zip(columns, coef, strict=True)}
    return EngineConfig(**fitted, attention_query_tile=tile if tile > 1 else 0)


def phase_floor(measured: pd.DataFrame, steps: pd.DataFrame, draws: int = 200,
                seed: int = 0) -> float:
    """Median per-request TTFT error (%) that an exact model of every step would make if its
    step phase were independent of the engine's.

    ``measured``: one load's requests (``load_measured``); ``steps``: its
    ``iterations_<load>.csv`` as read. A request that arrives while a step runs waits for it
    to end: anywhere in [0, step). Keeping each request's measured service (step start to
    first token) and replacing its measured wait by a uniform draw over the step it arrived
    in gives the error of a simulator that is right about everything but where in its step
    the engine was; requests that found the engine idle keep their wait. Averaged over
    ``draws`` draws. Not a strict bound: a simulator's phase is not independent of the
    engine's (both restart when idle).
    """
    m, it = measured, steps
    # The engine takes new requests when it schedules a step: the start minus its preparation.
    sched = (it["start_s"] - it.get("prepare_s", 0.0)).to_numpy()
    busy_end = (it["start_s"] + it["forward_s"]).to_numpy()
    k = np.searchsorted(sched, m["submit_s"].to_numpy(), side="right") - 1
    ok = (k >= 0) & (k + 1 < len(sched))
    k = k[ok]
    arrival, ttft = m["arrival_s"].to_numpy()[ok], m["ttft"].to_numpy()[ok]
    in_flight = arrival < busy_end[k]
    step = sched[k + 1] - sched[k]
    wait = np.where(in_flight, sched[k + 1] - arrival, 0.0)
    rng = np.random.default_rng(seed)
    meds = []
    for _ in range(draws):
        drawn = np.where(in_flight, rng.uniform(0.0, step), wait)
        meds.append(np.median(np.abs((ttft - wait + drawn) / ttft - 1)) * 100)
    return float(np.mean(meds))


def report(folder: Path, profiles: tuple[str, ...] = ("h100_sxm_80gb", "h100_sxm_80gb_calibrated"),
           fit: str = "light") -> dict[str, Any]:
    """Errors per load for each profile; host costs fitted on the light load's requests
    (``fit="light"``) or on the engine's profiled steps (``fit="steps"``)."""
    measured = load_measured(folder)
    light = measured[min(measured, key=float)]
    result: dict[str, Any] = {}
    for profile in profiles:
        engine = (fit_overheads(folder, light, profile) if fit == "light"
                  else fit_from_iterations(folder, profile))
        rows = {}
        for load, m in measured.items():
            p = predict(m, engine_config(folder, profile, engine))
            rows[load] = {"errors": errors(m, p), "predicted": p, "measured": m}
        result[profile] = {"engine": engine, "loads": rows, "fit": fit}
    return result


def table(result: dict[str, Any]) -> str:
    lines = ["| profile | load (x burst capacity) | fitted on | TTFT median / P90 "
             "| TPOT median / P90 | E2E median / P90 |", "|---|---|---|---|---|---|"]
    for profile, r in result.items():
        loads = sorted(r["loads"], key=float)
        for load in loads:
            e = r["loads"][load]["errors"]
            cells = [f"{e[m]['median_ape']:.1f}% / {e[m]['p90_ape']:.1f}%" for m in METRICS]
            fitted = ("yes" if load == loads[0] else "no") if r.get("fit", "light") == "light" \
                else "steps"
            lines.append(f"| {profile} | {load} | {fitted} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """Predicted against measured per request (and the PDF beside ``path``)."""
    from simkv.metrics import style

    style.save(figure(result), path)


def figure(result: dict[str, Any]) -> Any:
    """Predicted against measured per request, a row of TTFT/TPOT/E2E per profile."""
    from simkv.metrics import style

    profiles = list(result)
    with style.context():
        fig, axes = style.figure(len(profiles), 3, size=(13, 4 * len(profiles)), squeeze=False)
        for row, profile in zip(axes, profiles, strict=True):
            for ax, m in zip(row, METRICS, strict=True):
                lo, hi = np.inf, 0.0
                for load, r in sorted(result[profile]["loads"].items(), key=lambda kv: float(kv[0])):
                    x, y = r["measured"][m].to_numpy(), r["predicted"][m].to_numpy()
                    ax.scatter(x, y, s=12, label=f"load {load}")
                    lo, hi = min(lo, x.min(), y.min()), max(hi, x.max(), y.max())
                ax.plot([lo, hi], [lo, hi], c="grey", lw=0.8)
                if m == "ttft":  # light loads' TTFTs are 20x shorter than saturated ones
                    ax.set_xscale("log")
                    ax.set_yscale("log")
                ax.set_xlabel(f"measured {m.upper()} (s)")
                ax.set_ylabel(f"simkv {m.upper()} (s)")
                ax.set_title(f"{profile}: {m.upper()}")
            row[0].legend()
    return fig


def describe(e: EngineConfig) -> str:
    """The fitted engine costs, in the units people read them in."""
    parts = [f"step {e.iteration_overhead_s * 1e3:.2f} ms",
             f"per sequence {e.per_sequence_overhead_s * 1e3:.3f} ms",
             f"per prefill token {e.per_prefill_token_overhead_s * 1e6:.1f} us"]
    if e.per_context_token_overhead_s:
        parts.append(f"per KV token read {e.per_context_token_overhead_s * 1e9:.1f} ns")
    if e.padded_kv_token_s or e.padded_kv_query_token_s:
        parts.append(f"padded attention {e.padded_kv_token_s * 1e9:.1f} ns per padded KV token "
                     f"+ {e.padded_kv_query_token_s * 1e12:.2f} ps per padded KV token x query "
                     f"token (queries in tiles of {e.attention_query_tile or 1})")
    return ", ".join(parts)


MODES = ("auto", "light", "steps")


def steps_main(folder_arg: str, fit: str = "auto", plot_path: str | None = None) -> None:
    """``simkv-validate steps FOLDER``: an hf_replay folder, both H100 profiles."""
    folder = Path(folder_arg)
    if not (folder / "engine.json").is_file():
        raise FileNotFoundError(f"{folder}: no engine.json; expected the output folder of "
                                "python -m simkv.validation.hf_replay")
    if not any(folder.glob("requests_*.csv")):
        raise FileNotFoundError(f"{folder}: no requests_<load>.csv")
    if fit == "auto":
        fit = "steps" if any(folder.glob("iterations_*.csv")) else "light"
    result = report(folder, fit=fit)
    for profile, r in result.items():
        print(f"{profile}: {describe(r['engine'])}")
    print(table(result))
    rows = next(iter(result.values()))["loads"]  # the measurements, read once
    loads = sorted(rows, key=float)
    if all((folder / f"iterations_{x}.csv").is_file() for x in loads):
        floors = ", ".join(
            f"{x}x {phase_floor(rows[x]['measured'], pd.read_csv(folder / f'iterations_{x}.csv')):.1f}%"
            for x in loads)
        print(f"TTFT phase noise (median APE of an exact step model with a random step "
              f"phase): {floors}")
    if plot_path:
        plot(result, Path(plot_path))
        print(f"plot: {plot_path}")


def main(argv: list[str] | None = None) -> None:
    """``simkv-validate`` (its subcommands: simkv/validation/cli.py)."""
    from simkv.validation.cli import main as cli_main

    cli_main(argv)


if __name__ == "__main__":
    main()

"""Compare simkv's predictions with measurements of a real serving engine, request by request.

    python -m simkv.validation.compare validation/hf_h100_2026-11-25 [--plot docs/img/validation.png]

The engine is modelled as a simkv configuration: the engine's own KV block count, block size
and token budget (read from its ``engine.json``), chunked-prefill continuous batching, and two
host-side costs (per iteration and per sequence) fitted by a grid search on the *light* load
only; the other loads are predictions. Errors are absolute percentage errors per request of
TTFT, TPOT and E2E, summarised by their median and 90th percentile.
"""

from __future__ import annotations

import argparse
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


def load_measured(folder: Path) -> dict[str, pd.DataFrame]:
    out = {}
    for path in sorted(folder.glob("requests_*.csv")):
        d = pd.read_csv(path)
        d = d[d["status"] != "missing"].sort_values("id").reset_index(drop=True)
        d["ttft"] = d["first_token_s"] - d["arrival_s"]
        d["e2e"] = d["completion_s"] - d["arrival_s"]
        d["tpot"] = (d["completion_s"] - d["first_token_s"]) / (d["output_tokens"] - 1)
        out[path.stem.removeprefix("requests_")] = d
    return out


def engine_config(folder: Path, profile: str, overhead_s: float, per_seq_s: float,
                  per_prefill_token_s: float = 0.0) -> SimConfig:
    e = json.loads((folder / "engine.json").read_text())
    budget = int(e["PagedAttentionCache.max_batch_tokens"])
    return SimConfig(
        hardware=HardwareConfig(profile=profile),
        cluster=ClusterConfig(replicas=1),
        kv=KVConfig(block_size=int(e["PagedAttentionCache.block_size"]),
                    num_gpu_blocks_override=int(e["PagedAttentionCache.num_blocks"])),
        scheduler=VLLMSchedulerConfig(max_num_seqs=min(256, budget), max_num_batched_tokens=budget,
                                      chunked_prefill=True),
        router=RoundRobinConfig(),
        workload=TraceWorkloadConfig(path="", rebase=False),
        engine=EngineConfig(iteration_overhead_s=overhead_s, per_sequence_overhead_s=per_seq_s,
                            per_prefill_token_overhead_s=per_prefill_token_s),
        output=OutputConfig(plot=False, progress=False),
    )


def predict(measured: pd.DataFrame, cfg: SimConfig) -> pd.DataFrame:
    with tempfile.TemporaryDirectory() as d:
        trace = Path(d) / "trace.csv"
        measured[["arrival_s", "prompt_tokens", "output_tokens"]].to_csv(trace, index=False)
        cfg = dataclasses.replace(cfg, workload=dataclasses.replace(cfg.workload, path=str(trace)))
        req = simulate(cfg, Path(d) / "out").requests.sort_values("request_id").reset_index(drop=True)
    return pd.DataFrame({"ttft": req["ttft_s"], "tpot": req["tpot_s"], "e2e": req["e2e_s"]})


def errors(measured: pd.DataFrame, predicted: pd.DataFrame) -> dict[str, dict[str, float]]:
    out = {}
    for m in METRICS:
        ape = np.abs(predicted[m].to_numpy() / measured[m].to_numpy() - 1) * 100
        out[m] = {"median_ape": float(np.median(ape)), "p90_ape": float(np.percentile(ape, 90))}
    return out


def fit_overheads(folder: Path, light: pd.DataFrame, profile: str) -> tuple[float, float, float]:
    """Grid search of the host costs (per iteration, per sequence, per prefill token)
    minimising the light load's median TPOT and TTFT errors (the one load used for fitting)."""
    best = (np.inf, 0.0, 0.0, 0.0)
    for c in (0.0, 2e-5, 4e-5, 8e-5):
        for a in np.arange(0.080, 0.141, 0.004):
            for b in (0.0, 2.5e-4, 5e-4, 7.5e-4, 1e-3, 1.5e-3):
                e = errors(light, predict(light, engine_config(folder, profile, a, b, c)))
                score = e["tpot"]["median_ape"] + e["ttft"]["median_ape"]
                if score < best[0]:
                    best = (score, float(a), float(b), float(c))
    return best[1], best[2], best[3]


# Context per decoding sequence assumed when pricing a profiled iteration: the streams' mean
# prompt (~1,000 tokens) plus half a mean output; attention is a small part of these steps.
PROFILE_CONTEXT = 1100


def load_iterations(folder: Path) -> pd.DataFrame:
    """The engine's profiled forward passes (``hf_replay --profile-steps``), all loads.

    ``step_s`` is a forward pass plus the host gap to the next one: one engine iteration.
    A step with more tokens than sequences is read as one prefill chunk plus decodes.
    """
    frames = []
    for path in sorted(folder.glob("iterations_*.csv")):
        d = pd.read_csv(path)
        d["step_s"] = d["start_s"].shift(-1).fillna(np.inf) - d["start_s"]
        d["load"] = path.stem.removeprefix("iterations_")
        frames.append(d.iloc[:-1])  # the last step has no successor
    if not frames:
        raise FileNotFoundError(f"no iterations_*.csv in {folder}: run hf_replay --profile-steps")
    d = pd.concat(frames, ignore_index=True)
    d["prefill"] = np.where(d["tokens"] > d["sequences"], d["tokens"] - d["sequences"] + 1, 0)
    d["decodes"] = d["tokens"] - d["prefill"]
    return d


def fit_from_iterations(folder: Path, profile: str) -> tuple[float, float, float]:
    """Host costs from the engine's own step times: what a step took beyond simkv's GPU time
    for it, regressed on (1, sequences, prefill tokens) by least squares (non-negative).

    NOTE: fits engine steps, not request latencies: every load's requests stay a prediction.
    Steps slower than 3x the median (first-time kernel compilation) are left out.
    """
    from simkv.entities.hardware import load_profile
    from simkv.perf.roofline import CostModel
    from simkv.policies.scheduler.interface import SchedulerOutput

    cfg = engine_config(folder, profile, 0.0, 0.0, 0.0)
    cost = CostModel(cfg.model, load_profile(profile), engine=cfg.engine)
    d = load_iterations(folder)
    d = d[d["step_s"] < 3 * d["step_s"].median()]
    gpu = []
    for p, n in zip(d["prefill"], d["decodes"], strict=True):
        out = SchedulerOutput(prefill_tokens=int(p), num_decodes=int(n), num_sampled=int(n) + (p > 0))
        if p:
            out.prefill_attn_pairs = p * (p + 1) / 2
            out.prefill_kv_tokens = int(p)
        if n:
            out.decode_context = (int(n) * PROFILE_CONTEXT,)
        gpu.append(cost.iteration_time(out))
    residual = d["step_s"].to_numpy() - np.asarray(gpu)
    x = np.c_[np.ones(len(d)), d["sequences"].to_numpy(), d["prefill"].to_numpy()]
    coef, *_ = np.linalg.lstsq(x, residual, rcond=None)
    a, b, c = (max(0.0, float(v)) for v in coef)
    return a, b, c


def report(folder: Path, profiles: tuple[str, ...] = ("h100_sxm_80gb", "h100_sxm_80gb_calibrated"),
           fit: str = "light") -> dict[str, Any]:
    """Errors per load for each profile; host costs fitted on the light load's requests
    (``fit="light"``) or on the engine's profiled steps (``fit="steps"``)."""
    measured = load_measured(folder)
    light = measured[min(measured, key=float)]
    result: dict[str, Any] = {}
    for profile in profiles:
        a, b, c = (fit_overheads(folder, light, profile) if fit == "light"
                   else fit_from_iterations(folder, profile))
        rows = {}
        for load, m in measured.items():
            p = predict(m, engine_config(folder, profile, a, b, c))
            rows[load] = {"errors": errors(m, p), "predicted": p, "measured": m}
        result[profile] = {"iteration_overhead_s": a, "per_sequence_overhead_s": b,
                           "per_prefill_token_overhead_s": c, "loads": rows, "fit": fit}
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    profiles = list(result)
    fig, axes = plt.subplots(len(profiles), 3, figsize=(13, 4 * len(profiles)), squeeze=False)
    for row, profile in zip(axes, profiles, strict=True):
        for ax, m in zip(row, METRICS, strict=True):
            lo, hi = np.inf, 0.0
            for load, r in sorted(result[profile]["loads"].items(), key=lambda kv: float(kv[0])):
                x, y = r["measured"][m].to_numpy(), r["predicted"][m].to_numpy()
                ax.scatter(x, y, s=12, label=f"load {load}")
                lo, hi = min(lo, x.min(), y.min()), max(hi, x.max(), y.max())
            ax.plot([lo, hi], [lo, hi], c="grey", lw=0.8)
            ax.set_xlabel(f"measured {m.upper()} (s)")
            ax.set_ylabel(f"simkv {m.upper()} (s)")
            ax.set_title(f"{profile}: {m.upper()}", fontsize=9)
            ax.grid(alpha=0.3)
        row[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("folder")
    ap.add_argument("--plot")
    ap.add_argument("--fit", choices=("light", "steps"), default="light",
                    help="host costs from the light load's requests, or from profiled steps")
    args = ap.parse_args()
    result = report(Path(args.folder), fit=args.fit)
    for profile, r in result.items():
        print(f"{profile}: fitted iteration overhead {r['iteration_overhead_s'] * 1e3:.1f} ms, "
              f"per sequence {r['per_sequence_overhead_s'] * 1e3:.2f} ms, per prefill token "
              f"{r['per_prefill_token_overhead_s'] * 1e6:.0f} us")
    print(table(result))
    if args.plot:
        plot(result, Path(args.plot))
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()

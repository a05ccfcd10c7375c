"""Fit a GPU's power model: on published measurements, or on this project's device samples.

    simkv-calibrate power-fit --campaign validation/hf_h100_2026-12-07 \
        --profile h100_sxm_80gb_calibrated --out hardware_profiles/power/h100_fitted.yaml

Every observation is one linear equation in the model's parameters (simkv/energy/model.py):
a window of ``wall`` seconds in which the GPU ran kernels for ``busy`` seconds doing F FLOPs,
moving B HBM bytes and L link bytes used

    E = idle x wall + active x busy + compute x F / peak + memory x B / bandwidth
        + link x L / NVLink bandwidth                                        joules,

as long as the GPU stayed below its power limit (windows at the limit are left out: they
bound the parameters from below only). So a least-squares fit over windows of different
kinds separates the terms:

* the characterisation loops (simkv/calibration/power.py, dev19's campaign): idle sleeps,
  a launch-bound loop of tiny kernels (``active``), compute-bound GEMMs (``compute``),
  copies and reads (``memory``), each with its achieved FLOP/s and bytes/s and the energy
  the card's counter saw; GEMV-like linear layers and attention loops are held out;
* engine replays (hf_campaign streams): each stream's steps, their work counted by
  simkv/energy/work.py on the engine's model and padding, against the energy counter over
  the stream (NVML samples on the same ``perf_counter`` clock as the engine's stamps).
  Streams named by ``--train`` join the fit; the others are held out and their energy error
  is the model's held-out error.

One GPU cannot measure link power, and clocks may not be changed on the lent machines, so
``link`` and ``freq_exponent`` keep the published values. ``published_fit`` derives the
shipped published parameters (docs/ENERGY.md) from the same equations: the power Splitwise's
simulator assigns its prompt and token phases, on simkv's own work for their setup.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

# PublishedTargets, phase_work and published_fit are re-exported: tests and docs/ENERGY.md
# name them here.
from simkv.calibration.power_published import (  # noqa: F401
    SPLITWISE_H100,
    PublishedTargets,
    cap_exponent,
    phase_work,
    published_fit,
)
from simkv.energy.params import PowerParams, load_power

FIT_KEYS = ("idle", "active", "compute", "memory")
# Loop kinds (calibration/power.py) that train the fit; the others are held out.
TRAIN_KINDS = ("idle", "launch_bound", "gemm_compute", "memory")
AT_LIMIT = 0.97  # a window whose mean power is within 3% of the power limit is at the limit


@dataclass(slots=True)
class Window:
    """One observation: energy over a window, and what the GPU did in it."""

    name: str
    kind: str  # a loop kind, or "replay"
    wall_s: float
    busy_s: float
    flops: float
    nbytes: float
    link: float
    energy_j: float
    train: bool
    at_limit: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def terms(self, peaks: tuple[float, float, float]) -> np.ndarray:
        """Coefficients of (idle, active, compute, memory, link) in the window's energy."""
        fp, bp, lp = peaks
        return np.array([self.wall_s, self.busy_s, self.flops / fp, self.nbytes / bp, self.link / lp])


def predict(w: Window, params: PowerParams, peaks: tuple[float, float, float]) -> float:
    """The model's energy for a window (the TDP bounds the busy part's mean power)."""
    coef = w.terms(peaks)
    p = params
    busy = (p.active_w * coef[1] + p.compute_w * coef[2] + p.memory_w * coef[3] + p.link_w * coef[4])
    if w.busy_s > 0:
        busy = min(busy, (p.tdp_w - p.idle_w) * w.busy_s)
    return p.idle_w * coef[0] + busy


def fit(windows: list[Window], base: PowerParams, peaks: tuple[float, float, float]
        ) -> tuple[dict[str, float], pd.DataFrame]:
    """Least squares (non-negative) of idle, active, compute and memory on the training
    windows below the power limit, link kept at ``base``'s; each window weighed by 1/energy
    (relative errors). Returns the parameters and one row per window with its error."""
    from scipy.optimize import nnls

    train = [w for w in windows if w.train and not w.at_limit]
    if len(train) < len(FIT_KEYS):
        raise ValueError(f"power fit: {len(train)} training windows below the power limit; "
                         f"at least {len(FIT_KEYS)} are needed (idle, tiny kernels, GEMMs, copies)")
    a = np.array([w.terms(peaks)[:4] / w.energy_j for w in train])
    b = np.array([(w.energy_j - base.link_w * w.terms(peaks)[4]) / w.energy_j for w in train])
    x, _ = nnls(a, b)
    got = dict(zip(FIT_KEYS, (float(v) for v in x), strict=True))
    fitted = PowerParams(base.name, got["idle"], got["active"], got["compute"], got["memory"],
                         base.link_w, base.tdp_w, base.max_sm_mhz, base.min_sm_mhz, base.freq_exponent)
    return got, error_table(windows, fitted, peaks)


def error_table(windows: list[Window], params: PowerParams, peaks: tuple[float, float, float]
                ) -> pd.DataFrame:
    """One row per window: measured and predicted energy and power, the relative error."""
    rows = []
    for w in windows:
        pred = predict(w, params, peaks)
        rows.append({"name": w.name, "kind": w.kind, "set": "train" if w.train else "held_out",
                     "at_limit": w.at_limit, "wall_s": w.wall_s, "measured_j": w.energy_j,
                     "predicted_j": pred, "measured_w": w.energy_j / w.wall_s,
                     "predicted_w": pred / w.wall_s,
                     "error": pred / w.energy_j - 1.0, **w.extra})
    return pd.DataFrame(rows)


# --- the characterisation loops ------------------------------------------------------------

def loop_windows(loops: pd.DataFrame, power_limit_w: float, max_mhz: float) -> list[Window]:
    out = []
    for r in loops.itertuples(index=False):
        e = float(r.energy_j)
        if not math.isfinite(e) or e <= 0 or r.seconds <= 0:
            continue
        # An idle loop right after work still has its clocks up (the driver lowers them
        # seconds later): that is the engine's floor between steps, ``active``, not idle.
        warm = r.kind == "idle" and float(getattr(r, "sm_mhz_end", 0) or 0) >= 0.9 * max_mhz
        busy = 0.0 if r.kind == "idle" and not warm else float(r.seconds)
        flops = float(r.tflop_per_s) * 1e12 * r.seconds
        nbytes = float(r.tbyte_per_s) * 1e12 * r.seconds
        out.append(Window(str(r.name), "idle_clocks_up" if warm else str(r.kind), float(r.seconds),
                          busy, flops, nbytes, 0.0, e, train=r.kind in TRAIN_KINDS,
                          at_limit=e / r.seconds >= AT_LIMIT * power_limit_w))
    return out


# --- engine replays -------------------------------------------------------------------------

def _samples(power_dir: Path) -> list[pd.DataFrame]:
    """One frame per NVML sample file, kept apart: each call (and machine) has its own
    ``perf_counter`` origin, so their clocks overlap; a stream is matched to its file by Unix
    time."""
    frames = []
    for f in sorted(power_dir.glob("nvml_part*.csv")):
        df = pd.read_csv(f)
        if {"perf_s", "power_w"} <= set(df.columns) and len(df):
            frames.append(df.sort_values("perf_s", kind="stable").reset_index(drop=True))
    return frames


def _file_for(frames: list[pd.DataFrame], t0_unix: float | None, t0: float, t1: float
              ) -> pd.DataFrame | None:
    for df in frames:
        if t0_unix is not None and "unix_s" in df:
            if df["unix_s"].iloc[0] <= t0_unix <= df["unix_s"].iloc[-1]:
                return df
        elif df["perf_s"].iloc[0] <= t0 and df["perf_s"].iloc[-1] >= t1:
            return df
    return None


def cold_idle_windows(frames: list[pd.DataFrame], min_s: float = 1.0) -> list[Window]:
    """Each sample file's leading stretch at idle clocks with nothing running (the GPU before
    the call's first process touched it): idle power alone."""
    out = []
    for i, df in enumerate(frames):
        if "sm_mhz" not in df or "util_gpu" not in df:
            continue
        quiet = (df["util_gpu"] == 0) & (df["sm_mhz"] <= 0.3 * df["sm_mhz"].max())
        n = int(quiet.cumprod().sum())  # leading rows that are quiet
        if n < 2:
            continue
        t0, t1 = float(df["perf_s"].iloc[0]), float(df["perf_s"].iloc[n - 1])
        if t1 - t0 < min_s:
            continue
        e = window_energy(df, t0, t1)
        out.append(Window(f"cold_idle_{i}", "idle", t1 - t0, 0.0, 0.0, 0.0, 0.0, e, train=True))
    return out


def window_energy(samples: pd.DataFrame, t0: float, t1: float) -> float:
    """Joules between two perf_counter times: the card's energy counter where it has one,
    else the trapezoid of the sampled power; NaN where the samples do not cover the window."""
    s = samples
    if not len(s) or s["perf_s"].iloc[0] > t0 or s["perf_s"].iloc[-1] < t1:
        return float("nan")
    t = s["perf_s"].to_numpy(dtype=np.float64)
    if "energy_j" in s and s["energy_j"].notna().all():
        e = s["energy_j"].to_numpy(dtype=np.float64)
        return float(np.interp(t1, t, e) - np.interp(t0, t, e))
    p = s["power_w"].to_numpy(dtype=np.float64)
    grid = np.linspace(t0, t1, max(2, int((t1 - t0) / 0.01)))
    return float(np.trapezoid(np.interp(grid, t, p), grid))


def replay_work(iterations: pd.DataFrame, cost: Any) -> tuple[float, float, float, float]:
    """(busy s, FLOPs, HBM bytes, link bytes) per GPU of an engine stream's steps: projections
    on the padded query tokens, dense attention over the padded KV, LM head on the sequences."""
    from simkv.energy.work import StepWork

    w = StepWork(cost)
    flops = nbytes = link = 0.0
    tile = max(1, int(getattr(cost, "_q_tile", 0) or 1))
    for r in iterations.itertuples(index=False):
        q = int(getattr(r, "q_padded", 0) or r.tokens)
        f, b, lk = w.linear(q)
        hf, hb = w._head(float(r.sequences), int(r.tokens))
        kv = float(getattr(r, "kv_padded", 0) or r.kv_read)
        q_tiled = math.ceil(q / tile) * tile
        flops += f + hf + w.layer_share * w.pair_flops * kv * q_tiled
        nbytes += b + hb + w.layer_share * (kv * w.kv_bytes + r.tokens * w.q_bytes)
        link += lk
    busy = float(iterations["forward_s"].sum()) if "forward_s" in iterations else float("nan")
    return busy, flops, nbytes, link


def replay_windows(campaign: Path, profile: str, train: tuple[str, ...]) -> list[Window]:
    """One window per engine stream (probes included) whose power samples cover it, from its
    first step's start to its last step's end; ``train`` names the streams that join the
    fit (``folder/tag``), the others are held out."""
    from simkv.config.schema import EngineConfig
    from simkv.entities.hardware import load_profile
    from simkv.entities.model import ModelSpec
    from simkv.perf.roofline import CostModel

    frames = _samples(campaign / "power")
    if not frames:
        return []
    hw = load_profile(profile)
    engine_doc = yaml.safe_load((Path(__file__).parents[1] / "conf" / "engine"
                                 / "transformers_cudagraph_h100.yaml").read_text())
    engine = EngineConfig(**engine_doc)
    out = []
    for eng in sorted(campaign.glob("*/engine.json")):
        doc = json.loads(eng.read_text())
        spec = {k: v for k, v in (doc.get("model_spec") or {}).items()
                if k in ModelSpec.__dataclass_fields__}
        if not spec:
            continue
        cost = CostModel(ModelSpec(**spec), hw, int(doc.get("tp", 1) or 1), engine=engine)
        for s in doc.get("streams", []):
            its = eng.parent / f"iterations_{s['tag']}.csv"
            if not its.is_file() or "t0_perf" not in s:
                continue
            df = pd.read_csv(its)
            if not len(df):
                continue
            t0 = float(s["t0_perf"]) + float(df["start_s"].min())
            last = df.iloc[-1]
            t1 = float(s["t0_perf"]) + float(last["start_s"]) + float(last.get("step_call_s", 0.0))
            samples = _file_for(frames, s.get("t0_unix"), t0, t1)
            energy = window_energy(samples, t0, t1) if samples is not None else float("nan")
            if not math.isfinite(energy) or t1 <= t0:
                continue
            busy, flops, nbytes, link = replay_work(df, cost)
            name = f"{eng.parent.name}/{s['tag']}"
            out.append(Window(name, "replay", t1 - t0, busy, flops, nbytes, link, energy,
                              train=name in train, extra={"steps": len(df)}))
    return out


# --- command line ---------------------------------------------------------------------------

def run_fit(campaign: Path, profile: str, base_name: str, train: tuple[str, ...]
            ) -> tuple[dict[str, float], pd.DataFrame, dict[str, Any]]:
    from simkv.entities.hardware import load_profile

    hw = load_profile(profile)
    base = load_power(base_name)
    peaks = (hw.bf16_flops, hw.hbm_bandwidth, hw.nvlink_bandwidth)
    power = campaign / "power"
    static: dict[str, Any] = {}
    for f in sorted(power.glob("nvml_part*.json")):
        static = {**json.loads(f.read_text()), **static}
    limit = static.get("power_limit_w")
    limit = float(limit) if isinstance(limit, int | float) else base.tdp_w
    max_mhz = static.get("max_sm_mhz")
    max_mhz = float(max_mhz) if isinstance(max_mhz, int | float) else base.max_sm_mhz
    windows = cold_idle_windows(_samples(power))
    if (power / "loops.csv").is_file():
        windows += loop_windows(pd.read_csv(power / "loops.csv"), limit, max_mhz)
    windows += replay_windows(campaign, profile, train)
    got, table = fit(windows, base, peaks)
    return got, table, {"gpu": static.get("name"), "driver": static.get("driver"),
                        "power_limit_w": limit, "campaign": str(campaign), "profile": profile}


def check(campaign: Path, profile: str, power_name: str) -> pd.DataFrame:
    """A shipped power model against every engine stream of a campaign that no fit used (another
    machine, other shapes): one row per stream window, as ``fit``'s table."""
    from simkv.entities.hardware import load_profile

    hw = load_profile(profile)
    peaks = (hw.bf16_flops, hw.hbm_bandwidth, hw.nvlink_bandwidth)
    if not campaign.is_dir():
        raise SystemExit(f"--campaign {campaign}: no such folder")
    windows = replay_windows(campaign, profile, ())  # train=(): every stream held out
    if not windows:
        raise SystemExit(f"--check: no engine stream of {campaign} has power samples "
                         f"(power/nvml_part*.csv covering its steps)")
    return error_table(windows, load_power(power_name), peaks)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="simkv-calibrate power-fit", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--campaign", required=True, help="a campaign folder with power/ (and engine folders)")
    ap.add_argument("--profile", default="h100_sxm_80gb_calibrated",
                    help="hardware profile of the GPU measured (peaks, the engine's work)")
    ap.add_argument("--base", default="h100_sxm_published",
                    help="power model whose link power, TDP, clocks and exponent are kept")
    ap.add_argument("--train", default="", help="engine streams (folder/tag, comma-separated) that join "
                    "the fit; the others are held out (default: none, the loops alone)")
    ap.add_argument("--out", help="the power model to write (YAML; required unless --check)")
    ap.add_argument("--check", metavar="POWER_MODEL", help="fit nothing: predict every engine "
                    "stream of the campaign with this shipped power model (e.g. h100_sxm_fitted)")
    ap.add_argument("--errors", help="CSV of every window's measured and predicted energy")
    ap.add_argument("--profiles", default="", help="hardware profiles (comma-separated) the written "
                    "model is the default for (it then wins over the published one)")
    ap.add_argument("--cap-exponent", action="store_true",
                    help="refit freq_exponent to Splitwise's H100 cap finding (350 W slows the "
                    "Llama2-70B TP8 prompt step 1.30x) with the fitted parameters")
    args = ap.parse_args(argv)
    if args.check:
        table = check(Path(args.campaign), args.profile, args.check)
        err = table["error"]
        print(f"{args.check} on {len(table)} engine streams of {args.campaign}: median |error| "
              f"{err.abs().median():.1%}, mean {err.mean():+.1%}, worst {err.abs().max():.1%}")
        if args.errors:
            table.to_csv(args.errors, index=False, float_format="%.6g")
        return
    if not args.out:
        ap.error("--out is required (the power model to write) unless --check")
    train = tuple(r for r in args.train.split(",") if r)
    got, table, info = run_fit(Path(args.campaign), args.profile, args.base, train)
    base = load_power(args.base)
    held = table[(table["set"] == "held_out") & ~table["at_limit"]]
    how = (f"fitted: simkv-calibrate power-fit on {args.campaign} (the power loops"
           + (f" and {', '.join(train)}" if train else "") + ")")
    replays = held[held["kind"] == "replay"]
    kernels = held[held["kind"] != "replay"]

    def stats(df: pd.DataFrame) -> dict[str, Any] | None:
        if not len(df):
            return None
        return {"windows": len(df), "abs_error_median": round(float(df["error"].abs().median()), 4),
                "abs_error_max": round(float(df["error"].abs().max()), 4),
                "error_mean": round(float(df["error"].mean()), 4)}

    gamma, gamma_source = base.freq_exponent, base.sources.get("freq_exponent", "")
    if args.cap_exponent:
        fitted = replace(base, idle_w=got["idle"], active_w=got["active"], compute_w=got["compute"],
                         memory_w=got["memory"])
        gamma = round(cap_exponent(SPLITWISE_H100, fitted), 3)
        gamma_source = ("refitted with these parameters to Splitwise's cap finding (a 350 W cap "
                        "slows the Llama2-70B TP8 1,500-token prompt step 1.30x: splitwise-sim "
                        "perf_model.csv h100-80gb-pcap; docs/ENERGY.md)")
    doc = {
        "name": Path(args.out).stem, "kind": "fitted",
        "profiles": [x for x in args.profiles.split(",") if x],
        "power": {
            "idle": {"value": round(got["idle"], 2), "unit": "W", "source": how},
            "active": {"value": round(got["active"], 2), "unit": "W", "source": how},
            "compute": {"value": round(got["compute"], 1), "unit": "W", "source": how},
            "memory": {"value": round(got["memory"], 1), "unit": "W", "source": how},
            "link": {"value": base.link_w, "unit": "W", "source": base.sources.get("link", "")},
            "tdp": {"value": base.tdp_w, "unit": "W", "source": base.sources.get("tdp", "")},
            "max_sm_clock": {"value": base.max_sm_mhz, "unit": "MHz",
                             "source": base.sources.get("max_sm_clock", "")},
            "min_sm_clock": {"value": base.min_sm_mhz, "unit": "MHz",
                             "source": base.sources.get("min_sm_clock", "")},
        },
        "freq_exponent": {"value": gamma, "source": gamma_source},
        "provenance": {**info, "train_streams": list(train),
                       "windows": {"train": int((table["set"] == "train").sum()),
                                   "held_out": len(held)},
                       "held_out_kernels": stats(kernels), "held_out_replays": stats(replays)},
    }
    Path(args.out).write_text(yaml.safe_dump(doc, sort_keys=False))
    if args.errors:
        table.to_csv(args.errors, index=False, float_format="%.6g")
    with pd.option_context("display.width", 160):
        print(table[["name", "kind", "set", "at_limit", "measured_w", "predicted_w", "error"]])
    print(f"wrote {args.out}: " + ", ".join(f"{k} {v:.1f} W" for k, v in got.items()))


if __name__ == "__main__":
    main()

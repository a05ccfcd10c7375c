"""summary.json's ``energy`` section, from the same transitions as GPU-hours.

Idle energy is the idle power of each pool's GPUs times the GPU-seconds of every state an
instance holds its GPUs in (``metrics.cluster.state_seconds``: the integral GPU-hours and
cost come from, so a state is paid in joules exactly when it is paid in GPU-hours); dynamic
energy is what the instances' steps added above idle (accounting.py), by the state the
instance was in. Requests and tokens are read from requests.parquet, a few columns at a time.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.parquet as pq

from simkv.energy.accounting import MAX_SERIES_BINS, series_error
from simkv.metrics.cluster import read_transitions, state_seconds

if TYPE_CHECKING:
    import pandas as pd

J_PER_KWH = 3.6e6


def _tokens(requests_path: Path) -> dict[str, list[int]]:
    """Per pool: finished requests, their prompt and output tokens."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    cols = ["pool", "status", "prompt_tokens", "output_tokens"]
    for batch in pq.ParquetFile(requests_path).iter_batches(columns=cols, batch_size=65536):
        df = batch.to_pandas()
        df = df[df["status"] == "finished"]
        for pool, g in df.groupby("pool", sort=True):
            acc = out[str(pool)]
            acc[0] += len(g)
            acc[1] += int(g["prompt_tokens"].astype(np.int64).sum())
            acc[2] += int(g["output_tokens"].astype(np.int64).sum())
    return out


def _per(joules: float, n: float) -> float | None:
    return joules / n if n else None


def energy_summary(cluster: Any, instances_path: Path, requests_path: Path, end_s: float
                   ) -> dict[str, Any]:
    import pandas as pd  # here: a run without energy accounting never imports it

    energy = cluster.energy
    cfg = energy.cfg
    spans = pd.DataFrame(state_seconds(read_transitions(instances_path), end_s))
    tokens = _tokens(requests_path)
    pools: dict[str, Any] = {}
    by_state_all: dict[str, float] = defaultdict(float)
    total = idle_total = 0.0
    cost_total = 0.0
    for name, pp in energy.pools.items():
        p = pp.params
        mine = spans[spans["pool"] == name]
        gpu_s = float(mine["gpu_seconds"].sum())
        by_state: dict[str, float] = {}
        for state, g in mine.groupby("state", sort=False):
            by_state[str(state)] = p.idle_w * float(g["gpu_seconds"].sum())
        for state, j in pp.dynamic_j.items():
            by_state[state] = by_state.get(state, 0.0) + j
        idle = p.idle_w * gpu_s
        dynamic = float(sum(pp.dynamic_j.values()))
        joules = idle + dynamic
        n, prompt, output = tokens.get(name, [0, 0, 0])
        cost = gpu_s / 3600.0 * pp.pool.cfg.gpu_hour_cost
        kwh = joules * cfg.pue / J_PER_KWH
        pools[name] = {
            "power_model": p.describe(),
            "power_cap_w": pp.cap_w,
            "sm_clock_mhz": pp.clock * p.max_sm_mhz if pp.clock < 1.0 else None,
            "gpu_seconds": gpu_s,
            "gpu_joules": joules,
            "idle_joules": idle,
            "dynamic_joules": dynamic,
            "joules_by_state": dict(sorted(by_state.items())),
            "mean_power_w_per_gpu": _per(joules, gpu_s),
            "busy_gpu_seconds": pp.busy_gpu_s,
            "mean_sm_mhz_busy": (pp.clock_gpu_s / pp.busy_gpu_s * p.max_sm_mhz
                                 if pp.busy_gpu_s else None),
            "iterations": pp.iterations,
            "iterations_slowed": pp.slowed,
            "iterations_cap_unmet": pp.unmet,
            "clock_changes": pp.clock_changes,
            "requests_finished": n,
            "joules_per_request": _per(joules, n),
            "joules_per_output_token": _per(joules, output),
            "joules_per_token": _per(joules, prompt + output),
            "facility_kwh": kwh,
            "co2_g": kwh * cfg.grid_gco2_per_kwh,
            "gpu_cost_per_million_output_tokens": (cost / output * 1e6
                                                   if output and pp.pool.cfg.gpu_hour_cost else None),
        }
        for state, j in by_state.items():
            by_state_all[state] += j
        total += joules
        idle_total += idle
        cost_total += cost
    n = sum(v[0] for v in tokens.values())
    prompt = sum(v[1] for v in tokens.values())
    output = sum(v[2] for v in tokens.values())
    kwh = total * cfg.pue / J_PER_KWH
    out: dict[str, Any] = {
        "grid_gco2_per_kwh": cfg.grid_gco2_per_kwh,
        "pue": cfg.pue,
        "gpu_joules": total,
        "gpu_kwh": total / J_PER_KWH,
        "idle_joules": idle_total,
        "dynamic_joules": total - idle_total,
        "facility_kwh": kwh,
        "co2_g": kwh * cfg.grid_gco2_per_kwh,
        "electricity_cost": kwh * cfg.price_per_kwh if cfg.price_per_kwh else None,
        "joules_per_request": _per(total, n),
        "joules_per_output_token": _per(total, output),
        "joules_per_token": _per(total, prompt + output),
        "gpu_cost_per_million_output_tokens": cost_total / output * 1e6 if output and cost_total else None,
        "joules_by_state": dict(sorted(by_state_all.items())),
        "pools": pools,
    }
    if energy.series_s:
        out["series"] = _series(energy, spans, cluster, end_s)
    return out


def _series(energy: Any, spans: pd.DataFrame, cluster: Any, end_s: float) -> dict[str, Any]:
    """Per bin of ``energy.series_s``: joules (idle of held GPUs + steps') and output tokens."""
    w = energy.series_s
    n = int(np.floor(end_s / w)) + 1 if end_s > 0 else 1
    if n > MAX_SERIES_BINS:
        raise series_error(w, end_s)
    joules = np.zeros(n)
    for k, j in energy.series_j.items():
        joules[min(max(k, 0), n - 1)] += j
    tokens = np.zeros(n)
    for k, t in energy.series_tokens.items():
        tokens[min(max(k, 0), n - 1)] += t
    # Idle: each held span's GPUs at their pool's idle power, spread over the bins it covers.
    edges = np.arange(n + 1) * w
    for (pool, start, seconds, gpus) in _held(spans):
        if seconds <= 0:
            continue
        idle_w = energy.pools[pool].params.idle_w
        lo, hi = start, min(start + seconds, end_s)
        overlap = np.clip(np.minimum(edges[1:], hi) - np.maximum(edges[:-1], lo), 0.0, None)
        joules += idle_w * gpus * overlap
    return {"bin_s": w, "joules": [float(x) for x in joules],
            "output_tokens": [float(x) for x in tokens]}


def _held(spans: pd.DataFrame) -> list[tuple[str, float, float, float]]:
    """(pool, start, seconds, GPUs) of each held state interval."""
    out = []
    for r in spans.itertuples(index=False):
        gpus = r.gpu_seconds / r.seconds if r.seconds > 0 else 0.0
        out.append((str(r.pool), float(r.start_s), float(r.seconds), gpus))
    return out

"""Differences between two engine configurations: simkv's predicted change beside the
engine's measured change (issue 19, item 4).

    simkv-validate pairs --fit validation/hf_h100_2026-12-07/llama3_8b \
        validation/hf_h100_2026-12-07/llama3_8b validation/hf_h100_2026-12-07/llama3_8b_tb512

A *pair* is one stream (same name, so same arrivals and lengths) measured under two
configurations: a BASE folder and a VARIANT folder, each with its own engine.json (token
budget, max requests per batch, KV blocks, scheduler type). For each metric, the change is
variant / base - 1 over the stream's replays (each metric averaged over the replays first):
TTFT p50 and p99, TPOT p50, E2E p50, and throughput (requests / (last completion - first
arrival)). A prediction is *right in sign* when it has the measured change's sign, and *right
in size* when it is within a quarter of the measured change (|predicted - measured| <=
0.25 |measured|): the rule of issue 19, fixed before the runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from simkv.config.schema import EngineConfig
from simkv.validation.campaign import Run, load_run

METRICS = ("ttft_p50", "ttft_p99", "tpot_p50", "e2e_p50", "throughput")


def metrics(d: pd.DataFrame, arrival: pd.Series) -> dict[str, float]:
    """A stream's summary: TTFT p50/p99, TPOT p50, E2E p50 (s) and throughput (req/s)."""
    span = float((arrival + d["e2e"]).max() - arrival.min())
    return {"ttft_p50": float(np.percentile(d["ttft"], 50)),
            "ttft_p99": float(np.percentile(d["ttft"], 99)),
            "tpot_p50": float(np.percentile(d["tpot"], 50)),
            "e2e_p50": float(np.percentile(d["e2e"], 50)),
            "throughput": len(d) / span if span > 0 else float("nan")}


def stream_metrics(run: Run, key: str, predicted: dict[str, pd.DataFrame] | None = None,
                   ids: set[int] | None = None) -> dict[str, float]:
    """Mean over a stream's replays of ``metrics``, measured (or from ``predicted``), over
    the requests in ``ids`` (default: every measured one)."""
    vals = []
    for tag, m in run.meta.items():
        if m.key != key:
            continue
        req = run.requests[tag]
        keep = (req["measured"].to_numpy(bool).copy() if "measured" in req
                else np.ones(len(req), bool))
        if ids is not None:
            keep &= req["id"].isin(ids).to_numpy()
        d = predicted[tag] if predicted is not None else req
        vals.append(metrics(d[keep].reset_index(drop=True),
                            req["arrival_s"][keep].reset_index(drop=True)))
    return {k: float(np.mean([v[k] for v in vals])) for k in METRICS}


def verdict(measured: float, predicted: float) -> tuple[bool, bool]:
    """(sign right, size within a quarter of the measured change)."""
    sign = bool(np.sign(predicted) == np.sign(measured))
    return sign, bool(abs(predicted - measured) <= 0.25 * abs(measured))


def compare_pair(base: Run, variant: Run, engine: EngineConfig, profile: str | None
                 ) -> pd.DataFrame:
    """One row per (shared stream, metric): measured and predicted change and the verdict."""
    from simkv.validation.stepfit import predict_stream

    shared = [k for k in dict.fromkeys(m.key for m in variant.meta.values())
              if any(m.key == k for m in base.meta.values())]
    if not shared:
        raise ValueError(f"{variant.folder} shares no stream (same name) with {base.folder}")
    rows = []
    for key in shared:
        pred = {}
        for run in (base, variant):
            pred[run.name] = {t: predict_stream(run, t, profile, engine)
                              for t, m in run.meta.items() if m.key == key}
        # the requests measured in every replay of both (a cut replay finishes fewer)
        ids = None
        for run in (base, variant):
            for tag, m in run.meta.items():
                if m.key == key:
                    req = run.requests[tag]
                    got = set(req["id"][req["measured"]] if "measured" in req else req["id"])
                    ids = got if ids is None else ids & got
        mb, mv = stream_metrics(base, key, ids=ids), stream_metrics(variant, key, ids=ids)
        pb = stream_metrics(base, key, pred[base.name], ids)
        pv = stream_metrics(variant, key, pred[variant.name], ids)
        ev = {name: int(sum(p["evictions"].sum() for p in pred[name].values()))
              for name in pred}
        for k in METRICS:
            meas, prd = mv[k] / mb[k] - 1, pv[k] / pb[k] - 1
            sign, size = verdict(meas, prd)
            rows.append({"base": base.name, "variant": variant.name, "stream": key, "metric": k,
                         "requests": len(ids or ()),
                         "measured_base": mb[k], "measured_variant": mv[k],
                         "predicted_base": pb[k], "predicted_variant": pv[k],
                         "measured_change": meas, "predicted_change": prd,
                         "sign_right": sign, "within_quarter": size,
                         "evictions_sim_base": ev[base.name],
                         "evictions_sim_variant": ev[variant.name]})
    return pd.DataFrame(rows)


def table(d: pd.DataFrame) -> str:
    lines = ["| variant (vs base) | stream | metric | measured change | simkv's change | sign | "
             "within 1/4 |", "|---|---|---|---|---|---|---|"]
    for r in d.itertuples():
        lines.append(f"| {r.variant} | {r.stream} | {r.metric} | {r.measured_change:+.1%} | "
                     f"{r.predicted_change:+.1%} | {'yes' if r.sign_right else 'no'} | "
                     f"{'yes' if r.within_quarter else 'no'} |")
    n = len(d)
    lines.append(f"\nsign right {int(d['sign_right'].sum())}/{n}, size within a quarter "
                 f"{int(d['within_quarter'].sum())}/{n}, both "
                 f"{int((d['sign_right'] & d['within_quarter']).sum())}/{n}")
    return "\n".join(lines)


def pairs_main(base: str, variants: list[str], fit: list[str], engine_name: str | None,
               profile: str | None, model: str | None, csv: str | None) -> pd.DataFrame:
    from simkv.validation.holdout import describe
    from simkv.validation.stepfit import fit_engine, step_data

    b = load_run(base, model)
    vs = [load_run(v, model) for v in variants]
    engine: Any
    if engine_name:
        from simkv.config.store import compose

        engine = compose([f"engine={engine_name}"]).engine
    else:
        data = [step_data(r, profile) for r in (load_run(f, model) for f in fit) if r.steps]
        if not data:
            raise ValueError("the --fit folders have no step profile (iterations_<stream>.csv)")
        engine = fit_engine((s, np.ones(len(s.tags), bool)) for s in data)
    print(f"engine: {describe(engine)}")
    d = pd.concat([compare_pair(b, v, engine, profile) for v in vs], ignore_index=True)
    print(table(d))
    if csv:
        d.to_csv(csv, index=False)
        print(f"per-pair changes: {csv}")
    return d

"""summary.json: the numbers people compare runs by, computed from requests.parquet.

Computed from the written file rather than from engine state, so the summary can never
disagree with the per-request data, and memory during the run stays proportional to the
requests in flight.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

PERCENTILES = (50, 90, 99)


def _dist(values: np.ndarray) -> dict[str, float | None]:
    if values.size == 0:
        return {"mean": None, **{f"p{p}": None for p in PERCENTILES}}
    pct = np.percentile(values, PERCENTILES)
    pcts = {f"p{p}": float(v) for p, v in zip(PERCENTILES, pct, strict=True)}
    return {"mean": float(values.mean()), **pcts}


def summarise(requests_path: Path, *, gpus: int, slo: dict[str, float], extra: dict[str, Any]
              ) -> dict[str, Any]:
    cols = ["status", "reject_reason", "arrival_s", "completion_s", "prompt_tokens",
            "output_tokens", "preemptions", "ttft_s", "tpot_s", "e2e_s", "slo_met", "session",
            "cached_tokens", "cached_hbm_tokens", "cached_dram_tokens", "cached_disk_tokens",
            "cached_remote_tokens", "kv_wait_s"]
    t = pq.read_table(requests_path, columns=cols)
    # NOTE: Arrow compute on the string columns: converting them to numpy would build one
    # Python object per row (about 100 MB per million requests).
    done = pc.equal(t.column("status"), "finished").to_numpy(zero_copy_only=False)
    n_total = t.num_rows
    n_done = int(done.sum())
    arrival = t.column("arrival_s").to_numpy()
    completion = t.column("completion_s").to_numpy()[done]
    out_tok = t.column("output_tokens").to_numpy()[done].astype(np.int64)
    in_tok = t.column("prompt_tokens").to_numpy()[done].astype(np.int64)
    start = float(arrival.min()) if arrival.size else 0.0
    end = float(completion.max()) if n_done else start
    span = max(end - start, 1e-12)
    rejected = pc.filter(t.column("reject_reason"), pa.array(~done))
    reasons = {str(v["values"]): int(v["counts"]) for v in pc.value_counts(rejected).to_pylist()}
    tpot = t.column("tpot_s").to_numpy()[done]
    multi = out_tok > 1  # TPOT is undefined for one-token outputs
    met = t.column("slo_met").to_numpy(zero_copy_only=False)[done]
    return {
        "schema_version": 1,
        **extra,
        "requests": {
            "total": n_total,
            "finished": n_done,
            "rejected": n_total - n_done,
            "rejected_by_reason": dict(sorted(reasons.items())),
            "preemptions": int(t.column("preemptions").to_numpy()[done].sum()),
        },
        "ttft_s": _dist(t.column("ttft_s").to_numpy()[done]),
        "tpot_s": _dist(tpot[multi]),
        "e2e_s": _dist(t.column("e2e_s").to_numpy()[done]),
        "throughput": {
            "requests_per_s": n_done / span,
            "output_tokens_per_s": float(out_tok.sum()) / span,
            "total_tokens_per_s": float(out_tok.sum() + in_tok.sum()) / span,
        },
        "goodput": {
            "slo": slo,
            "requests_per_s": float(met.sum()) / span,
            "fraction_met": float(met.mean()) if n_done else 0.0,
        },
        "makespan_s": span,
        "gpu_hours": gpus * span / 3600.0,
        "prefix_cache": _cache_section(t, done, in_tok),
        "sessions": _sessions(t, done),
    }


def _cache_section(t: pa.Table, done: np.ndarray, prompt: np.ndarray) -> dict[str, Any]:
    """Hit rates: cached prompt tokens over prompt tokens of finished requests, per tier."""
    total = max(int(prompt.sum()), 1)
    out: dict[str, Any] = {"prompt_tokens": int(prompt.sum())}
    for tier in ("", "hbm_", "dram_", "disk_", "remote_"):
        n = int(t.column(f"cached_{tier}tokens").to_numpy()[done].astype(np.int64).sum())
        name = tier.rstrip("_") or "all"
        out[f"hit_rate_{name}"] = n / total
        out[f"cached_tokens_{name}"] = n
    wait = t.column("kv_wait_s").to_numpy()[done]
    out["kv_wait_s"] = _dist(wait[wait > 0])
    out["requests_waiting_for_kv"] = int((wait > 0).sum())
    return out


def _sessions(t: pa.Table, done: np.ndarray) -> dict[str, Any]:
    """Job completion time of sessions (agent programs, conversations): first arrival to
    last completion, over sessions whose every call finished."""
    session = t.column("session").to_numpy()
    has = session >= 0
    if not has.any():
        return {"count": 0}
    arrival = t.column("arrival_s").to_numpy()
    completion = t.column("completion_s").to_numpy()
    ids, inv = np.unique(session[has], return_inverse=True)
    first = np.full(len(ids), np.inf)
    last = np.full(len(ids), -np.inf)
    ok = np.ones(len(ids), bool)
    np.minimum.at(first, inv, arrival[has])
    np.maximum.at(last, inv, np.where(done[has], completion[has], -np.inf))
    np.logical_and.at(ok, inv, done[has])
    jct = (last - first)[ok]
    calls = np.bincount(inv)
    return {"count": len(ids), "complete": int(ok.sum()), "jct_s": _dist(jct),
            "calls_per_session_mean": float(calls.mean())}


def format_table(summary: dict[str, Any]) -> str:
    """The summary as a short text table for the terminal."""
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v * 1e3:10.1f}"

    lines = [f"{'metric':<10}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'mean ms':>10}"]
    for key, label in (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("e2e_s", "E2E")):
        d = summary[key]
        lines.append(f"{label:<10}{ms(d['p50'])}{ms(d['p90'])}{ms(d['p99'])}{ms(d['mean'])}")
    req, thr, good = summary["requests"], summary["throughput"], summary["goodput"]
    lines += [
        "",
        f"requests   {req['finished']} finished, {req['rejected']} rejected, "
        f"{req['preemptions']} preemptions",
        f"throughput {thr['requests_per_s']:.2f} req/s, {thr['output_tokens_per_s']:.0f} output tok/s",
        f"goodput    {good['requests_per_s']:.2f} req/s ({100 * good['fraction_met']:.1f}% meet "
        f"TTFT <= {good['slo']['ttft_s']} s and TPOT <= {good['slo']['tpot_s']} s)",
        f"makespan   {summary['makespan_s']:.1f} s simulated, {summary['gpu_hours']:.3f} GPU-hours",
    ]
    pc = summary.get("prefix_cache", {})
    if pc.get("hit_rate_all"):
        lines.append(f"prefix     {100 * pc['hit_rate_all']:.1f}% of prompt tokens cached (HBM "
                     f"{100 * pc['hit_rate_hbm']:.1f}%, DRAM {100 * pc['hit_rate_dram']:.1f}%, "
                     f"SSD/CSD {100 * pc['hit_rate_disk']:.1f}%)")
    sessions = summary.get("sessions", {})
    if sessions.get("count") and sessions["jct_s"]["mean"] is not None:
        jct = sessions["jct_s"]
        lines.append(f"sessions   {sessions['count']}: job completion time mean {jct['mean']:.1f} s, "
                     f"p90 {jct['p90']:.1f} s")
    return "\n".join(lines)

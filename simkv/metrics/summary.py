"""summary.json: the numbers people compare runs by, computed from requests.parquet.

Computed from the written file rather than from engine state, so the summary can never
disagree with the per-request data. The file is streamed batch by batch, never held whole:
one pass gathers counts, sums and the first step of every percentile, a few more passes over
the latency columns alone make the percentiles exact (metrics/quantiles.py), so memory stays
bounded whatever the run length. Only the sessions section keeps one entry per session.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from simkv.columns import equal, to_numpy, value_counts
from simkv.metrics.quantiles import OrderStatistics, ranks_for

PERCENTILES = (50, 90, 99)
BATCH_ROWS = 65536
TIERS = ("", "hbm_", "dram_", "disk_", "remote_")
# Busy time is counted in windows of this many simulated seconds (docs/OUTPUTS.md).
BUSY_WINDOW_S = 60.0
# Latency distributions over finished requests: (name, column).
DISTS = (("ttft_s", "ttft_s"), ("tpot_s", "tpot_s"), ("e2e_s", "e2e_s"), ("kv_wait_s", "kv_wait_s"))
# String columns of a few distinct values, read dictionary-encoded (as Parquet stores them):
# compared and counted on their codes, never as one Python string per row.
CODED = ("status", "reject_reason")


def _dist_of(values: np.ndarray) -> dict[str, float | None]:
    if values.size == 0:
        return {"mean": None, **{f"p{p}": None for p in PERCENTILES}}
    pct = np.percentile(values, PERCENTILES)
    pcts = {f"p{p}": float(v) for p, v in zip(PERCENTILES, pct, strict=True)}
    return {"mean": float(values.mean()), **pcts}


def _dist(o: OrderStatistics) -> dict[str, float | None]:
    if o.n == 0:
        return {"mean": None, **{f"p{p}": None for p in PERCENTILES}}
    return {"mean": o.mean(), **{f"p{p}": v for p, v in o.percentiles(PERCENTILES).items()}}


def batches(path: Path, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """The file's rows, one row group at a time (the recorder writes 65,536 per group)."""
    # NOTE: row group by row group, not ParquetFile.iter_batches: measured on a 10M-row
    # file, iter_batches grew Arrow's memory pool to 480 MiB, read_row_group to 19 MiB.
    file = pq.ParquetFile(path, read_dictionary=[c for c in columns if c in CODED])
    for i in range(file.num_row_groups):
        yield from file.read_row_group(i, columns=columns, use_threads=False).to_batches()


def _selected(batch: pa.RecordBatch) -> dict[str, np.ndarray]:
    """Each distribution's values in a batch: finished requests, TPOT only for outputs
    longer than one token (undefined otherwise), KV wait only where there was one."""
    done = equal(batch.column("status"), "finished")
    out = {name: to_numpy(batch.column(col))[done] for name, col in DISTS}
    multi = to_numpy(batch.column("output_tokens"))[done] > 1
    out["tpot_s"] = out["tpot_s"][multi]
    out["kv_wait_s"] = out["kv_wait_s"][out["kv_wait_s"] > 0]
    return out


@dataclass(slots=True)
class _Sessions:
    """Per session: first arrival, last completion of a finished call, all calls finished,
    calls; merged from batches in sorted runs (memory: one entry per session)."""

    ids: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    cols: tuple[np.ndarray, ...] = (np.empty(0), np.empty(0), np.empty(0, bool), np.empty(0, np.int64))
    pending: list[tuple[np.ndarray, tuple[np.ndarray, ...]]] = field(default_factory=list)
    pending_n: int = 0

    def add(self, session: np.ndarray, arrival: np.ndarray, completion: np.ndarray,
            done: np.ndarray) -> None:
        has = session >= 0
        if not has.any():
            return
        self.pending.append(_reduce(session[has], (
            arrival[has], np.where(done[has], completion[has], -np.inf), done[has],
            np.ones(int(has.sum()), np.int64))))
        self.pending_n += len(self.pending[-1][0])
        # NOTE: merged when the pending runs outgrow the merged one: each entry is merged
        # O(log) times, not once per batch.
        if self.pending_n >= max(len(self.ids), BATCH_ROWS):
            self.merge()

    def merge(self) -> None:
        if not self.pending:
            return
        runs = [(self.ids, self.cols), *self.pending]
        ids = np.concatenate([r[0] for r in runs])
        cols = tuple(np.concatenate([r[1][i] for r in runs]) for i in range(4))
        self.ids, self.cols = _reduce(ids, cols)
        self.pending, self.pending_n = [], 0


@dataclass(slots=True)
class _BusyWindows:
    """Windows of ``BUSY_WINDOW_S`` (from t = 0) in which a finished request was in the
    system (arrived, not yet completed): +1 where its first window starts, -1 after its
    last, kept sparse (sorted window -> change) so a day-long trace with idle hours costs
    one entry per window touched, whatever the time offset."""

    keys: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    delta: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))

    def add(self, arrival: np.ndarray, completion: np.ndarray) -> None:
        if not arrival.size:
            return
        first = np.floor(arrival / BUSY_WINDOW_S).astype(np.int64)
        after = np.floor(completion / BUSY_WINDOW_S).astype(np.int64) + 1
        lo = int(first.min())
        span = int(after.max()) - lo + 1
        if span <= 4 * first.size:
            # NOTE: counted densely over the batch's few windows (O(n)), then only the windows
            # that change are merged: a sort of every request (np.unique) cost 13 ms per
            # 100,000 requests, a third of the whole summary (measured).
            counts = (np.bincount(first - lo, minlength=span)
                      - np.bincount(after - lo, minlength=span))
            nz = np.flatnonzero(counts)
            keys, delta = nz + lo, counts[nz]
        else:  # windows far apart (idle days within one row group): sparse
            keys = np.concatenate((first, after))
            delta = np.concatenate((np.ones(first.size, np.int64), -np.ones(after.size, np.int64)))
        keys = np.concatenate((self.keys, keys))
        delta = np.concatenate((self.delta, delta))
        self.keys, inverse = np.unique(keys, return_inverse=True)
        self.delta = np.bincount(inverse, weights=delta, minlength=self.keys.size).astype(np.int64)

    def busy_s(self) -> float:
        if not self.keys.size:
            return 0.0
        in_system = np.cumsum(self.delta)[:-1] > 0
        return float(np.diff(self.keys)[in_system].sum()) * BUSY_WINDOW_S


def _reduce(ids: np.ndarray, cols: tuple[np.ndarray, ...]) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    start = np.flatnonzero(np.concatenate(([True], ids[1:] != ids[:-1])))
    first, last, ok, calls = (c[order] for c in cols)
    return ids[start], (np.minimum.reduceat(first, start), np.maximum.reduceat(last, start),
                        np.logical_and.reduceat(ok, start), np.add.reduceat(calls, start))


def summarise(requests_path: Path, *, gpu_hours: float, slo: dict[str, float],
              extra: dict[str, Any]) -> dict[str, Any]:
    """summary.json from requests.parquet, streamed. ``gpu_hours`` comes from the instances'
    transitions (metrics/cluster.gpu_seconds), the one source of every cost figure: the
    GPUs serving at t = 0 times the makespan ignored every instance started or stopped."""
    cols = ["status", "reject_reason", "arrival_s", "completion_s", "prompt_tokens",
            "output_tokens", "preemptions", "ttft_s", "tpot_s", "e2e_s", "slo_met", "session",
            "cached_tokens", "cached_hbm_tokens", "cached_dram_tokens", "cached_disk_tokens",
            "cached_remote_tokens", "kv_wait_s"]
    dists = {name: OrderStatistics() for name, _ in DISTS}
    n_total = n_done = met = preemptions = out_tok = in_tok = 0
    start, end = math.inf, -math.inf
    reasons: Counter[str] = Counter()
    failed_reasons: Counter[str] = Counter()
    n_failed = 0
    cached = dict.fromkeys(TIERS, 0)
    sessions = _Sessions()
    busy = _BusyWindows()
    for batch in batches(requests_path, cols):
        # NOTE: status and reason are compared and counted on their dictionary codes (a
        # Python string per row would cost more than the whole pass); numbers reach numpy
        # through simkv.columns, which (unlike pyarrow's to_numpy) does not import pandas.
        done = equal(batch.column("status"), "finished")
        n_total += batch.num_rows
        n_done += int(done.sum())
        arrival = to_numpy(batch.column("arrival_s"))
        completion = to_numpy(batch.column("completion_s"))
        if arrival.size:
            start = min(start, float(arrival.min()))
        if done.any():
            end = max(end, float(completion[done].max()))
        failed = equal(batch.column("status"), "failed")
        reasons.update(value_counts(batch.column("reject_reason"), ~done & ~failed))
        if failed.any():  # lost with their instance (engine/faults.py)
            n_failed += int(failed.sum())
            failed_reasons.update(value_counts(batch.column("reject_reason"), failed))
        preemptions += int(to_numpy(batch.column("preemptions"))[done].astype(np.int64).sum())
        out_tok += int(to_numpy(batch.column("output_tokens"))[done].astype(np.int64).sum())
        in_tok += int(to_numpy(batch.column("prompt_tokens"))[done].astype(np.int64).sum())
        met += int(to_numpy(batch.column("slo_met"))[done].sum())
        for tier in TIERS:
            cached[tier] += int(to_numpy(batch.column(f"cached_{tier}tokens"))[done]
                                .astype(np.int64).sum())
        for name, values in _selected(batch).items():
            dists[name].feed(values)
        sessions.add(to_numpy(batch.column("session")), arrival, completion, done)
        busy.add(arrival[done], completion[done])
    # Further passes over the latency columns alone, until every percentile is exact.
    for o in dists.values():
        o.choose(ranks_for(o.n, PERCENTILES))
    while any(o.more() for o in dists.values()):
        for batch in batches(requests_path, ["status", "output_tokens", *(c for _, c in DISTS)]):
            for name, values in _selected(batch).items():
                if dists[name].more():
                    dists[name].feed(values)
        for o in dists.values():
            if o.more():
                o.advance()
    if n_total == 0:
        start = 0.0
    if not n_done:
        end = start
    span = max(end - start, 1e-12)
    busy_s = busy.busy_s()
    if busy_s > 0:
        # The first and last busy windows are busy only from the first arrival and up to the
        # last completion: without this, a run without idle time counted up to two windows
        # more than its makespan (its rate over busy time fell below the rate over makespan).
        w = BUSY_WINDOW_S
        busy_s -= (start - math.floor(start / w) * w) + ((math.floor(end / w) + 1) * w - end)
        busy_s = min(max(busy_s, 0.0), span)
    busy_rate = max(busy_s, 1e-12)
    total_prompt = max(in_tok, 1)
    prefix_cache: dict[str, Any] = {"prompt_tokens": in_tok}
    for tier in TIERS:
        name = tier.rstrip("_") or "all"
        prefix_cache[f"hit_rate_{name}"] = cached[tier] / total_prompt
        prefix_cache[f"cached_tokens_{name}"] = cached[tier]
    prefix_cache["kv_wait_s"] = _dist(dists["kv_wait_s"])
    prefix_cache["requests_waiting_for_kv"] = dists["kv_wait_s"].n
    return {
        "schema_version": 1,
        **extra,
        "requests": {
            "total": n_total,
            "finished": n_done,
            "rejected": n_total - n_done - n_failed,
            "rejected_by_reason": dict(sorted(reasons.items())),
            "preemptions": preemptions,
            # Only when some were lost with their instance (faults, spot): a run without
            # either keeps the summary it always had.
            **({"failed": n_failed, "failed_by_reason": dict(sorted(failed_reasons.items()))}
               if n_failed else {}),
        },
        "ttft_s": _dist(dists["ttft_s"]),
        "tpot_s": _dist(dists["tpot_s"]),
        "e2e_s": _dist(dists["e2e_s"]),
        "throughput": {
            "requests_per_s": n_done / span,
            "output_tokens_per_s": float(out_tok) / span,
            "total_tokens_per_s": float(out_tok + in_tok) / span,
            # Over busy time: a trace with idle hours is not diluted by them.
            "requests_per_busy_s": n_done / busy_rate,
            "output_tokens_per_busy_s": float(out_tok) / busy_rate,
        },
        "goodput": {
            "slo": slo,
            "requests_per_s": float(met) / span,
            # A request lost with its instance (faults, spot) missed its SLO: it counts, or a
            # run that failed 43% of its requests printed "100.0% meet" (rejections at
            # arrival, which never ran, stay out as before).
            "fraction_met": met / (n_done + n_failed) if n_done + n_failed else 0.0,
            "requests_per_busy_s": float(met) / busy_rate,
        },
        "busy": {"window_s": BUSY_WINDOW_S, "busy_s": busy_s,
                 "fraction_of_makespan": min(busy_s / span, 1.0) if n_done else 0.0},
        "makespan_s": span,
        "gpu_hours": gpu_hours,
        "prefix_cache": prefix_cache,
        "sessions": _sessions(sessions),
    }


def _sessions(s: _Sessions) -> dict[str, Any]:
    """Job completion time of sessions (agent programs, conversations): first arrival to
    last completion, over sessions whose every call finished."""
    s.merge()
    if not len(s.ids):
        return {"count": 0}
    first, last, ok, calls = s.cols
    jct = (last - first)[ok]
    return {"count": len(s.ids), "complete": int(ok.sum()), "jct_s": _dist_of(jct),
            "calls_per_session_mean": float(calls.mean())}


def format_table(summary: dict[str, Any], config: dict[str, Any] | None = None) -> str:
    """The summary as a short text table for the terminal; rejected and failed requests with
    their reasons in words (``config``, the run's config.json, names the workload's knob)."""
    from simkv.metrics.reasons import explain

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v * 1e3:10.1f}"

    lines = [f"{'metric':<10}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'mean ms':>10}"]
    for key, label in (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("e2e_s", "E2E")):
        d = summary[key]
        lines.append(f"{label:<10}{ms(d['p50'])}{ms(d['p90'])}{ms(d['p99'])}{ms(d['mean'])}")
    req, thr, good = summary["requests"], summary["throughput"], summary["goodput"]

    def rate(v: float) -> str:  # small rates keep their digits (a day-long trace: 0.0042)
        return f"{v:.2f}" if v >= 0.1 or v == 0 else f"{v:.3g}"

    lines += [
        "",
        f"requests   {req['finished']} finished, {req['rejected']} rejected"
        + (f" ({explain(req['rejected_by_reason'], config)})" if req.get("rejected_by_reason") else "")
        + ", " + (f"{req['failed']} failed ({explain(req['failed_by_reason'], config)}), "
                  if req.get("failed") else "")
        + f"{req['preemptions']} preemptions",
        f"throughput {rate(thr['requests_per_s'])} req/s, {thr['output_tokens_per_s']:.0f} output tok/s",
        f"goodput    {rate(good['requests_per_s'])} req/s ({100 * good['fraction_met']:.1f}% meet "
        f"TTFT <= {good['slo']['ttft_s']} s and TPOT <= {good['slo']['tpot_s']} s)",
        f"makespan   {summary['makespan_s']:.1f} s simulated, {summary['gpu_hours']:.3f} GPU-hours",
    ]
    busy = summary.get("busy", {})
    if busy and busy["fraction_of_makespan"] < 0.9:  # idle periods: the rate while serving
        lines.insert(-1, f"busy       {100 * busy['fraction_of_makespan']:.1f}% of the makespan "
                         f"(windows of {busy['window_s']:g} s with requests in the system): "
                         f"goodput {rate(good['requests_per_busy_s'])} req/s, throughput "
                         f"{rate(thr['requests_per_busy_s'])} req/s over busy time")
    en = summary.get("energy")
    if en:  # energy.enabled (docs/ENERGY.md)
        per_tok = en["joules_per_output_token"]
        cost = en["gpu_cost_per_million_output_tokens"]
        lines.append(f"energy     {en['gpu_kwh']:.4g} kWh GPU"
                     + (f", {per_tok:.3g} J/output token" if per_tok is not None else "")
                     + f", {en['co2_g'] / 1e3:.3g} kg CO2 at {en['grid_gco2_per_kwh']:g} g/kWh"
                     + (f" (PUE {en['pue']:g})" if en["pue"] != 1 else "")
                     + (f", {cost:.3g} per M output tokens" if cost is not None else ""))
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

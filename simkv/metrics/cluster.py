"""summary.json's ``cluster`` section: pools, GPU-hours, time per state, scaling events.

Computed from the files (instances.parquet, requests.parquet) like the rest of the summary.
Requests are read in record batches of a few columns, and only when the run scaled, so
memory stays bounded whatever the run length.
"""

from __future__ import annotations

from collections.abc import Mapping
from math import isfinite
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from simkv.columns import equal, to_numpy
from simkv.engine.lifecycle import (
    DRAINING,
    LOADING,
    PROVISIONING,
    RELEASED,
    SCALING,
    SERVING,
    STATES,
    STOPPED,
)

# Listed in every summary; the states of losses only when entered.
BASE_STATES = (PROVISIONING, LOADING, SERVING, SCALING, DRAINING)
TRANSITION_COLUMNS = ("time_s", "instance", "pool", "from_state", "to_state", "gpus")


def read_transitions(instances_path: Path) -> dict[str, np.ndarray]:
    """instances.parquet's transitions, the columns the GPU-hours need, as numpy arrays
    (strings as objects): read without pandas, which a run would import only for this."""
    table = pq.ParquetFile(instances_path).read(columns=list(TRANSITION_COLUMNS), use_threads=False)
    return {name: to_numpy(table.column(name)) for name in TRANSITION_COLUMNS}


def state_seconds(rows: Mapping[str, Any], end_s: float) -> dict[str, np.ndarray]:
    """One row per (instance, state interval) inside the run's window [0, ``end_s``]: pool,
    state, start, seconds, GPU-seconds, as columns. An interval lasts from its transition to
    the instance's next one (or the window's end); states in ``lifecycle.RELEASED`` hold no
    GPUs. ``rows``: the transitions' columns (``read_transitions``, or a DataFrame of them).

    Rows come sorted by instance, then time (stable), so sums over them add in the order
    pandas added them when this was a DataFrame (``group_sums``)."""
    time_s = np.asarray(rows["time_s"], np.float64)
    instance = np.asarray(rows["instance"])
    order = np.lexsort((time_s, instance))  # stable, as sort_values(kind="stable")
    time_s, instance = time_s[order], instance[order]
    t = _clip(time_s, upper=end_s)
    # The instance's next transition, or the window's end after its last (or a NaN time).
    nxt = np.full(len(time_s), float(end_s))
    same = instance[1:] == instance[:-1]
    nxt[:-1][same] = time_s[1:][same]
    nxt[np.isnan(nxt)] = end_s
    seconds = _clip(_clip(nxt, upper=end_s) - t, lower=0.0)
    state = np.asarray(rows["to_state"], object)[order]
    held = ~np.isin(state, list(RELEASED))
    return {"instance": instance[held], "pool": np.asarray(rows["pool"], object)[order][held],
            "state": state[held], "start_s": t[held], "seconds": seconds[held],
            "gpu_seconds": (seconds * np.asarray(rows["gpus"])[order])[held]}


def _clip(x: np.ndarray, *, lower: float | None = None, upper: float | None = None) -> np.ndarray:
    """``Series.clip`` with one bound, as pandas does it (NaN kept, a value equal to the
    bound kept as it is, signed zeros included)."""
    if upper is not None:
        return np.where(np.isnan(x) | (x <= upper), x, upper)
    return np.where(np.isnan(x) | (x >= lower), x, lower)


def group_sums(keys: np.ndarray, values: np.ndarray) -> dict[Any, float]:
    """Per key (sorted; None is no key), the sum of its float64 values, bit for bit as
    pandas 3.1's ``groupby(key)[column].sum()`` gives it, which GPU-hours, cost and time per
    state came from (and keep, to the last bit): where the rows come sorted by key and no
    value is NaN, numpy's ``add.reduceat`` over each key's rows (pandas' fast path);
    otherwise Kahan's compensated sum in row order, NaN skipped (pandas/_libs/groupby.pyx,
    group_sum)."""
    keys = np.asarray(keys, object)
    values = np.ascontiguousarray(values, np.float64)
    uniq = sorted({k for k in keys.tolist() if k is not None})
    code = {k: i for i, k in enumerate(uniq)}
    ids = np.fromiter((code.get(k, -1) for k in keys.tolist()), np.intp, len(keys))
    if len(ids) and not np.any(ids[1:] < ids[:-1]) and not np.isnan(values).any():
        skip = int(np.count_nonzero(ids < 0))  # missing keys sort first
        ids, values = ids[skip:], values[skip:]
        sums = np.zeros(len(uniq))
        if len(ids):
            starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
            with np.errstate(all="ignore"):  # inf - inf is NaN, as in pandas, silently
                sums[ids[starts]] = np.add.reduceat(values, starts)
        return dict(zip(uniq, sums.tolist(), strict=True))
    return _kahan(uniq, ids, values)


def _kahan(uniq: list[Any], ids: np.ndarray, values: np.ndarray) -> dict[Any, float]:
    """Kahan's sum per group in row order, as pandas' group_sum (NaN skipped; a
    compensation that is not finite, after an infinity, restarts at 0)."""
    sums = [0.0] * len(uniq)
    comp = [0.0] * len(uniq)
    for i, v in zip(ids.tolist(), values.tolist(), strict=True):
        if i < 0 or v != v:
            continue
        s = sums[i]
        y = v - comp[i]
        t = s + y
        c = t - s - y
        comp[i] = c if isfinite(c) else 0.0  # pandas GH#53606, GH#60303
        sums[i] = t
    return dict(zip(uniq, sums, strict=True))


def gpu_seconds(rows: Mapping[str, Any], end_s: float) -> dict[str, float]:
    """GPU-seconds per pool, integrated from the instances' transitions over [0, ``end_s``].

    The one source of every figure that says GPU-hours or cost (summary.json's top level,
    the terminal line, each pool's ``gpu_hours`` and ``cost``): whatever starts, resizes,
    drains or stops an instance is counted because it is a recorded transition.
    """
    return _paid(state_seconds(rows, end_s))


def _paid(spans: Mapping[str, np.ndarray]) -> dict[str, float]:
    """GPU-seconds per pool of ``state_seconds``' intervals."""
    return {str(k): v for k, v in group_sums(spans["pool"], spans["gpu_seconds"]).items()}


def cluster_summary(cluster: Any, instances_path: Path, requests_path: Path, end_s: float
                    ) -> dict[str, Any]:
    """The section, over the run's window [0, ``end_s``]: from the start, where the initial
    instances serve, to the last request's completion or rejection (a controller's last
    tick or a pin's expiry afterwards is not the cluster's work)."""
    rows = read_transitions(instances_path)
    spans = state_seconds(rows, end_s)
    paid = _paid(spans)  # gpu_seconds(rows, end_s), from the intervals already computed
    started_at = rows["pool"][rows["from_state"] == "none"]
    pools: dict[str, Any] = {}
    for name, pool in cluster.pools.items():
        mine = spans["pool"] == name
        per_state = group_sums(spans["state"][mine], spans["seconds"][mine])
        gpu_hours = paid.get(name, 0.0) / 3600.0
        pools[name] = {
            "model": pool.model.name, "hardware": pool.hw.name, "layout": str(pool.base),
            "instances_started": int(np.count_nonzero(started_at == name)),
            "gpu_hours": gpu_hours,
            "cost": gpu_hours * pool.cfg.gpu_hour_cost,
            # The states of losses (faults, spot) only where some instance entered them.
            "state_seconds": {s: float(per_state.get(s, 0.0)) for s in STATES
                              if s != STOPPED and (s in BASE_STATES or s in per_state)},
        }
    out: dict[str, Any] = {
        "pools": pools,
        "gpu_hours": sum(p["gpu_hours"] for p in pools.values()),
        "window_s": [0.0, end_s],
        "weight_bytes_loaded": cluster.lifecycle.weight_bytes_loaded,
        "links": cluster.topology.link_stats(),
    }
    if cluster.cfg.collectives.on_fabric:  # docs/PARALLELISM.md
        from simkv.engine.collectives import collective_stats

        out["collectives"] = {"bytes": collective_stats(cluster.topology.links()),
                              "runs_slowed": sum(r.collectives.runs_slowed for r in cluster.replicas),
                              "extra_s": sum(r.collectives.extra_s for r in cluster.replicas)}
    if cluster.handoff is not None:
        st = cluster.handoff.stats
        wait = to_numpy(pq.ParquetFile(requests_path).read(columns=["kv_transfer_s"]).column(0))
        wait = wait[~np.isnan(wait)]
        out["disaggregation"] = {
            "transfers": st.transfers, "bytes": st.bytes, "streamed_bytes": st.streamed_bytes,
            "rejected_at_decode": st.rejected,
            "kv_transfer_s": ({"mean": float(wait.mean()),
                               **{f"p{q}": float(np.percentile(wait, q)) for q in (50, 90, 99)}}
                              if wait.size else None),
        }
    if hasattr(cluster.kv_pool, "summary"):
        out["kv_pool"] = cluster.kv_pool.summary()
    models = getattr(cluster, "models", None)
    if models is not None:  # many models (engine/models.py)
        out["models"] = (models.placer.summary() if models.placer is not None
                         else {"unserved_model": models.unserved})
    if getattr(cluster, "lora", None) is not None:  # adapters (engine/lora.py)
        out["lora"] = cluster.lora.summary()
    if getattr(cluster, "faults", None) is not None:
        out["faults"] = cluster.faults.summary()
    events = [e for e in cluster.lifecycle.events if e.kind != "recover"]
    if events:
        out["scaling"] = scaling_section(events, requests_path, end_s)
    return out


def scaling_section(events: list[Any], requests_path: Path, end_s: float) -> dict[str, Any]:
    """Per event: decision, capacity ready, first request served on it; and throughput and
    SLO attainment inside the scaling windows (decision to ready) against outside them."""
    windows = np.array([(e.decided_s, e.ready_s if e.ready_s == e.ready_s else np.inf)
                        for e in events])
    # Instances whose first request after the event's capacity was ready marks it "served":
    # the new instances of a scale-up, the resized instance of an in-place resize.
    new_instances = {i: k for k, e in enumerate(events) if e.kind == "scale_up" for i in e.instances}
    ready = np.array([e.ready_s if e.ready_s == e.ready_s else np.inf for e in events])
    first_served = np.full(len(events), np.inf)
    tokens = np.zeros(2)
    finished = np.zeros(2)
    met = np.zeros(2)
    cols = ["replica", "status", "first_scheduled_s", "completion_s", "output_tokens", "slo_met"]
    # Windows may overlap: a completion counts as "during" if it falls in any of them.
    order = np.argsort(windows[:, 0])
    starts, stops = windows[order, 0], np.maximum.accumulate(windows[order, 1])
    # The scale-up each instance was started by (-1: none), indexed by instance id.
    started_by = np.full(max(new_instances, default=-1) + 1, -1, np.int64)
    for i, k in new_instances.items():
        started_by[i] = k
    # NOTE: column by column with numpy, not to_pydict and a loop over rows (10M rows: the
    # loop alone took seconds); the same sums, batch by batch, in the same order.
    for batch in pq.ParquetFile(requests_path).iter_batches(columns=cols, batch_size=65536):
        done = equal(batch.column("status"), "finished")
        comp = to_numpy(batch.column("completion_s")).astype(np.float64, copy=False)
        out_tokens = to_numpy(batch.column("output_tokens")).astype(np.float64)
        slo_met = np.asarray(to_numpy(batch.column("slo_met")), dtype=bool)
        k = np.searchsorted(starts, comp, side="right") - 1
        during = (k >= 0) & (comp <= stops[np.maximum(k, 0)]) & done
        for j, mask in enumerate((during, done & ~during)):
            tokens[j] += float(out_tokens[mask].sum())
            finished[j] += int(mask.sum())
            met[j] += int(slo_met[mask].sum())
        if new_instances:
            rep = to_numpy(batch.column("replica")).astype(np.int64)
            sched = to_numpy(batch.column("first_scheduled_s")).astype(np.float64, copy=False)
            known = (rep >= 0) & (rep < started_by.size)
            ev = np.where(known, started_by[np.where(known, rep, 0)], -1)
            hit = np.flatnonzero(ev >= 0)
            hit = hit[sched[hit] >= ready[ev[hit]]]
            np.minimum.at(first_served, ev[hit], sched[hit])
    # NOTE: clipped to the run at both ends: a decision after the last completion (a
    # scale-down as the run drains) would otherwise count a negative span.
    span_during = _union_length(np.minimum(starts, end_s), np.minimum(windows[order, 1], end_s))
    rows = []
    for k, e in enumerate(events):
        served = first_served[k] if np.isfinite(first_served[k]) else None
        rows.append({
            "action": e.action, "pool": e.pool, "kind": e.kind, "decided_s": e.decided_s,
            "ready_s": e.ready_s if e.ready_s == e.ready_s else None,
            "ready_latency_s": e.ready_s - e.decided_s if e.ready_s == e.ready_s else None,
            "first_served_s": served,
            "scale_up_latency_s": (served - e.decided_s) if served is not None else None,
            "gpus_before": e.gpus_before, "gpus_after": e.gpus_after,
            "moved_bytes": e.moved_bytes,
            "peak_weight_bytes_per_gpu": e.peak_weight_bytes_per_gpu,
        })
    ups = [r["scale_up_latency_s"] for r in rows if r["kind"] == "scale_up"
           and r["scale_up_latency_s"] is not None]
    ready_lat = [r["ready_latency_s"] for r in rows if r["kind"] == "scale_up"
                 and r["ready_latency_s"] is not None]

    def rate(j: int, span: float) -> dict[str, float | None]:
        return {"seconds": span,
                "output_tokens_per_s": tokens[j] / span if span > 0 else None,
                "requests_per_s": finished[j] / span if span > 0 else None,
                "slo_attainment": met[j] / finished[j] if finished[j] else None}

    return {
        "events": rows,
        "scale_ups": len(ups),
        "scale_up_latency_s_mean": float(np.mean(ups)) if ups else None,
        "ready_latency_s_mean": float(np.mean(ready_lat)) if ready_lat else None,
        "during_scaling": rate(0, span_during),
        "outside_scaling": rate(1, end_s - span_during),
    }


def _union_length(starts: np.ndarray, stops: np.ndarray) -> float:
    """Total length of the union of intervals (sorted by start; open ones end at the last
    finite end)."""
    finite = stops[np.isfinite(stops)]
    cap = float(finite.max()) if finite.size else float(starts.max())
    total, cur_s, cur_e = 0.0, None, None
    for s, e in zip(starts, np.minimum(stops, cap), strict=True):
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        total += cur_e - cur_s
    return float(total)

"""summary.json's ``cluster`` section: pools, GPU-hours, time per state, scaling events.

Computed from the files (instances.parquet, requests.parquet) like the rest of the summary.
Requests are read in record batches of a few columns, and only when the run scaled, so
memory stays bounded whatever the run length.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

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


def state_seconds(rows: pd.DataFrame, end_s: float) -> pd.DataFrame:
    """One row per (instance, state interval) inside the run's window [0, ``end_s``]: pool,
    state, start, seconds, GPU-seconds. An interval lasts from its transition to the
    instance's next one (or the window's end); states in ``lifecycle.RELEASED`` hold no GPUs."""
    rows = rows.sort_values(["instance", "time_s"], kind="stable")
    t = rows["time_s"].clip(upper=end_s)
    nxt = rows.groupby("instance")["time_s"].shift(-1).fillna(end_s).clip(upper=end_s)
    seconds = (nxt - t).clip(lower=0.0)
    out = pd.DataFrame({"instance": rows["instance"], "pool": rows["pool"],
                        "state": rows["to_state"], "start_s": t, "seconds": seconds,
                        "gpu_seconds": seconds * rows["gpus"]})
    return out[~out["state"].isin(RELEASED)]


def gpu_seconds(rows: pd.DataFrame, end_s: float) -> dict[str, float]:
    """GPU-seconds per pool, integrated from the instances' transitions over [0, ``end_s``].

    The one source of every figure that says GPU-hours or cost (summary.json's top level,
    the terminal line, each pool's ``gpu_hours`` and ``cost``): whatever starts, resizes,
    drains or stops an instance is counted because it is a recorded transition.
    """
    spans = state_seconds(rows, end_s)
    return {str(k): float(v) for k, v in spans.groupby("pool")["gpu_seconds"].sum().items()}


def cluster_summary(cluster: Any, instances_path: Path, requests_path: Path, end_s: float
                    ) -> dict[str, Any]:
    """The section, over the run's window [0, ``end_s``]: from the start, where the initial
    instances serve, to the last request's completion or rejection (a controller's last
    tick or a pin's expiry afterwards is not the cluster's work)."""
    rows = pd.read_parquet(instances_path)
    spans = state_seconds(rows, end_s)
    paid = gpu_seconds(rows, end_s)
    pools: dict[str, Any] = {}
    for name, pool in cluster.pools.items():
        mine = spans[spans["pool"] == name]
        per_state = mine.groupby("state")["seconds"].sum()
        gpu_hours = paid.get(name, 0.0) / 3600.0
        started = rows[(rows["pool"] == name) & (rows["from_state"] == "none")]
        pools[name] = {
            "model": pool.model.name, "hardware": pool.hw.name, "layout": str(pool.base),
            "instances_started": len(started),
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
        wait = pq.read_table(requests_path, columns=["kv_transfer_s"]).column(0).to_numpy()
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
    for batch in pq.ParquetFile(requests_path).iter_batches(columns=cols, batch_size=65536):
        b = batch.to_pydict()
        done = np.array([s == "finished" for s in b["status"]])
        comp = np.asarray(b["completion_s"], dtype=np.float64)
        k = np.searchsorted(starts, comp, side="right") - 1
        during = (k >= 0) & (comp <= stops[np.maximum(k, 0)]) & done
        for j, mask in enumerate((during, done & ~during)):
            tokens[j] += float(np.asarray(b["output_tokens"], dtype=np.float64)[mask].sum())
            finished[j] += int(mask.sum())
            met[j] += int(np.asarray(b["slo_met"], dtype=bool)[mask].sum())
        if new_instances:
            sched = np.asarray(b["first_scheduled_s"], dtype=np.float64)
            for i, rep in enumerate(b["replica"]):
                e = new_instances.get(rep)
                if e is not None and sched[i] >= ready[e]:
                    first_served[e] = min(first_served[e], sched[i])
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

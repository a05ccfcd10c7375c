"""trace.json: a run's timeline in the Trace Event Format (Perfetto, chrome://tracing).

``output.trace=true`` writes it beside the tables it is drawn from, after the run:

* one process per instance (``instance 3 (pool default)``): thread ``lifecycle`` holds one
  complete event (``ph: X``) per state the instance was in (instances.parquet); thread
  ``engine`` one per engine run (iterations.parquet: a run is one iteration or several of
  an unchanged batch), with its batch and tokens in ``args``, plus counters (``ph: C``) of
  the batch and the KV blocks in use;
* process ``transfers``: one X event per KV, weight or expert transfer (transfers.parquet),
  on as many lanes (threads) as were ever busy at once, so no two events of a lane overlap;
* process ``requests``: a sample of requests (every k-th request id, at most
  ``REQUEST_SAMPLE``), each an X event from arrival to completion holding its ``queued``,
  ``prefill`` and ``decode`` phases; rejected and failed requests are instant events
  (``ph: i``) with their reason. Lanes as for transfers.

Names of processes and threads are metadata events (``ph: M``). Times are microseconds of
simulated time (``ts``, ``dur``), as the format requires. The viewers need nothing else:
open the file in Perfetto (ui.perfetto.dev, "Open trace file", which reads it in the
browser) or chrome://tracing. tests/test_trace.py reads it back against the tables.

The file is built from the Parquet tables, not in the hot loop, so ``output.trace`` costs
the run nothing but the tables it needs (iterations and transfers are recorded with it).
"""

from __future__ import annotations

import heapq
import json
import math
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

# Requests drawn at most (every k-th id); engine runs and transfers are all drawn.
REQUEST_SAMPLE = 1000
US = 1e6
PID_REQUESTS = 1
PID_TRANSFERS = 2
PID_INSTANCE0 = 10  # instance i is process PID_INSTANCE0 + i
TID_LIFECYCLE = 1
TID_ENGINE = 2


def _us(seconds: float) -> float:
    """Seconds -> microseconds, rounded to the nanosecond (the file stays small and stable)."""
    return round(seconds * US, 3)


def _dur(start_s: float, end_s: float) -> float:
    """Duration between two rounded times, so that ts + dur is the rounded end: an event
    that ends where the next begins never overlaps it."""
    return max(0.0, round(_us(end_s) - _us(start_s), 3))


def _lanes(intervals: list[tuple[float, float]]) -> list[int]:
    """Lane of each (start, end), in input order: the lowest lane free at its start (a lane
    whose last event ended at or before it), so events of one lane never overlap."""
    order = sorted(range(len(intervals)), key=lambda i: (intervals[i][0], i))
    free: list[int] = []  # lanes free now (min-heap)
    busy: list[tuple[float, int]] = []  # (end, lane)
    lane_of = [0] * len(intervals)
    n = 0
    for i in order:
        start, end = intervals[i]
        while busy and busy[0][0] <= start:
            heapq.heappush(free, heapq.heappop(busy)[1])
        if free:
            lane = heapq.heappop(free)
        else:
            lane, n = n, n + 1
        lane_of[i] = lane
        heapq.heappush(busy, (end, lane))
    return lane_of


def _meta(pid: int, tid: int | None, name: str, sort: int | None = None) -> list[dict[str, Any]]:
    what = "process_name" if tid is None else "thread_name"
    ev: dict[str, Any] = {"ph": "M", "name": what, "pid": pid, "args": {"name": name}}
    if tid is not None:
        ev["tid"] = tid
    out = [ev]
    if sort is not None:
        key = "process_sort_index" if tid is None else "thread_sort_index"
        out.append({"ph": "M", "name": key, "pid": pid, **({"tid": tid} if tid is not None else {}),
                    "args": {"sort_index": sort}})
    return out


def _rows(path: Path, columns: list[str]) -> list[dict[str, Any]]:
    return pq.read_table(path, columns=columns).to_pylist() if path.is_file() else []


def instance_events(out: Path, end_s: float) -> list[dict[str, Any]]:
    """Lifecycle states (instances.parquet) and engine runs (iterations.parquet)."""
    events: list[dict[str, Any]] = []
    rows = _rows(out / "instances.parquet", ["time_s", "instance", "pool", "to_state", "gpus", "reason"])
    by_instance: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        by_instance.setdefault(r["instance"], []).append(r)
    iters = _rows(out / "iterations.parquet", ["replica", "start_s", "duration_s", "iterations",
                                               "prefill_tokens", "decode_sequences",
                                               "kv_blocks_used", "kv_blocks_total"])
    for r in iters:
        by_instance.setdefault(r["replica"], [])
    for inst in sorted(by_instance):
        pid = PID_INSTANCE0 + inst
        states = by_instance[inst]
        pool = states[0]["pool"] if states else ""
        events += _meta(pid, None, f"instance {inst}" + (f" (pool {pool})" if pool else ""), inst + 10)
        events += _meta(pid, TID_LIFECYCLE, "lifecycle", 0) + _meta(pid, TID_ENGINE, "engine", 1)
        for j, r in enumerate(states):
            if r["to_state"] == "stopped":
                events.append({"ph": "i", "name": "stopped", "pid": pid, "tid": TID_LIFECYCLE,
                               "ts": _us(r["time_s"]), "s": "t", "args": {"reason": r["reason"]}})
                continue
            until = states[j + 1]["time_s"] if j + 1 < len(states) else max(end_s, r["time_s"])
            events.append({"ph": "X", "name": r["to_state"], "pid": pid, "tid": TID_LIFECYCLE,
                           "ts": _us(r["time_s"]), "dur": _dur(r["time_s"], until),
                           "args": {"gpus": r["gpus"], "reason": r["reason"]}})
    for r in iters:
        pid = PID_INSTANCE0 + r["replica"]
        ts = _us(r["start_s"])
        batch = {"prefill_tokens": r["prefill_tokens"], "decode_sequences": r["decode_sequences"]}
        events.append({"ph": "X", "name": "step" if r["iterations"] == 1 else f"{r['iterations']} steps",
                       "pid": pid, "tid": TID_ENGINE, "ts": ts,
                       "dur": _dur(r["start_s"], r["start_s"] + r["duration_s"]),
                       "args": {"iterations": r["iterations"], **batch,
                                "kv_blocks_used": r["kv_blocks_used"],
                                "kv_blocks_total": r["kv_blocks_total"]}})
        events.append({"ph": "C", "name": "batch", "pid": pid, "ts": ts, "args": batch})
        events.append({"ph": "C", "name": "kv blocks", "pid": pid, "ts": ts,
                       "args": {"used": r["kv_blocks_used"]}})
    return events


def transfer_events(out: Path) -> list[dict[str, Any]]:
    """Every transfer of transfers.parquet, on non-overlapping lanes."""
    rows = _rows(out / "transfers.parquet", ["start_s", "end_s", "bytes", "what", "links"])
    if not rows:
        return []
    lanes = _lanes([(r["start_s"], r["end_s"]) for r in rows])
    events = _meta(PID_TRANSFERS, None, "transfers (KV, weights, experts)", 1)
    for lane in range(max(lanes) + 1):
        events += _meta(PID_TRANSFERS, lane, f"lane {lane}", lane)
    for r, lane in zip(rows, lanes, strict=True):
        events.append({"ph": "X", "name": r["what"] or "transfer", "pid": PID_TRANSFERS, "tid": lane,
                       "ts": _us(r["start_s"]), "dur": _dur(r["start_s"], r["end_s"]),
                       "args": {"bytes": r["bytes"], "links": r["links"]}})
    return events


def request_sample(out: Path, sample: int = REQUEST_SAMPLE) -> list[dict[str, Any]]:
    """Every k-th request of requests.parquet (k = ceil(n / sample)) in request-id order."""
    rows = _rows(out / "requests.parquet", ["request_id", "status", "reject_reason", "replica",
                                            "arrival_s", "first_scheduled_s", "first_token_s",
                                            "completion_s", "prompt_tokens", "output_tokens"])
    step = max(1, math.ceil(len(rows) / sample))
    return [r for r in sorted(rows, key=lambda r: r["request_id"]) if r["request_id"] % step == 0]


def request_events(out: Path) -> list[dict[str, Any]]:
    """The sampled requests: one event per request, its phases nested in it."""
    rows = request_sample(out)
    done = [r for r in rows if r["status"] == "finished"]
    lanes = _lanes([(r["arrival_s"], r["completion_s"]) for r in done])
    events = _meta(PID_REQUESTS, None, f"requests (a sample of {len(rows)})", 0)
    events += _meta(PID_REQUESTS, 0, "rejected or failed", 0)
    for lane in range(max(lanes, default=-1) + 1):
        events += _meta(PID_REQUESTS, lane + 1, f"lane {lane + 1}", lane + 1)
    for r in rows:
        if r["status"] != "finished":
            events.append({"ph": "i", "name": f"request {r['request_id']} {r['status']}",
                           "pid": PID_REQUESTS, "tid": 0, "ts": _us(r["arrival_s"]), "s": "t",
                           "args": {"reason": r["reject_reason"]}})
    for r, lane in zip(done, lanes, strict=True):
        tid = lane + 1
        a, s, f, c = r["arrival_s"], r["first_scheduled_s"], r["first_token_s"], r["completion_s"]
        events.append({"ph": "X", "name": f"request {r['request_id']}", "pid": PID_REQUESTS, "tid": tid,
                       "ts": _us(a), "dur": _dur(a, c),
                       "args": {"instance": r["replica"], "prompt_tokens": r["prompt_tokens"],
                                "output_tokens": r["output_tokens"]}})
        for name, t0, t1 in (("queued", a, s), ("prefill", s, f), ("decode", f, c)):
            events.append({"ph": "X", "name": name, "pid": PID_REQUESTS, "tid": tid,
                           "ts": _us(t0), "dur": _dur(t0, t1)})
    return events


def write_trace(out: Path, end_s: float, meta: dict[str, Any]) -> Path:
    """Write ``out/trace.json`` from the run's tables; ``end_s`` closes the last states."""
    doc = {
        "traceEvents": [*request_events(out), *transfer_events(out), *instance_events(out, end_s)],
        "displayTimeUnit": "ms",
        "otherData": {"producer": "simkv", **meta},
    }
    path = out / "trace.json"
    from simkv.output import write_whole

    write_whole(path, lambda tmp: tmp.write_text(json.dumps(doc, separators=(",", ":")) + "\n"))
    return path

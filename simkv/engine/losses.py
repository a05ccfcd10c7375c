"""What a loss (a failure or a spot preemption) cost, one record each, and their summary
(summary.json's ``cluster.faults``): engine/faults.py and engine/spot.py record them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simkv.engine.lifecycle import ScaleEvent

NAN = math.nan


@dataclass(slots=True)
class Loss:
    """One loss (a failure or a preemption) and what it cost, for summary.json."""

    time_s: float
    kind: str
    target: int
    pool: str = ""
    instances: list[int] = field(default_factory=list)
    # Requests that had started (their KV was lost) and ones that had only queued.
    interrupted: int = 0
    requeued: int = 0
    failed: int = 0
    # Tokens the interrupted requests must compute again (prompt + generated so far).
    tokens_to_recompute: int = 0
    detected_s: float = NAN
    replacements: list[ScaleEvent] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        ready = [e.ready_s for e in self.replacements if e.ready_s == e.ready_s]
        return {"time_s": self.time_s, "kind": self.kind, "target": self.target, "pool": self.pool,
                "instances": self.instances, "requests_interrupted": self.interrupted,
                "requests_requeued": self.requeued, "requests_failed": self.failed,
                "tokens_to_recompute": self.tokens_to_recompute,
                "detected_s": self.detected_s if self.detected_s == self.detected_s else None,
                "replacement_serving_s": max(ready) if ready else None,
                "recovery_s": max(ready) - self.time_s if ready else None}


def summarize(losses: list[Loss], cancelled: int, cancelled_bytes: float) -> dict[str, Any]:
    """Totals over ``losses``, the transfers their instances' loss cancelled, and the first
    1,000 losses one by one."""
    rows = [loss.row() for loss in losses]
    recovery = [x["recovery_s"] for x in rows if x["recovery_s"] is not None]
    by_kind: dict[str, int] = {}
    for loss in losses:
        by_kind[loss.kind] = by_kind.get(loss.kind, 0) + 1
    out: dict[str, Any] = {
        "losses": len(rows),
        "by_kind": dict(sorted(by_kind.items())),
        "instances_lost": sum(len(x["instances"]) for x in rows),
        "requests_interrupted": sum(x["requests_interrupted"] for x in rows),
        "requests_requeued": sum(x["requests_requeued"] for x in rows),
        "requests_failed": sum(x["requests_failed"] for x in rows),
        "tokens_to_recompute": sum(x["tokens_to_recompute"] for x in rows),
        "transfers_cancelled": cancelled,
        "bytes_cancelled": cancelled_bytes,
        "recovery_s_mean": float(np.mean(recovery)) if recovery else None,
        "events": rows[:1000],
    }
    return out

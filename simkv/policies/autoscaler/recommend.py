"""How many GPUs a pool should hold: the Kubernetes HPA rule over a windowed metric.

    desired = ceil(serving GPUs x value / target)        (unchanged within the tolerance)

Scale-up takes the recommendation at once; scale-down takes the largest recommendation of the
last ``scale_down_stabilization_s`` (HPA's stabilisation window), so a short lull does not
release capacity a returning burst needs. Source: Kubernetes documentation, "Horizontal Pod
Autoscaling", algorithm details (sync period 15 s, tolerance 0.1, 300 s down-stabilisation).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from simkv.policies.autoscaler.interface import ScalingConfig


@dataclass(slots=True)
class Sample:
    """What the controller measured of one pool over the last window."""

    serving_gpus: int
    held_gpus: int
    arrival_rate: float  # requests/s routed to the pool
    outstanding: int  # requests in the pool's instances (waiting, running)
    kv_utilization: float
    slo_attainment: float | None  # None: nothing finished in the window


@dataclass(slots=True)
class Recommender:
    cfg: ScalingConfig
    history: deque[tuple[float, int]] = field(default_factory=deque)

    def value(self, s: Sample) -> float | None:
        per_gpu = max(s.serving_gpus, 1)
        m = self.cfg.metric
        if m == "arrival_rate":
            return s.arrival_rate / per_gpu
        if m == "outstanding":
            return s.outstanding / per_gpu
        if m == "kv_utilization":
            return s.kv_utilization
        return s.slo_attainment

    def desired(self, s: Sample, now: float) -> int:
        cfg = self.cfg
        value = self.value(s)
        base = max(s.serving_gpus, 1)
        if value is None:
            raw = s.held_gpus
        elif cfg.metric == "slo_attainment":
            # Lower is worse: scale up by the shortfall (at most doubling); never down.
            ratio = cfg.target / max(value, 1e-9)
            raw = math.ceil(base * min(ratio, 2.0)) if ratio > 1 + cfg.tolerance else s.held_gpus
        else:
            ratio = value / cfg.target
            raw = s.held_gpus if abs(ratio - 1) <= cfg.tolerance else math.ceil(base * ratio)
        self.history.append((now, raw))
        while self.history and self.history[0][0] < now - cfg.scale_down_stabilization_s:
            self.history.popleft()
        if raw >= s.held_gpus:
            return raw
        return min(s.held_gpus, max(d for _, d in self.history))

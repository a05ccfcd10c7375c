"""Horizontal scaling: whole instances of the pool's layout are added or drained (the
Kubernetes HPA way). A new instance pays provisioning and weight loading before it serves;
the smallest step is a whole instance (for a large MoE layout, many GPUs)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from simkv.engine.lifecycle import LEAVING
from simkv.policies.autoscaler.interface import Action, Drain, Launch, ScalingConfig
from simkv.registry import register


@dataclass(slots=True)
class HorizontalConfig(ScalingConfig):
    pass


@register("autoscaler", "horizontal", HorizontalConfig)
class Horizontal:
    def __init__(self, cfg: HorizontalConfig, **_: object) -> None:
        self.cfg = cfg

    def check(self, pool: Any) -> None:
        if pool.max_instances == pool.min_instances:
            from simkv.engine.pool import pool_key

            k = pool_key(pool.name, "max_instances")
            raise ValueError(f"autoscaler=horizontal: {pool_key(pool.name, 'min_instances')} = "
                             f"{k} = {pool.max_instances}: nothing to scale (set {k} above "
                             f"{pool_key(pool.name, 'instances')})")

    def decide(self, pool: Any, desired_gpus: int, now: float) -> list[Action]:
        live = [r for r in pool.instances if r.state not in LEAVING]
        want = math.ceil(desired_gpus / pool.base.gpus)
        want = min(max(want, pool.min_instances), pool.max_instances)
        if want > len(live):
            return [Launch(pool.base_degree)] * (want - len(live))
        if want < len(live):
            serving = [r for r in live if r.state == "serving"]
            # The least loaded leave first (their queues drain soonest); newest on ties.
            serving.sort(key=lambda r: (r.outstanding_requests, -r.index))
            return [Drain(r) for r in serving[:len(live) - want]]
        return []

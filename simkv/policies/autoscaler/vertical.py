"""Vertical scaling: an instance restarts with a larger (or smaller) data/expert-parallel
layout, a cold restart as ElasticMoE's baseline does: drain, stop, provision and reload on
the new set of GPUs. Its capacity is gone meanwhile (downtime)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from simkv.engine.lifecycle import SERVING
from simkv.policies.autoscaler.interface import Action, Restart, ScalingConfig
from simkv.policies.autoscaler.resize import check_resizable, target_dp
from simkv.registry import register


@dataclass(slots=True)
class VerticalConfig(ScalingConfig):
    pass


@register("autoscaler", "vertical", VerticalConfig)
class Vertical:
    def __init__(self, cfg: VerticalConfig, **_: object) -> None:
        self.cfg = cfg

    def check(self, pool: Any) -> None:
        check_resizable(pool, "vertical")

    def decide(self, pool: Any, desired_gpus: int, now: float) -> list[Action]:
        if any(r.state != SERVING for r in pool.instances):
            return []  # a restart is under way
        dp = target_dp(pool, desired_gpus, len(pool.instances))
        for r in pool.instances:
            if r.dp != dp:
                return [Restart(r, dp)]  # one at a time
        return []

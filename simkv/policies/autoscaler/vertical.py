"""Vertical scaling: an instance restarts with a larger (or smaller) data/expert-parallel
layout, a cold restart as ElasticMoE's baseline does: drain, stop, provision and reload on
the new set of GPUs. Its capacity is gone meanwhile (downtime)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from simkv.policies.autoscaler.interface import Action, Restart, ScalingConfig
from simkv.policies.autoscaler.resize import check_resizable, next_change
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
        step = next_change(pool, desired_gpus)
        return [Restart(*step)] if step is not None else []

"""No autoscaling (the default): the pools keep the instances they start with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from simkv.policies.autoscaler.interface import Action
from simkv.registry import register


@dataclass(slots=True)
class NoAutoscalerConfig:
    pass


@register("autoscaler", "none", NoAutoscalerConfig)
class NoAutoscaler:
    def __init__(self, cfg: NoAutoscalerConfig, **_: object) -> None:
        self.cfg = cfg

    def check(self, pool: Any) -> None:
        pass

    def decide(self, pool: Any, desired_gpus: int, now: float) -> list[Action]:
        return []

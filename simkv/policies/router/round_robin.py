"""Round robin: replica i, i+1, ... in turn, blind to load (vLLM's and Vidur's baseline)."""

from __future__ import annotations

from dataclasses import dataclass

from simkv.entities.request import Request
from simkv.policies.router.interface import ReplicaLoad
from simkv.registry import register


@dataclass(slots=True)
class RoundRobinConfig:
    pass


@register("router", "round_robin", RoundRobinConfig)
class RoundRobin:
    def __init__(self, cfg: RoundRobinConfig, **_: object) -> None:
        self.next = 0

    def route(self, req: Request, replicas: list[ReplicaLoad], now: float) -> int:
        # NOTE: modulo the current list: instances come and go under an autoscaler.
        i = self.next % len(replicas)
        self.next = i + 1
        return i

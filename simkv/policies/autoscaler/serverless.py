"""Serverless placement for many models on shared GPUs (ServerlessLLM, OSDI 2024, arXiv
2401.14351; Knative/KServe-style scale to zero): a model with requests and no instance gets
one at once (a cold start: provisioning, weights from their source, warm-up); an instance
idle for ``keep_alive_s`` stops; a model whose instances hold more than ``target``
outstanding requests each gets another; and when its GPU group is full, the instance of
another model idle the longest is drained to make room (``evict``).

The policy only decides (which pool grows, which instance leaves); engine/models.py's
placer carries the decisions out through the lifecycle, event-driven for cold starts and
every ``interval_s`` for the rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from simkv.config.bounds import bounded
from simkv.policies.autoscaler.interface import Action, ScalingConfig
from simkv.registry import register


@dataclass(slots=True)
class ServerlessConfig(ScalingConfig):
    # Outstanding requests per serving instance above which the model gets another.
    target: float = bounded(8.0, gt=0)
    # Seconds between the placer's looks at keep-alive and scale-out (cold starts do not wait).
    interval_s: float = bounded(1.0, gt=0)
    # An instance with nothing to do for this long stops (scale to zero; Knative's default
    # scale-to-zero grace period is 30 s, ServerlessLLM's keep-alive is a parameter).
    keep_alive_s: float = bounded(60.0, ge=0)
    # Drain another model's idle instance when the GPU group has no room for a cold start.
    evict: bool = True


@register("autoscaler", "serverless", ServerlessConfig)
class Serverless:
    # The controller is the placer of engine/models.py, not the HPA recommender's.
    placement = True

    def __init__(self, cfg: ServerlessConfig, **_: object) -> None:
        self.cfg = cfg

    def check(self, pool: Any) -> None:
        if pool.max_instances < 1:
            raise ValueError(f"autoscaler=serverless: pool '{pool.name}' may hold no instance "
                             f"(pools.{pool.name}.max_instances)")

    def decide(self, pool: Any, desired_gpus: int, now: float) -> list[Action]:
        return []  # unused: the placer asks the questions below

    def wants_more(self, outstanding: int, serving: int, starting: int) -> bool:
        """Another instance for a model with this load (requests waiting for it included)."""
        if outstanding and not (serving or starting):
            return True  # a cold start
        return serving + starting > 0 and outstanding > self.cfg.target * (serving + starting)

    def expired(self, idle_since: float, now: float) -> bool:
        return now - idle_since >= self.cfg.keep_alive_s

    @staticmethod
    def victim(idle: list[tuple[float, Any]]) -> Any | None:
        """The instance idle the longest (least recently used), of another model."""
        return min(idle, key=lambda x: (x[0], x[1].index))[1] if idle else None

    @staticmethod
    def instances_for(outstanding: int, target: float) -> int:
        return max(1, math.ceil(outstanding / target))

"""Power of two choices: sample two serving instances, send to the one with less work.

O(1) per request whatever the cluster size (least_work and least_outstanding scan every
instance: at 1,000 instances that dominates a run), and exponentially better balanced than
random choice (Mitzenmacher, "The Power of Two Choices in Randomized Load Balancing", 2001).
Work is outstanding tokens over the instance's token rate, as in least_work. Seeded from the
run's seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simkv.entities.request import Request
from simkv.policies.router.interface import ReplicaLoad
from simkv.registry import register


@dataclass(slots=True)
class PowerOfTwoConfig:
    pass


@register("router", "power_of_two", PowerOfTwoConfig)
class PowerOfTwo:
    def __init__(self, cfg: PowerOfTwoConfig, rng: np.random.Generator | None = None,
                 **_: object) -> None:
        self.rng = rng if rng is not None else np.random.default_rng(0)
        # NOTE: draws in blocks: one numpy call per request would cost more than the choice.
        self._draws: list[float] = []

    def route(self, req: Request, replicas: list[ReplicaLoad], now: float) -> int:
        n = len(replicas)
        if n == 1:
            return 0
        if len(self._draws) < 2:
            self._draws = self.rng.random(4096).tolist()
        a = int(self._draws.pop() * n)
        b = int(self._draws.pop() * (n - 1))
        b += b >= a  # a second, different instance
        ra, rb = replicas[a], replicas[b]
        ta = ra.outstanding_tokens / ra.work_rate
        tb = rb.outstanding_tokens / rb.work_rate
        return a if ta < tb or (ta == tb and a < b) else b

"""The autoscaler contract: how a pool reaches the capacity its metrics call for.

Every autoscaler shares one recommender (``recommend.py``, the Kubernetes HPA rule): from a
windowed metric it derives the GPUs a pool should hold. A policy decides only *how* to get
there: whole instances (horizontal), a restart with another layout (vertical), or a live
resize (elastic_moe). It returns actions; the controller (engine/controller.py) carries them
out through the lifecycle, so a policy never touches an instance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from simkv.config.bounds import bounded, check

METRICS = ("arrival_rate", "outstanding", "kv_utilization", "slo_attainment")


@dataclass(slots=True)
class ScalingConfig:
    """What every autoscaler reads and how often (defaults: Kubernetes HPA's)."""

    # Pools it scales (empty: every pool whose instance or size bounds leave room).
    pools: list[str] = field(default_factory=list)
    # arrival_rate: requests/s per serving GPU; outstanding: requests in the system per serving
    # GPU; kv_utilization: KV blocks used / held; slo_attainment: share of requests finished
    # in the window that met both SLOs (scales up only).
    metric: str = bounded("outstanding", choices=METRICS)
    target: float = bounded(4.0, gt=0)
    # No change while |value / target - 1| is within this (HPA: 0.1).
    tolerance: float = bounded(0.1, ge=0)
    # Seconds between decisions (HPA sync period: 15 s) and the window metrics cover.
    interval_s: float = bounded(15.0, gt=0)
    window_s: float = bounded(60.0, gt=0)
    # A scale-down takes the largest recommendation of this many seconds (HPA: 300 s).
    scale_down_stabilization_s: float = bounded(300.0, ge=0)
    # No new action on a pool this long after its last one ended.
    cooldown_s: float = bounded(0.0, ge=0)

    def __post_init__(self) -> None:
        check(self, "autoscaler.")


@dataclass(frozen=True, slots=True)
class Launch:
    """Start a new instance of the pool with this data-parallel degree."""

    dp: int


@dataclass(frozen=True, slots=True)
class Drain:
    """Stop routing to an instance; it stops when its requests are done."""

    instance: Any


@dataclass(frozen=True, slots=True)
class Restart:
    """Drain an instance, then start it again with another data-parallel degree."""

    instance: Any
    dp: int


@dataclass(frozen=True, slots=True)
class Resize:
    """Change a serving instance's data/expert-parallel degree in place (ElasticMoE)."""

    instance: Any
    dp: int


@dataclass(frozen=True, slots=True)
class SetClock:
    """Lock the pool's GPUs at this fraction of their maximum SM clock from their next step
    (autoscaler=energy; the pool's power model says what it costs and saves)."""

    fraction: float


Action = Launch | Drain | Restart | Resize | SetClock


class Autoscaler(Protocol):
    cfg: ScalingConfig

    def check(self, pool: Any) -> None:
        """Raise ValueError (before the run) if this policy cannot scale ``pool``."""
        ...

    def decide(self, pool: Any, desired_gpus: int, now: float) -> list[Action]:
        """Actions that move ``pool`` (engine/pool.py) towards ``desired_gpus``."""
        ...

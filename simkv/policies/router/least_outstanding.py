"""Least outstanding tokens: the replica with the fewest prompt+output tokens still to serve.

Tokens rather than requests because a 30k-token prompt is not one unit of work; ties go to
the lowest replica index so routing is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

from simkv.entities.request import Request
from simkv.policies.router.interface import ReplicaLoad
from simkv.registry import register


@dataclass(slots=True)
class LeastOutstandingConfig:
    pass


@register("router", "least_outstanding", LeastOutstandingConfig)
class LeastOutstanding:
    def __init__(self, cfg: LeastOutstandingConfig, **_: object) -> None:
        pass

    def route(self, req: Request, replicas: list[ReplicaLoad], now: float) -> int:
        best = 0
        best_load = replicas[0].outstanding_tokens
        for r in replicas[1:]:
            if r.outstanding_tokens < best_load:
                best, best_load = r.index, r.outstanding_tokens
        return best

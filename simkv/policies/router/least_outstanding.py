"""Least outstanding tokens: the replica with the fewest prompt+output tokens still to serve.

Tokens rather than requests because a 30k-token prompt is not one unit of work; ties go to
the earliest-started instance so routing is deterministic. O(log n) per request over the
cluster's serving list (policies/router/index.py), a scan of a plain list.
"""

from __future__ import annotations

from dataclasses import dataclass

from simkv.entities.request import Request
from simkv.policies.router.index import ServingList
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
        ix = replicas.index("tokens") if isinstance(replicas, ServingList) else None
        if ix is not None:
            # The smallest (tokens, position) over the classes' tops: the scan's choice.
            return min(e[:2] for _, e in ix.tops())[1]
        best = 0
        best_load = replicas[0].outstanding_tokens
        for i in range(1, len(replicas)):
            load = replicas[i].outstanding_tokens
            if load < best_load:
                best, best_load = i, load
        return best

"""Least work: the instance whose outstanding tokens take the least time at its own speed.

In a cluster of different GPUs (an H100 pool beside an A100 pool) "fewest outstanding tokens"
sends a slow instance as much as a fast one; dividing by each instance's token rate (its
pool's layout on its GPU, from the cost model) balances expected *time* instead. Equal to
least_outstanding when all instances are alike. Ties go to the earliest-started instance.
O(log n) per request over the cluster's serving list (policies/router/index.py: within one
work rate the least time is the fewest tokens, so only the classes' tops are compared).

A request's size is its prompt plus the output the cluster's predictor expects (config group
``predictor``): a router cannot know the true output length; ``predictor=oracle`` measures
what knowing it would be worth.
"""

from __future__ import annotations

from dataclasses import dataclass

from simkv.entities.request import Request
from simkv.policies.predictor.interface import OutputPredictor
from simkv.policies.router.index import ServingList
from simkv.policies.router.interface import ReplicaLoad
from simkv.registry import register


@dataclass(slots=True)
class LeastWorkConfig:
    pass


@register("router", "least_work", LeastWorkConfig)
class LeastWork:
    def __init__(self, cfg: LeastWorkConfig, predictor: OutputPredictor | None = None,
                 **_: object) -> None:
        if predictor is None:
            raise ValueError("router=least_work needs the cluster's output predictor")
        self.predictor = predictor

    def route(self, req: Request, replicas: list[ReplicaLoad], now: float) -> int:
        best = 0
        # The request's own tokens count too: an idle slow instance is not free.
        size = req.prompt_tokens + self.predictor.predict(req)
        ix = replicas.index("tokens") if isinstance(replicas, ServingList) else None
        if ix is not None:
            # Each class's top, timed as the scan times it; (time, position) decides.
            return min(((e[0] + size) / rate, e[1]) for rate, e in ix.tops())[1]
        best_t = (replicas[0].outstanding_tokens + size) / replicas[0].work_rate
        for i in range(1, len(replicas)):
            r = replicas[i]
            t = (r.outstanding_tokens + size) / r.work_rate
            if t < best_t:
                best, best_t = i, t
        return best

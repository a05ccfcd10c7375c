"""Prefix affinity with load balance: the instance where the request's prefix is cached,
unless it is too busy.

score = cached prompt tokens - load_weight x outstanding tokens; highest wins (ties: the
earliest-started instance). This is the cache-aware routing of SGLang's router and llm-d's
scorers (expected tokens saved against a load term): with load_weight 0 it is pure affinity
(every request of a hot prefix piles onto one instance), with a large one it is
least_outstanding. Caches are read through each instance's ``cached_tokens`` (HBM hits of
the request's leading granules), never their internals. One lookup per instance per request:
O(instances x prefix granules).
"""

from __future__ import annotations

from dataclasses import dataclass

from simkv.config.bounds import bounded
from simkv.entities.request import Request
from simkv.policies.router.interface import ReplicaLoad
from simkv.registry import register


@dataclass(slots=True)
class PrefixAffinityConfig:
    # Cached tokens one outstanding token is worth giving up (0: affinity only).
    load_weight: float = bounded(0.25, ge=0)


@register("router", "prefix_affinity", PrefixAffinityConfig)
class PrefixAffinity:
    def __init__(self, cfg: PrefixAffinityConfig, **_: object) -> None:
        self.w = cfg.load_weight

    def route(self, req: Request, replicas: list[ReplicaLoad], now: float) -> int:
        if not req.prefix:  # nothing can be cached for it anywhere: least loaded
            best, best_load = 0, replicas[0].outstanding_tokens
            for i in range(1, len(replicas)):
                if replicas[i].outstanding_tokens < best_load:
                    best, best_load = i, replicas[i].outstanding_tokens
            return best
        w = self.w
        best, best_score = 0, -float("inf")
        for i, r in enumerate(replicas):
            score = r.cached_tokens(req) - w * r.outstanding_tokens
            if score > best_score:
                best, best_score = i, score
        return best

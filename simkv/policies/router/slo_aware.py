"""SLO-aware: the instance with the lowest estimated time to first token.

TTFT estimate = (prompt tokens queued or part-way through prefill there + this request's
uncached prompt tokens) / the instance's token rate (a full iteration of its layout on its
GPU, from the cost model). It counts what a prefix hit saves and what a slower GPU costs; it
ignores decodes sharing the iterations (chunked prefill runs them first), so it is a lower
bound, used only to rank instances. Ties go to the least outstanding tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from simkv.entities.request import Request
from simkv.policies.router.interface import ReplicaLoad
from simkv.registry import register


@dataclass(slots=True)
class SLOAwareConfig:
    pass


@register("router", "slo_aware", SLOAwareConfig)
class SLOAware:
    def __init__(self, cfg: SLOAwareConfig, **_: object) -> None:
        pass

    def route(self, req: Request, replicas: list[ReplicaLoad], now: float) -> int:
        best, best_key = 0, (float("inf"), 0)
        for i, r in enumerate(replicas):
            own = req.prompt_tokens - (r.cached_tokens(req) if req.prefix else 0)
            key = ((r.pending_prefill_tokens() + own) / r.work_rate, r.outstanding_tokens)
            if key < best_key:
                best, best_key = i, key
        return best

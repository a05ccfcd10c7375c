"""SLO-aware: the instance with the lowest estimated time to first token.

TTFT estimate = (prompt tokens queued or part-way through prefill there + this request's
uncached prompt tokens) / the instance's token rate (a full iteration of its layout on its
GPU, from the cost model). It counts what a prefix hit saves and what a slower GPU costs; it
ignores decodes sharing the iterations (chunked prefill runs them first), so it is a lower
bound, used only to rank instances. Ties go to the least outstanding tokens, then to the
earliest-started instance.

Over the cluster's serving list (policies/router/index.py): when no instance holds the
request's first granule, within one token rate the lowest estimate is the fewest pending
tokens, a heap top (O(log n)); otherwise instances are estimated in increasing lower bound
(the most any instance can have cached) until the next bound exceeds the best estimate: exact,
O(k log n) for the k instances walked. On a plain list every instance is estimated; the
choices are the same.
"""

from __future__ import annotations

from dataclasses import dataclass

from simkv.entities.request import Request
from simkv.policies.router.index import ServingList
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
        ix = replicas.index("pending") if isinstance(replicas, ServingList) else None
        most = 0
        if ix is not None and req.prefix:
            bound = replicas.most_cached(req.prefix, req.prompt_tokens)  # type: ignore[attr-defined]
            if bound is None:
                ix = None
            else:
                most = bound
        if ix is None:
            best, best_key = 0, (float("inf"), 0)
            for i, r in enumerate(replicas):
                own = req.prompt_tokens - (r.cached_tokens(req) if req.prefix else 0)
                key = ((r.pending_prefill_tokens() + own) / r.work_rate, r.outstanding_tokens)
                if key < best_key:
                    best, best_key = i, key
            return best
        prompt = req.prompt_tokens
        if most == 0:
            # Nobody has cached tokens for it: per rate, the fewest pending tokens (then
            # outstanding, then position); the classes' tops timed as the scan times them.
            return min(((e[0] + prompt) / rate, e[1], e[2]) for rate, e in ix.tops())[2]
        ix.refresh()
        pos, keys = ix.pos, ix.key
        best = (float("inf"), 0, 0)
        # Instances grouped by their cached tokens, most first; a group whose best possible
        # estimate (no pending tokens, the fastest rate) exceeds the best found ends the
        # search, as do all groups after it (fewer cached tokens).
        fastest = max(ix.heaps)
        held: set[int] = set()
        for cached, ids in replicas.cached_levels(req.prefix, prompt, pos.keys()):  # type: ignore[attr-defined]
            held |= ids
            if ((prompt - cached) / fastest, -1, -1) > best:
                continue
            for i in ids:
                p = pos[i]
                pending, tokens = keys[i]
                key = ((pending + prompt - cached) / replicas[p].work_rate, tokens, p)
                if key < best:
                    best = key
        # Every other instance has nothing cached: the first of them in increasing estimate
        # (then tokens, position) is the best, and the walk stops once the estimate loses.
        walk = ix.ascending(lambda rate, e: ((e[0] + prompt) / rate, e[1], e[2]))
        for rate, e in walk:
            key = ((e[0] + prompt) / rate, e[1], e[2])
            if key > best:
                break
            if e[3].index not in held:
                best = key
                break
        walk.close()
        return best[2]

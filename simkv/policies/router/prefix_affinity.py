"""Prefix affinity with load balance: the instance where the request's prefix is cached,
unless it is too busy.

score = cached prompt tokens - load_weight x outstanding tokens; highest wins (ties: the
earliest-started instance). This is the cache-aware routing of SGLang's router and llm-d's
scorers (expected tokens saved against a load term): with load_weight 0 it is pure affinity
(every request of a hot prefix piles onto one instance), with a large one it is
least_outstanding. Caches are read through each instance's ``cached_tokens`` (HBM hits of
the request's leading granules), never their internals.

Over the cluster's serving list (policies/router/index.py): when no instance holds the
request's first granule it is the least-loaded instance (a heap top, O(log n)); otherwise
instances are scored in increasing load until the best possible score of the next one (the
most any instance can have cached, from which granules anyone holds) cannot beat the best
found: exact, and O(k log n) for the k
instances walked (few when a lightly loaded instance holds the prefix). ``load_weight=0``
and plain lists score every instance. The choices equal the scan's (the same floats; for
load_weight > 0, w x tokens is strictly increasing in the whole number of tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

from simkv.config.bounds import bounded
from simkv.entities.request import Request
from simkv.policies.router.index import ServingList
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
        ix = replicas.index("tokens") if isinstance(replicas, ServingList) else None
        if not req.prefix:  # nothing can be cached for it anywhere: least loaded
            if ix is not None:
                return min(e[:2] for _, e in ix.tops())[1]
            best, best_load = 0, replicas[0].outstanding_tokens
            for i in range(1, len(replicas)):
                if replicas[i].outstanding_tokens < best_load:
                    best, best_load = i, replicas[i].outstanding_tokens
            return best
        w = self.w
        most = (replicas.most_cached(req.prefix, req.prompt_tokens)  # type: ignore[attr-defined]
                if ix is not None else None)
        if ix is None or most is None or w == 0:
            # NOTE: with load_weight 0 every instance that scores 0 ties: the scan's order.
            best, best_score = 0, -float("inf")
            for i, r in enumerate(replicas):
                score = r.cached_tokens(req) - w * r.outstanding_tokens
                if score > best_score:
                    best, best_score = i, score
            return best
        if most == 0:  # nothing cached anywhere: least loaded
            return min(e[:2] for _, e in ix.tops())[1]
        pos = ix.pos
        best_key = (float("inf"), 0)  # (-score, position), smallest wins
        # Instances grouped by their cached tokens, most first: within a group the score is
        # the load term, and a group whose cached tokens cannot beat the best score (a load
        # term is never positive) ends the search, as do all groups after it.
        held: set[int] = set()
        for cached, ids in replicas.cached_levels(req.prefix, req.prompt_tokens, pos.keys()):  # type: ignore[attr-defined]
            held |= ids
            if (-cached, -1) > best_key:
                continue
            for i in ids:
                p = pos[i]
                key = (-(cached - w * replicas[p].outstanding_tokens), p)
                if key < best_key:
                    best_key = key
        # Every other instance has nothing cached (its score is its load term): the first one
        # in increasing (tokens, position) is the best of them, and the walk stops as soon as
        # the load term alone loses.
        walk = ix.ascending(lambda rate, e: e[:2])
        for _, e in walk:
            tokens, p, r = e
            key = (-(0 - w * tokens), p)
            if key > best_key:
                break
            if r.index not in held:
                best_key = key
                break
        walk.close()
        return best_key[1]

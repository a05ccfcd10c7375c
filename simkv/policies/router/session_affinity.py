"""Session affinity: every call of a session goes to the replica that served its first call.

A session's KV (its conversation so far) is cached on one replica; sending the next call
elsewhere recomputes it (or reads it over the network from a shared store). New sessions and
open-loop requests go to the replica with the fewest outstanding tokens. This is the sticky
routing that Continuum and multi-turn serving systems assume; KVShare-style cache-aware
routing generalises it to shared prefixes.
"""

from __future__ import annotations

from dataclasses import dataclass

from simkv.entities.request import Request
from simkv.policies.router.interface import ReplicaLoad
from simkv.policies.router.least_outstanding import LeastOutstanding, LeastOutstandingConfig
from simkv.registry import register


@dataclass(slots=True)
class SessionAffinityConfig:
    pass


@register("router", "session_affinity", SessionAffinityConfig)
class SessionAffinity:
    def __init__(self, cfg: SessionAffinityConfig, **_: object) -> None:
        self.home: dict[int, int] = {}
        self.first = LeastOutstanding(LeastOutstandingConfig())

    def route(self, req: Request, replicas: list[ReplicaLoad], now: float) -> int:
        if req.session < 0:
            return self.first.route(req, replicas, now)
        home = self.home.get(req.session)
        if home is None:
            home = self.home[req.session] = self.first.route(req, replicas, now)
        return home

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
from simkv.policies.router.index import ServingList
from simkv.policies.router.interface import ReplicaLoad
from simkv.policies.router.least_outstanding import LeastOutstanding, LeastOutstandingConfig
from simkv.registry import register


@dataclass(slots=True)
class SessionAffinityConfig:
    pass


@register("router", "session_affinity", SessionAffinityConfig)
class SessionAffinity:
    def __init__(self, cfg: SessionAffinityConfig, **_: object) -> None:
        # session -> (instance id, its position in the list last seen)
        self.home: dict[int, tuple[int, int]] = {}
        self.first = LeastOutstanding(LeastOutstandingConfig())

    def route(self, req: Request, replicas: list[ReplicaLoad], now: float) -> int:
        if req.session < 0:
            return self.first.route(req, replicas, now)
        home = self.home.get(req.session)
        if home is not None:
            index, pos = home
            if pos < len(replicas) and replicas[pos].index == index:
                return pos
            # The list changed (an instance started or left): find the home again.
            ix = replicas.index("tokens") if isinstance(replicas, ServingList) else None
            if ix is not None:
                at = ix.pos.get(index)
                if at is not None:
                    self.home[req.session] = (index, at)
                    return at
            else:
                found = next((p for p, r in enumerate(replicas) if r.index == index), None)
                if found is not None:
                    self.home[req.session] = (index, found)
                    return found
        # A new session, or its home stopped serving: its KV there is gone with it.
        pos = self.first.route(req, replicas, now)
        self.home[req.session] = (replicas[pos].index, pos)
        return pos

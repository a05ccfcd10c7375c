"""The router contract: which replica receives an arriving request."""

from __future__ import annotations

from typing import Protocol

from simkv.entities.request import Request


class ReplicaLoad(Protocol):
    """What a router may read of a replica (no access to its internals)."""

    index: int
    outstanding_requests: int
    outstanding_tokens: int


class Router(Protocol):
    def route(self, req: Request, replicas: list[ReplicaLoad], now: float) -> int:
        """Index of the replica that gets ``req``."""
        ...

"""One shard's share of the request stream, drawn in the shard's own process.

Each shard process builds the run's workload from the same config and seed as one process
would, draws the whole stream (a seeded generator is sequential in its random numbers, so no
process can draw only its own rows) and keeps the rows routed to its instances, numbering
them as the whole run numbers them. Nothing is written between processes and no shard waits
for another: the stream is drawn lazily, chunk by chunk, as the shard's simulation asks for
arrivals, so every shard starts simulating as soon as its process has started. The cost is
drawing the whole stream once per shard, in parallel: about 1 CPU s per million BurstGPT
requests (docs/PERFORMANCE.md), against writing and reading each shard's trace in the parent.

Which rows a shard keeps (``share``): the j-th routed request (requests rejected before
routing, failed in the trace or longer than the model's context, are not routed) goes to
instance j mod N under round robin, so to shard (j mod N) mod k, the shard of that instance;
under any other router to shard j mod k. Requests rejected before routing go to shard 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from simkv.entities.request import Request
from simkv.workload.base import ArrivalBatch, FollowUp

# Most rows handed to the cluster at once.
PIECE = 65536


class ShardStream:
    """The workload a shard simulates: ``inner``'s arrivals, only the rows of shard
    ``shard`` of ``shards``; ``ids()`` gives each kept row's request id in the whole run.
    Anything else is asked of ``inner`` (the trace rows it skipped, its name)."""

    def __init__(self, inner: Any, *, instances: int, shards: int, shard: int,
                 instance_routing: bool, max_model_len: int) -> None:
        if getattr(inner, "closed_loop", False) or hasattr(inner, "sessions_done"):
            raise ValueError("a closed loop is not sharded (follow-ups depend on completions in "
                             "other shards)")
        self.inner = inner
        self.instances, self.shards, self.shard = instances, shards, shard
        self.instance_routing = instance_routing
        self.max_model_len = max_model_len
        self._ids: list[np.ndarray] = []
        self._next_id = 0
        self._routed = 0

    def share(self, batch: ArrivalBatch) -> np.ndarray:
        """Which shard each row of the next ``batch`` of the stream goes to (advances the
        count of routed requests, so call it once per batch, in order)."""
        unrouted = batch.prompt_tokens + batch.output_tokens > self.max_model_len
        if batch.failed is not None:
            unrouted = unrouted | batch.failed.astype(bool)
        j = self._routed + np.cumsum(~unrouted) - 1  # index among routed requests
        self._routed += int((~unrouted).sum())
        k = self.shards
        shard = (j % self.instances) % k if self.instance_routing else j % k
        return np.where(unrouted, 0, shard)

    def arrivals(self, rng: np.random.Generator) -> Iterator[ArrivalBatch]:
        for batch in self.inner.arrivals(rng):
            m = len(batch)
            if not m:
                continue
            keep = np.flatnonzero(self.share(batch) == self.shard)
            self._ids.append(self._next_id + keep)
            self._next_id += m
            # In pieces of at most PIECE rows: the cluster holds its current chunk as Python
            # lists, and a generator's chunk can be a whole trace hour (BurstGPT at 3 req/s
            # per GPU on 1,000 GPUs: ~900k requests, ~150 MB of lists).
            for a in range(0, keep.size, PIECE):
                part = keep[a:a + PIECE]
                yield batch if part.size == m else batch.take(part)

    def ids(self) -> np.ndarray:
        """The whole run's request id of each request this shard received, in its order (its
        own request ids are 0, 1, ...)."""
        return np.concatenate(self._ids) if self._ids else np.empty(0, np.int64)

    def on_complete(self, req: Request, now: float) -> list[FollowUp]:
        return []

    def expected_requests(self) -> int | None:
        """About this shard's share of the whole run's requests (for its progress bar: the
        exact share is known only once the stream is drawn)."""
        total = self.inner.expected_requests()
        if total is None:
            return None
        if self.instance_routing:  # its instances' share of the routed requests
            return total * len(range(self.shard, self.instances, self.shards)) // self.instances
        return len(range(self.shard, total, self.shards))

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (a copy being built): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

"""Moving a running request, with its KV, from one instance to another.

The primitive (``Migrator.migrate(req, src, dst)``) is stop-and-copy:

1. ``src`` takes the request out of its batch between iterations (``detach_running``): its
   progress is kept (tokens generated, first token), its blocks there are freed, and the KV
   tokens it had become ``remote_kv``: KV to receive, as a decode instance of a disaggregated
   pair receives a prefill's (engine/disagg.py).
2. ``dst`` queues it first in line (``attach_running``) and admits it like any request with
   remote KV: a seat and the KV's blocks, then it waits in LOADING while the KV crosses the
   fabric GPU to GPU (NVLink on one node, the nodes' RDMA NICs otherwise), one transfer per
   GPU pair, sharing the links with everything else.
3. When the KV lands, ``dst`` computes the newest token's KV (a prefix-cache hit leaves one
   token too) and the request goes on decoding. ``requests.parquet`` counts the move in
   ``migrations`` and the time from leaving ``src`` to landing in ``migration_pause_s``.

If ``src`` is lost before the KV has left it (a spot grace period that ends), the copies in
flight are dropped and the request recomputes on ``dst`` (``source_lost``): nothing waits
for bytes that will never come. Users: spot preemption with ``spot.on_preempt=migrate``
(engine/faults.py, SpotServe's stateful recovery). Llumnix-style live migration (copying
while the request keeps decoding) extends this module (/work/coord/migration.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from simkv.entities.request import Request, State
from simkv.kv.links import Transfer


@dataclass(slots=True)
class MigrationStats:
    migrated: int = 0
    landed: int = 0
    bytes: float = 0.0
    recomputed: int = 0  # the source was lost before the KV left it


@dataclass(slots=True, eq=False)
class _Move:
    req: Request
    src: Any
    left_at: float
    epoch: int = -1
    transfers: list[Transfer] = field(default_factory=list)


class Migrator:
    def __init__(self, topology: Any, env: Any, replicas: list[Any]) -> None:
        self.topology = topology
        self.env = env
        self.replicas = replicas  # every instance by id (the cluster's list)
        self.stats = MigrationStats()
        self._moves: dict[int, _Move] = {}  # request id -> its move until the KV lands
        # Called with a source instance when its last outgoing move has landed.
        self.on_source_done: Callable[[Any], None] | None = None

    def movable(self, req: Request) -> bool:
        """Only requests computing (prefill under way or decoding) have KV worth moving."""
        return req.state in (State.PREFILLING, State.DECODING) and req.id not in self._moves

    def migrate(self, req: Request, src: Any, dst: Any) -> bool:
        """Move running ``req`` from ``src`` to ``dst`` (call between src's iterations)."""
        if not self.movable(req) or dst.scheduler.admission_error(req):
            return False
        tokens = src.scheduler.detach_running(req, self.env.now)
        src._discharge(req)
        self._moves[req.id] = _Move(req, src, self.env.now)
        self.stats.migrated += 1
        req.migrations += 1
        req.remote_kv = tokens
        if dst.scheduler.on_remote is None:
            dst.scheduler.on_remote = lambda r, dst=dst: self.admitted(r, dst)
        dst.adopt(req)
        return True

    def pending_from(self, src: Any) -> int:
        return sum(1 for m in self._moves.values() if m.src is src)

    def admitted(self, req: Request, dst: Any) -> None:
        """``dst`` took the request (its seat and blocks): move the KV."""
        move = self._moves[req.id]
        move.epoch = req.load_epoch
        model = dst.pool.model
        nbytes = req.remote_kv * model.kv_bytes_per_token
        hw = dst.pool.hw
        paths = [self.topology.path_between_gpus(s, d, hw.nvlink_bandwidth, hw.nvlink_latency_s)
                 for s, d in zip(move.src.slots.gpus, dst.slots.gpus, strict=False)]
        self.stats.bytes += nbytes
        left = [len(paths)]

        def one(t: Transfer) -> None:
            left[0] -= 1
            if left[0]:
                return
            self._done(req)
            if req.load_epoch != move.epoch:
                return  # preempted or lost on dst meanwhile: it recomputes there
            self.stats.landed += 1
            req.remote_kv = 0
            req.migration_pause += t.end - move.left_at
            dst.scheduler._loaded(req)
            dst.poke()

        fabric = self.topology.fabric
        move.transfers = [fabric.start(nbytes / len(paths), p, one, "kv migration") for p in paths]

    def _done(self, req: Request) -> None:
        move = self._moves.pop(req.id, None)
        if move is not None and self.on_source_done is not None and not self.pending_from(move.src):
            self.on_source_done(move.src)

    def source_lost(self, src: Any) -> None:
        """``src`` is gone: KV still to leave it never will; those requests recompute."""
        moves = [m for m in self._moves.values() if m.src is src]
        ids = {id(t) for m in moves for t in m.transfers}
        if ids:
            self.topology.fabric.cancel_transfers(ids)
        for m in moves:
            del self._moves[m.req.id]
            req = m.req
            self.stats.recomputed += 1
            if m.epoch >= 0 and req.state is State.LOADING and req.load_epoch == m.epoch:
                # Admitted, blocks held for the KV: prefill everything instead.
                req.remote_kv = 0
                req.computed = 0
                req.preemptions += 1
                dst = self.replicas[req.replica]
                dst.scheduler._loaded(req)
                dst.poke()
            else:
                req.remote_kv = 0  # still queued (or moved on): it prefills from scratch
                req.computed = 0

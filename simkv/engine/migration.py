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
(engine/faults.py, SpotServe's stateful recovery).

**Live migration** (``Migrator.live(req, src, dst)``, Llumnix, OSDI 2024, arXiv 2406.03243,
section 4.2; its code: llumnix/llumlet/migration_coordinator.py) copies the KV in stages while
the request keeps decoding on ``src``:

1. ``dst`` reserves blocks for the KV as it is now (``reserve_incoming``; no room: the move
   is not started) and the KV crosses the fabric;
2. when a stage lands, the tokens generated meanwhile are the next stage's, with a new
   reservation for them; until they fit in ``last_stage_blocks`` blocks (Llumnix's
   ``migration_last_stage_max_blocks``, 16), for at most ``max_stages`` stages (its
   ``migration_max_stages``, 3; past it the move is aborted, as Llumnix does);
3. the last stage: at the end of ``src``'s iteration in flight the request leaves ``src``
   (``detach_running``), ``dst``'s reservation turns into the request's own blocks, only the
   KV not copied yet crosses the fabric, and ``dst`` goes on from there (the newest token is
   computed in ``dst``'s next iteration, as after any KV hand-over).

The request is paused only for the last stage (``migration_pause_s``); if it finishes, is
preempted on ``src`` or ``dst`` stops serving before the last stage, the move is aborted and
the reservation given back (``stats.aborted``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from simkv.entities.request import Request, State
from simkv.kv.links import Transfer

if TYPE_CHECKING:
    from simkv.policies.scheduler.interface import SchedulerOutput


@dataclass(slots=True)
class MigrationStats:
    migrated: int = 0
    landed: int = 0
    bytes: float = 0.0
    recomputed: int = 0  # the source was lost before the KV left it
    # Live migration: moves started, stages copied while decoding, moves aborted.
    live: int = 0
    stages: int = 0
    aborted: int = 0
    pause_s: float = 0.0  # last-stage pauses, summed


@dataclass(slots=True, eq=False)
class _Live:
    """A live move under way: KV copied so far and blocks reserved on ``dst``."""

    req: Request
    src: Any
    dst: Any
    copied: int = 0  # KV tokens already on dst
    reserved: int = 0  # blocks held for them on dst
    stages: int = 0


@dataclass(slots=True, eq=False)
class _Move:
    req: Request
    src: Any
    left_at: float
    epoch: int = -1
    transfers: list[Transfer] = field(default_factory=list)
    precopied: int = 0  # KV tokens a live move copied before the request left src


def kv_group(pool: Any) -> tuple[Any, ...]:
    """What a request's KV needs of the instance it moves to: the same role, the same KV
    format (the model's KV shape and dtype: engine/kv_format.py; block sizes may differ, a
    move lays the KV out in the destination's blocks) and the same request models served
    (``pools.<name>.serves``: a pool does not take another pool's models)."""
    from simkv.engine.kv_format import kv_format

    fmt = kv_format(pool.model, 0)
    del fmt["block_size"]
    return pool.cfg.role, tuple(fmt.values()), tuple(sorted(pool.cfg.serves))


def compatible(src: Any, dst: Any) -> bool:
    """Whether a request's KV on ``src`` can go on on ``dst``: instances of one pool, or of
    pools of one ``kv_group``. Before, migration=llumnix balanced over every serving instance
    and moved requests between pools of different models (pools=two_models: a Llama-3.1-8B
    request went on decoding on Qwen2.5-14B), and spot migration let the router pick any pool."""
    return src.pool is dst.pool or kv_group(src.pool) == kv_group(dst.pool)


class Migrator:
    def __init__(self, topology: Any, env: Any, replicas: list[Any]) -> None:
        self.topology = topology
        self.env = env
        self.replicas = replicas  # every instance by id (the cluster's list)
        self.stats = MigrationStats()
        self._moves: dict[int, _Move] = {}  # request id -> its move until the KV lands
        self._live: dict[int, _Live] = {}  # request id -> its live move before the last stage
        # Called with a source instance when its last outgoing move has landed.
        self.on_source_done: Callable[[Any], None] | None = None

    def movable(self, req: Request) -> bool:
        """Only requests computing (prefill under way or decoding) have KV worth moving."""
        return (req.state in (State.PREFILLING, State.DECODING) and req.id not in self._moves
                and req.id not in self._live)

    def migrating(self, src: Any) -> int:
        """Live moves off ``src`` still copying (a policy keeps this small)."""
        return sum(1 for m in self._live.values() if m.src is src)

    def migrate(self, req: Request, src: Any, dst: Any) -> bool:
        """Move running ``req`` from ``src`` to ``dst`` (call between src's iterations)."""
        if not self.movable(req) or not compatible(src, dst) or dst.scheduler.admission_error(req):
            return False
        tokens = src.scheduler.detach_running(req, self.env.now)
        src._discharge(req)
        self._hand_over(_Move(req, src, self.env.now), tokens, dst)
        return True

    def _hand_over(self, move: _Move, tokens: int, dst: Any) -> None:
        """``move.req`` has left its source: record the move and let ``dst`` admit it with
        ``tokens`` of remote KV (one hand-over for a stop-and-copy move and a live move's
        last stage, so both count and admit alike)."""
        req = move.req
        self._moves[req.id] = move
        self.stats.migrated += 1
        req.migrations += 1
        req.remote_kv = tokens
        if dst.scheduler.on_remote is None:
            dst.scheduler.on_remote = lambda r, dst=dst: self.admitted(r, dst)
        dst.adopt(req)

    def pending_from(self, src: Any) -> int:
        return sum(1 for m in self._moves.values() if m.src is src)

    def admitted(self, req: Request, dst: Any) -> None:
        """``dst`` took the request (its seat and blocks): move the KV."""
        move = self._moves[req.id]
        move.epoch = req.load_epoch
        model = dst.pool.model
        nbytes = max(0, req.remote_kv - move.precopied) * model.kv_bytes_per_token
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
            if move.precopied:
                self.stats.pause_s += t.end - move.left_at
            dst.scheduler._loaded(req)
            dst.poke()

        fabric = self.topology.fabric
        move.transfers = [fabric.start(nbytes / len(paths), p, one, "kv migration") for p in paths]

    def _done(self, req: Request) -> None:
        move = self._moves.pop(req.id, None)
        if move is not None and self.on_source_done is not None and not self.pending_from(move.src):
            self.on_source_done(move.src)

    # --- live migration (Llumnix) ----------------------------------------------------------
    def live(self, req: Request, src: Any, dst: Any, last_stage_blocks: int = 16,
             max_stages: int = 3) -> bool:
        """Start copying decoding ``req``'s KV from ``src`` to ``dst`` while it runs on."""
        if (req.state is not State.DECODING or not self.movable(req) or not compatible(src, dst)
                or dst.scheduler.admission_error(req)):
            return False
        tokens = decoding_tokens(src, req)
        if tokens < 0:
            return False
        bs = dst.scheduler.block_size
        blocks = -(-tokens // bs)
        if not _reserve(dst, blocks):
            return False
        move = _Live(req, src, dst, reserved=blocks)
        self._live[req.id] = move
        self.stats.live += 1
        self._stage(move, tokens, last_stage_blocks, max_stages)
        return True

    def _paths(self, src: Any, dst: Any) -> list:
        hw = dst.pool.hw
        return [self.topology.path_between_gpus(s, d, hw.nvlink_bandwidth, hw.nvlink_latency_s)
                for s, d in zip(src.slots.gpus, dst.slots.gpus, strict=False)]

    def _stage(self, move: _Live, upto: int, last_blocks: int, max_stages: int) -> None:
        """Copy the KV tokens ``move.copied .. upto`` while the request goes on decoding."""
        req, src, dst = move.req, move.src, move.dst
        nbytes = (upto - move.copied) * dst.pool.model.kv_bytes_per_token
        self.stats.bytes += nbytes
        self.stats.stages += 1
        move.stages += 1
        paths = self._paths(src, dst)
        left = [len(paths)]

        def landed(_: Transfer) -> None:
            left[0] -= 1
            if left[0]:
                return
            move.copied = upto
            now_tokens = decoding_tokens(src, req) if self._still(move) else -1
            if now_tokens < 0:
                self._abort(move)
                return
            bs = dst.scheduler.block_size
            extra = -(-now_tokens // bs) - move.reserved
            if extra > 0 and not _reserve(dst, extra):
                self._abort(move)
                return
            move.reserved += max(0, extra)
            if -(-now_tokens // bs) - move.copied // bs <= last_blocks:
                self._last_stage(move)
            elif move.stages >= max_stages:
                self._abort(move)  # Llumnix drops a move that needs more stages
            else:
                self._stage(move, now_tokens, last_blocks, max_stages)

        for path in paths:
            self.topology.fabric.start(nbytes / len(paths), path, landed, "kv migration")

    def _still(self, move: _Live) -> bool:
        req, src, dst = move.req, move.src, move.dst
        return (req.state is State.DECODING and req.replica == src.index
                and req.id in src.scheduler.running and dst.state == "serving")

    def _abort(self, move: _Live) -> None:
        del self._live[move.req.id]
        move.dst.scheduler.release_incoming(move.reserved)
        move.dst.poke()
        self.stats.aborted += 1

    def _last_stage(self, move: _Live) -> None:
        """At the end of src's iteration in flight: the request leaves src and continues on
        dst from the KV already there plus the last few blocks."""
        src = move.src

        def go(_: Any = None) -> None:
            if not self._still(move):
                self._abort(move)
                return
            req, dst = move.req, move.dst
            del self._live[req.id]
            now = self.env.now
            tokens = src.scheduler.detach_running(req, now)
            src._discharge(req)
            src.poke()
            # The reservation becomes the request's own blocks at its admission on dst.
            dst.scheduler.release_incoming(move.reserved)
            self._hand_over(_Move(req, src, now, precopied=min(move.copied, tokens)), tokens, dst)

        run_end_then(src, go)

    def source_lost(self, src: Any) -> None:
        """``src`` is gone: KV still to leave it never will; those requests recompute."""
        for move in [m for m in self._live.values() if m.src is src or m.dst is src]:
            self._abort(move)
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


def run_end_then(r: Any, fn: Callable[[Any], None]) -> None:
    """Call ``fn(r)`` between ``r``'s iterations: now if it is idle, else at the end of the
    iteration in flight (its run is cut there), after any callback already waiting."""
    if not r.busy:
        fn(r)
        return
    before = r.on_run_end

    def both(rr: Any) -> None:
        r.on_run_end = None
        if before is not None:
            before(rr)
        fn(rr)

    r.on_run_end = both
    r.poke()


# --- an instance as of now -------------------------------------------------------------
# A fast-forwarded decode run commits its iterations (their tokens, their new blocks) when it
# ends; step by step commits each at its end. What migration reads mid-run (Llumnix's
# freeness, a request's KV to copy, room for it on the destination) is read as of now: the
# committed state plus the run's ended iterations (Replica.in_flight; the scheduler's
# need_by). Shaped steps (a KV policy, speculation) are read as committed.


def free_now(r: Any) -> int:
    """KV blocks free on ``r`` now: free in its pool less the new blocks its run's ended
    iterations took (before, the pool as of the run's plan: Llumnix read more free memory
    fast-forwarded than step by step). Read once per instance and pass (it costs about a
    microsecond: Replica.kv_used, compiled)."""
    pool = r.scheduler.pool
    return pool.free - (r.kv_used() - pool.used)


def spare_now(r: Any) -> int:
    """KV blocks ``r`` can give up now: free now less what its iteration in flight takes at
    its end, as step by step reads it (``Replica.spare_blocks`` keeps the whole run's need: a
    fast-forwarded destination refused reservations that step by step took)."""
    s = r.scheduler
    out, k = r.in_flight()
    if out is None or not s._plain:
        return r.spare_blocks()
    return s.pool.free - s.need_by(out, k + 1)


def decoding_tokens(r: Any, req: Request,
                    flight: tuple[SchedulerOutput | None, int] | None = None) -> int:
    """The KV tokens of ``req``, running on ``r``, now, or -1 where it is not decoding now: a
    prompt that a fast-forwarded run joined to its decode batch at planning is still
    prefilling until its iteration ends (scheduler's ``_plan_tail``). ``flight``:
    ``r.in_flight()``, where the caller reads it once for many requests."""
    if req.state is not State.DECODING:
        return -1
    s = r.scheduler
    s.decode.materialise(req)
    out, k = r.in_flight() if flight is None else flight
    if out is None or not s._plain:
        return req.computed
    if k:
        return req.computed + k
    if out.joined:
        for q, _ in out.prefills:
            if q is req:
                return -1
    return req.computed


def _reserve(dst: Any, blocks: int) -> bool:
    """Reserve on ``dst`` what is spare now (step by step: free less its iteration in
    flight's need). Where its run in flight would not fit beside the reservation any more, the
    run is cut after the iteration in flight, where step by step plans next with it."""
    if blocks > spare_now(dst):
        return False
    whole = dst.spare_blocks()
    if not dst.scheduler.reserve_incoming(blocks):
        return False
    if blocks > whole and dst.busy:
        dst.poke()
    return True

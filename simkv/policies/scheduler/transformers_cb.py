"""Hugging Face transformers' continuous batching scheduler, rule for rule (5.17.0).

Read from ``transformers/generation/continuous_batching/`` of the transformers 5.17.0 wheel
(``scheduler.py``: ``Scheduler._process_candidates``, ``FIFOScheduler``,
``PrefillFirstScheduler``; ``continuous_api.py``: ``prepare_next_batch``, ``update_batch``;
``offloading_manager.py``: ``offload_requests``; ``requests.py``:
``create_equivalent_initial_request``). Per step:

1. Candidates, in order. FIFO: the decoding requests, then those part-way through a chunked
   prefill (both in the order they first became active), then the waiting queue in arrival
   order. Prefill-first: part-way prefills before decodes. While ``block_new_requests`` is
   set (after an eviction, until some request finishes) the waiting queue is not offered.
2. For each candidate, in that order: stop when fewer than ``safety_margin`` x blocks are
   free and something is already scheduled, unless it is decoding (FIFO's margin is 0.15,
   prefill-first's 0); skip it when the step's KV read budget (the cache's pages) cannot take
   its cached tokens; its tokens this step are min(what it has left, the token budget left);
   reserve blocks by the engine's rule: when its free room (allocated x block size - cached
   tokens) is below those tokens, or it holds none yet, it gets
   ``(tokens - room + 1) // block_size + 1`` more (one block more than needed at a block
   boundary: the engine's arithmetic, kept); if the pool cannot give them it is skipped
   (an active one is *starved*), and the step stops at a waiting one when no block is free.
   A request is never skipped for lack of a seat except by ``max_requests_per_batch``: the
   step stops when the token budget or the request budget is spent.
3. After planning: if nothing could be scheduled because blocks ran out, or some active
   request starved, the newest starved requests are evicted until the others' demand fits
   (never the last active one). With no CPU swap space (the engine's default,
   ``cpu_offload_space=0``) an eviction is a *soft reset*: the blocks are freed and the request
   goes to the back of the waiting queue to prefill its prompt and generated tokens again.

Every step is planned alone (``num_iterations`` 1): the rules above look at free blocks and
queues each step, so a fast-forwarded run would have to replay them anyway. What simkv does
not model of it: block sharing (prefix caching; off in every measured campaign), CPU
offloading (``cpu_offload_space > 0``), parallel sampling (``num_return_sequences``), sliding-
window layer groups and the decode fast path's block table (``max_blocks_per_request``;
``paged|sdpa`` resolves it to 0).

CUDA graphs (``cuda_graphs``): the engine keys a graph by (query tokens padded to
``query_padding``, KV read padded to ``kv_padding``, longest sequence padded to a power of
two of at least 1,024; ``input_outputs._get_graph_key``, ``model_runner.maybe_pad_inputs``)
and records it the first time a step has that key. With ``cuda_graphs=on_first_use`` a step
whose key is new costs ``engine.graph_capture_s`` plus ``engine.graph_capture_factor`` times
its own price more (an eager forward and the capture: ``model_runner._capture_graph``); keys
in ``precaptured`` are recorded before the run. ``captured`` (default): every key is
recorded already, as in a server that has run a while.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from simkv.config.bounds import bounded, check, require
from simkv.entities.request import Request, State
from simkv.kv.block_pool import BlockPool
from simkv.policies.scheduler.interface import SchedulerOutput
from simkv.registry import register

# scheduler.py: FIFOScheduler's default safety margin, PrefillFirstScheduler's.
DEFAULT_MARGIN = {"fifo": 0.15, "prefill_first": 0.0}
# input_outputs.get_model_kwargs: max_seqlen_k is padded to a power of two, at least this.
MIN_SEQLEN_K = 1024


@dataclass(slots=True)
class TransformersSchedulerConfig:
    """``ContinuousBatchingConfig`` fields of transformers 5.17 that change the schedule."""

    # ContinuousBatchingConfig.scheduler_type: "fifo" (decode first) or "prefill_first".
    scheduler_type: str = "fifo"
    # max_batch_tokens: query tokens per step.
    max_batch_tokens: int = bounded(2048, ge=1)
    # max_requests_per_batch (the engine's fallback when no workload hints: 1,024).
    max_requests_per_batch: int = bounded(1024, ge=1)
    # safety_margin: fraction of blocks kept free from new prefills; None = the scheduler
    # class's default (0.15 FIFO, 0.0 prefill-first).
    safety_margin: float | None = None
    # CUDA graphs: "off" (eager, no keys), "captured" (every key recorded before the run) or
    # "on_first_use" (a step with a new key pays its capture: engine.graph_capture_*).
    cuda_graphs: str = "captured"
    # q_padding_interval_size and kv_padding_interval_size (5.17's defaults: 64, 16,384).
    query_padding: int = bounded(64, ge=1)
    kv_padding: int = bounded(16384, ge=1)
    # Graph keys recorded before the run ("q/kv/seqlen_k", as the engine logs them).
    precaptured: list[str] = field(default_factory=list)
    # The engine has no prefix cache model here (block sharing: not modelled).
    uses_kv_manager: ClassVar[bool] = False

    def __post_init__(self) -> None:
        check(self, "scheduler.")

    def validate(self, prefix: str = "scheduler.") -> None:
        require(self.scheduler_type in DEFAULT_MARGIN,
                f"{prefix}scheduler_type: expected one of {', '.join(DEFAULT_MARGIN)} "
                f"(transformers' SCHEDULER_MAPPING), got {self.scheduler_type!r}")
        m = self.safety_margin
        require(m is None or 0.0 <= m <= 1.0,
                f"{prefix}safety_margin: expected a fraction in [0, 1] (or null for the "
                f"scheduler's default), got {m}")
        require(self.cuda_graphs in ("off", "captured", "on_first_use"),
                f"{prefix}cuda_graphs: expected off, captured or on_first_use, got "
                f"{self.cuda_graphs!r}")
        for key in self.precaptured:
            require(_parse_key(key) is not None,
                    f"{prefix}precaptured: {key!r} is not a graph key q/kv/seqlen_k (three "
                    f"integers, as in a campaign's precapture.csv)")
        require(not self.precaptured or self.cuda_graphs == "on_first_use",
                f"{prefix}precaptured cannot act with {prefix}cuda_graphs="
                f"{self.cuda_graphs}: set cuda_graphs=on_first_use")


def _parse_key(key: str) -> tuple[int, int, int] | None:
    parts = str(key).split("/")
    if len(parts) != 3 or not all(p.strip().lstrip("-").isdigit() for p in parts):
        return None
    q, kv, sk = (int(p) for p in parts)
    return q, kv, sk


def pad_to_interval(size: int, interval: int, cap: int) -> int:
    """transformers' ``utils.pad_to_interval``: the next multiple (one interval at least),
    capped."""
    padded = -(-size // interval) * interval if size > 0 else interval
    return min(padded, cap)


def pad_to_pow2(value: int, cap: int, floor: int = 0) -> int:
    """transformers' ``utils.pad_to_pow2``: the next power of two (at least ``floor``), capped."""
    value = max(value, max(1, floor))
    return min(2 ** math.ceil(math.log2(value)), cap)


@register("scheduler", "transformers", TransformersSchedulerConfig)
class TransformersScheduler:
    """transformers' FIFO / prefill-first continuous batching over its own block rule.

    A request's ``computed`` is the engine's ``position_offset`` (tokens in KV), ``blocks``
    its ``allocated_blocks``; ``prefilling`` and ``decoding`` together are its
    ``active_requests`` in insertion order (``active``).
    """

    def __init__(self, cfg: TransformersSchedulerConfig, *, pool: BlockPool,
                 engine: Any = None, **_: object) -> None:
        cfg.validate()
        self.cfg = cfg
        self.pool = pool
        self.block_size = pool.block_size
        self.waiting: deque[Request] = deque()
        self.active: dict[int, Request] = {}
        self.block_new = False
        self.max_tokens = cfg.max_batch_tokens
        self.max_requests = cfg.max_requests_per_batch
        margin = cfg.safety_margin
        self.margin = DEFAULT_MARGIN[cfg.scheduler_type] if margin is None else margin
        self.prefill_first = cfg.scheduler_type == "prefill_first"
        # Evictions (soft resets) so far, for the validation's preemption counts.
        self.evictions = 0
        self.captures = 0
        self.graphs = cfg.cuda_graphs
        self.keys: set[tuple[int, int, int]] = set()
        for key in cfg.precaptured:
            parsed = _parse_key(key)
            assert parsed is not None  # validate() checked
            self.keys.add(parsed)
        capture_s = getattr(engine, "graph_capture_s", 0.0) or 0.0
        capture_factor = getattr(engine, "graph_capture_factor", 0.0) or 0.0
        self._capture = (float(capture_s), float(capture_factor))
        self._step_decodes: list[Request] = []
        self.starved: list[tuple[Request, int]] = []
        # The last step's plan, for tools that compare it with an engine's (validation).
        self.last_step: tuple[int, int, int, tuple[int, int, int] | None, bool] | None = None

    # --- the Scheduler protocol ---------------------------------------------------------
    def scale_seats(self, ranks: int) -> None:
        """Data-parallel ranks each run this scheduler (ranks assumed balanced)."""
        self.max_tokens = self.cfg.max_batch_tokens * ranks
        self.max_requests = self.cfg.max_requests_per_batch * ranks

    def _peak_blocks(self, req: Request) -> int:
        """Blocks the engine's rule gives a request running alone, at its longest."""
        bs, budget = self.block_size, self.max_tokens
        blocks = pos = 0
        left = req.prompt_tokens
        while left > 0:
            n = min(left, budget)
            room = blocks * bs - pos
            if room < n or blocks == 0:
                blocks += (n - room + 1) // bs + 1
            pos += n
            left -= n
        longest = req.prompt_tokens + req.output_tokens - 1
        return max(blocks, -(-longest // bs))

    def admission_error(self, req: Request) -> str:
        # The engine would wait for ever (or raise) on a request the whole pool cannot hold.
        return "kv_capacity" if self._peak_blocks(req) > self.pool.capacity else ""

    def add_request(self, req: Request) -> None:
        req.state = State.WAITING
        self.waiting.append(req)

    def take_waiting(self) -> list[Request]:
        """Hand back the queued requests that never ran (an evicted one keeps its output)."""
        fresh = [r for r in self.waiting if not (r.preemptions or r.computed or r.generated)]
        self.waiting = deque(r for r in self.waiting if r.preemptions or r.computed or r.generated)
        return fresh

    def evacuate(self, now: float) -> list[Request]:
        """Soft-reset everything running and hand back every queued request."""
        for req in list(self.active.values()):
            self._soft_reset(req)
        out = list(self.waiting)
        self.waiting = deque()
        return out

    def planned_need(self, out: SchedulerOutput) -> int:
        """Blocks are reserved at planning: the step in flight takes no more."""
        return 0

    def pending_prefill_tokens(self) -> int:
        n = sum(r.num_tokens - r.computed for r in self.active.values()
                if r.state is State.PREFILLING)
        return n + sum(r.num_tokens - r.computed for r in self.waiting)

    def num_unfinished(self) -> int:
        return len(self.waiting) + len(self.active)

    # --- planning -----------------------------------------------------------------------
    def _candidates(self) -> list[Request]:
        decoding = [r for r in self.active.values() if r.state is State.DECODING]
        split = [r for r in self.active.values() if r.state is State.PREFILLING]
        first, second = (split, decoding) if self.prefill_first else (decoding, split)
        return first + second + ([] if self.block_new else list(self.waiting))

    def _plan(self, now: float) -> tuple[list[tuple[Request, int]], bool]:
        """One call of the engine's ``_process_candidates``: the (request, query tokens)
        scheduled, in order, and whether an allocation failed. Reserves blocks; activates
        newly admitted requests; records the starved ones in ``self.starved``."""
        pool, bs = self.pool, self.block_size
        budget, requests = self.max_tokens, self.max_requests
        cache_budget = pool.capacity * bs
        margin_blocks = self.margin * pool.capacity
        scheduled: list[tuple[Request, int]] = []
        failed = False
        self.starved: list[tuple[Request, int]] = []
        for req in self._candidates():
            free = pool.free
            decoding = req.state is State.DECODING
            if free < margin_blocks and scheduled and not decoding:
                break
            left = 1 if decoding else req.num_tokens - req.computed
            n = min(left, budget)
            past = req.computed
            if cache_budget < past:
                continue
            room = req.blocks * bs - past
            if room < n or req.blocks == 0:
                need = (n - room + 1) // bs + 1
                if need > free:
                    failed = True
                    if req.state is not State.WAITING:
                        self.starved.append((req, need))
                    elif free == 0:
                        break
                    continue
                pool.allocate(need)
                req.blocks += need
            if req.state is State.WAITING:
                self.waiting.remove(req)
                self.active[req.id] = req
                req.state = State.PREFILLING
                if req.first_scheduled != req.first_scheduled:  # NaN: first admission
                    req.first_scheduled = now
            scheduled.append((req, n))
            budget -= n
            cache_budget -= past
            requests -= 1
            if budget == 0 or cache_budget <= 0 or requests <= 0:
                break
        return scheduled, failed

    def _soft_reset(self, req: Request) -> None:
        """The engine's eviction without CPU swap space: blocks freed, back of the queue,
        prompt and generated tokens to prefill again."""
        del self.active[req.id]
        self.pool.release(req.blocks)
        req.blocks = 0
        req.computed = 0
        req.preemptions += 1
        req.state = State.WAITING
        self.waiting.append(req)
        self.evictions += 1

    def _offload(self) -> int:
        """``OffloadingManager.offload_requests``: evict the newest starved requests until
        the rest's demand fits the free blocks; never the last active request."""
        starved = self.starved
        if not starved:
            return 0
        free = self.pool.free
        demand = sum(n for _, n in starved)
        victims: list[Request] = []
        while demand > free and starved and len(self.active) - len(victims) > 1:
            req, n = starved.pop()
            victims.append(req)
            demand -= n
            free += req.blocks
        for req in reversed(victims):
            self._soft_reset(req)
        if victims:
            self.block_new = True
        return len(victims)

    def schedule(self, now: float) -> SchedulerOutput | None:
        if not self.active and not self.waiting:
            return None
        scheduled, failed = self._plan(now)
        while not scheduled and failed:
            if self._offload() == 0:
                raise ValueError("transformers scheduler: no request can be scheduled and none "
                                 "can be evicted (a request larger than the KV pool)")
            scheduled, failed = self._plan(now)
        if not scheduled:
            return None
        if self.starved:
            self._offload()
        out = SchedulerOutput()
        self._fill(out, scheduled)
        return out

    def _fill(self, out: SchedulerOutput, scheduled: list[tuple[Request, int]]) -> None:
        """The step's aggregates for the cost model, and its graph key."""
        decodes = ctx = kv_read = longest = 0
        step_decodes = self._step_decodes = []
        for req, n in scheduled:
            c = req.computed
            kv_read += c
            if c + n > longest:
                longest = c + n
            if req.state is State.DECODING:
                decodes += 1
                ctx += c + 1
                step_decodes.append(req)
                continue
            out.prefills.append((req, n))
            out.prefill_tokens += n
            out.prefill_attn_pairs += n * c + n * (n + 1) / 2
            out.prefill_kv_tokens += c + n
            if c + n == req.num_tokens:
                out.num_sampled += 1
        out.num_decodes = decodes
        out.num_sampled += decodes
        if decodes:
            out.decode_context = (ctx,)
        q = out.prefill_tokens + decodes
        key = None
        new = False
        if self.graphs != "off":
            cap = self.pool.capacity * self.block_size
            key = (pad_to_interval(q, self.cfg.query_padding, self.max_tokens),
                   pad_to_interval(kv_read, self.cfg.kv_padding, cap),
                   pad_to_pow2(longest, cap, MIN_SEQLEN_K))
            if self.graphs == "on_first_use" and key not in self.keys:
                self.keys.add(key)
                self.captures += 1
                new = True
                out.capture = True
        self.last_step = (len(scheduled), q, kv_read, key, new)

    # --- committing ---------------------------------------------------------------------
    def update(self, out: SchedulerOutput, done: int, ends: Sequence[float]) -> list[Request]:
        end = float(ends[0])
        finished: list[Request] = []
        for req in self._step_decodes:
            req.computed += 1
            req.generated += 1
            if req.generated >= req.output_tokens:
                self._finish(req, end, finished)
        for req, n in out.prefills:
            req.computed += n
            if req.computed < req.num_tokens:
                continue
            req.generated += 1
            if req.first_token != req.first_token:  # NaN: the first token
                req.first_token = end
            req.state = State.DECODING
            if req.generated >= req.output_tokens:
                self._finish(req, end, finished)
        return finished

    def _finish(self, req: Request, end: float, finished: list[Request]) -> None:
        req.finish = end
        del self.active[req.id]
        self.pool.release(req.blocks)
        req.blocks = 0
        req.state = State.FINISHED
        finished.append(req)
        self.block_new = False

    # --- checks -------------------------------------------------------------------------
    def check_invariants(self) -> None:
        self.pool.check_invariants(sum(r.blocks for r in self.active.values()))
        if any(r.state not in (State.PREFILLING, State.DECODING) for r in self.active.values()):
            raise AssertionError("an active request is neither prefilling nor decoding")
        if any(r.state is not State.WAITING or r.blocks for r in self.waiting):
            raise AssertionError("a waiting request holds blocks or has the wrong state")

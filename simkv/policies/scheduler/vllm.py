"""Continuous batching as in vLLM: iteration-level scheduling over a paged KV cache.

Per iteration (one call of ``schedule``):

1. every decoding request gets one token; if the KV pool cannot hold the new blocks, the
   most recently admitted running request is preempted by *recompute* (its blocks are freed
   and it re-enters the front of the waiting queue, to re-prefill prompt + generated tokens,
   vLLM's default since v0.x and the only mode of v1);
2. requests part-way through a chunked prefill get the next chunk, in admission order;
3. if nothing was preempted, waiting requests are admitted first-come-first-served while
   ``max_num_seqs``, the token budget ``max_num_batched_tokens`` and the KV pool allow; the
   head of the queue blocks the rest (no skipping).

With ``chunked_prefill`` (vLLM v1, Sarathi-Serve) prefill chunks share iterations with
decodes and decodes are served first. Without it (vLLM v0's default) a prompt is prefilled
whole, in a prefill-only iteration, and prefills take priority over decodes (Orca-like
iteration-level scheduling without piggybacking).

References read: vLLM v0 ``vllm/core/scheduler.py`` (decode-first budget with chunked
prefill, prefill-first without it), v1 ``vllm/v1/core/sched/scheduler.py`` (one token
budget, preempt the last running request); docs/ARCHITECTURE.md lists where simkv differs.

Split along two seams into base classes of ``VLLMScheduler``: vllm_moves.py (requests and KV
moving between instances: migration, a disaggregated handoff, borrowing, evacuation) and
vllm_shaped.py (steps shaped by a KV policy, a model kind or speculative decoding).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from simkv.config.bounds import bounded, check, require
from simkv.engine.decode_batch import DecodeBatch
from simkv.entities.model import ModelSpec
from simkv.entities.request import DECODING, FINISHED, LOADING, PREFILLING, WAITING, Request
from simkv.kv.block_pool import BlockPool, blocks_for
from simkv.kv.manager import KVManager, Match, may_hit
from simkv.policies.kv_policy.interface import KVPolicyBase
from simkv.policies.scheduler.interface import SchedulerOutput, new_output
from simkv.policies.scheduler.vllm_moves import InstanceMoves
from simkv.policies.scheduler.vllm_shaped import ShapedSteps
from simkv.registry import register


@dataclass(slots=True)
class VLLMSchedulerConfig:
    """vLLM's SchedulerConfig fields that change the schedule."""

    max_num_seqs: int = bounded(256, ge=1)
    max_num_batched_tokens: int = bounded(8192, ge=1)
    chunked_prefill: bool = True

    def __post_init__(self) -> None:
        check(self, "scheduler.")

    def validate(self, prefix: str = "scheduler.") -> None:
        require(self.max_num_batched_tokens >= self.max_num_seqs,
                f"{prefix}max_num_batched_tokens ({self.max_num_batched_tokens}) must be >= "
                f"{prefix}max_num_seqs ({self.max_num_seqs}), as vLLM requires")


class _SchedulerRoot:
    """An empty first base: the compiled build makes it an extension type (vllm.pxd), so that
    VLLMScheduler can be one while its two mixins stay Python classes."""

    __slots__ = ()


class VLLMScheduler(_SchedulerRoot, InstanceMoves, ShapedSteps):
    def __init__(self, cfg: VLLMSchedulerConfig, *, pool: BlockPool, max_fast_forward: int,
                 kv: KVManager | None = None, kv_policy: KVPolicyBase | None = None,
                 model: ModelSpec | None = None, speculative: Any = None, **_: object) -> None:
        self.cfg = cfg
        self.pool = pool
        self.block_size = pool.block_size
        self.max_fast_forward = max(1, max_fast_forward)
        self.waiting: deque[Request] = deque()
        # Admission order; the last entry is the preemption victim.
        self.running: dict[int, Request] = {}
        self.prefilling: dict[int, Request] = {}
        # Admitted requests whose cached KV is still in transit (vLLM v1's
        # WAITING_FOR_REMOTE_KVS): they hold blocks and a seat, but no work until it lands.
        self.loading: dict[int, Request] = {}
        self.kv = kv
        if kv is not None:
            kv.on_loaded = self._loaded
        # What admission asks the KV manager for a request's cached KV (a hook: the kvshare
        # scheduler extends the exact prefix match with near-duplicate granules).
        self._match = kv.match if kv is not None else None
        # Resizes a running prefill's next chunk (req, n, budget) -> n; None: n as planned.
        self._sized: Callable[[Request, int, int], int] | None = None
        # Plain: full KV of an autoregressive model, the closed-form decode batch. Otherwise
        # a KV policy or a model kind shapes the steps (engine/steps.py); the hooks below
        # branch on this flag only, so the plain path runs the code it always ran.
        # Speculative decoding (policies/speculative/) also shapes the steps: k + 1 query
        # tokens per sequence, a sampled number of tokens emitted.
        spec = speculative if speculative is not None and speculative.active else None
        self._plain = spec is None and (kv_policy is None or (kv_policy.is_full and (
            model is None or model.kind == "autoregressive")))
        self.policy = kv_policy
        self.model = model
        if self._plain:
            self.decode = DecodeBatch(pool.block_size)
        else:
            self._shaped_init(kv_policy, model, kv, spec)
        # Disaggregated serving: finished prefills whose KV is still moving to a decode
        # instance (their blocks stay allocated), and the callback that starts a transfer when
        # a request with remote KV is admitted here.
        self.held: dict[int, Request] = {}
        # Blocks reserved for the KV of requests migrating here live (engine/migration.py).
        self.reserved_in = 0
        self.on_remote: Callable[[Request], None] | None = None
        # Hot-path copies of config values (attribute chains cost on every iteration).
        self.chunked = cfg.chunked_prefill
        # A prompt may be split across iterations (chunked prefill); Orca mixes whole prompts
        # with decodes and never splits one (policies/scheduler/orca.py).
        self.split_prompts = cfg.chunked_prefill
        self.max_tokens = cfg.max_num_batched_tokens
        self.max_seqs = cfg.max_num_seqs
        # Prompt tokens of the plan in flight's chunks not committed at planning (prefilling_ahead).
        self.prefill_in_flight = 0

    def scale_seats(self, ranks: int) -> None:
        """An instance of ``ranks`` data-parallel ranks: seats and token budget are per rank
        (vLLM runs one scheduler per DP rank; simkv one for all, ranks assumed balanced)."""
        self.max_tokens = self.cfg.max_num_batched_tokens * ranks
        self.max_seqs = self.cfg.max_num_seqs * ranks

    # --- queue --------------------------------------------------------------------------
    def admission_error(self, req: Request) -> str:
        # The longest sequence it will ever hold in KV: prompt + output - 1 tokens.
        longest = req.prompt_tokens + req.output_tokens - 1
        if not self._plain:
            return self._shaped_admission_error(req)
        pool = self.pool
        # Its own pool (as before any lending or borrowing) plus what its peers could lend.
        if blocks_for(longest, self.block_size) > pool.capacity - pool.borrowed + pool.lent + pool.reach:
            return "kv_capacity"
        if not self.cfg.chunked_prefill and longest > self.cfg.max_num_batched_tokens:
            return "token_budget"
        return ""

    def add_request(self, req: Request) -> None:
        req.state = WAITING
        self.waiting.append(req)

    def take_waiting(self) -> list[Request]:
        """Hand back the queued requests that never ran (a draining instance's): the
        preempted ones stay, their progress and any swapped KV are here."""
        fresh = [r for r in self.waiting if not (r.preemptions or r.computed or r.generated)]
        if fresh:
            self._requeue([r for r in self.waiting if r.preemptions or r.computed or r.generated])
        return fresh

    def _requeue(self, keep: list[Request]) -> None:
        self.waiting = deque(keep)

    def pending_prefill_tokens(self) -> int:
        """Tokens still to prefill of the queued and part-way requests, less the chunks of the
        iteration in flight (O(queue): routers ask)."""
        return self.prefilling_ahead() + sum(r.num_tokens - r.computed - (r.remote_kv or 0)
                                             for r in self.waiting)

    def prefilling_ahead(self) -> int:
        """Prompt tokens of the admitted requests not yet scheduled: a chunk counts as done
        once planned, as vLLM advances ``num_computed_tokens`` when it schedules. A chunk
        whose plan carries the decode run after it is committed at planning (_plan_tail);
        ``prefill_in_flight`` takes the others off at planning too, so what routers and
        shedding read is the same whether runs are planned step by step or fast-forwarded
        (before, a prompt's last chunk in flight counted step by step only: slo_aware's p99
        TTFT moved by 12% with ``engine.max_fast_forward``; tests/test_engine.py)."""
        return (sum(r.num_tokens - r.computed for r in self.prefilling.values())
                - self.prefill_in_flight)

    def num_unfinished(self) -> int:
        return len(self.waiting) + len(self.running) + len(self.held)

    def plans_nothing(self) -> bool:
        """Whether ``schedule`` would now return None and change nothing: no request runs or
        waits and no prefetch is due (engine/disagg.py skips such a plan where it is provably
        the next thing that happens). False for a subclass that replaces ``schedule``."""
        if type(self).schedule is not VLLMScheduler.schedule:
            return False
        kv = self.kv
        return not self.running and not self.waiting and (kv is None or not kv.ready)

    # --- planning -----------------------------------------------------------------------
    def _preempt_last(self, now: float, may_swap: bool = True) -> Request:
        """Preempt the victim ``_victim`` chooses (vLLM: the last admitted request)."""
        rid, victim = self._victim()
        return self._preempt(rid, victim, now, may_swap)

    def _victim(self) -> tuple[int, Request]:
        """Remove and return the running request a preemption takes (a hook: the priority
        scheduler takes the lowest class first)."""
        return self.running.popitem()

    def _preempt(self, rid: int, victim: Request, now: float, may_swap: bool = True) -> Request:
        """Preempt ``victim`` (already removed from ``running``) by recompute or swap."""
        state = victim.state
        if state is DECODING:
            self.decode.leave(victim)
            victim.blocks = blocks_for(victim.computed, self.block_size) - victim.shared
        elif state is LOADING:
            del self.loading[rid]
        else:
            del self.prefilling[rid]
        kv = self.kv
        if state is LOADING and victim.remote_kv:
            # Its KV was still on the way from a prefill instance: that transfer lands unheeded
            # and the request will prefill here from scratch (recompute, as any preemption).
            self.pool.release(victim.blocks)
            victim.remote_kv = 0
            victim.load_epoch += 1
        elif kv is None:
            self.pool.release(victim.blocks)
        else:
            if state is LOADING:
                kv.abort_load(victim)
            self.pool.release(kv.release(victim, now, finished=False,
                                         may_swap=may_swap and state is not LOADING))
        victim.blocks = 0
        victim.computed = 0
        victim.preemptions += 1
        victim.state = WAITING
        self.waiting.appendleft(victim)
        return victim

    def schedule(self, now: float) -> SchedulerOutput | None:
        kv = self.kv
        if kv is not None and kv.ready:
            # Tool-call prefetches due (tool_kv=prefetch) take blocks before anything is planned.
            kv.start_prefetches(self.pool.free - (self.decode.need_next() if self.decode.members else 0))
        if not self.running and not self.waiting:
            return None
        if not self.chunked:
            out = self._schedule_prefill_first(now)
            if out is not None:
                return out
        pool = self.pool
        dec = self.decode
        bs = self.block_size
        plain = self._plain
        preempted = False
        need = dec.need_next() if dec.members else 0
        # NOTE: hot-path inlines (compiled or not, each call costs more than its body):
        # pool.capacity - pool.used - pool.pinned is BlockPool.free, len(dec.members) is
        # len(dec), req.prompt_tokens + req.generated is Request.num_tokens.
        if need > pool.capacity - pool.used - pool.pinned:
            if pool.borrow is not None:
                pool.borrow(need - pool.free)  # other instances' memory before preempting
            while need > pool.free:
                self._preempt_last(now)
                preempted = True
                need = dec.need_next() if dec.members else 0
        budget = self.max_tokens - len(dec.members)
        out = new_output()
        if self.chunked:
            # 2. chunks of prefills already under way, in admission order.
            for req in list(self.prefilling.values()) if self.prefilling else ():
                if budget <= 0:
                    break
                if req.state is not PREFILLING:
                    continue  # preempted while planning an earlier chunk
                n = min(req.num_tokens - req.computed, budget)
                if self._sized is not None:
                    n = self._sized(req, n, budget)
                # NOTE: under a KV policy a chunk may hold fewer blocks than the last one
                # held (EpiCache evicts after each block): extra < 0 gives them back.
                extra = (blocks_for(req.computed + n, bs) if plain
                         else self._held_blocks(req.computed, n)) - req.blocks - req.shared
                if extra > pool.free - need and pool.borrow is not None:
                    pool.borrow(extra - pool.free + need)
                while extra > pool.free - need:
                    victim = self._preempt_last(now)
                    preempted = True
                    need = dec.need_next() if dec.members else 0
                    budget = self.max_tokens - len(dec) - out.prefill_tokens
                    if victim is req:
                        break
                if req.state is not PREFILLING:
                    continue
                pool.allocate(extra)
                req.blocks += extra
                budget -= self._add_chunk(out, req, n)
            # 3. admit waiting requests, first come first served (after a preemption only
            # if it emptied the instance: memory lent away can take the last request's room,
            # and an empty instance that waited for the next plan would wait for ever).
            if self.waiting and (not preempted or not self.running):
                budget = self._admit(out, budget, need, now)
        if not out.prefills and not dec.members:
            # Nothing can run: every waiting request is blocked (cannot happen while the
            # replica is empty, since admission_error rejects what never fits).
            return None
        self._plan_decodes(out, need, preempted, now)
        if out.prefills and not out.joined:
            self._in_flight(out)
        return out

    def _admit(self, out: SchedulerOutput, budget: int, need: int, now: float) -> int:
        pool = self.pool
        bs = self.block_size
        waiting = self.waiting
        running = self.running
        kv = self.kv
        while waiting and budget > 0 and len(running) < self.max_seqs:
            req = waiting[0]
            if req.remote_kv:
                if not self._admit_remote(req, need, now):
                    break
                continue
            if kv is not None and req.computed == 0 and may_hit(req):
                m = self._match(req)  # type: ignore[misc]
                if m is not None:
                    left = self._admit_hit(out, req, m, budget, need, now)
                    if left is None:
                        break
                    budget = left
                    continue
            remaining = req.prompt_tokens + req.generated - req.computed
            if remaining > budget and not self.split_prompts:
                break
            n = min(remaining, budget)
            extra = (-(-(req.computed + n) // bs) if self._plain  # blocks_for
                     else self._held_blocks(req.computed, n)) - req.blocks
            if (extra > pool.capacity - pool.used - pool.pinned - need
                    and not self._borrow(extra, need)):
                break
            waiting.popleft()
            pool.allocate(extra)
            req.blocks += extra
            self._seat(req, now)
            self.prefilling[req.id] = req
            budget -= self._add_chunk(out, req, n)
        return budget

    def _admit_hit(self, out: SchedulerOutput, req: Request, m: Match, budget: int, need: int,
                   now: float) -> int | None:
        """Admit the queue's head, which found cached KV; None if it does not fit now."""
        kv = self.kv
        assert kv is not None
        pool = self.pool
        if m.load_blocks:
            # Cached below HBM: take the seat and the blocks now, prefill once it lands.
            if m.pin_blocks + m.load_blocks > pool.free - need and not self._borrow(
                    m.pin_blocks + m.load_blocks, need):
                return None
            self.waiting.popleft()
            self._seat(req, now)
            kv.acquire(req, m, now)
            req.state = LOADING
            self.loading[req.id] = req
            return budget
        hit = len(m.keys) * kv.G
        remaining = req.num_tokens - hit
        if remaining > budget and not self.split_prompts:
            return None
        n = min(remaining, budget)
        extra = blocks_for(hit + n, self.block_size) - req.blocks - len(m.keys) * kv.gb
        if extra + m.pin_blocks > pool.free - need and not self._borrow(extra + m.pin_blocks, need):
            return None
        self.waiting.popleft()
        kv.acquire(req, m, now)
        pool.allocate(extra)
        req.blocks += extra
        self._seat(req, now)
        self.prefilling[req.id] = req
        return budget - self._add_chunk(out, req, n)

    def _seat(self, req: Request, now: float) -> None:
        req.state = PREFILLING
        if req.first_scheduled != req.first_scheduled:  # NaN: first admission
            req.first_scheduled = now
        self.running[req.id] = req

    def _loaded(self, req: Request) -> None:
        """Every transfer of a LOADING request landed: it prefills from the next plan on."""
        del self.loading[req.id]
        req.state = PREFILLING
        self.prefilling[req.id] = req

    def _schedule_prefill_first(self, now: float) -> SchedulerOutput | None:
        """vLLM v0 without chunked prefill: whole prompts, in prefill-only iterations."""
        if not self.waiting and not self.prefilling:
            return None
        # Decodes keep their next blocks: a prefill may not take what they need now.
        need = self.decode.need_next() if self.decode.members else 0
        pool = self.pool
        if need > pool.capacity - pool.used - pool.pinned:  # pool.free
            return None  # the decode path preempts
        out = new_output()
        budget = self.cfg.max_num_batched_tokens
        # Seated requests whose KV landed (a prefill instance's hand-off, a hit loaded from
        # below HBM) prefill the rest of their prompt whole, before new admissions. Without
        # this they waited for ever: only the chunked path planned them (the event queue ran
        # dry with pools=pd_split or offload=dram and chunked_prefill=false, or lightllm).
        for req in list(self.prefilling.values()):
            n = req.prompt_tokens + req.generated - req.computed  # req.num_tokens - computed
            extra = (blocks_for(req.computed + n, self.block_size) if self._plain
                     else self._held_blocks(req.computed, n)) - req.blocks - req.shared
            if n > budget or extra > self.pool.free - need:
                break
            self.pool.allocate(extra)
            req.blocks += extra
            budget -= self._add_chunk(out, req, n)
        if self.waiting:
            self._admit(out, budget, need, now)
        if not out.prefills:
            return None
        out.num_sampled = len(out.prefills)
        self._in_flight(out)
        return out

    def _in_flight(self, out: SchedulerOutput) -> None:
        """Remember the prompt tokens ``out``'s chunks take off what is pending (committed by
        ``update``)."""
        n = 0
        for _, k in out.prefills:
            n += k
        self.prefill_in_flight = n

    @staticmethod
    def _add_chunk(out: SchedulerOutput, req: Request, n: int) -> int:
        """Add ``req``'s next ``n`` prompt tokens to the iteration; returns the tokens they
        take of the token budget (``n``; less under kvshare's partial recompute)."""
        c = req.computed
        out.prefills.append((req, n))
        out.prefill_tokens += n
        out.prefill_attn_pairs += n * c + n * (n + 1) / 2
        out.prefill_kv_tokens += c + n
        if c + n == req.prompt_tokens + req.generated:  # req.num_tokens
            out.num_sampled += 1
        return n

    def _plan_decodes(self, out: SchedulerOutput, need: int, preempted: bool, now: float) -> None:
        if not self._plain:
            self._plan_shaped(out, need, preempted, now)
            return
        dec = self.decode
        b = len(dec.members)
        out.num_decodes = b
        out.num_sampled += b
        out.first_need = need
        if out.prefills:
            if b:  # before _plan_tail joins the prefilled requests
                out.decode_context = (dec.context_sum() + b,)
            if not preempted and self.max_fast_forward > 1:
                self._plan_tail(out, need, now)
            return
        if preempted:
            k = 1
        else:
            # A decode-only batch keeps its composition until the first member finishes or
            # the pool runs out of blocks (arrivals cut the run from the engine's side).
            k = min(dec.ticks_to_first_finish(), self.max_fast_forward)
        start = dec.context_sum() + b  # context attended to by the first tick (+ new tokens)
        pool = self.pool
        evictable = pool.cached > pool.pinned
        if k > 1 and (evictable or pool.free < b * (k // self.block_size + 1)):
            # The pool may run dry within k ticks: stop the run at the last tick it can hold.
            cum = dec.cumulative_need(k)
            k = max(1, int(np.searchsorted(cum, pool.free, side="right")))
            if k > 1 and evictable:
                k = _until_eviction(cum[:k], pool.capacity - pool.used - pool.cached, k)
        out.num_iterations = k
        # NOTE: a range, not an array: runs are short at moderate load (arrivals cut them),
        # and the cost model only turns long ones into numpy.
        out.decode_context = range(start, start + b * k, b)

    def _plan_tail(self, out: SchedulerOutput, need: int, now: float) -> None:
        """Plan the decode run that follows a prefill iteration, in the same SchedulerOutput.

        Only when every chunk completes its prompt and none finishes on its first token:
        then the batch after the first iteration is known now, so its requests join the
        decode batch (from the next-but-one tick) and one plan covers both. This halves the
        engine's planning work per arrival; results equal step-by-step planning.

        Not when requests still wait and this iteration used the whole token budget: the
        budget, not memory or seats, held them back, and the next iteration has it again.
        Nor behind a prompt whose KV the prefix cache takes (``may_hit``): it enters the cache
        when its iteration ends, which a run planned past that instant would not show to the
        routers and transfers that read it meanwhile.
        """
        if self.waiting and out.prefill_tokens + len(self.decode.members) >= self.max_tokens:
            return
        kv = self.kv
        for req, n in out.prefills:
            if (req.computed + n < req.prompt_tokens + req.generated
                    or req.generated + 1 >= req.output_tokens):
                return
            if kv is not None and may_hit(req):
                # NOTE: its prompt's KV enters the prefix cache when its iteration ends, as
                # planned alone: committed here, a cache-reading router (and a write-through
                # copy's transfer) would see it an iteration early, and fast-forwarded runs
                # would route otherwise than step by step (docs/ARCHITECTURE.md).
                return
        dec = self.decode
        plain = self._plain
        free_before = 0 if plain else self.pool.free
        for req, n in out.prefills:
            # NOTE: the first iteration always completes (runs are only cut after the
            # iteration in flight), so committing the prefill's progress now is safe.
            req.computed += n
            req.generated += 1
            del self.prefilling[req.id]
            dec.join(req, skip=1)
        b = len(dec.members)
        k = min(dec.ticks_to_first_finish(), self.max_fast_forward) - 1
        pool = self.pool
        free = pool.capacity - pool.used - pool.pinned - need
        # NOTE: k >= 1, not k > 1: unlike a plain decode run, whose first tick the preemption
        # loop has made room for, even the first tail tick may not fit.
        evictable = plain and pool.cached > pool.pinned
        if k >= 1 and (not plain or evictable or free < b * (k // self.block_size + 1)):
            cum = dec.cumulative_need(k, skip=1)
            k = int(np.searchsorted(cum, free, side="right"))
            if k >= 1 and evictable:
                unused = pool.capacity - pool.used - pool.cached - need
                k = 0 if unused < 0 else _until_eviction(cum[:k], unused, k)
        if not plain and self.waiting and self.pool.free > free_before:
            # The joins gave blocks back (a policy evicts after the prefill): the queue's head
            # may fit now, so replan after the prefill iteration, as step by step would.
            k = 0
        if k <= 0:
            k = 0
        out.num_iterations = 1 + k
        out.tail_decodes = b
        out.joined = True
        if not plain:
            out.tail_context = dec.reads(k, skip=1)  # type: ignore[attr-defined]
            arrays = dec.step_arrays(k, skip=1) if k else None  # type: ignore[attr-defined]
            if arrays is not None:
                self._plan_of(out).tail = arrays
            return
        start = dec.context_sum(skip=1) + b
        out.tail_context = range(start, start + b * k, b)

    # --- committing ---------------------------------------------------------------------
    def update(self, out: SchedulerOutput, done: int, ends: Sequence[float]) -> list[Request]:
        finished: list[Request] = []
        dec = self.decode
        self.prefill_in_flight = 0  # its chunks are committed now
        if out.num_decodes or out.tail_decodes:
            self.pool.allocate(out.first_need + (dec.need_over(done - 1, skip=1) if done > 1 else 0)
                               if out.prefills else dec.need_over(done))
            t0 = dec.ticks
            for req in dec.advance(done):
                tick = req.output_tokens - req.gen_base  # the tick that produced its last token
                req.finish = float(ends[tick - t0 - 1])
                self._finish_decoding(req)
                finished.append(req)
        if out.prefills:
            end = float(ends[0])
            if out.joined:
                # Progress was committed at planning time (see _plan_tail).
                for req, _ in out.prefills:
                    if req.first_token != req.first_token:  # NaN: the first token
                        req.first_token = end
                return finished
            kv = self.kv
            for req, n in out.prefills:
                req.computed += n
                if req.computed < req.prompt_tokens + req.generated:  # req.num_tokens
                    continue
                req.generated += 1
                if req.first_token != req.first_token:  # NaN: the first token
                    req.first_token = end
                del self.prefilling[req.id]
                uses_kv = kv is not None and may_hit(req)
                if uses_kv:
                    kv.publish(req, end)  # type: ignore[union-attr]
                if req.generated >= req.output_tokens:
                    req.finish = end
                    del self.running[req.id]
                    if req.hold_kv:
                        self.held[req.id] = req  # its KV moves to a decode instance first
                    else:
                        self.pool.release(kv.release(req, end, True) if uses_kv  # type: ignore[union-attr]
                                          else req.blocks)
                        req.blocks = 0
                    req.state = FINISHED
                    finished.append(req)
                else:
                    dec.join(req)
        return finished

    def _finish_decoding(self, req: Request) -> None:
        self.decode.leave(req)
        del self.running[req.id]
        blocks = blocks_for(req.computed, self.block_size) - req.shared
        if self.kv is not None and may_hit(req):
            req.blocks = blocks
            blocks = self.kv.release(req, req.finish, True)
        self.pool.release(blocks)
        req.blocks = 0
        req.state = FINISHED

    # --- checks -------------------------------------------------------------------------
    def check_invariants(self) -> None:
        held = (self.decode.held_blocks() + sum(r.blocks for r in self.prefilling.values())
                + self.reserved_in
                + sum(r.blocks for r in self.loading.values())
                + sum(r.blocks for r in self.held.values())
                + (self.kv.private_blocks if self.kv is not None else 0))
        self.pool.check_invariants(held)
        states = [r.state for r in self.running.values()]
        if any(s not in (PREFILLING, DECODING, LOADING) for s in states):
            raise AssertionError("a running request is neither loading, prefilling nor decoding")
        if len(self.prefilling) + len(self.decode) + len(self.loading) != len(self.running):
            raise AssertionError("running != loading + prefilling + decoding")
        if self.kv is not None:
            self.kv.check_invariants([*self.running.values(), *self.held.values()])
        if any(r.state is not WAITING or r.blocks or r.shared for r in self.waiting):
            raise AssertionError("a waiting request holds blocks or has the wrong state")
        if len(self.running) > self.max_seqs:
            raise AssertionError("more running requests than max_num_seqs")


def _until_eviction(cum: np.ndarray, unused: int, k: int) -> int:
    """The iterations of a run of ``k`` (their blocks' cumulative need ``cum``) up to the
    first whose blocks evict cached prefixes, that one included.

    Evictable cached blocks count as free, but taking them evicts prefixes a router reads
    and a demotion copies below: a run ends with the first iteration that takes them, so
    they are evicted at that iteration's end, as step by step does (docs/ARCHITECTURE.md).
    """
    if cum[-1] <= unused:
        return k
    return int(np.searchsorted(cum, unused, side="right")) + 1


# (not a decorator: the compiled build's extension types take none)
register("scheduler", "vllm", VLLMSchedulerConfig)(VLLMScheduler)

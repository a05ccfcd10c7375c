"""BatchLLM: large offline batches with prefixes shared across requests known in advance
(Zheng et al., arXiv 2412.03594).

vLLM serves a batch in arrival order and finds shared prefixes implicitly (its LRU prefix
cache): requests of one prefix are spread over the whole batch, so a prefix may be computed
again (two requests prefilling it in the same iteration, or after it was evicted) and stays
resident for the batch's whole life. BatchLLM makes the sharing explicit:

* **global prefix tree**: every request's prefix (its granule ids) goes into a trie; a
  request's *group* is its deepest prefix shared with at least one other request (the
  paper's prefix-sharing groups; a root shared by all groups is shared as well, being a
  prefix of every group's);
* **groups scheduled together**: the queue holds each group contiguously; the first member
  prefills the group's prefix and the others wait until it is cached (``hold``), so the
  prefix is computed once and its blocks live only while its group runs;
* **decode-first order**: groups, and requests within a group, in decreasing share of
  decoding (expected output over prompt tokens), so decode-heavy requests start early and
  their decodes fill the iterations of the later prefills;
* **memory-centric token batching** (``memory_centric``): instead of a cap of
  ``max_num_seqs`` sequences, requests are admitted while the KV of their whole sequence
  (prompt + expected output) fits beside the reservations of those running: the batch
  grows as large as memory allows, and nothing is preempted unless outputs outgrow their
  expectation; and
  decode tokens no longer take the token budget of the prefill chunks, so an iteration's
  token batch grows with the decode batch instead of being capped at
  ``max_num_batched_tokens``.

* **prefix-shared attention** (``fused_prefix_attention``): BatchLLM's horizontally fused
  kernel reads a group's shared prefix once per decode step for all its members in the
  batch; simkv takes those repeated reads off the step's attention (its bytes and, as the
  roofline prices attention by the context read, its FLOPs: decode attention is
  memory-bound, so the FLOPs understated do not set the time).

Output lengths are what the cluster's predictor expects (config group ``predictor``: by
default the running mean of finished requests; ``predictor=oracle`` gives the requests' own,
as an offline batch whose outputs were known would). Left out: the fused kernel's effect on
prefill chunks (a follower's suffix still reads the prefix on its own), and BatchLLM's
handling of requests without a shared prefix beyond the order.
``batch_stats`` counts, per shared granule, how often it was computed (summary.json, section
``batchllm``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from simkv.config.bounds import bounded
from simkv.entities.request import Request, State
from simkv.kv.block_pool import blocks_for
from simkv.kv.manager import may_hit
from simkv.policies.scheduler.interface import SchedulerOutput
from simkv.policies.scheduler.vllm import VLLMScheduler, VLLMSchedulerConfig
from simkv.registry import register


@dataclass(slots=True)
class BatchLLMSchedulerConfig(VLLMSchedulerConfig):
    decode_first: bool = True
    hold: bool = True
    memory_centric: bool = True
    # BatchLLM's horizontally fused prefix-shared attention: a group's shared prefix is read
    # once per decode step for all its members in the batch.
    fused_prefix_attention: bool = True
    # Sequences at most when memory-centric (a bound on the bookkeeping, not a tuning knob).
    max_batch_seqs: int = bounded(8192, ge=1)


class _Trie:
    """Counts of requests through each prefix of granule ids."""

    def __init__(self) -> None:
        self.root: dict[int, list] = {}  # id -> [count, children]

    def insert(self, prefix: tuple[int, ...]) -> None:
        node = self.root
        for key in prefix:
            entry = node.get(key)
            if entry is None:
                entry = node[key] = [0, {}]
            entry[0] += 1
            node = entry[1]

    def shared_depth(self, prefix: tuple[int, ...]) -> int:
        """Leading granules of ``prefix`` shared with at least one other request."""
        node, depth = self.root, 0
        for key in prefix:
            entry = node.get(key)
            if entry is None or entry[0] < 2:
                break
            depth += 1
            node = entry[1]
        return depth


@register("scheduler", "batchllm", BatchLLMSchedulerConfig)
class BatchLLMScheduler(VLLMScheduler):
    def __init__(self, cfg: BatchLLMSchedulerConfig, **deps: object) -> None:
        super().__init__(cfg, **deps)  # type: ignore[arg-type]
        predictor = deps.get("predictor")
        if predictor is None:
            raise ValueError("scheduler=batchllm needs the cluster's output predictor")
        self.predictor: Any = predictor
        if not self._plain:
            raise ValueError("scheduler=batchllm runs full KV of autoregressive models (kv_policy=full)")
        self.batch = cfg
        self.trie = _Trie()
        self._new = False  # requests arrived since the queue was last ordered
        self._holding = False  # this plan held a group back (no decode run planned behind it)
        self._budget = self.max_tokens
        if cfg.memory_centric:
            self.max_seqs = cfg.max_batch_seqs
        # Own blocks each running request's whole sequence takes (memory-centric admission).
        self._reserved: dict[int, int] = {}
        self._reserved_total = 0
        # Per shared granule, how many times it was computed (not found cached).
        self.computed_granules: dict[int, int] = {}
        self.batch_stats = {"groups": 0, "held": 0, "shared_granules": 0,
                            "shared_granules_recomputed": 0, "fused_tokens_saved": 0}

    def scale_seats(self, ranks: int) -> None:
        super().scale_seats(ranks)
        self._budget = self.max_tokens
        if self.batch.memory_centric:
            self.max_seqs = self.batch.max_batch_seqs * ranks

    # --- the global prefix tree and the order --------------------------------------------
    def add_request(self, req: Request) -> None:
        req.state = State.WAITING
        if req.prefix:
            self.trie.insert(req.prefix)
        self.waiting.append(req)
        self._new = True

    def _group(self, req: Request) -> tuple[int, ...]:
        if not req.prefix:
            return ()
        return req.prefix[:self.trie.shared_depth(req.prefix)]

    def _order(self) -> None:
        """Groups contiguous; decode-heavy groups and requests first. Requests that ran
        before (preempted, part-done) keep their place in front."""
        self._new = False
        started = [r for r in self.waiting if r.preemptions or r.computed or r.generated]
        fresh = [r for r in self.waiting if not (r.preemptions or r.computed or r.generated)]
        groups: dict[tuple[int, ...], list[Request]] = {}
        for r in fresh:
            groups.setdefault(self._group(r), []).append(r)
        self.batch_stats["groups"] = sum(1 for g, rs in groups.items() if g and len(rs) > 1)

        predict = self.predictor.predict

        def ratio(rs: list[Request]) -> float:
            return sum(predict(r) for r in rs) / max(1, sum(r.prompt_tokens for r in rs))

        order = list(groups.items())
        if self.batch.decode_first:
            # NOTE: sorted() is stable: ties keep arrival order (groups by first arrival).
            order.sort(key=lambda kv: -ratio(kv[1]))
            for _, rs in order:
                rs.sort(key=lambda r: -predict(r) / max(1, r.prompt_tokens))
        self.waiting = deque([*started, *(r for _, rs in order for r in rs)])

    # --- admission ----------------------------------------------------------------------
    def schedule(self, now: float) -> SchedulerOutput | None:
        if self._new:
            self._order()
        if self.batch.memory_centric:
            # Decodes do not take the prefill chunks' token budget: an iteration's token
            # batch grows with the decode batch, which memory alone bounds.
            self.max_tokens = self._budget + len(self.decode)
        self._holding = False
        return super().schedule(now)

    def _plan_tail(self, out: SchedulerOutput, need: int, now: float) -> None:
        # NOTE: a held group waits for this iteration's prefill to publish its prefix: plan
        # no decode run behind it, so the next plan (right after it) admits the group, as
        # step by step would.
        if not self._holding:
            super()._plan_tail(out, need, now)

    def _held(self, req: Request) -> bool:
        """Its group's prefix is being computed by a running member: wait for it."""
        group = self._group(req)
        kv = self.kv
        if not group or kv is None:
            return False
        refs = kv.hbm.refs
        if all(k in refs for k in group):
            return False
        return any(r.prefix is not None and r.prefix[:len(group)] == group
                   for r in self.prefilling.values())

    def _admit(self, out: SchedulerOutput, budget: int, need: int, now: float) -> int:
        kv = self.kv
        waiting = self.waiting
        cfg = self.batch
        gb = kv.gb if kv is not None else 0
        while waiting and budget > 0 and len(self.running) < self.max_seqs:
            req = waiting[0]
            if req.remote_kv:
                # KV computed elsewhere (a prefill instance's hand-off, a request moved off a
                # preempted instance): seated to receive it, as vllm seats it. It was taken
                # for a fresh prompt: the hand-off ran dry (an engine bug) and a move never
                # landed (recomputed in full while reported moved).
                private = blocks_for(max(req.prompt_tokens + self.predictor.predict(req) - 1,
                                         req.num_tokens), self.block_size)
                if cfg.memory_centric and (private + self._reserved_total + self.pool.pinned
                                           > self.pool.capacity):
                    break
                if not self._admit_remote(req, need, now):
                    break
                if cfg.memory_centric:
                    self._reserved[req.id] = private
                    self._reserved_total += private
                continue
            if cfg.hold and req.computed == 0 and self._held(req):
                self.batch_stats["held"] += 1
                self._holding = True
                break  # the group's prefix lands at the end of this prefill: next iteration
            m = kv.match(req) if kv is not None and req.computed == 0 and may_hit(req) else None
            hit = len(m.keys) if m is not None and not m.swap_tokens else 0
            longest = req.prompt_tokens + self.predictor.predict(req) - 1
            private = blocks_for(longest, self.block_size) - hit * gb
            if cfg.memory_centric:
                # The whole sequence's own blocks, beside what running requests will still
                # take and the shared blocks in use: admitted, it never needs preempting.
                pins = (m.pin_blocks + m.load_blocks) if m is not None else 0
                if private + self._reserved_total + self.pool.pinned + pins > self.pool.capacity:
                    break
            if m is not None:
                left = self._admit_hit(out, req, m, budget, need, now)
                if left is None:
                    break
                budget = left
            else:
                remaining = req.prompt_tokens + req.generated - req.computed
                if remaining > budget and not self.chunked:
                    break
                n = min(remaining, budget)
                extra = blocks_for(req.computed + n, self.block_size) - req.blocks
                if extra > self.pool.free - need and not self._borrow(extra, need):
                    break
                waiting.popleft()
                self.pool.allocate(extra)
                req.blocks += extra
                self._seat(req, now)
                self.prefilling[req.id] = req
                budget -= self._add_chunk(out, req, n)
            self._admitted(req, hit, private)
        return budget

    def _admitted(self, req: Request, hit: int, private: int) -> None:
        """Count the shared granules this request computes, and reserve its sequence."""
        group = self._group(req)
        st = self.batch_stats
        for key in group[hit:]:
            c = self.computed_granules.get(key, 0)
            self.computed_granules[key] = c + 1
            st["shared_granules" if c == 0 else "shared_granules_recomputed"] += 1
        if self.batch.memory_centric:
            self._reserved[req.id] = private
            self._reserved_total += private

    def _unreserve(self, req: Request) -> None:
        self._reserved_total -= self._reserved.pop(req.id, 0)

    def detach_running(self, req: Request, now: float) -> int:
        tokens = super().detach_running(req, now)
        self._unreserve(req)  # it goes on elsewhere: its sequence is no longer reserved here
        return tokens

    def update(self, out: SchedulerOutput, done: int, ends: Sequence[float]) -> list[Request]:
        finished = super().update(out, done, ends)
        if self._reserved:
            for req in finished:
                self._unreserve(req)
        return finished

    def _plan_decodes(self, out: SchedulerOutput, need: int, preempted: bool, now: float) -> None:
        if not self.batch.fused_prefix_attention:
            super()._plan_decodes(out, need, preempted, now)
            return
        # The fused prefix-shared kernel reads a group's shared prefix once per step, not once
        # per member: the run's attention reads drop by what the extra members would read.
        # NOTE: constant within a run (its members do not change), so the contexts shift; the
        # first iteration's decodes are the members before the prefilled requests join.
        before = self._shared_reads()
        super()._plan_decodes(out, need, preempted, now)
        st = self.batch_stats
        if before and out.num_decodes:
            out.decode_context = _shift(out.decode_context, before)
            st["fused_tokens_saved"] += before * (1 if out.prefills else out.num_iterations)
        if out.tail_decodes:
            after = self._shared_reads()
            if after:
                out.tail_context = _shift(out.tail_context, after)
                st["fused_tokens_saved"] += after * len(out.tail_context)

    def _shared_reads(self) -> int:
        """KV tokens per step the decode batch's members of a group read twice or more."""
        kv = self.kv
        if kv is None:
            return 0
        count: dict[tuple[int, ...], int] = {}
        for req in self.decode.members.values():
            g = req.pinned_g  # leading granules it shares in the HBM cache
            if g and req.prefix is not None:
                key = req.prefix[:min(g, len(self._group(req)))]
                if key:
                    count[key] = count.get(key, 0) + 1
        return sum((n - 1) * len(key) * kv.G for key, n in count.items() if n > 1)

    def _preempt_last(self, now: float, may_swap: bool = True) -> Request:
        victim = super()._preempt_last(now, may_swap)
        self._unreserve(victim)
        return victim


def _shift(ctx: Sequence[int], by: int) -> Sequence[int]:
    """Per-iteration contexts minus ``by`` (a range stays a range)."""
    if isinstance(ctx, range):
        return range(ctx.start - by, ctx.stop - by, ctx.step)
    return tuple(c - by for c in ctx)

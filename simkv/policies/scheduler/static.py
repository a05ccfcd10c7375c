"""Static (request-level) batching: the baseline continuous batching is measured against.

A batch is formed only when the replica is idle: up to ``max_batch_size`` waiting requests,
first come first served, as many as the KV pool holds when every sequence reserves room for
the batch's longest prompt plus its longest output (padding, as FasterTransformer-style
engines and ``model.generate`` on a padded batch do). The batch is prefilled in one
iteration, then decodes until its longest output is done; no request joins or leaves it in
between. A request's completion time is when its own last token is produced (streamed),
but its slot stays busy (padded) until the whole batch ends.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from simkv.config.bounds import bounded, check
from simkv.entities.request import Request, State
from simkv.kv.block_pool import BlockPool, blocks_for
from simkv.policies.scheduler.interface import SchedulerOutput
from simkv.registry import register


@dataclass(slots=True)
class StaticSchedulerConfig:
    max_batch_size: int = bounded(32, ge=1)
    # Static batching holds whole batches and never consults the prefix cache, so prefix
    # caching, offload and tool-call KV policies cannot act under it (SimConfig.validate).
    uses_kv_manager: ClassVar[bool] = False

    def __post_init__(self) -> None:
        check(self, "scheduler.")


@register("scheduler", "static", StaticSchedulerConfig)
class StaticScheduler:
    def __init__(self, cfg: StaticSchedulerConfig, *, pool: BlockPool, max_fast_forward: int,
                 kv_policy: Any = None, model: Any = None, **_: object) -> None:
        if kv_policy is not None and not (kv_policy.is_full and (
                model is None or model.kind == "autoregressive")):
            raise ValueError("scheduler=static runs full KV of autoregressive models only; "
                             "kv_policy and diffusion or var models need scheduler=vllm")
        self.cfg = cfg
        self.pool = pool
        self.max_fast_forward = max(1, max_fast_forward)
        self.waiting: deque[Request] = deque()
        self.batch: list[Request] = []  # sorted by output length
        self.prompt_len = 0  # padded prompt length of the batch
        self.output_len = 0  # longest output of the batch
        self.ticks = 0  # decode iterations done by the batch
        self.prefilled = False
        self.reserved = 0
        self.max_batch = cfg.max_batch_size

    def scale_seats(self, ranks: int) -> None:
        """Data-parallel ranks each take a batch of max_batch_size (ranks assumed balanced)."""
        self.max_batch = self.cfg.max_batch_size * ranks

    def admission_error(self, req: Request) -> str:
        need = blocks_for(req.prompt_tokens + req.output_tokens - 1, self.pool.block_size)
        return "kv_capacity" if need > self.pool.capacity else ""

    def add_request(self, req: Request) -> None:
        req.state = State.WAITING
        self.waiting.append(req)

    def pending_prefill_tokens(self) -> int:
        """Prompt tokens of the queued requests (a static batch prefills all at once)."""
        return sum(r.prompt_tokens for r in self.waiting)

    def take_waiting(self) -> list[Request]:
        """Hand back the queued requests (a draining instance's); none of them has run."""
        fresh = list(self.waiting)
        self.waiting.clear()
        return fresh

    def num_unfinished(self) -> int:
        return len(self.waiting) + sum(r.state is not State.FINISHED for r in self.batch)

    def _reservation(self, prompt: int, output: int, n: int) -> int:
        return n * blocks_for(prompt + output - 1, self.pool.block_size)

    def schedule(self, now: float) -> SchedulerOutput | None:
        if not self.batch:
            if not self.waiting:
                return None
            self._form_batch(now)
        b = len(self.batch)
        if not self.prefilled:
            n = self.prompt_len
            return SchedulerOutput(
                prefills=[(r, n) for r in self.batch],
                prefill_tokens=b * n,
                prefill_attn_pairs=b * n * (n + 1) / 2,
                prefill_kv_tokens=b * n,
                num_sampled=b,
                padded=True,
            )
        # The run ends at the next member's last token (the batch is sorted by output), as
        # step by step reports it then: its slot stays padded, but the request is done for
        # routers counting outstanding work and for a session's next turn.
        k = self.output_len - 1 - self.ticks
        for req in self.batch:
            if req.output_tokens - 1 > self.ticks:
                k = req.output_tokens - 1 - self.ticks
                break
        k = min(k, self.max_fast_forward)
        # Every slot attends to the padded prompt, the tokens so far and its new token.
        first = b * (self.prompt_len + self.ticks + 1)
        ctx = range(first, first + b * k, b)
        return SchedulerOutput(num_iterations=k, num_decodes=b, decode_context=ctx,
                               num_sampled=b, padded=True)

    def _form_batch(self, now: float) -> None:
        prompt = output = 0
        chosen: list[Request] = []
        while self.waiting and len(chosen) < self.max_batch:
            req = self.waiting[0]
            p = max(prompt, req.prompt_tokens)
            o = max(output, req.output_tokens)
            if self._reservation(p, o, len(chosen) + 1) > self.pool.capacity:
                break
            chosen.append(self.waiting.popleft())
            prompt, output = p, o
        self.reserved = self._reservation(prompt, output, len(chosen))
        self.pool.allocate(self.reserved)
        for req in chosen:
            req.state = State.PREFILLING
            req.first_scheduled = now
        self.batch = sorted(chosen, key=lambda r: (r.output_tokens, r.id))
        self.prompt_len, self.output_len = prompt, output
        self.ticks = 0
        self.prefilled = False

    def update(self, out: SchedulerOutput, done: int, ends: Sequence[float]) -> list[Request]:
        finished: list[Request] = []
        if not self.prefilled:
            end = float(ends[0])
            self.prefilled = True
            for req in self.batch:
                req.computed = req.prompt_tokens
                req.generated = 1
                req.first_token = end
                req.state = State.DECODING
                if req.output_tokens == 1:
                    req.finish = end
                    req.state = State.FINISHED
                    finished.append(req)
        else:
            t0 = self.ticks
            self.ticks += done
            for req in self.batch:
                tick = req.output_tokens - 1
                if req.state is State.DECODING and tick <= self.ticks:
                    req.finish = float(ends[tick - t0 - 1])
                    req.generated = req.output_tokens
                    req.computed = req.prompt_tokens + req.output_tokens - 1
                    req.state = State.FINISHED
                    finished.append(req)
        if self.ticks >= self.output_len - 1:
            self.pool.release(self.reserved)
            self.reserved = 0
            self.batch = []
        return finished

    def check_invariants(self) -> None:
        self.pool.check_invariants(self.reserved)
        if len(self.batch) > self.max_batch:
            raise AssertionError("batch larger than max_batch_size")

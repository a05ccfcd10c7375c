"""LightLLM-style scheduling, as Vidur models it (docs/SCHEDULING.md).

LightLLM's router differs from vLLM in two ways that Vidur's ``LightLLMReplicaScheduler``
keeps and this scheduler reproduces:

* **Admission by future memory**: a waiting request joins only if the running requests and
  the new ones can all finish without running out of KV, assuming each keeps generating its
  remaining output: with the requests sorted by remaining output (longest first), the peak
  is ``max_i(sum of tokens held by the first i+1 + remaining_i x (i+1))`` and must stay
  below the pool's tokens. LightLLM reads each request's ``max_new_tokens``; simkv reads the
  run's output-length predictor (``predictor=``; the true length only under
  ``predictor=oracle``), so a prediction that is too short can still run the pool dry, and
  then the vllm path preempts (LightLLM would not have admitted).
* **Prefill and decode alternate**: prefills run in prefill-only batches (whole prompts, up
  to ``max_num_batched_tokens``, Vidur's ``max_tokens_in_batch`` 4096), decodes in
  decode-only batches; while requests run, a prefill batch is tried only after
  ``max_waiting_iters`` decode iterations (Vidur's default 10).

LightLLM keeps KV per token (TokenAttention); simkv counts it in ``kv.block_size`` blocks
(set ``kv.block_size=1`` for token granularity, as Vidur requires). References read: Vidur
``vidur/scheduler/replica_scheduler/lightllm_replica_scheduler.py``, ``vidur/config/config.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from simkv.config.bounds import bounded, require
from simkv.entities.request import Request
from simkv.policies.scheduler.interface import SchedulerOutput
from simkv.policies.scheduler.vllm import VLLMScheduler, VLLMSchedulerConfig
from simkv.registry import register


@dataclass(slots=True)
class LightLLMSchedulerConfig(VLLMSchedulerConfig):
    max_num_seqs: int = bounded(128, ge=1)  # Vidur's batch_size_cap
    max_num_batched_tokens: int = bounded(4096, ge=1)  # Vidur's max_tokens_in_batch
    chunked_prefill: bool = False
    max_waiting_iters: int = bounded(10, ge=1)

    def validate(self, prefix: str = "scheduler.") -> None:
        VLLMSchedulerConfig.validate(self, prefix)
        require(not self.chunked_prefill, f"{prefix}chunked_prefill: LightLLM runs prefill-only "
                                          f"and decode-only batches (set false)")


@register("scheduler", "lightllm", LightLLMSchedulerConfig)
class LightLLMScheduler(VLLMScheduler):
    def __init__(self, cfg: LightLLMSchedulerConfig, *, predictor: Any = None, **deps: Any) -> None:
        super().__init__(cfg, **deps)
        if not self._plain:
            raise ValueError("scheduler=lightllm runs full KV of autoregressive models (kv_policy=full)")
        if predictor is None:
            raise ValueError("scheduler=lightllm needs an output-length predictor (predictor group)")
        self.predictor = predictor
        self.wait_iters = cfg.max_waiting_iters
        self.since_prefill = 0  # decode iterations since the last prefill batch
        self._ff = self.max_fast_forward

    def _remaining(self, req: Request) -> float:
        return max(0.0, float(self.predictor.predict(req)) - req.generated - 1)

    def _fits(self, joining: list[Request]) -> int:
        """How many of ``joining`` (in order) can join the running requests by LightLLM's
        peak-memory rule (counted in tokens, plus a block's rounding per request)."""
        dec = self.decode
        held = []
        for r in self.running.values():
            if r.id in dec.members:
                dec.materialise(r)  # decoding members keep their progress lazily
            held.append((float(r.computed), self._remaining(r)))
        tokens = self.pool.capacity * self.block_size
        slack = self.block_size - 1
        n = 0
        for req in joining:
            held.append((float(req.num_tokens + 1), max(0.0, self._remaining(req) - 1)))
            held.sort(key=lambda x: -x[1])
            left = np.array([h[1] for h in held])
            count = np.arange(1, len(held) + 1)
            run = np.cumsum([h[0] for h in held])
            if float((left * count + run + slack * count).max()) >= tokens:
                break
            n += 1
        return n

    def _admit(self, out: SchedulerOutput, budget: int, need: int, now: float) -> int:
        if self.decode.members and self.since_prefill < self.wait_iters:
            return budget  # decode streak: no prefill batch yet
        heads: list[Request] = []
        for req in self.waiting:
            if len(heads) >= self.max_seqs - len(self.running):
                break
            heads.append(req)
        room = self._fits(heads)
        if not self.running:
            room = max(room, 1)  # alone it fits the pool (admission_error): never deadlock
        saved = self.max_seqs
        self.max_seqs = min(saved, len(self.running) + room)
        try:
            return super()._admit(out, budget, need, now)
        finally:
            self.max_seqs = saved

    def schedule(self, now: float) -> SchedulerOutput | None:
        # A decode run stops when the next prefill batch is due (while requests wait).
        self.max_fast_forward = (max(1, self.wait_iters - self.since_prefill)
                                 if self.waiting else self._ff)
        try:
            return super().schedule(now)
        finally:
            self.max_fast_forward = self._ff

    def update(self, out: SchedulerOutput, done: int, ends: Sequence[float]) -> list[Request]:
        if out.prefills:
            self.since_prefill = 0
        else:
            self.since_prefill += done
        return super().update(out, done, ends)

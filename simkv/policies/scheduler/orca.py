"""Orca-style iteration-level scheduling, as Vidur models it (docs/SCHEDULING.md).

Orca (Yu et al., OSDI 2022) schedules per iteration like vLLM, with two differences that
Vidur's ``OrcaReplicaScheduler`` keeps and this scheduler reproduces:

* a prompt is prefilled **whole**, in the same iteration as the running decodes (selective
  batching), never split into chunks; one that does not fit the iteration's token budget
  waits for the next iteration;
* every admitted request **reserves** KV for ``reserve_tokens`` tokens (Orca reserves the
  maximum sequence length up front; Vidur's ``max_tokens``, 4096 by default), so a new
  request is admitted only while the reservations of the running ones leave room for its
  own: the engine never runs out of memory mid-decode and never preempts. A request longer
  than the reservation is refused at arrival (reason ``reservation``: Orca would cut it at
  its maximum length, which would change its output).

Blocks are still allocated as the KV grows (the counts of requests.parquet and the pool are
the real ones); the reservation only limits admission. References read: Vidur
``vidur/scheduler/replica_scheduler/orca_replica_scheduler.py`` and
``vidur/config/config.py`` (max_tokens 4096, batch_size_cap 128).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from simkv.config.bounds import bounded
from simkv.entities.request import Request
from simkv.kv.block_pool import blocks_for
from simkv.policies.scheduler.interface import SchedulerOutput
from simkv.policies.scheduler.vllm import VLLMScheduler, VLLMSchedulerConfig
from simkv.registry import register


@dataclass(slots=True)
class OrcaSchedulerConfig(VLLMSchedulerConfig):
    # Vidur's batch_size_cap (128); the token budget bounds one iteration's prompt tokens.
    max_num_seqs: int = bounded(128, ge=1)
    # KV reserved per request at admission (Vidur: request generator max_tokens, 4096).
    reserve_tokens: int = bounded(4096, ge=1)

    def validate(self, prefix: str = "scheduler.") -> None:
        VLLMSchedulerConfig.validate(self, prefix)
        from simkv.config.bounds import require

        require(self.chunked_prefill, f"{prefix}chunked_prefill: Orca mixes whole prompts with "
                                      f"decodes in one iteration (set true; it never splits a prompt)")


@register("scheduler", "orca", OrcaSchedulerConfig)
class OrcaScheduler(VLLMScheduler):
    def __init__(self, cfg: OrcaSchedulerConfig, **deps: Any) -> None:
        super().__init__(cfg, **deps)
        if not self._plain:
            raise ValueError("scheduler=orca runs full KV of autoregressive models (kv_policy=full)")
        self.split_prompts = False
        self.reserve = blocks_for(cfg.reserve_tokens, self.block_size)
        self.reserved = 0  # blocks reserved by the running requests

    def admission_error(self, req: Request) -> str:
        reason = super().admission_error(req)
        if reason:
            return reason
        if req.prompt_tokens + req.output_tokens - 1 > self.orca_cfg.reserve_tokens:
            return "reservation"
        if self.reserve > self.pool.capacity:
            return "kv_capacity"
        return ""

    @property
    def orca_cfg(self) -> OrcaSchedulerConfig:
        return self.cfg  # type: ignore[return-value]

    def _admit(self, out: SchedulerOutput, budget: int, need: int, now: float) -> int:
        # Admit only as many as the reservations leave room for (seats capped for the call).
        room = (self.pool.capacity - self.reserved) // self.reserve
        saved = self.max_seqs
        self.max_seqs = min(saved, len(self.running) + max(0, room))
        try:
            return super()._admit(out, budget, need, now)
        finally:
            self.max_seqs = saved

    def _seat(self, req: Request, now: float) -> None:
        super()._seat(req, now)
        self.reserved += self.reserve

    def _preempt(self, rid: int, victim: Request, now: float, may_swap: bool = True) -> Request:
        self.reserved -= self.reserve
        return super()._preempt(rid, victim, now, may_swap)

    def update(self, out: SchedulerOutput, done: int, ends: Sequence[float]) -> list[Request]:
        finished = super().update(out, done, ends)
        self.reserved -= self.reserve * len(finished)
        return finished

    def check_invariants(self) -> None:
        super().check_invariants()
        if self.reserved != self.reserve * len(self.running):
            raise AssertionError("orca: reservations do not match the running requests")
        if self.reserved > self.pool.capacity:
            raise AssertionError("orca: more reserved than the pool holds")

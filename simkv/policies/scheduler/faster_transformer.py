"""FasterTransformer-style request-level batching, as Vidur models it (docs/SCHEDULING.md).

Like ``scheduler=static`` (a batch forms only when the instance is idle, is prefilled at once
and decodes until its last member is done; nobody joins or leaves), with the memory rule of
Vidur's ``FasterTransformerReplicaScheduler``: each member reserves KV for ``reserve_tokens``
tokens (the maximum sequence length, Vidur's ``max_tokens`` 4096), not for the batch's longest
true output, which no engine knows before it runs. A request longer than the reservation is
refused at arrival (reason ``reservation``). References read: Vidur
``vidur/scheduler/replica_scheduler/faster_transformer_replica_scheduler.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from simkv.config.bounds import bounded
from simkv.entities.request import Request
from simkv.kv.block_pool import blocks_for
from simkv.policies.scheduler.static import StaticScheduler, StaticSchedulerConfig
from simkv.registry import register


@dataclass(slots=True)
class FasterTransformerSchedulerConfig(StaticSchedulerConfig):
    max_batch_size: int = bounded(128, ge=1)  # Vidur's batch_size_cap
    reserve_tokens: int = bounded(4096, ge=1)  # Vidur's max_tokens


@register("scheduler", "faster_transformer", FasterTransformerSchedulerConfig)
class FasterTransformerScheduler(StaticScheduler):
    def admission_error(self, req: Request) -> str:
        cfg: FasterTransformerSchedulerConfig = self.cfg  # type: ignore[assignment]
        if req.prompt_tokens + req.output_tokens - 1 > cfg.reserve_tokens:
            return "reservation"
        if blocks_for(cfg.reserve_tokens, self.pool.block_size) > self.pool.capacity:
            # One member's reservation exceeds the pool: no batch could ever form (it
            # livelocked: 2,000,000 empty iterations), as for scheduler=orca.
            return "kv_capacity"
        return super().admission_error(req)

    def _reservation(self, prompt: int, output: int, n: int) -> int:
        cfg: FasterTransformerSchedulerConfig = self.cfg  # type: ignore[assignment]
        return n * blocks_for(cfg.reserve_tokens, self.pool.block_size)

"""Program-level first-come-first-served (Continuum): continuous batching whose waiting queue
is ordered by when each agent program (or conversation) started, not when each call arrived.

Continuum (seed paper) pairs this with KV time-to-live pins (``tool_kv=ttl_pin``): a program's
next call, returning from a tool, goes ahead of calls of programs that started later, so it
takes over its pinned KV at once instead of queueing behind requests that cannot fit *because*
of that pin (head-of-line blocking under plain FCFS, docs/MEMORY.md). Everything else, from
chunked prefill to preemption, is the vllm scheduler's.
"""

from __future__ import annotations

from dataclasses import dataclass

from simkv.entities.request import Request, State
from simkv.policies.scheduler.vllm import VLLMScheduler, VLLMSchedulerConfig
from simkv.registry import register


@dataclass(slots=True)
class ContinuumSchedulerConfig(VLLMSchedulerConfig):
    pass


@register("scheduler", "continuum", ContinuumSchedulerConfig)
class ContinuumScheduler(VLLMScheduler):
    def __init__(self, cfg: ContinuumSchedulerConfig, **deps: object) -> None:
        super().__init__(cfg, **deps)  # type: ignore[arg-type]
        self._start: dict[int, float] = {}  # session -> arrival of its first call seen here

    def _key(self, req: Request) -> tuple[float, float, int]:
        if req.session < 0:
            return (req.arrival, req.arrival, req.id)
        start = self._start.setdefault(req.session, req.arrival)
        return (start, req.arrival, req.id)

    def add_request(self, req: Request) -> None:
        req.state = State.WAITING
        waiting = self.waiting
        key = self._key(req)
        # NOTE: scan from the back: new programs' calls (the common case) go last in O(1).
        i = len(waiting)
        while i > 0 and waiting[i - 1].preemptions == 0 and self._key(waiting[i - 1]) > key:
            i -= 1
        waiting.insert(i, req)

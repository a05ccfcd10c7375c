"""Program-level first-come-first-served (Continuum): continuous batching whose waiting queue
is ordered by when each agent program (or conversation) started, not when each call arrived.

Continuum (seed paper) pairs this with KV time-to-live pins (``tool_kv=ttl_pin``): a program's
next call, returning from a tool, goes ahead of calls of programs that started later, so it
takes over its pinned KV at once instead of queueing behind requests that cannot fit *because*
of that pin (head-of-line blocking under plain FCFS, docs/MEMORY.md). Everything else, from
chunked prefill to preemption, is the vllm scheduler's.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from simkv.entities.request import Request, State
from simkv.policies.scheduler.vllm import VLLMScheduler, VLLMSchedulerConfig
from simkv.registry import register


@dataclass(slots=True)
class ContinuumSchedulerConfig(VLLMSchedulerConfig):
    pass


class ProgramQueue:
    """The waiting queue, ordered by (program start, arrival, id); preempted requests in front.

    Offers the part of ``deque`` the vllm scheduler uses, in O(log n): a sorted list would
    cost O(n) per insertion, and queues grow to thousands when pins hold memory.
    """

    def __init__(self) -> None:
        self.front: deque[Request] = deque()
        self.heap: list[tuple[float, float, int, Request]] = []
        self.start: dict[int, float] = {}  # session -> arrival of its first call seen here

    def append(self, req: Request) -> None:
        start = req.arrival if req.session < 0 else self.start.setdefault(req.session, req.arrival)
        heapq.heappush(self.heap, (start, req.arrival, req.id, req))

    def appendleft(self, req: Request) -> None:
        self.front.appendleft(req)

    def popleft(self) -> Request:
        if self.front:
            return self.front.popleft()
        return heapq.heappop(self.heap)[3]

    def __getitem__(self, i: int) -> Request:
        if i != 0:
            raise IndexError("only the head of the waiting queue can be read")
        return self.front[0] if self.front else self.heap[0][3]

    def __len__(self) -> int:
        return len(self.front) + len(self.heap)

    def __iter__(self) -> Iterator[Request]:
        yield from self.front
        yield from (entry[3] for entry in sorted(self.heap))


@register("scheduler", "continuum", ContinuumSchedulerConfig)
class ContinuumScheduler(VLLMScheduler):
    def __init__(self, cfg: ContinuumSchedulerConfig, **deps: object) -> None:
        super().__init__(cfg, **deps)  # type: ignore[arg-type]
        self.waiting = ProgramQueue()  # type: ignore[assignment]

    def add_request(self, req: Request) -> None:
        req.state = State.WAITING
        self.waiting.append(req)

    def _requeue(self, keep: list[Request]) -> None:
        queue = ProgramQueue()
        queue.start = self.waiting.start  # type: ignore[attr-defined]
        for req in reversed(keep):  # preempted requests: they go in front, in this order
            queue.appendleft(req)
        self.waiting = queue  # type: ignore[assignment]

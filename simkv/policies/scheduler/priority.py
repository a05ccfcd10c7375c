"""Priority classes, shortest-(predicted)-job-first, preemption by priority and load shedding.

Continuous batching as in vllm.py, with three things changed (docs/SCHEDULING.md):

* **The waiting queue is ranked**, not FIFO: by class (``Request.priority``, higher first),
  then, with ``order=sjf``, by *predicted* output length (the run's ``predictor``; the true
  length only under ``predictor=oracle``), then by arrival. Preempted requests go ahead of
  fresh ones of their class (vLLM puts them at the front). A request that has waited
  ``max_wait_s`` is served first, oldest first (starvation prevention, as LTR's scheduler and
  kvshare's queue do); ``max_wait_s=null`` is strict priority, under which a lower class can
  starve while a higher one keeps the instance full (the option says so).
* **Preemption takes the lowest class first** (latest admitted within it), as vLLM's
  ``--scheduling-policy priority`` does; with ``preempt=true`` a waiting request of a higher
  class that finds no seat or no memory preempts running requests of lower classes to make
  room before the plan (vLLM v1's priority scheduler).
* **Admission control** at arrival (``admission_error``; the request is recorded as rejected,
  reason ``shed``): ``shed=queue`` refuses when ``shed_max_queue`` requests of its class or
  above already wait here; ``shed=slo`` when its estimated time to first token exceeds
  ``ttft_target_s x shed_slack``. The estimate is what the engine can measure: prompt tokens
  queued ahead of it (its class and above, part-way prefills included, plus its own) over
  the prefill throughput this instance achieved in its recent iterations (an exponential
  average; nothing is shed before the first measurement). Classes ``>= protect_priority``
  are never shed (BLIS's tier-shed admission).

References read: vLLM v1 ``vllm/v1/core/sched/scheduler.py`` (priority policy: waiting
queue by (priority, arrival), preempt the lowest priority); BLIS ``docs/guide/scheduling.md``
and ``docs/guide/admission.md`` (priority-fcfs, sjf, tier-shed); LTR, Fu et al., NeurIPS
2024, arXiv 2408.15792 (rank by predicted output length, starvation prevention).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from simkv.config.bounds import bounded, require
from simkv.entities.request import Request, State
from simkv.kv.block_pool import blocks_for
from simkv.policies.scheduler.interface import SchedulerOutput
from simkv.policies.scheduler.vllm import VLLMScheduler, VLLMSchedulerConfig
from simkv.registry import register

ORDERS = ("fcfs", "sjf")
SHEDS = ("none", "queue", "slo")
# Defaults of the shedding keys, to tell which were set (one of them cannot act alone).
_SHED_DEFAULTS = {"shed_max_queue": 256, "ttft_target_s": 2.0, "shed_slack": 1.0,
                  "rate_smoothing": 0.2, "protect_priority": 1}


@dataclass(slots=True)
class PrioritySchedulerConfig(VLLMSchedulerConfig):
    """vllm's fields plus the queue order, preemption and admission control."""

    # Within a class: arrival order, or shortest predicted output first (predictor group).
    order: str = bounded("fcfs", choices=ORDERS)
    # A waiting request of a higher class preempts lower classes to get a seat and memory.
    preempt: bool = True
    # Waited this long: served first, oldest first. null: strict priority (may starve).
    max_wait_s: float | None = bounded(60.0, gt=0)
    shed: str = bounded("none", choices=SHEDS)
    shed_max_queue: int = bounded(_SHED_DEFAULTS["shed_max_queue"], ge=1)
    ttft_target_s: float = bounded(_SHED_DEFAULTS["ttft_target_s"], gt=0)
    shed_slack: float = bounded(_SHED_DEFAULTS["shed_slack"], gt=0)
    protect_priority: int = bounded(_SHED_DEFAULTS["protect_priority"], ge=0)
    # Weight of the newest measurement in the prefill-throughput average (shed=slo).
    rate_smoothing: float = bounded(_SHED_DEFAULTS["rate_smoothing"], gt=0, le=1)

    def validate(self, prefix: str = "scheduler.") -> None:
        VLLMSchedulerConfig.validate(self, prefix)
        default = _SHED_DEFAULTS
        if self.shed != "queue":
            require(self.shed_max_queue == default["shed_max_queue"],
                    f"{prefix}shed_max_queue cannot act with {prefix}shed={self.shed}: set "
                    f"{prefix}shed=queue")
        if self.shed != "slo":
            for key in ("ttft_target_s", "shed_slack", "rate_smoothing"):
                require(getattr(self, key) == default[key],
                        f"{prefix}{key} cannot act with {prefix}shed={self.shed}: set "
                        f"{prefix}shed=slo")
        if self.shed == "none":
            require(self.protect_priority == default["protect_priority"],
                    f"{prefix}protect_priority cannot act with {prefix}shed=none: set "
                    f"{prefix}shed=queue or slo")


@dataclass(slots=True)
class SJFSchedulerConfig(PrioritySchedulerConfig):
    """``scheduler=sjf``: the priority scheduler ordered by predicted output length."""

    order: str = bounded("sjf", choices=ORDERS)


class RankedQueue:
    """Waiting requests by (class desc, started first, predicted length, arrival, id), with
    the oldest served first once it waited ``max_wait``. The part of ``deque`` the vllm
    scheduler uses, in O(log n) (entries of requests that left are dropped lazily)."""

    def __init__(self, key: Any, max_wait: float | None) -> None:
        self.key = key  # req -> order value within a class (0 for FCFS)
        self.max_wait = max_wait
        self.heap: list[tuple[int, int, float, float, int, Request]] = []
        self.oldest: list[tuple[float, int, Request]] = []
        self.members: dict[int, Request] = {}
        # Each member's live heap entry: a request that left (popped) and came back (a
        # preemption puts it back) has an older entry still in the heap, which must neither
        # be listed twice nor rank it by its old key (it was: evacuate handed it back twice,
        # a KeyError on a failed instance, and shed=queue counted it twice).
        self.entry: dict[int, tuple[int, int, float, float, int, Request]] = {}
        self.now = 0.0

    def _push(self, req: Request, started: int) -> None:
        self.members[req.id] = req
        e = (-req.priority, started, self.key(req), req.arrival, req.id, req)
        self.entry[req.id] = e
        heapq.heappush(self.heap, e)
        if self.max_wait is not None:
            heapq.heappush(self.oldest, (req.arrival, req.id, req))

    def append(self, req: Request) -> None:
        self._push(req, 0 if (req.preemptions or req.computed or req.generated) else 1)

    def appendleft(self, req: Request) -> None:
        self._push(req, 0)

    def _clean(self) -> None:
        heap, oldest, members = self.heap, self.oldest, self.members
        entry = self.entry
        while heap and (members.get(heap[0][4]) is not heap[0][5] or entry.get(heap[0][4]) is not heap[0]):
            heapq.heappop(heap)
        while oldest and members.get(oldest[0][1]) is not oldest[0][2]:
            heapq.heappop(oldest)

    def ages_at(self, now: float) -> float | None:
        """When the oldest member, not yet the head by age at ``now``, reaches ``max_wait``
        and becomes the head (``_head``); None without aging, or if nothing is left to age."""
        if self.max_wait is None or not self.members:
            return None
        self._clean()
        if not self.oldest:
            return None
        arrival = self.oldest[0][0]
        if now - arrival >= self.max_wait:
            return None  # already the head: nothing changes until it leaves the queue
        return max(arrival + self.max_wait, now)

    def _head(self) -> Request:
        self._clean()
        if self.oldest and self.now - self.oldest[0][0] >= self.max_wait:  # type: ignore[operator]
            return self.oldest[0][2]
        return self.heap[0][5]

    def __getitem__(self, i: int) -> Request:
        if i != 0:
            raise IndexError("only the head of the waiting queue can be read")
        return self._head()

    def popleft(self) -> Request:
        req = self._head()
        del self.members[req.id]
        del self.entry[req.id]
        return req

    def __len__(self) -> int:
        return len(self.members)

    def __bool__(self) -> bool:
        return bool(self.members)

    def __iter__(self) -> Iterator[Request]:
        live = [self.entry[i] for i in self.members]
        yield from (e[5] for e in sorted(live, key=lambda e: e[:5]))


@register("scheduler", "priority", PrioritySchedulerConfig)
class PriorityScheduler(VLLMScheduler):
    def __init__(self, cfg: PrioritySchedulerConfig, *, predictor: Any = None,
                 **deps: Any) -> None:
        super().__init__(cfg, **deps)
        self.pcfg = cfg
        if cfg.order == "sjf" and predictor is None:
            raise ValueError("scheduler.order=sjf needs an output-length predictor (predictor group)")
        self.predictor = predictor
        key = self._predicted if cfg.order == "sjf" else _zero
        self.waiting = RankedQueue(key, cfg.max_wait_s)  # type: ignore[assignment]
        self._t_plan = 0.0
        self.prefill_rate = 0.0  # measured prompt tokens per second (0: not yet)
        self.shed_count = 0
        self.priority_preemptions = 0

    def _predicted(self, req: Request) -> float:
        return float(self.predictor.predict(req))

    # --- queue --------------------------------------------------------------------------
    def add_request(self, req: Request) -> None:
        req.state = State.WAITING
        self.waiting.append(req)

    def _requeue(self, keep: list[Request]) -> None:
        queue = RankedQueue(self.waiting.key, self.pcfg.max_wait_s)  # type: ignore[attr-defined]
        queue.now = self.waiting.now  # type: ignore[attr-defined]
        for req in keep:
            queue.append(req)
        self.waiting = queue  # type: ignore[assignment]

    # --- admission control ----------------------------------------------------------------
    def admission_error(self, req: Request) -> str:
        reason = super().admission_error(req)
        if reason or self.pcfg.shed == "none" or req.priority >= self.pcfg.protect_priority:
            return reason
        cfg = self.pcfg
        if cfg.shed == "queue":
            ahead = sum(1 for r in self.waiting if r.priority >= req.priority)
            if ahead >= cfg.shed_max_queue:
                self.shed_count += 1
                return "shed"
            return ""
        if self.prefill_rate <= 0:
            return ""  # nothing measured yet: admit
        ahead = self.prefilling_ahead()
        ahead += sum(r.num_tokens - r.computed for r in self.waiting if r.priority >= req.priority)
        if (ahead + req.prompt_tokens) / self.prefill_rate > cfg.ttft_target_s * cfg.shed_slack:
            self.shed_count += 1
            return "shed"
        return ""

    # --- planning -----------------------------------------------------------------------
    def _victim(self) -> tuple[int, Request]:
        """The lowest class, and within it the latest admitted (vLLM's priority policy)."""
        running = self.running
        low = min(r.priority for r in running.values())
        for rid in reversed(running):
            if running[rid].priority == low:
                return rid, running.pop(rid)
        raise AssertionError("unreachable: running is not empty")

    def schedule(self, now: float) -> SchedulerOutput | None:
        self.waiting.now = now  # type: ignore[attr-defined]
        self._t_plan = now
        if self.pcfg.preempt and self.waiting and self.running:
            self._make_room(now)
        return super().schedule(now)

    def next_wake(self, now: float) -> float | None:
        """When the queue's head may change by itself after a plan at ``now``: the oldest
        waiting request reaching ``max_wait_s`` (aging). The replica cuts a run that spans
        it after the iteration in flight, so the next plan sees the aged head when step by
        step would (engine/replica.py; tests/test_scheduling.py). None: nothing ages."""
        return self.waiting.ages_at(now)  # type: ignore[attr-defined]

    def _plan_tail(self, out: SchedulerOutput, need: int, now: float) -> None:
        """No decode run behind a prefill where the plan after the prefill's iteration may
        differ from it: SLO shedding measures the prefill rate at that iteration's end (a
        tail would commit it at the run's end, and arrivals meanwhile would read the old
        rate), and a waiting request of a higher class than one running may make room then
        (the queue's head can change within this plan, after its admissions). Planned step by
        step there, as ``engine.max_fast_forward=1`` would (tests/test_scheduling.py)."""
        if self.pcfg.shed == "slo":
            return
        if (self.pcfg.preempt and self.waiting and self.running
                and self.waiting[0].priority > min(r.priority for r in self.running.values())):
            return
        super()._plan_tail(out, need, now)

    def _make_room(self, now: float) -> None:
        """Preempt lower classes until the queue's head (of a higher class) has a seat and the
        blocks of its first chunk, or no lower class runs."""
        head = self.waiting[0]
        if head.remote_kv:
            return
        n = head.num_tokens - head.computed
        if self.chunked:
            n = min(n, self.max_tokens)
        dec = self.decode
        while True:
            need = dec.need_next() if dec.members else 0
            if len(self.running) < self.max_seqs and blocks_for(n, self.block_size) <= self.pool.free - need:
                return
            low = min(r.priority for r in self.running.values())
            if low >= head.priority:
                return
            self._preempt_last(now)
            self.priority_preemptions += 1
            if not self.running:
                return

    def update(self, out: SchedulerOutput, done: int, ends: Sequence[float]) -> list[Request]:
        if out.prefill_tokens and self.pcfg.shed == "slo":
            dt = float(ends[0]) - self._t_plan
            if dt > 0:
                rate = out.prefill_tokens / dt
                a = self.pcfg.rate_smoothing
                self.prefill_rate = rate if self.prefill_rate <= 0 else (1 - a) * self.prefill_rate + a * rate
        return super().update(out, done, ends)


register("scheduler", "sjf", SJFSchedulerConfig)(PriorityScheduler)


def _zero(_: Request) -> float:
    return 0.0

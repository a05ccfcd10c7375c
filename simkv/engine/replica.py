"""One model instance: a scheduler, a KV pool and a cost model, advanced by SimPy events.

The replica is one event loop, not a process per request: it asks its scheduler for the
next run (one iteration, or many decode-only iterations of an unchanged batch), prices it
with the cost model, and sleeps until the run ends. An arrival during a run cuts it at the
end of the iteration in flight, because that is when a real engine's scheduler would see
the new request. So events scale with arrivals and batch changes, never with tokens.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from heapq import heappush
from itertools import accumulate
from typing import TYPE_CHECKING, Any

import numpy as np
import simpy

from simkv.config.schema import EngineConfig
from simkv.engine.events import NORMAL, Wakeup
from simkv.entities.request import Request
from simkv.metrics.recorder import TableWriter
from simkv.perf import fast_runs
from simkv.perf.roofline import CostModel
from simkv.policies.scheduler.interface import Scheduler, SchedulerOutput

if TYPE_CHECKING:
    from simkv.engine.pool import Pool
    from simkv.engine.topology import Slots
    from simkv.policies.predictor.interface import OutputPredictor


_C_RUNS = fast_runs.COMPILED


class LivelockError(RuntimeError):
    """The engine kept iterating without any request finishing (a policy bug)."""


class PlanNow:
    """Plans an arrival asks for, held until the arrival's callback ends (engine/cluster.py).

    An idle replica that receives a request plans at NORMAL priority at the same instant, so
    that every request arriving at that instant is queued first. That costs one SimPy event
    per arrival. While ``open``, ``Replica.poke`` reserves the event's id (its place in the
    order) instead; ``flush`` then plans at once, in that order, while no event is due at this
    instant (each wake-up would have been the very next event, so the same plan runs at the
    same time), and schedules the rest with their reserved ids: the same key, so the same
    order, as scheduling them from ``poke``.
    """

    __slots__ = ("env", "items", "open")

    def __init__(self, env: simpy.Environment) -> None:
        self.env = env
        self.open = False
        self.items: list[tuple[Replica, int]] = []

    def flush(self) -> None:
        env = self.env
        now = env._now
        queue = env._queue
        if len(self.items) == 1 and (not queue or queue[0][0] > now):
            replica = self.items[0][0]
            self.items.clear()
            replica._plan(now)
            return
        items = self.items[:]
        self.items.clear()
        # In reserved-id order: while no event is due at this instant, the next wake-up
        # would be the very next event (a plan schedules its run's end later, and anything
        # it schedules now is in the queue), so it plans at once; the rest are scheduled
        # with their reserved ids (a landing whose prefill and decode instances both idle).
        i, n = 0, len(items)
        while i < n and (not queue or queue[0][0] > now):
            items[i][0]._plan(now)
            i += 1
        for replica, eid in items[i:]:
            PlannedWakeup(env, eid, replica._plan_now)


class PlannedWakeup(Wakeup):
    """A NORMAL wake-up at this instant whose event id was reserved earlier (PlanNow)."""

    def __init__(self, env: simpy.Environment, eid: int, callback: Callable[[Any], None]) -> None:
        self.env = env
        self.callbacks = [callback]
        self.tag = 0
        heappush(env._queue, (env._now, NORMAL, eid, self))


def _moved(req: Request) -> None:
    """A request that comes here after its first token elsewhere (a restart, a drain, a live
    migration, a retry) keeps the instance that produced it (requests.parquet's
    ``first_token_replica``; issue 18: a restart's new instance was named for it)."""
    if req.first_token == req.first_token and req.first_token_replica < 0:
        req.first_token_replica = req.replica

class Replica:
    def __init__(self, index: int, env: simpy.Environment, scheduler: Scheduler,
                 cost: CostModel, engine: EngineConfig,
                 on_finish: Callable[[Request, float], None],
                 iterations: TableWriter | None = None,
                 observer: Callable[[Replica], None] | None = None) -> None:
        self.index = index
        self.env = env
        self.scheduler = scheduler
        self.cost = cost
        self.on_finish = on_finish
        self.iterations = iterations
        self.observer = observer
        self.livelock_limit = engine.livelock_iterations
        # When its scheduler's state changes by itself mid-run (a queue that ages requests):
        # ``next_wake(now)`` where the scheduler has one, else None (_plan).
        self._next_wake = getattr(scheduler, "next_wake", None)
        # Load, as routers see it: prompt tokens plus the *predicted* output of each request
        # here (no router knows a true output length); ``_charged`` remembers what each
        # request added, so what leaves is exactly what came.
        self.outstanding_requests = 0
        self.outstanding_tokens = 0
        self._charged: dict[int, int] = {}
        self.predictor: OutputPredictor = None  # type: ignore[assignment]  # set by the cluster
        # Run in progress.
        self.busy = False
        self.epoch = 0
        self._out: SchedulerOutput | None = None
        self._ends: Sequence[float] | None = None
        self._done = 0
        self._start = 0.0
        self._idle_iterations = 0
        self.iterations_run = 0
        self.runs = 0
        # Lifecycle (engine/lifecycle.py): set by the cluster when it builds the instance.
        self.pool: Pool = None  # type: ignore[assignment]
        self.state = "none"
        self.dp = 1
        self.gpus = 1
        self.slots: Slots = None  # type: ignore[assignment]
        # Called when a plan finds nothing to run (a draining instance may then stop), and
        # after a run ends, before the next is planned (an instance restarting at once).
        self.on_idle: Callable[[Replica], None] | None = None
        self.on_run_end: Callable[[Replica], None] | None = None
        self.on_stopped: Callable[[], None] | None = None
        self.drain_action = -1
        # Tokens per second, for routers that weigh outstanding work by instance speed.
        self.work_rate = 1.0
        self.kv: Any = None  # its KV manager (prefix cache), set by the cluster
        # Its collectives on the fabric (engine/collectives.py; collectives.on_fabric).
        self.collectives: Any = None
        # Its power (simkv/energy/accounting.py; energy.enabled): caps stretch runs, energy counted.
        self.power: Any = None
        # Shared by the cluster's instances: arrivals' plans held until the arrival ends.
        self.plan_now: PlanNow | None = None
        # ``plan_now`` where this instance's run ends poke other instances (a prefill
        # instance's, handing requests to decode instances; set by the cluster), else None.
        self.hold_run_end: PlanNow | None = None
        # Routers' indexes over lists this instance is in (policies/router/index.py): their
        # dirty sets, told whenever what a router reads may have changed.
        self.watchers: list[set[Replica]] = []

    def set_layout(self, dp: int, cost: Any, kv_blocks: int) -> None:
        """Serve on another data-parallel degree from the next plan on (elastic resize): the
        KV already held stays where it is; the pool grows or shrinks to ``kv_blocks``."""
        self.dp = dp
        self.gpus = len(self.slots.gpus)
        self.cost = cost
        self.scheduler.pool.resize(kv_blocks)
        self.scheduler.scale_seats(self.pool.layout(dp).dp)
        self.work_rate = self.pool.work_rate(dp)
        for w in self.watchers:
            w.add(self)

    def submit(self, req: Request) -> None:
        """A request arrives (called from an URGENT arrival event at its arrival time)."""
        _moved(req)
        req.replica = self.index
        req.pool = self.pool.index
        self.scheduler.add_request(req)
        self._charge(req)
        self.poke()

    def adopt(self, req: Request) -> None:
        """A running request moved here with its KV to receive (engine/migration.py): first
        in line, admitted with ``remote_kv``."""
        _moved(req)
        req.replica = self.index
        req.pool = self.pool.index
        self.scheduler.attach_running(req)
        self._charge(req)
        self.poke()

    def _charge(self, req: Request) -> None:
        self.outstanding_requests += 1
        # A prefill copy (disaggregated serving) generates exactly its first token here.
        out = 1 if req.parent is not None else self.predictor.predict(req)
        tokens = req.prompt_tokens + out
        self._charged[req.id] = tokens
        self.outstanding_tokens += tokens
        if self.watchers:
            for w in self.watchers:
                w.add(self)

    def _discharge(self, req: Request) -> None:
        self.outstanding_requests -= 1
        self.outstanding_tokens -= self._charged.pop(req.id)
        if self.watchers:
            for w in self.watchers:
                w.add(self)

    # --- what routers may read ----------------------------------------------------------
    def cached_tokens(self, req: Request) -> int:
        """Prompt tokens of ``req`` this instance has cached in HBM (0 without a prefix cache)."""
        kv = self.kv
        return kv.cached_tokens(req) if kv is not None else 0

    def spare_blocks(self) -> int:
        """KV blocks this instance could give up now: free ones, less what its run in flight
        will still allocate."""
        pool = self.scheduler.pool
        if self.busy and self._out is not None:
            return max(0, pool.free - self.scheduler.planned_need(self._out))
        return pool.free

    def kv_used(self) -> int:
        """KV blocks in use now. A run's decode blocks are allocated when it is committed;
        step by step commits each iteration at its end, so the iterations of the run in flight
        that have ended count too (what an autoscaler's kv_utilization reads)."""
        pool = self.scheduler.pool
        out, done = self.in_flight()
        need_by = getattr(self.scheduler, "need_by", None)
        if out is None or not done or need_by is None:
            return pool.used
        return pool.used + need_by(out, done)

    def in_flight(self) -> tuple[SchedulerOutput | None, int]:
        """The run in flight (None when idle) and how many of its iterations have ended by
        now. Step by step has committed those; a fast-forwarded run commits them at its end,
        so what reads a request's KV or the free blocks as of now adds them (Llumnix's
        migration, engine/migration.py)."""
        out, ends = self._out, self._ends
        if out is None or ends is None:
            return None, 0
        if self._done < 2:
            return out, 0
        return out, bisect_right(ends, self.env._now, 0, self._done - 1)

    def pending_prefill_tokens(self) -> int:
        """Prompt tokens queued or part-way through prefill here and not yet scheduled: work
        ahead of a new request's first token (the chunks of the iteration in flight count as
        done, as in vLLM)."""
        return self.scheduler.pending_prefill_tokens()

    def hand_back(self, everything: bool = False) -> list[Request]:
        """Requests removed from this instance for others: the queued ones that never ran
        (it drains), or, with ``everything``, all of them, running ones preempted (it
        restarts; call between iterations)."""
        reqs = (self.scheduler.evacuate(self.env.now) if everything
                else self.scheduler.take_waiting())
        for req in reqs:
            self._discharge(req)
        return reqs

    def poke(self) -> None:
        """Something changed outside a plan (an arrival, KV landed, memory freed): replan.

        An idle replica plans now; a busy one cuts its run after the iteration in flight.
        """
        if self.watchers:  # what changed may be what a router reads
            for w in self.watchers:
                w.add(self)
        if not self.busy:
            self.busy = True
            # Plan at NORMAL priority so that every request arriving at this instant is in
            # the queue first (same-time arrivals batch together, as in a real engine).
            held = self.plan_now
            if held is not None and held.open:
                held.items.append((self, next(self.env._eid)))  # type: ignore[attr-defined]
                return
            Wakeup(self.env, 0.0, NORMAL, self._plan_now)
        elif self._ends is not None and self._done > 1:
            self._cut(self.env._now)  # (env.now is a property of SimPy's, interpreted)

    def admission_changed(self) -> None:
        """What a queued request's admission reads changed outside this instance's plans:
        granules entered or left KV that other instances write (a peer's demotion into the
        node's DRAM evicts older granules there; with ``memory.peer_hbm``, a peer's HBM cache).
        With requests waiting, the run in flight is cut after the iteration in flight, where
        step by step plans next and reads the change (fast-forwarded, the queue's head stayed
        blocked to the run's end, or was admitted later on other KV: docs/ARCHITECTURE.md)."""
        if self._ends is not None and self._done > 1 and getattr(self.scheduler, "waiting", None):
            self._cut(self.env._now)

    def _cut(self, t: float) -> None:
        ends = self._ends
        assert ends is not None
        j = bisect_left(ends, t, 0, self._done)
        if j >= self._done - 1:
            return  # already in the last iteration of the run
        self._done = j + 1
        self.epoch += 1
        Wakeup(self.env, float(ends[j]) - t, NORMAL, self._run_ended, self.epoch)

    def _woken(self, event: Wakeup) -> None:
        if event.tag == self.epoch and self._ends is not None and self._done > 1:
            self._cut(self.env._now)

    def _plan_now(self, _: object) -> None:
        self._plan(self.env._now)

    def _plan(self, now: float) -> None:
        out = self.scheduler.schedule(now)
        if self.watchers:  # admissions and committed prefills change pending prompt tokens
            for w in self.watchers:
                w.add(self)
        if out is None:
            self.busy = False
            self._out = self._ends = None
            if self.on_idle is not None:
                self.on_idle(self)
            return
        durations = self.cost.run_times(out)
        if self.power is not None:  # a power cap or locked clock stretches the iterations
            durations = self.power.plan(out, durations)
        if self.collectives is not None:  # contention on its links; hold their bandwidth
            durations = self.collectives.plan(out, durations)
        if out.num_iterations == 1:
            ends: Sequence[float] = (now + durations,)  # type: ignore[operator]
        elif isinstance(durations, list):
            # (the same floats from a C loop where simkv/perf/fast_runs.py is compiled)
            ends = (fast_runs.accumulate_from(now, durations) if _C_RUNS
                    else list(accumulate(durations, initial=now))[1:])
        elif isinstance(durations, np.ndarray):
            # (np.cumsum's wrapper costs more than the sum; compiled, one C loop gives the same
            # floats in one array)
            ends = (fast_runs.ends_from(now, durations) if _C_RUNS
                    else now + durations.cumsum())
        else:
            ends = now + np.cumsum(durations)
        self._out, self._ends, self._done, self._start = out, ends, len(ends), now
        self.epoch += 1
        Wakeup(self.env, float(ends[-1]) - self.env._now, NORMAL, self._run_ended, self.epoch)
        if self._next_wake is not None and len(ends) > 1:
            t = self._next_wake(now)
            if t is not None and t < ends[-1]:
                # The scheduler's state changes by itself within this run: cut the run after
                # the iteration in flight then, as an arrival would, so that the next plan
                # comes when step-by-step planning's would.
                Wakeup(self.env, max(0.0, t - self.env._now), NORMAL, self._woken, self.epoch)

    def interrupt(self, now: float) -> None:
        """The instance is lost at ``now``: the iterations of the run in flight that ended by
        then are committed (their tokens were out), the one in flight is lost, and nothing
        runs until someone plans again. Its requests stay with the scheduler (hand_back)."""
        out, ends = self._out, self._ends
        self._out = self._ends = None  # (committed below: as in _run_ended)
        if out is not None and ends is not None:
            done = bisect_right(ends, now, 0, self._done)
            if done:
                self._done = done
                self._commit(out, ends, done)
            # NOTE: with none ended, progress a plan committed early (a prefill joined to the
            # decode batch at planning) is undone when the scheduler materialises the request.
        self.epoch += 1  # its wake-up is stale now
        self._out = self._ends = None
        self.busy = False
        for w in self.watchers:
            w.add(self)

    def _run_ended(self, event: Wakeup) -> None:
        """A run ended (its wake-up's last act): commit it and plan the next.

        With ``hold_run_end`` (a prefill instance), the instances it pokes meanwhile (an
        idle decode instance handed a finished prefill, once per request in a disaggregated
        run) reserve their plans' event ids in ``plan_now`` and are planned when this
        callback ends, at once while no event is due at this instant (PlanNow): the same
        plans at the same times, one SimPy event fewer each. (Not for every instance: the
        hold costs more than it saves where a run's end rarely pokes another instance.)"""
        if event.tag != self.epoch:
            return  # a wake-up for a run that was cut short
        held = self.hold_run_end
        if held is not None:
            if held.open:
                held = None  # an outer callback holds the plans: it flushes them
            else:
                held.open = True
        out, ends, done = self._out, self._ends, self._done
        assert out is not None
        assert ends is not None
        # Committed from here: what reads the run in flight (kv_used, spare_blocks, in_flight,
        # a poke's cut) while the commit's callbacks run (finished requests, a kv_pool's
        # give-back at a request's end) sees none, not this run's blocks counted twice.
        self._out = self._ends = None
        self._commit(out, ends, done)
        # (on_run_end and the observer are handed the run that ended, as before)
        self._out, self._ends = out, ends
        if self.on_run_end is not None:
            self.on_run_end(self)
        if self.observer is not None:
            self.observer(self)
        self._plan(float(ends[done - 1]))
        if held is not None:
            held.open = False
            if held.items:
                held.flush()

    def _commit(self, out: SchedulerOutput, ends: Sequence[float], done: int) -> None:
        """Apply the first ``done`` iterations of ``out``: finished requests are reported."""
        finished = self.scheduler.update(out, done, ends)
        if self.watchers:
            for w in self.watchers:
                w.add(self)
        if self.collectives is not None:
            self.collectives.end(done)
        if self.power is not None:
            self.power.commit(out, ends, done, self._start)
        self.runs += 1
        self.iterations_run += done
        if self.iterations is not None:
            pool = self.scheduler.pool
            self.iterations.append((self.index, self._start, float(ends[done - 1]) - self._start,
                                    done, out.prefill_tokens, out.num_decodes, pool.used,
                                    pool.capacity))
        if finished:
            self._idle_iterations = 0
            for req in finished:
                self._discharge(req)
                self.on_finish(req, req.finish)
            give_back = self.scheduler.pool.give_back
            if give_back is not None:
                give_back()  # borrowed memory goes back as requests end
        else:
            self._idle_iterations += done
            if self._idle_iterations > self.livelock_limit:
                raise LivelockError(
                    f"replica {self.index}: {self._idle_iterations} iterations without a "
                    f"request finishing ({self.scheduler.num_unfinished()} unfinished)"
                )

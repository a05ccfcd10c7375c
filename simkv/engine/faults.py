"""Instances lost: failures of GPUs, nodes, links and engine processes, and spot preemption.

One mechanism for both (the issue's "an instance lost, with or without a grace period"):

* **Failure** (no notice). The instance stops at once: iterations of its run that ended by
  then count (their tokens were out), the one in flight is lost, and so is everything in its
  HBM (prefix cache, private KV, swap reservations) and every transfer in flight to or from
  it. State ``failed`` until the failure is *detected* (``faults.detect_s``, a health
  check): meanwhile the router still sends it requests, which wait with the ones it had.
  At detection the instance is ``stopped``, its healthy GPUs free, its broken ones out of
  service for the repair time; its requests are handed back (``faults.on_loss``: resumed
  elsewhere with the tokens already streamed, which re-prefill or come back from a lower
  tier where their KV was written; restarted from scratch; or failed with the reason), and
  a replacement starts through the lifecycle (provisioning, weights over the fabric,
  warm-up) on free healthy GPUs of the pool, or once the failed ones are repaired.
* **Node** failures take every instance on the node and the node's DRAM/SSD KV store;
  **process** failures (engine crashes) break no hardware: the replacement restarts at once
  on the same GPUs. A **link** failure cuts the node's instances off (``unreachable``): their
  requests are lost to the router, their engines keep weights and prefix cache, and they
  serve again when the link is repaired, without reloading.
* **Spot preemption** (a notice). The instance stops taking requests (``preempting``),
  hands its queued ones back, and has ``spot.grace_s`` during which its running requests
  finish (``finish``) or move their KV to other instances (``migrate``); what is left at the
  end of the grace period is lost as above, with no detection delay (the notice told the
  router). A replacement spot instance may come ``spot.reacquire_s`` later. When and how
  notices come, and the moves of ``migrate``, are engine/spot.py's; each loss's record and
  summary.json's totals, engine/losses.py's.

Invariant (tests/test_faults.py): no request is lost silently; each ends finished, rejected
or failed with a reason.

Long timers (repairs, the next random failure, a reacquired spot instance) ride one
wake-up chain of at most ``TICK_S`` per step that stops when the cluster has no work left,
so a repair due long after the last request does not stretch the run (nor its GPU-hours).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from simkv.config.bounds import ConfigError
from simkv.engine.events import NORMAL, Wakeup
from simkv.engine.lifecycle import (
    FAILED,
    LOADING,
    PREEMPTING,
    PROVISIONING,
    SCALING,
    SERVING,
    STOPPED,
    UNREACHABLE,
)
from simkv.engine.losses import Loss, summarize
from simkv.engine.spot import Spot
from simkv.entities.request import Request, State

TICK_S = 5.0
# States of an instance that serves, or will without a new launch.
LIVE = (PROVISIONING, LOADING, SERVING, SCALING, UNREACHABLE, PREEMPTING)
NAN = math.nan
# Instances lost one after another with no request completing in between: the run cannot
# progress (failures come faster than instances start and serve), so it stops with a one-line
# error instead of simulating losses for ever (faults.gpu_mtbf_h=0.001 ran without end).
MAX_LOSSES_WITHOUT_PROGRESS = 10_000


def _nothing(*_: object) -> None:
    """A lost instance's poke: nothing plans there any more."""


class Faults:
    """Injects the run's losses and carries out what follows them."""

    def __init__(self, cluster: Any, rng: np.random.Generator) -> None:
        cfg = cluster.cfg
        self.cluster = cluster
        self.env = cluster.env
        self.lc = cluster.lifecycle
        self.topo = cluster.topology
        self.f = cfg.faults
        self.s = cfg.spot
        self.rng = rng
        gpn = self.topo.gpn
        fault_pools = self.f.pools or list(cluster.pools)
        self.gpus = [g for p in fault_pools for g in range(self.topo.pool_range[p][0],
                                                           sum(self.topo.pool_range[p]))]
        self.nodes = sorted({g // gpn for g in self.gpus})
        self.autoscaled = cfg.autoscaler is not None and type(cfg.autoscaler).__name__ != "NoAutoscalerConfig"
        n = len(self.topo.free)
        self.down_until = np.zeros(n)  # a GPU is out of service until then (repair)
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self._armed_at = math.inf  # when the pending wake-up fires (inf: none)
        self._epoch = 0
        # Requests held by failed or unreachable instances until the loss is detected.
        self.limbo: dict[int, list[Request]] = {}
        self.retries: dict[int, int] = {}
        self.pending: list[tuple[Any, int, str]] = []  # replacements waiting for GPUs
        self.losses: list[Loss] = []
        self.hopeless = False  # nothing serves and nothing will: arrivals fail at once
        self.cancelled = 0
        self.cancelled_bytes = 0.0
        # Timers that bring capacity back (repairs a replacement waits for, relinks,
        # reacquired spot instances): while one is pending, waiting is not being stuck.
        self._restoring = 0
        # Losses (of any unit, while requests wait or run) since a request last ended: the
        # progress guard (a GPU lost while under repair still counts: at such rates nothing
        # starts, and the repairs it schedules would keep the run going for ever).
        self._idle_losses = 0
        self._completed_at_loss = -1
        self._check_targets()
        self.spot = Spot(self)  # spot preemption (engine/spot.py)

    def _check_targets(self) -> None:
        """Given events must name GPUs and nodes that exist (instance ids are checked when
        the event comes: instances start during the run)."""
        n, nodes = len(self.topo.free), self.topo.num_nodes

        def span(what: str, k: int) -> str:
            return f"one {what}, 0" if k == 1 else f"{what}s 0-{k - 1}"

        for i, e in enumerate(self.f.events):
            if e.kind in ("gpu", "process") and e.target >= n:
                raise ConfigError(f"faults.events[{i}].target: GPU {e.target} does not exist "
                                  f"(the cluster has {span('GPU', n)})")
            if e.kind in ("node", "link") and e.target >= nodes:
                raise ConfigError(f"faults.events[{i}].target: node {e.target} does not exist "
                                  f"(the cluster has {span('node', nodes)})")

    # --- timers -----------------------------------------------------------------------------
    def start(self) -> None:
        now = self.env.now
        for kind, rate in self.f.rates().items():
            units = len(self.nodes) if kind in ("node", "link") else len(self.gpus)
            self._next_random(kind, rate * units / 3600.0, now)
        for e in self.f.events:
            self._at(e.time_s, lambda e=e: self.inject(e.kind, e.target))
        self.spot.start(now)

    def _at(self, t: float, fn: Callable[[], None], restores: bool = False) -> None:
        """Run ``fn`` at ``t`` (through the tick chain); ``restores``: it brings capacity back."""
        if restores:
            self._restoring += 1

            def done(fn: Callable[[], None] = fn) -> None:
                self._restoring -= 1
                fn()

            fn = done
        heapq.heappush(self._timers, (t, self._seq, fn))
        self._seq += 1
        self._arm()

    def _arm(self) -> None:
        """One wake-up pending, at the next timer or one tick away; a timer added before
        the pending wake-up moves it earlier (the later one goes stale)."""
        if not self._timers:
            return
        now = self.env.now
        at = min(max(self._timers[0][0], now), now + TICK_S)
        if at >= self._armed_at:
            return
        self._armed_at = at
        self._epoch += 1
        Wakeup(self.env, at - now, NORMAL, self._tick, self._epoch)

    def _tick(self, event: Wakeup) -> None:
        if event.tag != self._epoch:
            return
        self._armed_at = math.inf
        now = self.env.now
        while self._timers and self._timers[0][0] <= now:
            _, _, fn = heapq.heappop(self._timers)
            fn()
        if not self.cluster.busy():
            self._timers.clear()  # nothing left to serve: repairs and failures no longer matter
            return
        if self.env.peek() == math.inf and not self._restoring:
            # Nothing else will ever happen but failures: requests waiting for an instance
            # fail, and anything else left is an engine bug (as a dry event queue is).
            self._check_capacity(stuck=True)
            if self.cluster.busy():
                raise RuntimeError("the event queue ran dry with work left (an engine bug)")
            self._timers.clear()
            return
        self._arm()

    def _next_random(self, kind: str, rate_s: float, now: float) -> None:
        t = now + self.rng.exponential(1.0 / rate_s)

        def fire() -> None:
            pool = self.nodes if kind in ("node", "link") else self.gpus
            self.inject(kind, int(pool[int(self.rng.integers(len(pool)))]))
            self._next_random(kind, rate_s, t)

        self._at(t, fire)

    def busy(self) -> bool:
        return bool(self.limbo)

    # --- what fails ---------------------------------------------------------------------------
    def _alive(self) -> list[Any]:
        """Instances not stopped: the pools' lists, not every instance ever started (scanning
        those per loss made a run with thousands of replacements quadratic: 252 s for 224
        requests at faults.gpu_mtbf_h=0.002)."""
        return [r for p in self.cluster.pools.values() for r in p.instances]

    def _holders(self, gpus: set[int]) -> list[Any]:
        return sorted((r for r in self._alive()
                       if r.state not in (STOPPED, FAILED) and gpus.intersection(r.slots.gpus)),
                      key=lambda r: r.index)

    def inject(self, kind: str, target: int) -> None:
        """A loss of ``kind`` at ``target`` now (a GPU, a node, or an instance id)."""
        now = self.env.now
        f = self.f
        if kind == "preempt":
            if target >= len(self.cluster.replicas):
                raise ValueError(f"faults.events: no instance {target} at {now:g} s (instances "
                                 f"0-{len(self.cluster.replicas) - 1} have started)")
            r = self.cluster.replicas[target]
            if r.pool not in self.spot.pools:
                raise ValueError(f"faults.events: instance {target} of pool '{r.pool.name}' is not "
                                 f"spot (spot.pools: {', '.join(self.s.pools)})")
            self.spot.preempt(r)
            return
        loss = self.new_loss(kind, target)
        gpn = self.topo.gpn
        gpus = ({target} if kind in ("gpu", "process")
                else set(range(target * gpn, (target + 1) * gpn)))
        if kind in ("gpu", "node"):
            repair = f.gpu_repair_s if kind == "gpu" else f.node_repair_s
            for g in gpus:
                self.down_until[g] = max(self.down_until[g], now + repair)
            self.topo.free[sorted(gpus)] = False
            self._at(now + repair, lambda: self._repaired(gpus), restores=True)
            if kind == "node":
                self._wipe_node(target)
        act = self._cut_off if kind == "link" else self._fail
        victims = [r for r in self._holders(gpus) if act(r, loss)]
        loss.instances = [r.index for r in victims]
        if victims:
            loss.pool = victims[0].pool.name
        self._progress_guard()
        if kind == "link" and victims:
            self._at(now + f.link_repair_s, lambda: self._relinked(victims, loss), restores=True)

    def new_loss(self, kind: str, target: int, pool: str = "",
                 instances: list[int] | None = None) -> Loss:
        """A loss happening now, recorded for summary.json."""
        loss = Loss(self.env.now, kind, target, pool, instances or [])
        self.losses.append(loss)
        return loss

    def _progress_guard(self) -> None:
        """Count a loss while requests wait or run; stop the run (ValueError, one line naming
        the keys) after MAX_LOSSES_WITHOUT_PROGRESS of them with no request completing.
        Losses while nothing is outstanding (a gap in the trace) do not count."""
        c = self.cluster
        if not (c.backlog or self.limbo or any(r.scheduler.num_unfinished() for r in self._alive())):
            return
        done = c.completed
        self._idle_losses = self._idle_losses + 1 if done == self._completed_at_loss else 1
        self._completed_at_loss = done
        if self._idle_losses < MAX_LOSSES_WITHOUT_PROGRESS:
            return
        keys = [f"faults.{k}_mtbf_h={getattr(self.f, f'{k}_mtbf_h'):g}" for k in self.f.rates()]
        if self.s.preemptions_per_h:
            keys.append(f"spot.preemptions_per_h={self.s.preemptions_per_h:g}")
        # The start-up is a pool key (the one pool of cluster.* has the defaults of docs/CLUSTER.md).
        # Repairs longer than the time between losses keep the GPUs out of service too.
        repairs = [f"faults.{k}_repair_s={getattr(self.f, f'{k}_repair_s'):g}"
                   for k in self.f.rates() if k != "process"]
        also = [f"shorten the repair ({', '.join(repairs)})"] if repairs else []
        if self.cluster.cfg.pools:
            also.append("shorten the start-up (pools.<name>.provisioning_s, warmup_s)")
        raise ValueError(f"faults: {self._idle_losses} losses in a row with no request "
                         f"ending (at {self.env.now:,.0f} s of simulated time): instances are "
                         f"lost faster than they start and serve; lower the loss rate "
                         f"({', '.join(keys) or 'faults.events'})"
                         + "".join(f" or {a}" for a in also))

    def _wipe_node(self, node: int) -> None:
        """A node's DRAM/SSD KV store goes with the node (a cluster-wide store loses the
        granules that lived there)."""
        mem = self.cluster.memory
        if mem is None:
            return
        for stores in mem.stores.values():
            for store in stores:
                if store.node in (node, -1):
                    store.drop_home(node)

    # --- failure -----------------------------------------------------------------------------
    def _freeze(self, r: Any, loss: Loss, lost_hbm: bool) -> None:
        """Stop ``r`` now and hold its requests until the loss is detected."""
        now = self.env.now
        if self.spot.migrator is not None:
            self.spot.migrator.source_lost(r)  # KV still to leave it never will
        running = set(getattr(r.scheduler, "running", ()))
        r.interrupt(now)
        if lost_hbm and r.kv is not None:
            r.kv.lose()
        reqs = r.hand_back(everything=True)
        if lost_hbm:
            n, nbytes = self.topo.fabric.cancel({f"pcie{r.index}", f"loader{r.index}"})
            self.cancelled += n
            self.cancelled_bytes += nbytes
        for req in reqs:
            if req.id in running:
                loss.interrupted += 1
                loss.tokens_to_recompute += req.num_tokens
                self.retries[req.id] = self.retries.get(req.id, 0) + 1
        self.limbo.setdefault(r.index, []).extend(reqs)
        r.submit = r.adopt = lambda req, r=r: self._limbo_submit(r, req)
        r.poke = _nothing

    def _limbo_submit(self, r: Any, req: Request) -> None:
        """The router sent ``req`` to an instance that is gone but not yet known to be."""
        req.replica = r.index
        req.pool = r.pool.index
        self.limbo[r.index].append(req)

    def _fail(self, r: Any, loss: Loss) -> bool:
        if r.state in (FAILED, STOPPED):
            return False
        # Replaced unless it was leaving anyway (draining, preempted).
        replace = r.state in (PROVISIONING, LOADING, SERVING, UNREACHABLE)
        self.lc.set_state(r, FAILED, f"{loss.kind} failure")
        self._freeze(r, loss, lost_hbm=True)
        Wakeup(self.env, self.f.detect_s, NORMAL, lambda _: self._detected(r, loss, replace))
        return True

    def _detected(self, r: Any, loss: Loss, replace: bool) -> None:
        now = self.env.now
        loss.detected_s = now
        if r in self.cluster.serving:
            self.cluster.serving.remove(r)
        broken = {g for g in r.slots.gpus if self.down_until[g] > now}
        self.lc.lost(r, f"{loss.kind} failure detected", keep=broken)
        self._requeue(self.limbo.pop(r.index, []), f"{loss.kind}_failure", loss)
        if replace:
            self._replace(r.pool, r.dp, loss)
        self._check_capacity()

    def _requeue(self, reqs: list[Request], reason: str, loss: Loss) -> None:
        """A lost instance's requests: back to the router, restarted, or failed."""
        on_loss = self.f.on_loss
        for req in reqs:
            started = req.id in self.retries
            if started and on_loss == "fail":
                self._fail_request(req, reason, loss)
            elif started and self.retries[req.id] > self.f.max_retries:
                self._fail_request(req, "retries_exhausted", loss)
            else:
                if started and on_loss == "restart":
                    req.generated = 0  # the client sends it again; what it had is discarded
                    req.first_token = NAN
                loss.requeued += not started
                self.cluster._rehome([req])

    def _fail_request(self, req: Request, reason: str, loss: Loss) -> None:
        loss.failed += 1
        req.state = State.FAILED
        req.reject_reason = reason
        self.cluster._finished(req, self.env.now)

    # --- replacement and repair ---------------------------------------------------------------
    def _replace(self, pool: Any, dp: int, loss: Loss) -> None:
        mode = self.f.replace
        if mode == "none":
            return
        if mode == "repair" and loss.kind in ("gpu", "node"):
            self.pending.append((pool, dp, loss))  # launched when the GPUs are back
            return
        if not self._launch(pool, dp, loss):
            self.pending.append((pool, dp, loss))

    def _launch(self, pool: Any, dp: int, loss: Loss) -> bool:
        held = sum(r.gpus for r in pool.instances if r.state != STOPPED)
        ev = self.lc.new_action(pool, "recover", held, held + pool.layout(dp).gpus)
        r = self.lc.launch(pool, dp, ev, f"replaces the {loss.kind} failure at {loss.time_s:g} s")
        if r is None:
            self.lc.cancel(ev)
            return False
        loss.replacements.append(ev)
        return True

    def _repaired(self, gpus: set[int]) -> None:
        now = self.env.now
        held = {g for r in self._alive() if r.state != STOPPED for g in r.slots.gpus}
        back = [g for g in sorted(gpus) if self.down_until[g] <= now and g not in held]
        self.topo.free[back] = True
        waiting, self.pending = self.pending, []
        for pool, dp, loss in waiting:
            if not self._launch(pool, dp, loss):
                self.pending.append((pool, dp, loss))
        self._check_capacity()

    @staticmethod
    def _live(pools: Iterable[Any]) -> bool:
        """Whether an instance of ``pools`` serves, or will without a new launch."""
        return any(r.state in LIVE for p in pools for r in p.instances)

    def unservable(self, pools: list[Any]) -> bool:
        """Many models: no instance of ``pools`` (a model's) serves or will (all lost, none
        replaced, no autoscaler): a request for that model fails instead of waiting for ever."""
        return not (self.autoscaled or self._restoring or self._live(pools))

    def _check_capacity(self, stuck: bool = False) -> None:
        """Nothing serves, nothing starts, nothing will be repaired into a replacement (and
        no autoscaler, or ``stuck``: nothing else can happen): requests waiting for an
        instance fail instead of waiting for ever, and so will later arrivals. With many
        models the same holds per model: a model whose pools were all lost fails its waiting
        requests, while the other models serve on (it ran dry as an engine bug)."""
        live = self._live(self.cluster.pools.values())
        self.hopeless = not (live or self._restoring) and (stuck or not self.autoscaled)
        if self.hopeless:
            backlog = self.cluster.backlog
            while backlog:
                self.fail_unserved(backlog.popleft())
        models = self.cluster.models
        every = stuck or self.hopeless
        if models is None or not (every or self.unservable([])):
            return
        for name, queue in list(models.waiting.items()):  # failing may route follow-ups
            if queue and (every or not self._live(models.pools_for(name))):
                while queue:
                    self.fail_unserved(queue.popleft())

    def fail_unserved(self, req: Request) -> None:
        """A request that no instance will ever serve (every one lost, none coming back)."""
        req.state = State.FAILED
        req.reject_reason = "no_instance"
        self.cluster._finished(req, self.env.now)

    # --- link ---------------------------------------------------------------------------------
    def _cut_off(self, r: Any, loss: Loss) -> bool:
        """The node's network is down: ``r`` keeps its weights and cache but its requests are
        lost to the router; it stops at the end of the iteration in flight. (An instance
        starting or draining there is left alone: its loads and last requests are node-local.)"""
        if r.state != SERVING:
            return False
        self.lc.set_state(r, UNREACHABLE, "link failure")
        running = set(getattr(r.scheduler, "running", ()))

        def evacuate(r: Any = r) -> None:
            r.on_run_end = None
            reqs = r.hand_back(everything=True)
            for req in reqs:
                if req.id in running:
                    loss.interrupted += 1
                    loss.tokens_to_recompute += req.num_tokens
                    self.retries[req.id] = self.retries.get(req.id, 0) + 1
            self.limbo.setdefault(r.index, []).extend(reqs)

        self.limbo.setdefault(r.index, [])
        if r.busy:
            r.on_run_end = evacuate
            r.poke()  # cut the run after the iteration in flight
        else:
            evacuate()
        r.submit = r.adopt = lambda req, r=r: self._limbo_submit(r, req)
        r.poke = _nothing
        Wakeup(self.env, self.f.detect_s, NORMAL, lambda _: self._unreachable(r, loss))
        return True

    def _unreachable(self, r: Any, loss: Loss) -> None:
        if r.state != UNREACHABLE or r.index not in self.limbo:
            return
        loss.detected_s = self.env.now
        if r in self.cluster.serving:
            self.cluster.serving.remove(r)
        if r.on_run_end is not None:  # still in its last iteration: hand back when it ends
            inner = r.on_run_end

            def later(x: Any, inner: Callable[[Any], None] = inner) -> None:
                inner(x)
                self._requeue(self.limbo.pop(r.index, []), "link_failure", loss)

            r.on_run_end = later
            return
        self._requeue(self.limbo.pop(r.index, []), "link_failure", loss)

    def _relinked(self, victims: list[Any], loss: Loss) -> None:
        for r in victims:
            if r.state != UNREACHABLE:
                continue  # failed meanwhile
            if r.index in self.limbo and r.on_run_end is None:
                self._unreachable(r, loss)  # repaired before it was noticed
            del r.submit, r.adopt, r.poke  # the class's own again
            self.lc.set_state(r, SERVING, "link repaired")
            self.cluster._start_serving(r)
            r.poke()

    # --- summary ------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        return {**summarize(self.losses, self.cancelled, self.cancelled_bytes),
                **self.spot.summary()}

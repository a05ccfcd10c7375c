"""Many models on one cluster: routing by model, GPU groups that pools share, and the
serverless placer that swaps models in and out of them (docs/MODELS.md).

* **Routing by model.** A pool with ``serves`` takes only requests whose ``model`` (a trace's
  column, or a generator's mix) it names; the router chooses among the serving instances of
  those pools. A request for a model with no serving instance waits in that model's queue
  (and, with ``autoscaler=serverless``, triggers a cold start); one for a model no pool
  serves is rejected (``unserved_model``).
* **GPU groups.** Pools naming the same ``gpu_group`` share one set of nodes, sized for the
  largest of them: instances of different models take GPUs from the same slots, so a model
  swap is a drain of one instance and a launch of another on the GPUs it freed, its weights
  loaded over the fabric from the pool's ``weight_source``.
* **The placer** (``autoscaler=serverless``, policies/autoscaler/serverless.py) decides which
  model holds GPUs: cold starts at the first request, scale-out above a load target,
  keep-alive, and eviction of the least recently used idle instance of another model.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from simkv.engine.events import NORMAL, Wakeup
from simkv.engine.lifecycle import DRAINING, LOADING, PROVISIONING, SERVING
from simkv.entities.request import Request


def pool_ranges(pools: dict[str, Any]) -> tuple[dict[str, int], dict[str, str]]:
    """GPUs to reserve per key (a pool, or a GPU group: the largest of its pools) and each
    pool's key, for the topology."""
    sizes: dict[str, int] = {}
    key: dict[str, str] = {}
    for p in pools.values():
        k = f"group:{p.cfg.gpu_group}" if p.cfg.gpu_group else p.name
        key[p.name] = k
        sizes[k] = max(sizes.get(k, 0), p.max_gpus)
    return sizes, key


class ModelRouter:
    """Routes each request among the serving instances of the pools that serve its model."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        self.by_name: dict[str, list[Any]] = {}
        self.any: list[Any] = []  # pools without ``serves``: every model
        for p in cluster.pools.values():
            if p.cfg.serves:
                for name in p.cfg.serves:
                    self.by_name.setdefault(name, []).append(p)
            else:
                self.any.append(p)
        self.waiting: dict[str, deque[Request]] = {}
        # Arrivals per model that found no serving instance of it (an autoscaler's arrival
        # rate: they are routed later as moved, which pool.routed does not count).
        self.arrived_waiting: dict[str, int] = {}
        self.placer: Any = None  # set by the serverless placer
        self.unserved = 0

    def pools_for(self, model: str) -> list[Any]:
        return self.by_name.get(model, []) + self.any

    def route(self, req: Request, moved: bool = False) -> None:
        cluster = self.cluster
        pools = self.pools_for(req.model)
        if not pools:
            self.unserved += 1
            cluster._reject(req, "unserved_model")
            return
        cands = [r for r in cluster.serving if r.pool in pools]
        if not cands and cluster.faults is not None and cluster.faults.unservable(pools):
            cluster.faults.fail_unserved(req)  # its pools all lost, none coming back
            return
        if not cands:
            self.waiting.setdefault(req.model, deque()).append(req)
            if not moved:
                self.arrived_waiting[req.model] = self.arrived_waiting.get(req.model, 0) + 1
            if self.placer is not None:
                self.placer.cold(pools)
            return
        replica = cands[cluster.router.route(req, cands, cluster.env.now)]
        reason = replica.scheduler.admission_error(req)
        if reason:
            req.replica = replica.index
            req.pool = replica.pool.index
            cluster._reject(req, reason)
            return
        if not moved:
            replica.pool.routed += 1
        replica.submit(req)

    def serving_started(self, r: Any) -> None:
        """An instance serves: the requests waiting for its model go to the router."""
        names = r.pool.cfg.serves or list(self.waiting)
        for name in names:
            q = self.waiting.get(name)
            while q:
                self.route(q.popleft(), moved=True)

    def queued(self, pool: Any) -> int:
        names = pool.cfg.serves or list(self.waiting)
        return sum(len(self.waiting.get(n, ())) for n in names)

    def arrivals_waited(self, pool: Any) -> int:
        """Arrivals so far of ``pool``'s models that waited for an instance."""
        names = pool.cfg.serves or list(self.arrived_waiting)
        return sum(self.arrived_waiting.get(n, 0) for n in names)

    def busy(self) -> bool:
        return any(self.waiting.values())


class Placer:
    """Carries out the serverless policy's decisions (the controller of autoscaler=serverless)."""

    def __init__(self, cluster: Any, policy: Any, pools: list[Any]) -> None:
        self.cluster = cluster
        self.env = cluster.env
        self.policy = policy
        self.cfg = policy.cfg
        self.pools = pools
        self.lc = cluster.lifecycle
        self.models: ModelRouter = cluster.models
        self.models.placer = self
        self.idle_since: dict[int, float] = {}
        self.cold_starts = 0
        self.evictions = 0
        self.keep_alive_stops = 0
        self._making_room: set[str] = set()  # pools waiting for an evicted instance to stop

    def start(self) -> None:
        Wakeup(self.env, self.cfg.interval_s, NORMAL, self._tick)

    # --- decisions ----------------------------------------------------------------------------
    def _starting(self, pool: Any) -> int:
        return sum(r.state in (PROVISIONING, LOADING) for r in pool.instances)

    def _serving(self, pool: Any) -> list[Any]:
        return [r for r in pool.instances if r.state == SERVING]

    def cold(self, pools: list[Any]) -> None:
        """A request found no serving instance of its model: start one now unless one is
        already on its way."""
        mine = [p for p in pools if p in self.pools]
        if not mine or any(self._starting(p) for p in mine) or any(p.name in self._making_room
                                                                    for p in mine):
            return
        self._grow(mine[0], "serverless: cold start")

    def _grow(self, pool: Any, reason: str) -> bool:
        """Launch an instance of ``pool`` on free GPUs of its group; a cold start (the model
        has none) may evict another model's idle instance to make room, a scale-out never."""
        if sum(r.state != DRAINING for r in pool.instances) >= pool.max_instances:
            return False
        held = sum(r.gpus for r in pool.instances)
        cold = not any(r.state in (SERVING, PROVISIONING, LOADING) for r in pool.instances)
        ev = self.lc.new_action(pool, "scale_up", held, held + pool.base.gpus)
        if self.lc.launch(pool, pool.base.dp, ev, reason) is not None:
            self.cold_starts += cold  # the model had no instance: its requests wait for this one
            return True
        self.lc.cancel(ev)
        if self.cfg.evict and cold:
            self._make_room(pool, reason)
        return False

    def _make_room(self, pool: Any, reason: str) -> None:
        """Drain the least recently used idle instance of another model sharing the GPUs;
        launch once it has stopped."""
        if pool.name in self._making_room:
            return
        group = pool.cfg.gpu_group
        now = self.env.now
        idle = [(self.idle_since.get(r.index, now), r) for p in self.cluster.pools.values()
                if p is not pool and group is not None and p.cfg.gpu_group == group
                for r in p.instances if r.state == SERVING and self._is_idle(r)]
        victim = self.policy.victim(idle)
        if victim is None:
            return  # every instance busy: retried at the next tick
        self.evictions += 1
        self._making_room.add(pool.name)
        held = sum(r.gpus for r in victim.pool.instances)
        ev = self.lc.new_action(victim.pool, "scale_down", held, held - victim.gpus)

        def then() -> None:
            self._making_room.discard(pool.name)
            self._grow(pool, reason + f" (GPUs of instance {victim.index})")

        self.lc.drain(victim, ev, f"serverless: evicted for {pool.name}", then=then)

    @staticmethod
    def _is_idle(r: Any) -> bool:
        return not r.busy and r.outstanding_requests == 0 and not r.scheduler.num_unfinished()

    # --- every interval -----------------------------------------------------------------------
    def _tick(self, _: object) -> None:
        now = self.env.now
        for pool in self.pools:
            serving = self._serving(pool)
            for r in serving:
                if self._is_idle(r):
                    self.idle_since.setdefault(r.index, now)
                else:
                    self.idle_since.pop(r.index, None)
            queued = self.models.queued(pool)
            outstanding = queued + sum(r.outstanding_requests for r in serving)
            if self.policy.wants_more(outstanding, len(serving), self._starting(pool)) \
                    and pool.name not in self._making_room:
                cold = not serving and not self._starting(pool)
                self._grow(pool, "serverless: cold start" if cold else "serverless: scale out")
            live = len(serving) + self._starting(pool)
            for r in serving:
                since = self.idle_since.get(r.index)
                if (since is not None and self.policy.expired(since, now)
                        and live > pool.min_instances and not queued):
                    live -= 1
                    self.keep_alive_stops += 1
                    self.idle_since.pop(r.index, None)
                    held = sum(x.gpus for x in pool.instances)
                    ev = self.lc.new_action(pool, "scale_down", held, held - r.gpus)
                    self.lc.drain(r, ev, "serverless: keep-alive expired")
        if self.cluster.busy():
            Wakeup(self.env, self.cfg.interval_s, NORMAL, self._tick)

    def summary(self) -> dict[str, Any]:
        return {"cold_starts": self.cold_starts, "evictions": self.evictions,
                "keep_alive_stops": self.keep_alive_stops,
                "unserved_model": self.models.unserved}

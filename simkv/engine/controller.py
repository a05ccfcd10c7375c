"""The autoscaling controller: every ``interval_s`` it measures each pool over a window, asks
the recommender how many GPUs the pool should hold and the autoscaler policy how to get
there, and carries out the policy's actions through the lifecycle.

It is one SimPy wake-up per interval (nothing per request: the pools count arrivals and
completions, the controller differences the counters), and it stops ticking once the
cluster has no work left, so a run still ends when its last request does.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from simkv.config.schema import SimConfig
from simkv.engine.events import NORMAL, Wakeup
from simkv.engine.lifecycle import LEAVING, SERVING, ElasticParams
from simkv.engine.pool import Pool
from simkv.policies.autoscaler import Drain, Launch, NoAutoscalerConfig, Resize, Restart, SetClock
from simkv.policies.autoscaler.recommend import Recommender, Sample
from simkv.registry import build, name_of


class Controller:
    def __init__(self, cluster: Any, policy: Any, pools: list[Pool]) -> None:
        self.cluster = cluster
        self.env = cluster.env
        self.policy = policy
        self.cfg = policy.cfg
        self.pools = pools
        self.lifecycle = cluster.lifecycle
        self.name = name_of(self.cfg)
        self.recommenders = {p.name: Recommender(self.cfg) for p in pools}
        # Per pool: (time, routed, finished, slo_met, cluster's unrouted) at each tick.
        self.samples: dict[str, deque[tuple[float, int, int, int, int]]] = {
            p.name: deque() for p in pools}
        self.last_action: dict[str, float] = {p.name: -float("inf") for p in pools}
        self.elastic = getattr(policy, "params", ElasticParams())

    def start(self) -> None:
        for p in self.pools:
            self.samples[p.name].append((self.env.now, self._routed(p), p.finished, p.slo_met,
                                         self.cluster.unrouted))
        Wakeup(self.env, self.cfg.interval_s, NORMAL, self._tick)

    def _tick(self, _: object) -> None:
        now = self.env.now
        for pool in self.pools:
            self._decide(pool, now)
        if self.cluster.busy():
            Wakeup(self.env, self.cfg.interval_s, NORMAL, self._tick)

    def _routed(self, pool: Pool) -> int:
        """Arrivals of the pool: routed to it, or (many models) waiting for it to serve: a
        pool at zero instances whose requests waited in the model router measured nothing,
        and horizontal scaling never brought it back (the run never ended)."""
        models = self.cluster.models
        return pool.routed + (models.arrivals_waited(pool) if models is not None else 0)

    def measure(self, pool: Pool, now: float) -> Sample:
        hist = self.samples[pool.name]
        unrouted = self.cluster.unrouted
        hist.append((now, self._routed(pool), pool.finished, pool.slo_met, unrouted))
        while len(hist) > 2 and hist[1][0] <= now - self.cfg.window_s:
            hist.popleft()
        t0, routed0, finished0, met0, unrouted0 = hist[0]
        span = max(now - t0, 1e-9)
        serving = [r for r in pool.instances if r.state == SERVING]
        held = [r for r in pool.instances if r.state not in LEAVING]
        used = sum(r.kv_used() for r in serving)
        cap = sum(r.scheduler.pool.capacity for r in serving)
        done = pool.finished - finished0
        # Arrivals that found no instance serving count for every pool by its share of the
        # GPUs held (they are routed when capacity returns, not counted twice).
        held_gpus = sum(r.gpus for r in held)
        total_held = sum(r.gpus for p in self.cluster.pools.values() for r in p.instances
                         if r.state not in LEAVING)
        share = held_gpus / total_held if total_held else 1.0 / len(self.cluster.pools)
        return Sample(
            serving_gpus=sum(r.gpus for r in serving),
            held_gpus=held_gpus,
            arrival_rate=(self._routed(pool) - routed0 + share * (unrouted - unrouted0)) / span,
            outstanding=(sum(r.outstanding_requests for r in serving) + len(self.cluster.backlog)
                         + (models.queued(pool) if (models := self.cluster.models) else 0)),
            kv_utilization=used / cap if cap else 0.0,
            slo_attainment=(pool.slo_met - met0) / done if done else None,
        )

    def _waiting(self, pool: Pool) -> int:
        """Requests that wait for this pool to serve: its models' queue (many models), or the
        arrivals no instance of any pool could take."""
        models = self.cluster.models
        return models.queued(pool) if models is not None else len(self.cluster.backlog)

    def _decide(self, pool: Pool, now: float) -> None:
        sample = self.measure(pool, now)
        desired = self.recommenders[pool.name].desired(sample, now)
        if sample.held_gpus == 0 and self._waiting(pool):
            # Requests wait for a pool at zero: start one instance whatever the metric says
            # (KEDA's activation). A metric that sees no demand at zero (kv_utilization,
            # slo_attainment, an arrival rate whose window has passed) left them waiting and
            # the run never ended.
            desired = max(desired, pool.base.gpus)
        if now < self.last_action[pool.name] + self.cfg.cooldown_s:
            return
        actions = self.policy.decide(pool, desired, now)
        for a in actions:  # autoscaler=energy: the pool's SM clock (simkv/energy/)
            if isinstance(a, SetClock):
                pool.power.set_clock(a.fraction)
        actions = [a for a in actions if not isinstance(a, SetClock)]
        if not actions:
            return
        lc = self.lifecycle
        before = sample.held_gpus
        # One decision is one scaling event, however many instances it starts or drains.
        launches = [a for a in actions if isinstance(a, Launch)]
        if launches:
            gpus = sum(pool.layout(a.dp).gpus for a in launches)
            ev = lc.new_action(pool, "scale_up", before, before + gpus)
            started = [r for a in launches if (r := lc.launch(pool, a.dp, ev, f"{self.name}: scale up"))]
            ev.gpus_after = before + sum(r.gpus for r in started)
            if not started:
                lc.cancel(ev)  # no free GPUs in the pool's nodes: nothing happened
        drains = [a for a in actions if isinstance(a, Drain)]
        if drains:
            gpus = sum(a.instance.gpus for a in drains)
            ev = lc.new_action(pool, "scale_down", before, before - gpus)
            for a in drains:
                lc.drain(a.instance, ev, f"{self.name}: scale down")
        for a in actions:
            if isinstance(a, Restart):
                self._restart(pool, a, before)
            elif isinstance(a, Resize):
                after = before - a.instance.gpus + pool.layout(a.dp).gpus
                kind = "scale_up" if after > before else "scale_down"
                ev = lc.new_action(pool, kind, before, after)
                if not lc.resize(a.instance, a.dp, ev, self.elastic):
                    lc.cancel(ev)  # cannot yet (KV would not fit, or no GPUs): retry
        self.last_action[pool.name] = now

    def _restart(self, pool: Pool, a: Restart, before: int) -> None:
        lc = self.lifecycle
        after = before - a.instance.gpus + pool.layout(a.dp).gpus
        ev = lc.new_action(pool, "scale_up" if after > before else "scale_down", before, after)

        def relaunch() -> None:
            lc.launch(pool, a.dp, ev, f"{self.name}: restart as {pool.layout(a.dp)}")

        # A cold restart: the instance stops after the iteration in flight; its requests wait
        # for capacity elsewhere (or for the restarted instance), their progress recomputed.
        abort = hasattr(a.instance.scheduler, "evacuate")
        lc.drain(a.instance, ev, f"{self.name}: restart", then=relaunch, abort=abort)


def build_controller(cfg: SimConfig, cluster: Any) -> Controller | None:
    """The run's controller, or None without an autoscaler (nothing is scheduled)."""
    if cfg.autoscaler is None or isinstance(cfg.autoscaler, NoAutoscalerConfig):
        return None
    policy = build(cfg.autoscaler)
    names = policy.cfg.pools or [n for n, p in cluster.pools.items()
                                 if p.max_instances > p.min_instances or len(p.sizes()) > 1]
    if not names and getattr(policy, "acts_on_fixed", False):
        names = list(cluster.pools)  # autoscaler=energy on fixed pools: it chooses the clock
    twice = [n for n in names if names.count(n) > 1]
    if twice:  # decided twice per tick, its window sampled twice
        raise ValueError(f"autoscaler.pools: pool '{twice[0]}' is listed {names.count(twice[0])} "
                         f"times; name each pool once")
    unknown = [n for n in names if n not in cluster.pools]
    if unknown:
        raise ValueError(f"autoscaler.pools: unknown pool '{unknown[0]}'; the pools are "
                         f"{', '.join(cluster.pools)}")
    if not names:
        raise ValueError(f"autoscaler={name_of(cfg.autoscaler)} has no pool to scale: every pool "
                         f"has a fixed size (set cluster.max_replicas or cluster.max_tensor_parallel, "
                         f"or pools.<name>.max_instances / max_data_parallel / "
                         f"max_tensor_parallel)")
    pools = [cluster.pools[n] for n in names]
    for p in pools:
        policy.check(p)
    if getattr(policy, "placement", False):  # autoscaler=serverless: the model placer
        from simkv.engine.models import Placer

        if cluster.models is None:
            raise ValueError("autoscaler=serverless places models: name them per pool "
                             "(pools.<name>.serves) or share GPUs (pools.<name>.gpu_group)")
        return Placer(cluster, policy, pools)  # type: ignore[return-value]
    return Controller(cluster, policy, pools)

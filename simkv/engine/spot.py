"""Spot preemption: a notice, a grace period, then the instance is lost (SpotServe, ASPLOS 2024).

A notice comes at a rate per instance slot of the spot pools (``spot.preemptions_per_h``,
exponential gaps, thinned over empty slots), at given times (``spot.times``: the oldest
serving spot instance), or as a ``faults.events`` entry of kind ``preempt``. The instance
stops taking requests (``preempting``) and hands its queued ones back to the router; during
``spot.grace_s`` its running requests finish (``on_preempt=finish``) or move with their KV to
a serving instance the router picks among those the KV can go to (``migrate``:
engine/migration.py). An instance with nothing left is handed back early; at the end of the
grace period what is left is lost as in a failure (engine/faults.py), with no detection
delay (the notice told the router). A replacement spot instance may come
``spot.reacquire_s`` later, through the lifecycle's start-up.

The loss itself (what is frozen, re-queued, failed, counted) is the failure path's: this
module only decides when, and holds the spot counters of summary.json.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from simkv.engine.events import NORMAL, Wakeup
from simkv.engine.lifecycle import LOADING, PREEMPTING, PROVISIONING, SERVING
from simkv.engine.losses import Loss

if TYPE_CHECKING:
    from simkv.engine.faults import Faults


class Spot:
    """The run's spot pools and their preemptions (Faults.spot)."""

    def __init__(self, faults: Faults) -> None:
        self.f = faults
        self.s = faults.s
        self.env = faults.env
        self.cluster = faults.cluster
        self.pools = [faults.cluster.pools[p] for p in self.s.pools]
        self.counts = {"notices": 0, "preempted": 0, "finished_in_grace": 0, "migrated": 0,
                       "reacquired": 0}
        self.migrator: Any = None  # engine/migration.py, built at the first migrating notice
        self._notices: dict[int, Loss] = {}

    def start(self, now: float) -> None:
        if self.s.preemptions_per_h > 0:
            slots = sum(p.max_instances for p in self.pools)
            self._next_notice(self.s.preemptions_per_h * slots / 3600.0, now)
        for t in self.s.times:
            self.f._at(t, self._notice_oldest)

    def _next_notice(self, rate_s: float, now: float) -> None:
        rng = self.f.rng
        t = now + rng.exponential(1.0 / rate_s)

        def fire() -> None:
            # Thinning: a notice per instance slot of the spot pools; an empty slot gets none.
            slots = [(p, i) for p in self.pools for i in range(p.max_instances)]
            p, i = slots[int(rng.integers(len(slots)))]
            live = [r for r in p.instances if r.state in (PROVISIONING, LOADING, SERVING)]
            if i < len(live):
                self.preempt(live[i])
            self._next_notice(rate_s, t)

        self.f._at(t, fire)

    def _notice_oldest(self) -> None:
        live = [r for p in self.pools for r in p.instances if r.state == SERVING]
        if live:
            self.preempt(min(live, key=lambda r: r.index))

    def preempt(self, r: Any) -> None:
        """A spot notice for ``r``: it leaves routing now and is gone ``grace_s`` later."""
        if r.state not in (PROVISIONING, LOADING, SERVING):
            return
        self.counts["notices"] += 1
        loss = self.f.new_loss("preempt", r.index, r.pool.name, [r.index])
        self.f._progress_guard()
        was_serving = r.state == SERVING
        self.f.lc.set_state(r, PREEMPTING, "spot notice")
        if was_serving:
            self.cluster.serving.remove(r)
            queued = r.hand_back()
            loss.requeued += len(queued)
            self.cluster._rehome(queued)
            if self.s.on_preempt == "migrate":
                self._migrate_all(r, loss)
        r.on_idle = lambda r: self._preempt_idle(r, loss)
        Wakeup(self.env, self.s.grace_s, NORMAL, lambda _: self._grace_over(r, loss))
        if not r.busy and not r.scheduler.num_unfinished():
            self._preempt_idle(r, loss)  # nothing running: gone at once

    def _preempt_idle(self, r: Any, loss: Loss) -> None:
        """Every request finished within the grace period: the instance is handed back early."""
        if (r.state == PREEMPTING and not r.busy and not r.scheduler.num_unfinished()
                and (self.migrator is None or not self.migrator.pending_from(r))):
            self.counts["finished_in_grace"] += 1
            self._gone(r, loss)

    def _grace_over(self, r: Any, loss: Loss) -> None:
        if r.state != PREEMPTING:
            return
        self.f._freeze(r, loss, lost_hbm=True)
        self._gone(r, loss)

    def _gone(self, r: Any, loss: Loss) -> None:
        f = self.f
        self.counts["preempted"] += 1
        loss.detected_s = self.env.now
        r.on_idle = None
        n, nbytes = f.topo.fabric.cancel({f"pcie{r.index}", f"loader{r.index}"})
        f.cancelled += n
        f.cancelled_bytes += nbytes
        f.lc.lost(r, "spot preemption")
        if self.s.reacquire_s is not None:
            f._at(self.env.now + self.s.reacquire_s, lambda: self._reacquire(r.pool, r.dp, loss),
                  restores=True)
        f._requeue(f.limbo.pop(r.index, []), "spot_preemption", loss)
        f._check_capacity()

    def _reacquire(self, pool: Any, dp: int, loss: Loss) -> None:
        self.counts["reacquired"] += self.f._launch(pool, dp, loss)

    def _migrate_all(self, r: Any, loss: Loss) -> None:
        """SpotServe's stateful recovery: after the iteration in flight, every running
        request's KV moves to a serving instance the router picks (engine/migration.py)."""
        from simkv.engine.migration import Migrator, compatible

        if self.migrator is None:
            self.migrator = Migrator(self.f.topo, self.env, self.cluster.replicas)
            self.migrator.on_source_done = self._source_done
        self._notices[r.index] = loss
        migrator = self.migrator

        def go(r: Any = r) -> None:
            r.on_run_end = None
            router = self.cluster.router
            # Only instances the KV can go on on (one pool, or pools alike in role, KV
            # format and served models).
            serving = [x for x in self.cluster.serving if compatible(r, x)]
            for req in list(r.scheduler.running.values()):
                if not serving or r.state != PREEMPTING:
                    return
                if migrator.movable(req):
                    dst = serving[router.route(req, serving, self.env.now)]
                    self.counts["migrated"] += migrator.migrate(req, r, dst)

        if r.busy:
            r.on_run_end = go
            r.poke()  # after the iteration in flight
        else:
            go()

    def _source_done(self, src: Any) -> None:
        """The last KV moving off a preempted instance has landed: it may go early."""
        loss = self._notices.get(src.index)
        if loss is not None and src.state == PREEMPTING:
            self._preempt_idle(src, loss)

    def summary(self) -> dict[str, Any]:
        """summary.json's ``spot`` counters (with spot pools) and ``migration`` (after a move)."""
        out: dict[str, Any] = {}
        if self.pools:
            out["spot"] = dict(self.counts)
        if self.migrator is not None:
            m = self.migrator.stats
            out["migration"] = {"moves": m.migrated, "landed": m.landed, "bytes": m.bytes,
                                "recomputed": m.recomputed}
        return out

"""Llumnix's rescheduling: live migration for load balance, de-fragmentation, draining and
priorities (Sun et al., OSDI 2024, arXiv 2406.03243; code github AlibabaPAI/llumnix, read at
llumnix/global_scheduler/migration_policy.py, llumnix/load_computation.py,
llumnix/llumlet/local_migration_scheduler.py, llumnix/config/default.py).

Every ``interval_s`` (Llumnix's polling interval, 0.05 s) the policy computes each serving
instance's **freeness**, Llumnix's load metric (``remaining_steps`` with de-fragmentation):
free KV blocks, less the blocks the head of its waiting queue needs (the queued demand that
fragmentation leaves unserved), less a **headroom** of ``priority_headroom`` x its blocks
while it runs high-priority requests (Llumnix's virtual usage for priorities), per request
it holds (running, plus one if requests wait). An instance whose freeness is below
``src_freeness`` (3 blocks per request: Llumnix's migrate-out threshold; below 0 its queue's
head does not fit) is a source; sources, most loaded first, are paired with the freest
instances (Llumnix's ``defrag`` pairing), and one decoding request moves per pair and tick if
the destination stays at or above ``src_freeness`` with it and is freer than the source.
The request moved is the lowest class first, then the one with the least KV (``SRF``:
the shortest to copy), never one already moving; at most ``max_concurrent`` live moves
leave an instance at once. With ``drain`` a draining instance moves all its decoding
requests out at once instead of waiting for them.

The move itself is engine/migration.py's live migration (copy while decoding, pause for the
last stage). ``migrate=false`` runs the same sampling without moving anything: the baseline
with the same measurements.

Measured at every tick (summary.json ``migration``): instance-ticks whose queue head is
blocked for memory, and those among them the cluster's free blocks together could have held
(memory **fragmentation**: Llumnix's motivation, its Figure 3); the free memory stranded on
such instances; moves started, stages, aborts, bytes and last-stage pauses.

Left out: Llumnix's dispatch by freeness (choose a router; the experiment uses
least_outstanding for both sides) and its auto-scaling by average freeness (use an
``autoscaler``); migrating queued (not yet running) requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from simkv.config.bounds import bounded
from simkv.engine.events import NORMAL, Wakeup
from simkv.engine.migration import compatible, decoding_tokens, free_now, kv_group
from simkv.entities.request import Request, State
from simkv.registry import register


@dataclass(slots=True)
class LlumnixConfig:
    interval_s: float = bounded(0.05, gt=0)  # MANAGER.POLLING_INTERVAL
    migrate: bool = True
    # Migrate out below this many free blocks per request (Llumnix's migrate-out threshold
    # on its remaining-steps load, MANAGER.MIGRATE_OUT_THRESHOLD -3.0 on the negated load).
    src_freeness: float = bounded(3.0)
    last_stage_blocks: int = bounded(16, ge=0)  # INSTANCE.MIGRATION_LAST_STAGE_MAX_BLOCKS
    max_stages: int = bounded(3, ge=1)  # INSTANCE.MIGRATION_MAX_STAGES
    max_concurrent: int = bounded(1, ge=1)
    drain: bool = True
    # Share of an instance's blocks kept as headroom while it runs high-priority requests
    # (Llumnix's Algorithm 1; assumed 0.2, the top class's share in Vidur's Llumnix port).
    priority_headroom: float = bounded(0.0, ge=0, lt=1)
    # Requests of this class and above are "high" (never moved for balance).
    high_priority: int = bounded(1, ge=1)


@register("migration", "llumnix", LlumnixConfig)
class Llumnix:
    def __init__(self, cfg: LlumnixConfig, **_: object) -> None:
        self.cfg = cfg
        self.cluster: Any = None
        self.migrator: Any = None
        self.samples = 0  # instance-ticks with a waiting queue
        self.blocked = 0  # ... whose head does not fit the free blocks
        self.fragmented = 0  # ... though the cluster's free blocks together would hold it
        self.stranded = 0.0  # sum over ticks of free blocks on blocked instances / total
        self.ticks = 0
        self.drained = 0

    def bind(self, cluster: Any) -> None:
        from simkv.engine.migration import Migrator
        from simkv.registry import name_of

        sched = name_of(cluster.cfg.scheduler)
        if sched not in ("vllm", "continuum", "priority", "sjf"):
            raise ValueError(f"migration=llumnix moves requests between continuous-batching "
                             f"instances (scheduler=vllm, continuum, priority or sjf), got "
                             f"scheduler={sched}")
        roles = {p.cfg.role for p in cluster.pools.values()}
        if roles != {"colocated"}:
            raise ValueError("migration=llumnix cannot act with prefill/decode pools: it balances "
                             "the instances the router serves, the prefill ones, whose requests "
                             "never decode there (a decode pool's are not balanced); use "
                             "colocated pools or migration=none")
        if sum(p.max_instances for p in cluster.pools.values()) < 2:
            raise ValueError("migration=llumnix cannot act with one instance: set "
                             "cluster.replicas (or max_replicas) to 2 or more")
        # KV moves only inside a group of pools of one role, KV format and served models
        # (engine/migration.kv_group): some group must be able to hold two instances.
        groups: dict[tuple[Any, ...], int] = {}
        for p in cluster.pools.values():
            groups[kv_group(p)] = groups.get(kv_group(p), 0) + p.max_instances
        if max(groups.values()) < 2:
            sizes = ", ".join(f"pools.{p.name}: {p.model.name}, at most {p.max_instances}"
                              for p in cluster.pools.values())
            raise ValueError(f"migration=llumnix cannot act: a request moves only to an instance "
                             f"of its own model, role and served models, and no pool (nor pools "
                             f"alike in these) ever has two instances ({sizes}); set a pool's "
                             f"instances or max_instances to 2 or more, or migration=none")
        self.cluster = cluster
        self.migrator = Migrator(cluster.topology, cluster.env, cluster.replicas)
        if self.cfg.drain and self.cfg.migrate:
            cluster.lifecycle.on_drain = self._drain
        Wakeup(cluster.env, self.cfg.interval_s, NORMAL, self._tick)

    # --- load ------------------------------------------------------------------------------
    @staticmethod
    def _head_blocks(r: Any) -> int:
        s = r.scheduler
        if not s.waiting:
            return 0
        head: Request = s.waiting[0]
        return -(-max(0, head.num_tokens - head.computed - (head.remote_kv or 0)) // s.block_size)

    def _freeness(self, r: Any, extra_blocks: int = 0, extra_reqs: int = 0,
                  free_blocks: int | None = None) -> float:
        """``free_blocks``: ``free_now(r)`` where the caller has it."""
        s = r.scheduler
        if free_blocks is None:
            free_blocks = free_now(r)
        free = free_blocks - self._head_blocks(r) - extra_blocks
        if self.cfg.priority_headroom and any(q.priority >= self.cfg.high_priority
                                              for q in s.running.values()):
            free -= self.cfg.priority_headroom * s.pool.capacity
        n = len(s.running) + (1 if s.waiting else 0) + extra_reqs
        return free / max(1, n)

    # --- the periodic pass -------------------------------------------------------------------
    def _tick(self, _: object) -> None:
        cluster = self.cluster
        serving = [r for r in cluster.serving if hasattr(r.scheduler, "reserve_incoming")]
        self.ticks += 1
        # Free blocks now, read once a pass (a move reserves blocks only within its group,
        # after the group's loads are read).
        free = {r: free_now(r) for r in serving}
        self._sample(serving, free)
        if self.cfg.migrate and len(serving) > 1:
            # Balance within each group of instances KV can move between (one pool, or pools
            # of one kv_group: engine/migration.compatible).
            groups: list[list[Any]] = []
            for r in serving:
                for g in groups:
                    if compatible(g[0], r):
                        g.append(r)
                        break
                else:
                    groups.append([r])
            for g in groups:
                if len(g) > 1:
                    self._balance(g, free)
        if cluster.busy():
            Wakeup(cluster.env, self.cfg.interval_s, NORMAL, self._tick)

    def _sample(self, serving: list[Any], free: dict[Any, int]) -> None:
        total_free = sum(free.values())
        total = sum(r.scheduler.pool.capacity for r in serving) or 1
        for r in serving:
            if not r.scheduler.waiting:
                continue
            f = free[r]
            self.samples += 1
            need = self._head_blocks(r)
            if need > f:
                self.blocked += 1
                self.stranded += f / total
                if need <= total_free:
                    self.fragmented += 1

    def _balance(self, serving: list[Any], free: dict[Any, int]) -> None:
        load = sorted(((self._freeness(r, free_blocks=free[r]), r.index, r) for r in serving),
                      key=lambda x: x[:2])
        sources = [x for x in load if x[0] < self.cfg.src_freeness]
        dests = list(reversed(load))
        for (f_src, _, src), (f_dst, _, dst) in zip(sources, dests, strict=False):
            if src is dst or f_dst <= f_src or self.migrator.migrating(src) >= self.cfg.max_concurrent:
                continue
            picked = self._pick(src)
            if picked is None:
                continue
            req, tokens = picked
            blocks = -(-tokens // dst.scheduler.block_size)
            if self._freeness(dst, blocks, 1) < self.cfg.src_freeness:
                continue  # the destination would become a source
            self.migrator.live(req, src, dst, self.cfg.last_stage_blocks, self.cfg.max_stages)

    def _pick(self, src: Any) -> tuple[Request, int] | None:
        """The lowest class, then the least KV (SRF), among decoding requests not moving;
        with its KV tokens now (engine/migration.decoding_tokens)."""
        s = src.scheduler
        best: Request | None = None
        key: tuple[int, int] | None = None
        flight = src.in_flight()  # (the same for every request of src)
        for req in s.running.values():
            if req.state is not State.DECODING or not self.migrator.movable(req):
                continue
            if self.cfg.priority_headroom and req.priority >= self.cfg.high_priority:
                continue
            tokens = decoding_tokens(src, req, flight)
            if tokens < 0:
                continue  # joined to the decode batch at planning, still prefilling now
            k = (req.priority, tokens)
            if key is None or k < key:
                best, key = req, k
        return None if best is None or key is None else (best, key[1])

    def _drain(self, r: Any) -> None:
        """A draining instance moves its decoding requests to the freest serving ones."""
        serving = [x for x in self.cluster.serving if x is not r
                   and hasattr(x.scheduler, "reserve_incoming") and compatible(r, x)]
        if not serving or not hasattr(r.scheduler, "reserve_incoming"):
            return
        for req in sorted((q for q in r.scheduler.running.values()
                           if q.state is State.DECODING), key=lambda q: q.id):
            dst = max(serving, key=lambda x: (self._freeness(x), -x.index))
            if self.migrator.live(req, r, dst, self.cfg.last_stage_blocks, self.cfg.max_stages):
                self.drained += 1

    def summary(self) -> dict[str, Any] | None:
        m = self.migrator.stats if self.migrator is not None else None
        out: dict[str, Any] = {
            "ticks": self.ticks,
            "queued_instance_ticks": self.samples,
            "hol_blocked_share": self.blocked / self.samples if self.samples else 0.0,
            "fragmented_share": self.fragmented / self.samples if self.samples else 0.0,
            "stranded_free_fraction": self.stranded / self.ticks if self.ticks else 0.0,
        }
        if m is not None:
            out["reserved_blocks_at_end"] = sum(
                getattr(r.scheduler, "reserved_in", 0) for r in self.cluster.replicas)
            out.update({"live_moves": m.live, "moved": m.migrated, "landed": m.landed,
                        "stages": m.stages, "aborted": m.aborted, "bytes": m.bytes,
                        "mean_pause_s": m.pause_s / m.landed if m.landed else 0.0,
                        "drained": self.drained})
        return out

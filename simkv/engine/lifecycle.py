"""Instances that start, load, serve, resize, drain and stop.

States, and what moves an instance between them (every transition is a row of
instances.parquet, with the GPUs it holds and the scaling action it belongs to):

    provisioning --(provisioning_s)--> loading --(weights landed + warmup_s)--> serving
    serving --(drain)--> draining --(no request left)--> stopped
    serving --(resize: elastic)--> scaling --(new GPUs attached, weights and experts moved)--> serving

* **provisioning**: GPUs allocated, container and engine start (``provisioning_s``);
* **loading**: the weights of every GPU cross the links of their source (the node's SSDs,
  the network model store, or a serving peer's GPUs) as transfers on the cluster's fabric, so
  they contend with KV traffic; then the engine warms up (``warmup_s``);
* **draining**: the router sends nothing new; queued and running requests finish (none is
  lost); then its GPUs are free;
* **scaling** (ElasticMoE): the instance keeps serving on its old layout, slowed by the
  expert redistribution, while the new GPUs start and receive their weights peer-to-peer;
  then it serves on the new layout with the KV it had (zero-copy: nothing is reloaded).

A vertical restart is a drain followed by a launch of the new layout on the freed GPUs.
Scale-up latency (decision to first request served on the new capacity) is derived from
these rows and requests.parquet in the summary.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from simkv.engine.events import NORMAL, Wakeup
from simkv.engine.pool import Pool
from simkv.engine.topology import Slots, Topology
from simkv.kv.links import Transfer

if TYPE_CHECKING:
    from simkv.engine.replica import Replica

PROVISIONING = "provisioning"
LOADING = "loading"
SERVING = "serving"
SCALING = "scaling"
DRAINING = "draining"
STOPPED = "stopped"
# Losses (engine/faults.py): failed until the failure is detected, preempting during a spot
# notice's grace period, unreachable while its node's network link is down. All three hold
# their GPUs (they are paid for): the lost instance's GPUs are freed at its ``stopped``.
FAILED = "failed"
PREEMPTING = "preempting"
UNREACHABLE = "unreachable"
STATES = (PROVISIONING, LOADING, SERVING, SCALING, DRAINING, STOPPED, FAILED, PREEMPTING,
          UNREACHABLE)
# States in which an instance holds no GPUs (its row's ``gpus`` is what it held before). Cost
# is integrated from the transitions over every other state (metrics/cluster.gpu_seconds), so
# a new state is paid for unless it is listed here (one that frees the GPUs, as stopped does).
RELEASED = frozenset({STOPPED})
# States in which an instance is on its way out: not capacity an autoscaler can count on.
LEAVING = (DRAINING, STOPPED, FAILED, PREEMPTING)


@dataclass(slots=True)
class ElasticParams:
    """How an in-place resize behaves (the elastic_moe autoscaler's settings)."""

    attach_s: float = 2.0
    slowdown: float = 0.5
    # Weights and KV of the GPUs that stay are remapped, not copied (ElasticMoE's HMM);
    # False: the new layout's weights are all reloaded into fresh buffers (peak memory).
    zero_copy: bool = True


@dataclass(slots=True)
class ScaleEvent:
    """One scaling action, for the summary (decision, capacity ready, peak memory)."""

    action: int
    pool: str
    kind: str
    decided_s: float
    gpus_before: int
    gpus_after: int
    instances: list[int] = field(default_factory=list)
    ready_s: float = float("nan")
    moved_bytes: float = 0.0
    peak_weight_bytes_per_gpu: float = 0.0


class SlowedCost:
    """A cost model whose iterations take ``factor`` times longer (serving during an expert
    redistribution: the copies share HBM bandwidth and the engine's streams)."""

    def __init__(self, inner: Any, factor: float) -> None:
        self.inner = inner
        self.factor = factor

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def run_times(self, out: Any) -> Any:
        t = self.inner.run_times(out)
        if isinstance(t, float):
            return t * self.factor
        if isinstance(t, list):
            return [x * self.factor for x in t]
        return t * self.factor


class Lifecycle:
    """Carries out lifecycle actions and records them; the cluster owns routing."""

    def __init__(self, env: Any, topology: Topology, record: Callable[[tuple], None],
                 new_instance: Callable[[Pool, int, Slots, str], Replica],
                 serving: Callable[[Replica], None], leaving: Callable[[Replica], None],
                 rehome: Callable[[list], None]) -> None:
        self.env = env
        self.topology = topology
        self._record = record
        self._new = new_instance
        self._serving = serving
        self._leaving = leaving
        self._rehome = rehome
        self.on_stop: Callable[[Replica], None] | None = None
        # Called when an instance starts draining (a migration policy moves its requests).
        self.on_drain: Callable[[Replica], None] | None = None
        self.actions = 0
        self.events: list[ScaleEvent] = []
        self.weight_bytes_loaded = 0.0

    # --- bookkeeping --------------------------------------------------------------------
    def set_state(self, r: Replica, state: str, reason: str, action: int = -1) -> None:
        self._record((self.env.now, r.index, r.pool.name, r.state, state, r.gpus,
                      r.pool.layout(r.dp).dp, action,
                      reason))
        r.state = state

    def new_action(self, pool: Pool, kind: str, gpus_before: int, gpus_after: int) -> ScaleEvent:
        ev = ScaleEvent(self.actions, pool.name, kind, self.env.now, gpus_before, gpus_after)
        self.actions += 1
        self.events.append(ev)
        return ev

    def cancel(self, ev: ScaleEvent) -> None:
        """Forget an action that could not start (it changed nothing)."""
        self.events.remove(ev)
        if ev.action == self.actions - 1:
            self.actions -= 1

    # --- start --------------------------------------------------------------------------
    def initial(self, pool: Pool) -> None:
        """The pool's starting instances, serving from time 0 (already loaded)."""
        for _ in range(pool.cfg.instances):
            slots = self.topology.allocate(pool.name, pool.base.gpus)
            if slots is None:
                raise ValueError(f"pools.{pool.name}.instances: no room for its initial instances")
            r = self._new(pool, pool.base_degree, slots, "none")
            self.set_state(r, SERVING, "initial")
            self._serving(r)

    def launch(self, pool: Pool, dp: int, ev: ScaleEvent, reason: str) -> Replica | None:
        """A new instance: provisioning, then loading, then serving (None: no free GPUs)."""
        slots = self.topology.allocate(pool.name, pool.layout(dp).gpus)
        if slots is None:
            return None
        r = self._new(pool, dp, slots, "none")
        ev.instances.append(r.index)
        self.set_state(r, PROVISIONING, reason, ev.action)
        Wakeup(self.env, pool.cfg.provisioning_s, NORMAL, lambda _: self._load(r, ev))
        return r

    def _load(self, r: Replica, ev: ScaleEvent) -> None:
        if r.state != PROVISIONING:
            return  # lost while provisioning (engine/faults.py)
        pool = r.pool
        self.set_state(r, LOADING, f"weights from {pool.cfg.weight_source}", ev.action)
        cost = pool.cost(r.dp)
        per_gpu = cost.weight_bytes_per_gpu()
        total = per_gpu * r.gpus
        ev.peak_weight_bytes_per_gpu = max(ev.peak_weight_bytes_per_gpu, per_gpu)
        self.weight_bytes_loaded += total
        ev.moved_bytes += total
        topo = self.topology
        source = pool.cfg.weight_source
        peer = self._peer(r) if source == "peer" else None
        if peer is not None:
            # Each new GPU reads its shard from the matching GPU of a serving instance.
            hw = pool.hw
            moves = [(per_gpu, topo.path_between_gpus(s, d, hw.nvlink_bandwidth, hw.nvlink_latency_s))
                     for s, d in zip(peer.slots.gpus, r.slots.gpus, strict=False)]
        elif source == "network":
            moves = [(total, topo.path_from_store(r.index))]
        elif source == "dram":
            moves = [(total, topo.path_from_dram(r.index))]
        else:
            moves = [(total, topo.path_from_ssd(r.index))]
        self._after_all(moves, lambda: Wakeup(self.env, pool.cfg.warmup_s, NORMAL,
                                              lambda _: self._ready(r, ev)), "weights")

    def _peer(self, r: Replica) -> Replica | None:
        """A serving instance of the same pool and layout to copy weights from, on the same
        node if there is one."""
        node = self.topology.replica_node[r.index]
        best = None
        for p in r.pool.instances:
            if p is r or p.state != SERVING or p.dp != r.dp:
                continue
            if self.topology.replica_node[p.index] == node:
                return p
            best = best or p
        return best

    def _after_all(self, moves: list[tuple[float, list]], then: Callable[[], None], what: str) -> None:
        left = [len(moves)]

        def one(_: Transfer) -> None:
            left[0] -= 1
            if left[0] == 0:
                then()

        if not moves:
            then()
        for nbytes, path in moves:
            self.topology.fabric.start(nbytes, path, one, what)

    def _ready(self, r: Replica, ev: ScaleEvent) -> None:
        if r.state != LOADING:
            return  # stopped or lost while loading
        self.set_state(r, SERVING, "loaded", ev.action)
        if ev.ready_s != ev.ready_s:  # first instance of the action to serve
            ev.ready_s = self.env.now
        self._serving(r)

    # --- stop ---------------------------------------------------------------------------
    def drain(self, r: Replica, ev: ScaleEvent, reason: str,
              then: Callable[[], None] | None = None, abort: bool = False) -> None:
        """Stop routing to ``r``: its queued requests go back to the router; it stops once
        its last running request is done, or, with ``abort`` (a cold restart), at the end of
        the iteration in flight, its running requests preempted and handed back too."""
        ev.instances.append(r.index)
        self._leaving(r)
        self._rehome(r.hand_back())
        self.set_state(r, DRAINING, reason, ev.action)
        r.on_stopped = then
        r.drain_action = ev.action
        if self.on_drain is not None and not abort:
            self.on_drain(r)
        if abort:
            if r.busy:
                r.on_run_end = self._evacuate
                r.poke()  # cut the run after the iteration in flight
            else:
                self._evacuate(r)
        self.maybe_stop(r)

    def _evacuate(self, r: Replica) -> None:
        r.on_run_end = None
        self._rehome(r.hand_back(everything=True))

    def maybe_stop(self, r: Replica) -> None:
        """Called when ``r`` may have run out of work: a draining instance stops."""
        if r.state != DRAINING or r.busy or r.scheduler.num_unfinished():
            return
        self.set_state(r, STOPPED, "drained", r.drain_action)
        self.topology.release(r.slots)
        r.pool.instances.remove(r)
        if self.on_stop is not None:
            self.on_stop(r)
        if r.on_stopped is not None:
            r.on_stopped()

    def lost(self, r: Replica, reason: str, keep: set[int] | None = None) -> None:
        """``r`` is gone (a failure detected, a spot preemption carried out): stopped, its
        GPUs free again except ``keep`` (broken ones, back when repaired). Its requests were
        handed back by the caller (engine/faults.py)."""
        self.set_state(r, STOPPED, reason)
        self.topology.release(Slots([g for g in r.slots.gpus if not keep or g not in keep]))
        r.pool.instances.remove(r)
        if self.on_stop is not None:
            self.on_stop(r)

    # --- elastic resize -------------------------------------------------------------------
    def _reshard(self, r: Replica, old_cost: Any, new_cost: Any, added: Slots | None,
                 gpus: int, ev: ScaleEvent, params: ElasticParams) -> list[tuple[float, list]]:
        """A tensor-parallel resize: every GPU of the new layout holds 1/TP' of each layer's
        weights and of each sequence's KV heads (SpotServe's in-place reparallelisation,
        arXiv 2311.15566, migrates both). Growing, the staying GPUs keep a part of what they
        hold (ranks renumbered so a new shard is a subset of an old one) and each new GPU
        receives its weights and its share of the KV in use from them; shrinking, each staying
        GPU receives what its shard grows by, weights and KV, from the leaving ones."""
        hw = r.pool.hw
        kv = r.scheduler.pool
        tokens = (r.kv_used() + kv.cached) * kv.block_size  # (the run in flight's ended iterations too)
        w_old, w_new = old_cost.weight_bytes_per_gpu(), new_cost.weight_bytes_per_gpu()
        kv_old = tokens * old_cost.kv_bytes_per_token_per_gpu()
        kv_new = tokens * new_cost.kv_bytes_per_token_per_gpu()
        path = self.topology.path_between_gpus
        moves: list[tuple[float, list]] = []
        if added is not None:
            for j, d in enumerate(added.gpus):
                s = r.slots.gpus[j % len(r.slots.gpus)]
                moves.append((w_new + kv_new, path(s, d, hw.nvlink_bandwidth, hw.nvlink_latency_s)))
            ev.peak_weight_bytes_per_gpu = max(w_old, w_new) if params.zero_copy else w_old + w_new
        else:
            keep, leave = r.slots.gpus[:gpus], r.slots.gpus[gpus:]
            grow = max(0.0, w_new - w_old) + max(0.0, kv_new - kv_old)
            for j, d in enumerate(keep):
                s = leave[j % len(leave)]
                moves.append((grow, path(s, d, hw.nvlink_bandwidth, hw.nvlink_latency_s)))
            ev.peak_weight_bytes_per_gpu = w_new if params.zero_copy else w_old + w_new
        return moves

    def resize(self, r: Replica, dp: int, ev: ScaleEvent, params: ElasticParams) -> bool:
        """Grow or shrink a serving instance's data/expert-parallel degree in place."""
        pool = r.pool
        old, new = pool.layout(r.dp), pool.layout(dp)
        if dp < r.dp:
            cap = pool.capacity(dp).num_blocks
            kv = r.scheduler.pool
            if r.kv_used() + kv.pinned > cap:
                return False  # its sequences would not fit on fewer GPUs yet: retry later
        added: Slots | None = None
        if new.gpus > old.gpus:
            added = self.topology.allocate(pool.name, new.gpus - old.gpus, near=r.slots)
            if added is None:
                return False
        ev.instances.append(r.index)
        if added is not None:
            r.gpus = new.gpus  # the new GPUs are held from the decision on
        self.set_state(r, SCALING, f"{old} -> {new}", ev.action)
        r.cost = SlowedCost(pool.cost(r.dp), 1.0 + params.slowdown)
        if r.busy:  # priced slower from the end of the iteration in flight (a run is cut there)
            r.poke()
        old_cost, new_cost = pool.cost(r.dp), pool.cost(dp)
        experts_old, experts_new = old_cost.expert_bytes_per_gpu(), new_cost.expert_bytes_per_gpu()
        rest = new_cost.weight_bytes_per_gpu() - experts_new  # non-expert weights per GPU
        hw = pool.hw
        moves: list[tuple[float, list]] = []
        if pool.resize_tp:
            moves = self._reshard(r, old_cost, new_cost, added, new.gpus, ev, params)
        elif added is not None:
            # New GPUs receive the non-expert weights and their share of experts from the
            # GPUs already there (round robin over them), peer to peer.
            for j, d in enumerate(added.gpus):
                s = r.slots.gpus[j % len(r.slots.gpus)]
                nbytes = experts_new + (rest if params.zero_copy else new_cost.weight_bytes_per_gpu())
                moves.append((nbytes, self.topology.path_between_gpus(s, d, hw.nvlink_bandwidth,
                                                                      hw.nvlink_latency_s)))
            # Staying GPUs keep what they hold; with zero copy they only drop experts.
            peak_old = old_cost.weight_bytes_per_gpu() if params.zero_copy else \
                old_cost.weight_bytes_per_gpu() + new_cost.weight_bytes_per_gpu()
            ev.peak_weight_bytes_per_gpu = max(peak_old, new_cost.weight_bytes_per_gpu())
        else:
            # Shrink: the leaving GPUs' experts move onto the staying ones.
            keep = r.slots.gpus[:new.gpus]
            leave = r.slots.gpus[new.gpus:]
            for j, s in enumerate(leave):
                d = keep[j % len(keep)]
                moves.append((experts_old, self.topology.path_between_gpus(
                    s, d, hw.nvlink_bandwidth, hw.nvlink_latency_s)))
            ev.peak_weight_bytes_per_gpu = (old_cost.weight_bytes_per_gpu()
                                            + (experts_new - experts_old if params.zero_copy
                                               else new_cost.weight_bytes_per_gpu()))
        ev.moved_bytes += sum(b for b, _ in moves)

        def switch() -> None:
            if added is not None:
                r.slots.gpus.extend(added.gpus)
            else:
                gone = Slots(r.slots.gpus[new.gpus:])
                del r.slots.gpus[new.gpus:]
                self.topology.release(gone)
            r.set_layout(dp, pool.cost(dp), pool.capacity(dp).num_blocks)
            self.set_state(r, SERVING, f"{old} -> {new} done", ev.action)
            if ev.ready_s != ev.ready_s:
                ev.ready_s = self.env.now
            r.poke()

        delay = params.attach_s if added is not None else 0.0
        Wakeup(self.env, delay, NORMAL, lambda _: self._after_all(moves, switch, "experts"))
        return True

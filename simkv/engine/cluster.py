"""Pools of instances behind a router, fed by a workload: the only place that wires components.

Arrivals are one chain of URGENT wake-ups (one SimPy event per request); completions go to
the recorder and back to the workload, which may release follow-up calls (closed loop).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator

import numpy as np
import simpy

from simkv.config.schema import SimConfig
from simkv.engine.disagg import Handoff
from simkv.engine.events import URGENT, Wakeup
from simkv.engine.kv_format import check_same_format
from simkv.engine.lifecycle import Lifecycle
from simkv.engine.lora import LoRA
from simkv.engine.models import ModelRouter, pool_ranges
from simkv.engine.pool import Pool, pool_configs
from simkv.engine.replica import PlanNow, Replica
from simkv.engine.topology import Slots, Topology
from simkv.entities.request import FINISHED, REJECTED, Request
from simkv.kv.block_pool import BlockPool
from simkv.kv.hierarchy import MemoryHierarchy, tier_evictions
from simkv.kv.manager import KVManager
from simkv.kv.prefix import granule_ids
from simkv.kv.tiers import load_node_profile
from simkv.metrics.recorder import Recorder
from simkv.perf.roofline import CostModel
from simkv.policies.router.index import PrefixHolders, ServingList
from simkv.registry import build, implementation, name_of
from simkv.workload.base import ArrivalBatch, FollowUp, Workload


class Cluster:
    def __init__(self, cfg: SimConfig, env: simpy.Environment, workload: Workload,
                 rng: np.random.Generator, router_rng: np.random.Generator, recorder: Recorder,
                 on_progress: Callable[[int, float], None] | None = None,
                 observer: Callable[[Replica], None] | None = None) -> None:
        self.env = env
        self.cfg = cfg
        self.workload = workload
        # Plans the arrivals ask for, held until each arrival's callback ends (PlanNow).
        self._plan_now = PlanNow(env)
        self.recorder = recorder
        self.observer = observer
        self.max_model_len = cfg.model.max_model_len
        self.granule_tokens = cfg.kv.prefix_block_tokens
        self.on_progress = on_progress
        node = load_node_profile(cfg.memory.node, cfg.memory.node_path)
        self.pools: dict[str, Pool] = {name: Pool(i, name, pc, cfg, node)
                                       for i, (name, pc) in enumerate(pool_configs(cfg).items())}
        recorder.pool_names = list(self.pools)
        pools = list(self.pools.values())
        if {p.cfg.role for p in pools} != {"colocated"}:  # before anything else is built
            check_same_format(pools, cfg.kv.block_size, "disaggregated serving hands every "
                              "request's KV from a prefill to a decode instance",
                              "leave pools.{pool}.model unset, so that every pool runs the run's "
                              "model ({model})")
        first = next(iter(self.pools.values()))
        # Many models (engine/models.py): pools of a GPU group share its nodes.
        multi = any(p.cfg.serves or p.cfg.gpu_group for p in self.pools.values())
        sizes, keys = (pool_ranges(self.pools) if multi
                       else ({p.name: p.max_gpus for p in self.pools.values()}, {}))
        self.topology = Topology(env, node, sizes,
                                 cfg.cluster.weight_store_gb_s * 1e9,
                                 cfg.cluster.weight_store_latency_s,
                                 recorder.transfer if recorder.transfers is not None else None)
        for name, key in keys.items():
            # A group holds exactly its GPUs (the rest of its last node stays unused).
            self.topology.pool_range[name] = (self.topology.pool_range[key][0], sizes[key])
        self.topology.fabric.max_min = cfg.memory.link_sharing == "max_min"
        self.topology.fabric.plan_now = self._plan_now  # a landing's pokes plan as arrivals do
        self.memory = (build_memory(cfg, self.topology, first.cost(first.base_degree), self.pools)
                       if cfg.kv.prefix_caching else None)
        # Routing by model (engine/models.py), only when pools name the models they serve.
        self.models: ModelRouter | None = None
        if multi:
            self.models = ModelRouter(self)
            # (setattr: compiled, _route is a cpdef method, which Cython will not assign;
            # the instance's own attribute still wins over it, as in Python.)
            setattr(self, "_route", self.models.route)  # noqa: B010
        # LoRA adapters on the base model's instances (engine/lora.py): only when configured.
        self.lora: LoRA | None = None
        if cfg.lora.adapters:
            self.lora = LoRA(self, cfg.lora, np.random.default_rng(
                np.random.SeedSequence(cfg.seed, spawn_key=(25,))))
            setattr(self, "_dispatch",  # noqa: B010 (as _route's, above)
                    self.lora.wrap_dispatch(getattr(self, "_dispatch")))  # noqa: B009
        # Every instance ever started, by id; those the router may choose, in start order.
        self.replicas: list[Replica] = []
        self.kvs: list[KVManager | None] = []
        # Which instance holds which granule in HBM, kept once a cache-aware router asks; the
        # serving list keeps routers' indexes beside it (policies/router/index.py).
        self.holders = PrefixHolders(self.kvs, cfg.kv.prefix_block_tokens)
        self.serving: list[Replica] = ServingList(holders=self.holders)
        # Requests that arrived while no instance was serving, and how many ever did.
        self.backlog: deque[Request] = deque()
        self.unrouted = 0
        self.lifecycle = Lifecycle(env, self.topology, recorder.instance, self._new_instance,
                                   self._start_serving, self._stop_serving, self._rehome)
        self.lifecycle.on_stop = self._instance_stopped
        # What routers and schedulers believe an output length is (never the trace's own
        # unless predictor=oracle): one predictor for the cluster, taught by completions.
        self.predictor = build(cfg.predictor, seed=cfg.seed)
        self.router = build(cfg.router, rng=router_rng, predictor=self.predictor)
        # Live migration between instances (policies/migration/), bound when the run starts.
        self.migration = build(cfg.migration)
        # Speculative decoding (one object for the run: its counters go to summary.json).
        self.speculation = build(cfg.speculative, seed=cfg.seed)
        # The stream that draws priority classes in arrival order (priority.high_fraction).
        self._classes = np.random.default_rng((cfg.seed, 0xC1A55))
        self.handoff = self._disaggregation(cfg, router_rng)
        if self.handoff is not None:
            self.handoff.holders = self.holders
        self.kv_pool = build(cfg.kv_pool)
        # Energy and power (simkv/energy/): nothing is built without energy.enabled.
        self.energy = None
        if cfg.energy.enabled:
            from simkv.energy.accounting import Energy

            self.energy = Energy(self)
        for pool in self.pools.values():
            self.lifecycle.initial(pool)
        # Failures and spot preemption (engine/faults.py): nothing is built without them.
        self.faults = None
        if cfg.faults.active() or cfg.spot.active():
            from simkv.engine.faults import Faults

            self.faults = Faults(self, np.random.default_rng(np.random.SeedSequence(cfg.seed,
                                                                                     spawn_key=(24,))))
        self._chunks: Iterator[ArrivalBatch] = iter(workload.arrivals(rng))
        self._cols: tuple[list, ...] = ()
        self._extra: tuple[list, ...] | None = None
        self._i = 0
        self.next_id = 0
        # Requests that carry prefix ids (traces' hashes, session follow-ups): without any,
        # no two requests can share KV (simkv/inert.py says which options then do nothing).
        self.prefixed = 0
        self.completed = 0
        self.last_done_s = 0.0  # the run's end: the last completion or rejection
        self.pending_followups = 0
        self.arrivals_done = False

    def _disaggregation(self, cfg: SimConfig, rng: np.random.Generator) -> Handoff | None:
        """The handoff between prefill and decode pools, if the pools have those roles."""
        roles = {p.cfg.role for p in self.pools.values()}
        if roles == {"colocated"}:
            return None
        if roles != {"prefill", "decode"}:
            raise ValueError(f"pools: disaggregated serving needs pools with role prefill and "
                             f"pools with role decode (and no colocated ones); got roles "
                             f"{', '.join(sorted(roles))}")
        if not hasattr(implementation(cfg.scheduler), "release_held"):
            raise ValueError("disaggregated pools need a continuous-batching scheduler "
                             "(scheduler=vllm or continuum)")
        return Handoff(cfg.disagg, self.topology, rng, self._submit_decode, self._reject,
                       self.predictor)

    # --- instances ----------------------------------------------------------------------
    def _new_instance(self, pool: Pool, dp: int, slots: Slots, state: str) -> Replica:
        cfg, env = self.cfg, self.env
        i = len(self.replicas)
        cost = pool.cost(dp)
        hw = pool.hw
        self.topology.attach(i, slots, hw.pcie_bandwidth, hw.pcie_latency_s,
                             pool.cfg.loader_gb_s_per_gpu * 1e9)
        capacity = pool.capacity(dp)
        blocks = BlockPool(capacity.num_blocks, capacity.block_size)
        kv = (build_kv_manager(cfg, env, cost, blocks, self.memory, i)
              if self.memory is not None else None)
        # (a KV pool whose lending changes every iteration plans one at a time: kv_pool/)
        ff = 1 if self.kv_pool.per_iteration else cfg.engine.max_fast_forward
        sched = build(cfg.scheduler, pool=blocks, kv=kv, max_fast_forward=ff,
                      kv_policy=pool.kv_policy, model=pool.model, engine=cfg.engine,
                      predictor=self.predictor, speculative=self.speculation)
        ranks = pool.layout(dp).dp  # dp is the pool's resize degree (engine/pool.py)
        if ranks > 1:
            sched.scale_seats(ranks)
        if pool.cfg.role == "decode":
            # (env._now: env.now is a property of SimPy's, interpreted)
            sched.on_remote = lambda req: self.handoff.admitted(req, self.replicas[req.replica],  # type: ignore[union-attr]
                                                                self.env._now)
        replica = Replica(i, env, sched, cost, cfg.engine, self._finished,
                          self.recorder.iterations, self.observer)
        replica.plan_now = self._plan_now
        if pool.cfg.role == "prefill":  # its run ends hand requests to decode instances
            replica.hold_run_end = self._plan_now
        replica.pool, replica.state, replica.dp = pool, state, dp
        replica.slots, replica.gpus = slots, len(slots.gpus)
        replica.work_rate = pool.work_rate(dp)
        replica.predictor = self.predictor
        replica.kv = kv
        if self.energy is not None:
            replica.power = self.energy.attach(replica)
        if cfg.collectives.on_fabric:
            from simkv.engine.collectives import InstanceCollectives

            replica.collectives = InstanceCollectives(self.topology, replica)
        if kv is not None:
            to_scheduler = kv.on_loaded

            def loaded(req: Request, f: Callable[[Request], None] = to_scheduler,
                       r: Replica = replica) -> None:
                f(req)
                r.poke()

            kv.on_loaded = loaded
            kv.on_freed = replica.poke
            kv.watch_match(replica.admission_changed)
        self.kvs.append(kv)
        if kv is not None and self.holders.active:
            self.holders.watch(kv)
        self.replicas.append(replica)
        pool.instances.append(replica)
        self.kv_pool.attach(replica)
        if self.lora is not None:
            self.lora.attach(replica)
        return replica

    def _start_serving(self, r: Replica) -> None:
        if r.pool.cfg.role == "decode":
            assert self.handoff is not None
            self.handoff.start_serving(r)
            return
        self.serving.append(r)
        while self.backlog and self.serving:
            self._route(self.backlog.popleft(), moved=True)
        if self.models is not None:
            self.models.serving_started(r)

    def _stop_serving(self, r: Replica) -> None:
        if r.pool.cfg.role == "decode":
            assert self.handoff is not None
            self.handoff.stop_serving(r)
        else:
            self.serving.remove(r)
        r.on_idle = self.lifecycle.maybe_stop

    def _rehome(self, reqs: list[Request]) -> None:
        """Requests handed back by a leaving instance: to the router, or to the backlog
        while no instance serves."""
        for req in reqs:
            if req.remote_kv and self.handoff is not None:
                self.handoff.route(req)  # its KV is still held on its prefill instance
            elif self.serving or self.models is not None:
                self._route(req, moved=True)
            else:
                self.backlog.append(req)

    def _submit_decode(self, replica: Replica, req: Request) -> None:
        replica.pool.routed += 1
        replica.submit(req)

    # --- arrivals -----------------------------------------------------------------------
    def start(self) -> None:
        self.migration.bind(self)
        if self.faults is not None:
            self.faults.start()
        if self._load_chunk():
            Wakeup(self.env, self._cols[0][0] - self.env.now, URGENT, self._arrive)
        else:
            self.arrivals_done = True

    def _load_chunk(self) -> bool:
        for batch in self._chunks:
            if len(batch):
                n = len(batch)
                # NOTE: lists, not numpy scalars: per-item numpy indexing costs ~10x more.
                self._cols = (
                    batch.arrival_s.tolist(), batch.prompt_tokens.tolist(),
                    batch.output_tokens.tolist(),
                    batch.session.tolist() if batch.session is not None else [-1] * n,
                    batch.turn.tolist() if batch.turn is not None else [0] * n,
                )
                has_extra = (batch.model is not None or batch.log_type is not None
                             or batch.failed is not None or batch.prefix is not None)
                self._extra = (
                    batch.model or [""] * n, batch.log_type or [""] * n,
                    batch.failed.tolist() if batch.failed is not None else [False] * n,
                    batch.prefix or [None] * n,
                ) if has_extra else None
                self._i = 0
                return True
        return False

    def _instance_stopped(self, r: Replica) -> None:
        """A stopped or lost instance: what it borrowed goes back (kv_pool), and it no longer
        hears about KV other instances change (its callback leaves the node's stores: an
        autoscaled run would call every instance it ever started)."""
        self.kv_pool.detach(r)
        if r.kv is not None:
            r.kv.unwatch()

    def _arrive(self, _: object) -> None:
        i = self._i
        arrival, prompt, output, session, turn = self._cols
        req = Request(self.next_id, arrival[i], prompt[i], output[i], session[i], turn[i])
        if self._extra is not None:
            model, log_type, failed, prefix = self._extra
            req.model, req.log_type, req.failed, req.prefix = model[i], log_type[i], failed[i], prefix[i]
        held = self._plan_now
        held.open = True
        self._dispatch(req)
        held.open = False
        i += 1
        self._i = i
        if i == len(arrival):
            if not self._load_chunk():
                self.arrivals_done = True
                if held.items:
                    held.flush()
                return
            arrival, i = self._cols[0], 0
        # (env._now: env.now is a property of SimPy's, interpreted)
        Wakeup(self.env, max(0.0, arrival[i] - self.env._now), URGENT, self._arrive)
        if held.items:
            held.flush()

    def _followup(self, fu: FollowUp, parent: Request) -> None:
        self.pending_followups += 1
        if fu.prefix is None and fu.shared_tokens >= self.granule_tokens:
            # The conversation so far is the parent's token sequence: its granule ids.
            fu.prefix = granule_ids(parent, fu.shared_tokens // self.granule_tokens)

        def fire(_: object) -> None:
            self.pending_followups -= 1
            self._dispatch(Request(self.next_id, fu.arrival_s, fu.prompt_tokens,
                                   fu.output_tokens, fu.session, fu.turn, prefix=fu.prefix))

        Wakeup(self.env, max(0.0, fu.arrival_s - self.env.now), URGENT, fire)

    def _dispatch(self, req: Request) -> None:
        self.next_id += 1
        if req.prefix is not None:
            self.prefixed += 1
        prio = self.cfg.priority
        if prio.high_fraction and self._classes.random() < prio.high_fraction:
            req.priority = prio.high
        if req.failed:
            # The trace says the service failed this request; it costs no GPU time here.
            self._reject(req, "failed_in_trace")
            return
        if req.prompt_tokens + req.output_tokens > self.max_model_len:
            self._reject(req, "max_model_len")
            return
        if not self.serving and self.models is None:
            if self.faults is not None and self.faults.hopeless:
                self.faults.fail_unserved(req)  # every instance lost, none coming back
                return
            self.backlog.append(req)  # nothing serves yet (all starting, or scaled to zero)
            self.unrouted += 1
            return
        self._route(req)

    def _route(self, req: Request, moved: bool = False) -> None:
        replica = self.serving[self.router.route(req, self.serving, self.env._now)]
        if self.handoff is not None:
            req = Handoff.prefill_copy(req)  # the prefill instance runs a prefill-only copy
        reason = replica.scheduler.admission_error(req)
        if reason:
            req = req.parent or req
            req.replica = replica.index
            req.pool = replica.pool.index
            self._reject(req, reason)
            return
        if not moved:
            replica.pool.routed += 1  # arrivals routed here, for the autoscaler's rate
        replica.submit(req)

    # --- completions --------------------------------------------------------------------
    def _reject(self, req: Request, reason: str) -> None:
        req.state = REJECTED
        req.reject_reason = reason
        self._finished(req, self.env._now)

    def _finished(self, req: Request, now: float) -> None:
        if req.parent is not None:  # a prefill copy: its request goes on to a decode instance
            self.handoff.prefilled(req, self.replicas[req.replica], now)  # type: ignore[union-attr]
            return
        self.recorder.request(req)
        if now > self.last_done_s:
            self.last_done_s = now
        if req.state is FINISHED:
            self.predictor.observe(req)
        if req.pool >= 0 and req.state is FINISHED:
            pool = self.replicas[req.replica].pool
            pool.finished += 1
            pool.slo_met += self.recorder.last_slo_met
            pool.prompt_tokens_done += req.prompt_tokens
            pool.output_tokens_done += req.output_tokens
        self.completed += 1
        if self.on_progress is not None and not self.completed & 255:
            self.on_progress(self.completed, now)
        followups = self.workload.on_complete(req, now)
        for fu in followups:
            self._followup(fu, req)
        if not followups and req.session >= 0 and req.replica >= 0 and self.kvs:
            kv = self.kvs[req.replica]
            if kv is not None:
                # The program or conversation is over: a tool-call pin has nothing to wait for.
                kv.session_ended(req.session, now)

    def busy(self) -> bool:
        return (not self.arrivals_done or self.pending_followups > 0 or bool(self.backlog)
                or (self.handoff is not None and bool(self.handoff.backlog))
                or (self.faults is not None and self.faults.busy())
                or (self.models is not None and self.models.busy())
                or (self.lora is not None and self.lora.busy())
                or any(r.busy or r.scheduler.num_unfinished() for r in self.replicas))


def build_memory(cfg: SimConfig, topology: Topology, cost: CostModel,
                 pools: dict[str, Pool]) -> MemoryHierarchy:
    """The tiers below HBM and their links, for the configured placement."""
    models = {p.model.name for p in pools.values()}
    if len(models) > 1:
        raise ValueError(f"prefix caching shares KV between instances, which needs one model; "
                         f"the pools run {', '.join(sorted(models))}: set kv.prefix_caching=false")
    check_same_format(list(pools.values()), cfg.kv.block_size, "prefix caching shares KV "
                      "between the instances of every pool", "set kv.prefix_caching=false, or "
                      "leave pools.{pool}.model unset (every pool then runs the run's model)")
    gpr = cost.tp * cost.pp
    granule_bytes = cfg.kv.prefix_block_tokens * cost.kv_bytes_per_token_per_gpu() * gpr
    override = {"dram": cfg.memory.dram_gib, "ssd": cfg.memory.ssd_gib, "csd": cfg.memory.csd_gib}
    placement = build(cfg.offload)
    tier = getattr(cfg.tool_kv, "tier", None)
    if tier is not None and tier not in placement.tiers:
        # Checked before the run: a sweep over tool_kv x offload skips this pair at once.
        raise ValueError(f"tool_kv=offload to '{tier}' needs that tier, which offload="
                         f"{name_of(cfg.offload)} does not have (it has: "
                         f"{', '.join(placement.tiers) or 'none'}); choose e.g. offload=dram or offload=ssd")
    hw = cost.hw
    nvlink = (hw.nvlink_bandwidth, hw.nvlink_latency_s) if cfg.memory.peer_hbm else None
    return MemoryHierarchy(topology, placement, tier_evictions(cfg), granule_bytes, override, nvlink)


def build_kv_manager(cfg: SimConfig, env: simpy.Environment, cost: CostModel, pool: BlockPool,
                     memory: MemoryHierarchy, replica: int) -> KVManager:
    m = cost.model
    gpr = cost.tp * cost.pp
    per_token = cost.kv_bytes_per_token_per_gpu() * gpr
    # Context at which a token's attention FLOPs (4 x layers x q_dim per context token)
    # equal its linear-layer FLOPs (2 x active parameters): the scale of recompute cost.
    recompute_context = 2.0 * m.active_params / (4.0 * m.num_layers * m.q_dim)
    return KVManager(replica, env, pool, memory, build(cfg.eviction), build(cfg.tool_kv),
                     cfg.kv.prefix_block_tokens, cfg.kv.prefix_block_tokens * per_token,
                     cfg.kv.block_size * per_token, recompute_context)

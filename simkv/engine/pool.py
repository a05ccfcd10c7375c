"""Pools: sets of identical instances (one model, one GPU kind, one layout, one role).

A ``Pool`` owns what all its instances share: the model spec and hardware profile, the cost
model and KV capacity of each data-parallel degree an instance may take (built on first use
and cached: an elastic resize switches an instance between them), the bounds an autoscaler
keeps, and counters the autoscaler reads. The one-pool cluster of ``cluster.*`` is a pool
named ``default`` built from the run's model and hardware.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from simkv.config.schema import PoolConfig, SimConfig
from simkv.engine.capacity import KVCapacity, drive_capacity, kv_capacity
from simkv.entities.hardware import HardwareProfile, load_profile
from simkv.entities.model import ModelSpec
from simkv.kv.tiers import NodeProfile
from simkv.perf.expert_parallel import AllToAllLinks
from simkv.perf.options import configure_cost
from simkv.perf.pipeline import pipelined
from simkv.perf.roofline import CostModel
from simkv.perf.speculative import apply_speculation, check_speculation, speculative_capacity
from simkv.registry import build, name_of

DEFAULT = "default"
# The one pool of ``cluster.*``: its keys under their cluster names.
CLUSTER_KEYS = {"instances": "cluster.replicas", "min_instances": "cluster.min_replicas",
                "max_instances": "cluster.max_replicas", "tensor_parallel": "cluster.tensor_parallel",
                "pipeline_parallel": "cluster.pipeline_parallel",
                "min_tensor_parallel": "cluster.min_tensor_parallel",
                "max_tensor_parallel": "cluster.max_tensor_parallel"}


def pool_key(name: str, field: str) -> str:
    """The key a user sets ``field`` of pool ``name`` with: ``pools.<name>.<field>``, or the
    ``cluster.*`` key for the one pool of ``cluster``."""
    if name == DEFAULT and field in CLUSTER_KEYS:
        return CLUSTER_KEYS[field]
    return f"pools.{name}.{field}"


@dataclass(frozen=True, slots=True)
class Layout:
    """An instance's parallel layout: GPUs = tp x pp x dp; ep is 1 or tp x dp."""

    tp: int
    pp: int
    dp: int
    ep: int
    afd: int = 0  # expert GPUs of an attention-FFN disaggregated instance (perf/afd.py)

    @property
    def gpus(self) -> int:
        return self.tp * self.pp * self.dp + self.afd

    def __str__(self) -> str:
        parts = [f"TP{self.tp}"]
        if self.pp > 1:
            parts.append(f"PP{self.pp}")
        if self.dp > 1:
            parts.append(f"DP{self.dp}")
        if self.ep > 1:
            parts.append(f"EP{self.ep}")
        if self.afd:
            parts.append(f"AFD{self.afd}")
        return "-".join(parts)


def load_model(name: str) -> ModelSpec:
    """A model spec shipped in simkv/conf/model by name."""
    root = resources.files("simkv.conf").joinpath("model")
    known = sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))
    if name not in known:
        raise ValueError(f"unknown model '{name}'; valid choices: {', '.join(known)}")
    return ModelSpec(**yaml.safe_load(root.joinpath(f"{name}.yaml").read_text()))


def pool_configs(cfg: SimConfig) -> dict[str, PoolConfig]:
    """The run's pools: ``pools`` if given, else one pool from ``cluster``."""
    if cfg.pools:
        c = cfg.cluster
        defaults = type(c)()
        changed = [k for k in ("replicas", "tensor_parallel", "pipeline_parallel", "min_replicas",
                               "max_replicas", "min_tensor_parallel", "max_tensor_parallel")
                   if getattr(c, k) != getattr(defaults, k)]
        if changed:
            raise ValueError(f"cluster.{changed[0]} has no effect when pools are given; set it "
                             f"per pool (pools.<name>.instances, .tensor_parallel, ...)")
        return dict(cfg.pools)
    c = cfg.cluster
    return {DEFAULT: PoolConfig(instances=c.replicas, min_instances=c.min_replicas,
                                max_instances=c.max_replicas, tensor_parallel=c.tensor_parallel,
                                pipeline_parallel=c.pipeline_parallel,
                                min_tensor_parallel=c.min_tensor_parallel,
                                max_tensor_parallel=c.max_tensor_parallel)}


class Pool:
    def __init__(self, index: int, name: str, pc: PoolConfig, cfg: SimConfig,
                 node: NodeProfile) -> None:
        self.index = index
        self.name = name
        self.cfg = pc
        self.sim = cfg
        self.node = node
        self.model: ModelSpec = load_model(pc.model) if pc.model else cfg.model
        hw_name = pc.hardware or cfg.hardware.profile
        self.hw: HardwareProfile = load_profile(hw_name, None if pc.hardware else cfg.hardware.path)
        def key(f: str) -> str:
            return pool_key(name, f)

        self.min_instances = pc.instances if pc.min_instances is None else pc.min_instances
        self.max_instances = pc.instances if pc.max_instances is None else pc.max_instances
        if not self.min_instances <= pc.instances <= self.max_instances:
            raise ValueError(f"{key('instances')} ({pc.instances}) must lie within "
                             f"{key('min_instances')} ({self.min_instances}) and "
                             f"{key('max_instances')} ({self.max_instances})")
        self.min_dp = pc.data_parallel_attention if pc.min_data_parallel is None else pc.min_data_parallel
        self.max_dp = pc.data_parallel_attention if pc.max_data_parallel is None else pc.max_data_parallel
        if not 1 <= self.min_dp <= pc.data_parallel_attention <= self.max_dp:
            raise ValueError(f"{key('data_parallel_attention')} ({pc.data_parallel_attention}) "
                             f"must lie within {key('min_data_parallel')} ({self.min_dp}) and "
                             f"{key('max_data_parallel')} ({self.max_dp}), all >= 1")
        # The resize degree: the data-parallel one (MoE pools), or the tensor-parallel one when
        # the pool has a TP range (vertical scaling of dense models). min_dp / max_dp bound it,
        # and an instance's ``dp`` holds it (``layout(degree)`` maps it to a layout).
        min_tp = pc.tensor_parallel if pc.min_tensor_parallel is None else pc.min_tensor_parallel
        max_tp = pc.tensor_parallel if pc.max_tensor_parallel is None else pc.max_tensor_parallel
        self.resize_tp = (min_tp, max_tp) != (pc.tensor_parallel, pc.tensor_parallel)
        if self.resize_tp:
            if not 1 <= min_tp <= pc.tensor_parallel <= max_tp:
                raise ValueError(f"{key('tensor_parallel')} ({pc.tensor_parallel}) must lie within "
                                 f"{key('min_tensor_parallel')} ({min_tp}) and "
                                 f"{key('max_tensor_parallel')} ({max_tp}), all >= 1")
            self.min_dp, self.max_dp = min_tp, max_tp
        self.base_degree = pc.tensor_parallel if self.resize_tp else pc.data_parallel_attention
        self.expert_parallel = pc.expert_parallel > 1
        self.placement = build(cfg.offload)
        sched = cfg.scheduler
        self._budget = getattr(sched, "max_num_batched_tokens", 8192)
        self._seats = getattr(sched, "max_num_seqs", getattr(sched, "max_batch_size", 256))
        self._seats_key = ("scheduler.max_batch_size" if not hasattr(sched, "max_num_seqs")
                           and hasattr(sched, "max_batch_size") else "scheduler.max_num_seqs")
        self._costs: dict[int, CostModel] = {}
        self._caps: dict[int, KVCapacity] = {}
        # Instances not stopped (any state), in start order.
        self.instances: list[Any] = []
        # What the autoscaler reads: counters since the start (it differences them).
        self.routed = 0
        self.finished = 0
        self.slo_met = 0
        self.prompt_tokens_done = 0  # of finished requests (autoscaler=energy's demand)
        self.output_tokens_done = 0
        # Its power model and settings (simkv/energy/accounting.PoolPower; energy.enabled).
        self.power: Any = None
        try:
            self.base = self.layout(self.base_degree)
            self.cost(self.base_degree)  # fail before the run when the layout is impossible
            self.capacity(self.base_degree)
            self.kv_policy = self._kv_policy()
        except ValueError as exc:
            if name == DEFAULT:
                raise
            # Name the pool's own keys: its layout is pools.<name>.*, not cluster.* (issue 18).
            text = str(exc).replace("raise cluster.tensor_parallel",
                                    f"raise {key('tensor_parallel')}")
            raise type(exc)(text if text.startswith(f"pools.{name}") else
                            f"pools.{name}: {text}") from None

    def _kv_policy(self) -> Any:
        """The run's KV policy, checked against this pool's model and bound to its layout
        (per-GPU KV bytes and PCIe: the same for every data-parallel degree)."""
        from simkv.config.bounds import check
        from simkv.policies.kv_policy import FullKVConfig

        cfg = self.sim.kv_policy if self.sim.kv_policy is not None else FullKVConfig()
        check(cfg, "kv_policy.")  # a budget of 0 or above 100% names its key
        policy = build(cfg)
        policy.check_model(self.model)
        if self.cfg.role != "colocated" and not (policy.is_full and self.model.kind == "autoregressive"):
            raise ValueError(f"kv_policy={policy.name} and {self.model.kind} models run on colocated "
                             f"pools only: a hand-off of compressed or diffusion KV is not modelled")
        policy.bind(self.cost(self.base_degree))
        return policy

    def layout(self, dp: int) -> Layout:
        """The layout of resize degree ``dp`` (the data-parallel degree, or the tensor-parallel
        one in a pool with a TP range)."""
        pc = self.cfg
        if self.resize_tp:
            ranks = pc.data_parallel_attention
            return Layout(dp, pc.pipeline_parallel, ranks, dp * ranks if self.expert_parallel else 1,
                          pc.afd_expert_gpus)
        ep = pc.tensor_parallel * dp if self.expert_parallel else 1
        if self.expert_parallel and pc.expert_parallel != pc.tensor_parallel * pc.data_parallel_attention:
            raise ValueError(
                f"{pool_key(self.name, 'expert_parallel')} ({pc.expert_parallel}) must be 1 or "
                f"tensor_parallel x data_parallel_attention "
                f"({pc.tensor_parallel * pc.data_parallel_attention})")
        return Layout(pc.tensor_parallel, pc.pipeline_parallel, dp, ep, pc.afd_expert_gpus)

    def sizes(self) -> list[int]:
        """Degrees a resize may choose (experts must divide evenly; TP must divide the heads)."""
        e = self.model.num_experts
        if self.resize_tp:
            ranks = self.cfg.data_parallel_attention
            return [t for t in range(self.min_dp, self.max_dp + 1)
                    if self.model.num_heads % t == 0
                    and (not self.expert_parallel or e % (t * ranks) == 0)]
        return [d for d in range(self.min_dp, self.max_dp + 1)
                if not self.expert_parallel or e % (self.cfg.tensor_parallel * d) == 0]

    @property
    def max_gpus(self) -> int:
        """GPUs the pool may hold at once (its nodes are sized for it)."""
        return self.max_instances * self.layout(self.max_dp).gpus

    def cost(self, dp: int) -> CostModel:
        cost = self._costs.get(dp)
        if cost is None:
            lay = self.layout(dp)
            hw, node = self.hw, self.node
            links = AllToAllLinks(hw.nvlink_bandwidth * hw.eff("nvlink").values[-1], hw.nvlink_latency_s,
                                  node.gpu_network_bandwidth, node.gpu_network_latency_s,
                                  node.gpus_per_node)
            if lay.afd:  # attention-FFN disaggregation (MegaScale-Infer): perf/afd.py
                from simkv.perf.afd import afd_cost

                cost = afd_cost(self, lay.dp)
            else:
                cost = CostModel(self.model, hw, lay.tp, lay.pp, self.sim.engine,
                                 data_parallel=lay.dp, expert_parallel=lay.ep, moe=self.sim.moe,
                                 links=links)
            configure_cost(cost, self.sim, node)  # kv.allocator, weights (perf/options.py)
            check_speculation(self.sim)
            p = self.placement
            if p.attention_in_storage or p.kv_on_ssd or p.kv_on_dram:
                tier = "csd" if p.attention_in_storage else "dram" if p.kv_on_dram else "ssd"
                cost, cap = self._on_drives(cost, tier)
                configure_cost(cost, self.sim, node)
                self._caps[dp] = cap
            apply_speculation(cost, self.sim)  # the proposer's steps (perf/speculative.py)
            cost = pipelined(cost, self.sim.pipeline)  # the plain cost without micro-batches
            self._costs[dp] = cost
        return cost

    def capacity(self, dp: int) -> KVCapacity:
        cap = self._caps.get(dp)
        if cap is None:
            cost = self.cost(dp)
            cap = self._caps.get(dp) or speculative_capacity(
                kv_capacity(cost, self.hw, self.sim.kv, self._budget, self._seats, self._seats_key), cost,
                getattr(cost, "proposer", None), self.sim.kv.num_gpu_blocks_override)
            self._caps[dp] = cap
        return cap

    def _on_drives(self, gpu_cost: CostModel, tier: str) -> tuple[CostModel, KVCapacity]:
        """The KV pool on the node's drives: CSDs computing decode attention (InstInfer), or
        SSDs (or CPU DRAM) streaming the KV to the GPU every step (FlexGen-style)."""
        from simkv.perf.in_storage import InStorageAttentionCost, StreamedAttentionCost

        node, cfg = self.node, self.sim
        spec = node.tiers.get(tier)
        if spec is None:
            raise ValueError(f"offload={name_of(cfg.offload)} needs a '{tier}' tier in node "
                             f"profile {node.path}")
        lay = Layout(gpu_cost.tp, gpu_cost.pp, gpu_cost.dp, gpu_cost.ep)
        per_node = max(1, min(self.cfg.instances, node.gpus_per_node // lay.gpus))
        kind = InStorageAttentionCost if tier == "csd" else StreamedAttentionCost
        cost = kind(self.model, self.hw, spec, 1.0 / per_node, lay.tp, lay.pp, cfg.engine)
        hbm = kv_capacity(gpu_cost, self.hw, cfg.kv, self._budget, self._seats, self._seats_key)
        gib = {"csd": cfg.memory.csd_gib, "ssd": cfg.memory.ssd_gib, "dram": cfg.memory.dram_gib}[tier]
        size = spec.capacity if gib is None else gib * 2**30
        return cost, drive_capacity(cost, self.cfg.instances, cfg.kv, hbm, size, node.gpus_per_node)

    def work_rate(self, dp: int) -> float:
        """Tokens per second an instance of this layout processes in a full prefill
        iteration: how routers that know pool speeds weigh outstanding tokens."""
        cost = self.cost(dp)
        return self._budget * dp / cost.linear_s(self._budget * dp)

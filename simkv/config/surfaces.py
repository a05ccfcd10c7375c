"""Cross-field rules of the living cluster's surfaces: pools, autoscalers, disaggregation,
DistAttention, MoE routing, weight offloading and tool-call prefetch.

``SimConfig.validate`` calls ``check_surfaces`` before a run, after every field passed its
own range. Each rule refuses, in one line naming the key (``pools.<name>.<key>`` for a pool)
and what would make it valid, a configuration that either could never serve or sets
something that could not act in it (a sweep over it would show no effect); docs/CONFIG.md
lists them. Issue 18 found each of these accepted silently or ending in an internal error.
Options that a *workload* may leave without anything to act on (no tool calls in a trace)
are warnings, not refusals (issue 21).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from simkv.config.bounds import require

if TYPE_CHECKING:
    from simkv.config.schema import PoolConfig, SimConfig

# moe.* keys about which experts tokens pick and what a dispatch moves: no effect on a dense model.
MOE_ROUTING_KEYS = ("routing", "zipf_exponent", "popularity_path", "placement",
                    "dispatch_bytes_per_element")
# Autoscalers that resize an instance's degree (TP or DP/EP) and never add or remove one.
DEGREE_SCALERS = ("vertical", "elastic_moe", "elastic_tp")
# Built-in generators whose requests never belong to a session (no tool calls, no turns).
NO_SESSION_WORKLOADS = ("burstgpt", "poisson", "near_duplicate")


def _pools(cfg: SimConfig) -> dict[str, tuple[str, PoolConfig | None]]:
    """Each pool's name -> (the prefix its keys are set with, its PoolConfig or None for the
    one pool of ``cluster.*``)."""
    if cfg.pools:
        return {name: (f"pools.{name}.", pc) for name, pc in cfg.pools.items()}
    return {"default": ("cluster.", None)}


def _changed(section: Any) -> list[str]:
    """Fields of a config dataclass that differ from their defaults."""
    default = type(section)()
    return [f.name for f in dataclasses.fields(section)
            if getattr(section, f.name) != getattr(default, f.name)]


def check_surfaces(cfg: SimConfig) -> None:
    from simkv.registry import implementation, name_of

    scaler = name_of(cfg.autoscaler) if cfg.autoscaler is not None else "none"
    scaled_names = list(getattr(cfg.autoscaler, "pools", []) or [])
    pools = _pools(cfg)
    max_of: dict[str, int] = {}
    for name, (key, pc) in pools.items():
        if pc is None:
            c = cfg.cluster
            instances, lo, hi = c.replicas, c.min_replicas, c.max_replicas
            k_inst, k_min, k_max = "cluster.replicas", "cluster.min_replicas", "cluster.max_replicas"
            role = "colocated"
            tp, tp_lo, tp_hi = c.tensor_parallel, c.min_tensor_parallel, c.max_tensor_parallel
        else:
            instances, lo, hi = pc.instances, pc.min_instances, pc.max_instances
            k_inst, k_min, k_max = f"{key}instances", f"{key}min_instances", f"{key}max_instances"
            role = pc.role
            tp, tp_lo, tp_hi = pc.tensor_parallel, pc.min_tensor_parallel, pc.max_tensor_parallel
        max_of[name] = max(instances, hi or 0)
        scaled = scaler != "none" and (not scaled_names or name in scaled_names)
        why_not = (f"autoscaler={scaler}" if scaler == "none"
                   else f"autoscaler.pools ({', '.join(scaled_names)}) leaves it out")
        # Bounds an autoscaler keeps: nothing keeps them without one.
        # (Pools sharing a GPU group are the serverless placer's: it makes room by eviction.)
        suggest = "serverless" if pc is not None and pc.gpu_group else "horizontal"
        for k, v in ((k_min, lo), (k_max, hi)):
            require(v is None or v == instances or scaled,
                    f"{k} cannot act: no autoscaler scales this pool ({why_not}); set an "
                    f"autoscaler (autoscaler={suggest}) or leave {k} unset")
            # ... and one that only resizes instances never adds or removes one.
            require(v is None or v == instances or scaler not in DEGREE_SCALERS,
                    f"{k} cannot act: autoscaler={scaler} resizes this pool's instances and never "
                    f"adds or removes one; use autoscaler=horizontal, or leave {k} unset")
        # A tensor-parallel range is kept by an autoscaler that resizes instances (it ran
        # unread under autoscaler=none or horizontal).
        k_tp = "cluster." if pc is None else key
        resized = scaled and scaler in DEGREE_SCALERS
        for k, v in ((f"{k_tp}min_tensor_parallel", tp_lo), (f"{k_tp}max_tensor_parallel", tp_hi)):
            require(v is None or v == tp or resized,
                    f"{k} cannot act: no autoscaler resizes this pool's tensor-parallel degree "
                    f"({why_not if not scaled else f'autoscaler={scaler} adds and removes instances'}"
                    f"); set autoscaler=elastic_tp (in place) or vertical (restarts), or leave "
                    f"{k} unset")
        # A pool that can never serve (item 6).
        require(instances > 0 or (scaled and (hi or 0) >= 1),
                f"{k_inst}=0: the pool can never serve: nothing starts an instance ({why_not}); "
                f"set {k_inst} >= 1, or an autoscaler with {k_max} >= 1")
        if role == "decode":
            require(instances > 0, f"{k_inst}=0: a decode pool must start with an instance: "
                                   f"requests handed off while none serves wait where no "
                                   f"autoscaler metric sees them; set {k_inst} >= 1")
            require(not scaled or lo is None or lo > 0,
                    f"{k_min}=0: a decode pool scaled to zero never comes back (its waiting "
                    f"hand-offs are not an autoscaler metric); set {k_min} >= 1")

    roles = {pc.role for _, pc in pools.values() if pc is not None} or {"colocated"}
    disaggregated = roles != {"colocated"}
    # disagg.* acts only between prefill and decode pools.
    for k in _changed(cfg.disagg):
        require(disaggregated, f"disagg.{k} cannot act: no pool has role prefill or decode "
                               f"(pools=pd_split has both); leave disagg.{k} unset")

    # DistAttention: instances borrow from instances of their own pool.
    if cfg.kv_pool is not None and name_of(cfg.kv_pool) == "distattention":
        sched = name_of(cfg.scheduler)
        require(hasattr(implementation(cfg.scheduler), "_borrow"),
                f"kv_pool=distattention cannot act with scheduler={sched}: it never asks for "
                f"more blocks than its own; use scheduler=vllm or continuum, or kv_pool=none")
        where = ", ".join(f"{k}{'instances' if k.startswith('pools.') else 'replicas'}="
                          f"{max_of[n]}" for n, (k, _) in pools.items())
        require(max(max_of.values()) >= 2,
                f"kv_pool=distattention cannot act: an instance borrows only from other "
                f"instances of its pool, and no pool ever has two ({where}); set "
                f"cluster.replicas (or pools.<name>.instances) >= 2, or kv_pool=none")
        ff = cfg.engine.max_fast_forward
        require(ff == 1 or "max_fast_forward" not in _changed(cfg.engine),
                f"engine.max_fast_forward={ff} cannot act with kv_pool=distattention: its "
                f"instances run one iteration at a time (their lending changes every "
                f"iteration); leave engine.max_fast_forward unset")
    if cfg.memory.peer_hbm:
        require(sum(max_of.values()) >= 2,
                "memory.peer_hbm cannot act: it reads another instance's HBM, and the cluster "
                "has one instance; set cluster.replicas >= 2, or memory.peer_hbm=false")

    # moe.* acts only on MoE models (the expert-parallel options of issue 23, placement=eplb,
    # redundant experts, all-to-all backends, rank balance, have their own rules in
    # config/parallel.check_moe_usage, which name the layout they need).
    moe = [k for k in _changed(cfg.moe) if k in MOE_ROUTING_KEYS
           and not (k == "placement" and cfg.moe.placement == "eplb")]
    if moe:
        from simkv.engine.pool import load_model

        models = [cfg.model] + [load_model(pc.model) for _, pc in pools.values()
                                if pc is not None and pc.model]
        dense = [m for m in models if not m.is_moe]
        require(len(dense) < len(models),
                f"moe.{moe[0]} cannot act: model {models[0].name} is dense (num_experts=1); "
                f"choose an MoE model (e.g. model=qwen3_30b_a3b) or leave moe.* unset")
        m = cfg.moe
        require(m.popularity_path is None or m.routing == "file",
                f"moe.popularity_path cannot act with moe.routing={m.routing}: the file is read "
                f"only with moe.routing=file")
        require(m.zipf_exponent == 1.0 or m.routing == "zipf",
                f"moe.zipf_exponent cannot act with moe.routing={m.routing}: set moe.routing=zipf")

    # FlexGen weight offloading acts only on weights not resident in HBM.
    w = cfg.weights
    if w.gpu_fraction == 1.0:
        for k in ("source", "overlap"):
            require(k not in _changed(w),
                    f"weights.{k} cannot act at weights.gpu_fraction=1 (every weight stays in "
                    f"HBM); set weights.gpu_fraction < 1, or leave weights.{k} unset")

    # A tool-call prefetch needs tool calls: sessions whose next call follows a tool.
    if cfg.tool_kv is not None and name_of(cfg.tool_kv) == "prefetch" and cfg.workload is not None:
        wl = name_of(cfg.workload)
        require(wl not in NO_SESSION_WORKLOADS,
                f"tool_kv=prefetch cannot act with workload={wl}: its requests have no sessions, "
                f"so no tool calls; use workload=agent (or a trace with sessions), or tool_kv=drop")

    # Acceptance per log type: each key must be a log type the workload's requests carry
    # (a typo, or a generator without log types, ran with the method's one acceptance).
    by_type = getattr(cfg.speculative, "acceptance_by_log_type", None) or {}
    if by_type and cfg.workload is not None:
        from simkv.config.models import NO_MODEL_WORKLOADS

        wl = name_of(cfg.workload)
        types = getattr(cfg.workload, "log_types", None) if wl == "burstgpt" else None
        if wl in NO_MODEL_WORKLOADS:
            types, have = [], f"workload={wl}'s requests have no log type"
        elif types is not None:
            have = f"workload.log_types: {', '.join(types)}"
        for name in by_type if types is not None else ():
            require(name in types,
                    f"speculative.acceptance_by_log_type.{name} cannot act: no request has log "
                    f"type '{name}' ({have}); name one of the workload's log types, or leave it "
                    f"out (speculative.acceptance applies)")

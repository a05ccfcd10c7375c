"""Configs of the parallel execution models of issue 23 (docs/PARALLELISM.md has every
parameter and its source).

They live apart from ``schema.py`` (which only holds a field of each) so the rules that tie
them to the rest of the run stay beside them: ``check_parallel(sim)`` is called by
``SimConfig.validate`` and refuses, in one line naming the key, a value that could not act.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from simkv.config.bounds import bounded, meta, require

PIPELINE_SCHEDULES = ("continuous", "per_iteration")


@dataclass(slots=True)
class PipelineConfig:
    """Micro-batches in a pipeline-parallel instance (docs/PARALLELISM.md, "Pipeline").

    ``micro_batches=1`` (the default) runs the stages back to back, as simkv always did: an
    iteration takes the sum of its stages. With m > 1 the batch is split into m micro-batches
    of different sequences that flow through the stages one after another.
    ``continuous``: micro-batches stay in flight across iterations (vLLM's virtual engines,
    Vidur's replica scheduler keeping up to PP batches running), so an iteration takes
    max(m x slowest stage, one micro-batch through every stage); ``per_iteration``: the
    pipeline fills and drains every iteration (GPipe's schedule, forward only), so an
    iteration takes the sum of the stages plus (m - 1) x the slowest stage.
    """

    micro_batches: int = bounded(1, ge=1)
    schedule: str = bounded("continuous", choices=PIPELINE_SCHEDULES)
    # Layers per stage (vLLM's VLLM_PP_LAYER_PARTITION); empty: an even split. Stage
    # imbalance comes from an uneven partition and from the LM head on the last stage.
    layer_partition: list[int] = field(default_factory=list, metadata=meta(ge=1))


def check_parallel(sim: Any) -> None:
    """Rules tying ``pipeline``, ``collectives`` and the MoE options to the rest of the run
    (ConfigError)."""
    check_moe_usage(sim)
    if sim.collectives.on_fabric:
        from simkv.engine.pool import pool_configs

        layouts = [(p.tensor_parallel, p.pipeline_parallel, p.expert_parallel)
                   for p in pool_configs(sim).values()]
        require(any(max(x) > 1 for x in layouts),
                "collectives.on_fabric cannot act: no pool runs a collective (every pool has "
                "tensor_parallel, pipeline_parallel and expert_parallel 1)")
    pipe = sim.pipeline
    pools = list(sim.pools.values()) if sim.pools else None
    pps = [p.pipeline_parallel for p in pools] if pools else [sim.cluster.pipeline_parallel]
    if pipe.micro_batches > 1:
        require(max(pps) > 1, f"pipeline.micro_batches={pipe.micro_batches} cannot act: every "
                              f"pool has pipeline_parallel=1 (set cluster.pipeline_parallel or "
                              f"pools.<name>.pipeline_parallel > 1)")
        why = _plain_iterations_only(sim)
        require(not why, f"pipeline.micro_batches > 1 prices plain iterations and cannot be "
                         f"combined with {why}")
    else:
        require(pipe.schedule == "continuous",
                f"pipeline.schedule={pipe.schedule} cannot act with pipeline.micro_batches=1 "
                f"(the stages run back to back)")
    if pipe.layer_partition:
        require(pipe.micro_batches > 1,
                "pipeline.layer_partition cannot act with pipeline.micro_batches=1: stages run "
                "back to back, so how the layers split does not change an iteration's time")
        for pp in set(pps):
            if pp == 1:
                continue
            require(len(pipe.layer_partition) == pp,
                    f"pipeline.layer_partition: expected {pp} stages (pipeline_parallel), got "
                    f"{len(pipe.layer_partition)}")
        total = sum(pipe.layer_partition)
        layers = sim.model.num_layers if not pools or all(p.model is None for p in pools) else None
        require(layers is None or total == layers,
                f"pipeline.layer_partition: the stages' layers must sum to model.num_layers "
                f"({layers}), got {total}")


@dataclass(slots=True)
class CollectivesConfig:
    """Collectives on the cluster's links (docs/PARALLELISM.md, "Collectives on the fabric").

    ``on_fabric=false`` (the default) prices TP all-reduce, EP all-to-all and PP hops from the
    link bandwidths alone, as simkv always did. ``true``: an instance's collectives also hold
    their average rate on the fabric's links (its GPUs' NVLink, its nodes' RDMA NICs) for the
    run they belong to, so KV transfers there get the rest; and a collective that finds
    transfers on its links gets a fair share of them, so its iteration takes longer.
    """

    on_fabric: bool = False


def check_moe_usage(sim: Any) -> None:
    """The MoE options of issue 23 act on some pool, or are refused naming the key: replicas and
    all-to-all backends need an MoE pool with expert parallelism, unequal ranks one with
    data-parallel attention."""
    moe = sim.moe
    wanted = []
    if moe.placement == "eplb" or moe.redundant_experts:
        wanted.append(("moe.placement=eplb" if moe.placement == "eplb" else "moe.redundant_experts",
                       "ep"))
    if moe.all_to_all != "deepep_high_throughput":
        wanted.append((f"moe.all_to_all={moe.all_to_all}", "ep"))
    if moe.dp_balance != "even":
        wanted.append((f"moe.dp_balance={moe.dp_balance}", "dp"))
    if not wanted:
        return
    from simkv.engine.pool import load_model, pool_configs

    layouts = []
    for pc in pool_configs(sim).values():
        spec = load_model(pc.model) if pc.model else sim.model
        dp = max(pc.data_parallel_attention, pc.max_data_parallel or 1)
        layouts.append((spec.is_moe, pc.expert_parallel > 1, dp > 1))
    for key, needs in wanted:
        ok = any(moe_ and (ep if needs == "ep" else dp) for moe_, ep, dp in layouts)
        what = ("an MoE pool with expert_parallel > 1" if needs == "ep"
                else "an MoE pool with data_parallel_attention > 1")
        require(ok, f"{key} cannot act: it needs {what} (e.g. model=qwen3_30b_a3b pools=moe_ep)")


def _plain_iterations_only(sim: Any) -> str:
    """What in the run changes an iteration's cost beyond the plain roofline path (the
    pipelined cost model splits plain iterations into micro-batches only)."""
    from simkv.registry import name_of

    if sim.kv.allocator.kind != "paged":
        return f"kv.allocator.kind={sim.kv.allocator.kind}"
    if sim.weights.gpu_fraction < 1.0:
        return "weights.gpu_fraction < 1"
    if sim.engine.kv_padding_tokens > 0:
        return "engine.kv_padding_tokens > 0"
    if sim.kv_policy is not None and name_of(sim.kv_policy) != "full":
        return f"kv_policy={name_of(sim.kv_policy)}"
    if sim.model.kind != "autoregressive":
        return f"a {sim.model.kind} model"
    if sim.offload is not None:
        from simkv.registry import build

        p = build(sim.offload)
        if p.attention_in_storage or p.kv_on_ssd or p.kv_on_dram:
            return f"offload={name_of(sim.offload)}"
    return ""

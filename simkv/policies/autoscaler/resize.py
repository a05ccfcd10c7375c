"""Shared by vertical, elastic_moe and elastic_tp: the degree (data-parallel, or tensor-parallel
in a pool with a TP range) each instance should take."""

from __future__ import annotations

from typing import Any

from simkv.engine.lifecycle import SERVING


def next_change(pool: Any, desired_gpus: int) -> tuple[Any, int] | None:
    """The instance to change next and the degree it should take, or None: nothing while a
    change is under way (an instance not serving), then one instance at a time, the first in
    the pool's order whose degree differs from ``target_dp``'s. vertical restarts it,
    elastic_moe and elastic_tp resize it in place; the choice is the same."""
    if any(r.state != SERVING for r in pool.instances):
        return None
    dp = target_dp(pool, desired_gpus, len(pool.instances))
    for r in pool.instances:
        if r.dp != dp:
            return r, dp
    return None


def target_dp(pool: Any, desired_gpus: int, instances: int) -> int:
    """The smallest allowed degree (data- or tensor-parallel, engine/pool.py) whose GPUs, over
    ``instances``, cover ``desired_gpus``."""
    want = desired_gpus / max(instances, 1)
    sizes = pool.sizes()
    for d in sizes:
        if pool.layout(d).gpus >= want - 1e-9:
            return d
    return sizes[-1]


def check_resizable(pool: Any, policy: str) -> None:
    if pool.resize_tp:  # a tensor-parallel range: any model (dense vertical scaling)
        if len(pool.sizes()) < 2:
            raise ValueError(f"autoscaler={policy}: pools.{pool.name} has one allowed "
                             f"tensor-parallel degree (min_tensor_parallel..max_tensor_parallel "
                             f"{pool.min_dp}..{pool.max_dp} dividing {pool.model.num_heads} heads)")
        return
    if not pool.expert_parallel:
        raise ValueError(f"autoscaler={policy}: pools.{pool.name} changes its data/expert-parallel "
                         f"degree, which needs an MoE model with pools.{pool.name}.expert_parallel "
                         f"> 1 (got {pool.model.name}, expert_parallel=1); or give it a "
                         f"tensor-parallel range (pools.{pool.name}.min_tensor_parallel / "
                         f"max_tensor_parallel, cluster.max_tensor_parallel)")
    if len(pool.sizes()) < 2:
        raise ValueError(f"autoscaler={policy}: pools.{pool.name} has one allowed size "
                         f"(data_parallel_attention {pool.min_dp}..{pool.max_dp} with "
                         f"{pool.model.num_experts} experts); set pools.{pool.name}.min_data_parallel "
                         f"/ pools.{pool.name}.max_data_parallel")

"""Shared by vertical and elastic_moe: the data-parallel degree each instance should take."""

from __future__ import annotations

import math
from typing import Any


def target_dp(pool: Any, desired_gpus: int, instances: int) -> int:
    """The smallest allowed degree whose GPUs, over ``instances``, cover ``desired_gpus``."""
    per_rank = pool.base.tp * pool.base.pp
    want = math.ceil(desired_gpus / max(instances, 1) / per_rank)
    sizes = pool.sizes()
    for d in sizes:
        if d >= want:
            return d
    return sizes[-1]


def check_resizable(pool: Any, policy: str) -> None:
    if not pool.expert_parallel:
        raise ValueError(f"autoscaler={policy}: pool '{pool.name}' changes its data/expert-parallel "
                         f"degree, which needs an MoE model with expert_parallel > 1 (got "
                         f"{pool.model.name}, expert_parallel=1)")
    if len(pool.sizes()) < 2:
        raise ValueError(f"autoscaler={policy}: pool '{pool.name}' has one allowed size "
                         f"(data_parallel_attention {pool.min_dp}..{pool.max_dp} with "
                         f"{pool.model.num_experts} experts); set min_data_parallel / "
                         f"max_data_parallel")

"""Vertical scaling of a dense model in place: a serving instance changes its tensor-parallel
degree without restarting (docs/PARALLELISM.md, "Vertical scaling of dense models").

New GPUs join the running instance (``attach_s``: their processes and the communication
groups), receive their shard of every layer's weights and their share of the KV in use peer to
peer, while the instance keeps serving on its old layout, slowed by the copies (``slowdown``);
the GPUs that stay keep the part of their shard they still need (ranks renumbered so a new
shard is a subset of an old one: ``zero_copy``). Shrinking moves the leaving GPUs' weights and
KV onto the staying ones, once the KV in use fits the smaller instance. SpotServe (arXiv
2311.15566) reparallelises LLM instances in place the same way, migrating weights and KV
instead of restarting; ElasticMoE's defaults (attach 2 s, iterations 1.5x longer during the
copies: engine/lifecycle.py) are reused, named assumed for dense models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from simkv.config.bounds import bounded
from simkv.engine.lifecycle import ElasticParams
from simkv.policies.autoscaler.interface import Action, Resize, ScalingConfig
from simkv.policies.autoscaler.resize import next_change
from simkv.registry import register


@dataclass(slots=True)
class ElasticTPConfig(ScalingConfig):
    # New GPUs joining the instance (process start from a warm pool, NCCL group re-init):
    # assumed, ElasticMoE's 2 s (its Table 1).
    attach_s: float = bounded(2.0, ge=0)
    # Iterations run this much slower while weights and KV move: assumed, ElasticMoE's.
    slowdown: float = bounded(0.5, ge=0)
    zero_copy: bool = True


@register("autoscaler", "elastic_tp", ElasticTPConfig)
class ElasticTP:
    def __init__(self, cfg: ElasticTPConfig, **_: object) -> None:
        self.cfg = cfg
        self.params = ElasticParams(cfg.attach_s, cfg.slowdown, cfg.zero_copy)

    def check(self, pool: Any) -> None:
        if not pool.resize_tp:
            raise ValueError(f"autoscaler=elastic_tp: pool '{pool.name}' has one tensor-parallel "
                             f"degree; give it a range (pools.{pool.name}.min_tensor_parallel / "
                             f"max_tensor_parallel, or cluster.min_tensor_parallel / "
                             f"max_tensor_parallel)")
        if len(pool.sizes()) < 2:
            raise ValueError(f"autoscaler=elastic_tp: pool '{pool.name}' has one allowed "
                             f"tensor-parallel degree dividing {pool.model.num_heads} heads")

    def decide(self, pool: Any, desired_gpus: int, now: float) -> list[Action]:
        step = next_change(pool, desired_gpus)
        return [Resize(*step)] if step is not None else []

"""ElasticMoE: grow or shrink a running MoE instance's expert-parallel degree in place.

New devices join the serving instance (``attach_s``: their processes and the communication
groups), receive the attention weights and their share of experts peer to peer over the
fastest link, while the instance keeps serving on its old layout, slowed by the copies
(``slowdown``); weights and KV of the devices that stay are remapped, not copied
(``zero_copy``, ElasticMoE's HBM Management Module). Scale-down moves the leaving devices'
experts onto the staying ones once the KV fits on fewer devices. Parameters and sources:
docs/CLUSTER.md (ElasticMoE, arXiv 2510.02613, sections 4-5, Tables 1-2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from simkv.config.bounds import bounded
from simkv.engine.lifecycle import ElasticParams
from simkv.policies.autoscaler.interface import Action, Resize, ScalingConfig
from simkv.policies.autoscaler.resize import check_resizable, next_change
from simkv.registry import register


@dataclass(slots=True)
class ElasticMoEConfig(ScalingConfig):
    # New devices joining: process start from a pre-initialised pool and communication-group
    # re-init (ElasticMoE Table 1: 2.43 s scale time in all, pre-initialised).
    attach_s: float = bounded(2.0, ge=0)
    # Iterations run this much slower while experts move (ElasticMoE Table 2: throughput
    # 34% lower during scaling, the intake pause included).
    slowdown: float = bounded(0.5, ge=0)
    zero_copy: bool = True


@register("autoscaler", "elastic_moe", ElasticMoEConfig)
class ElasticMoE:
    def __init__(self, cfg: ElasticMoEConfig, **_: object) -> None:
        self.cfg = cfg
        self.params = ElasticParams(cfg.attach_s, cfg.slowdown, cfg.zero_copy)

    def check(self, pool: Any) -> None:
        check_resizable(pool, "elastic_moe")

    def decide(self, pool: Any, desired_gpus: int, now: float) -> list[Action]:
        step = next_change(pool, desired_gpus)
        return [Resize(*step)] if step is not None else []

"""Settings of many models on one cluster: LoRA adapters on a shared base model.

Pools naming models and sharing GPUs are pool keys (``serves``, ``gpu_group``, config/
schema.py) and the placer is ``autoscaler=serverless``; this module holds what the base
model's instances need to serve adapters (engine/lora.py, docs/MODELS.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from simkv.config.bounds import bounded, check, require

POPULARITY = ("uniform", "zipf")
TARGETS = ("attention", "all")
ADAPTER_SOURCES = ("dram", "ssd")


@dataclass(slots=True)
class LoRAConfig:
    """LoRA adapters served on the base model's instances, batched together (S-LoRA, arXiv
    2311.03285; Punica's SGMV kernels, arXiv 2310.18547).

    Each request is given an adapter at arrival (a session keeps its first one), with the
    popularity below. An instance holds ``gpu_slots`` adapters in HBM (their memory comes off
    the KV cache); a request whose adapter is not there waits for it to load from host DRAM
    (or the node's SSD) over PCIe, or for a slot whose adapter no request there uses. Every
    iteration pays the adapters' shrink and expand kernels over the batch: the weights of
    each distinct adapter in the batch read once, the tokens' FLOPs, and the kernels' fixed
    cost.
    """

    # Adapters (0: none; every request runs the base model).
    adapters: int = bounded(0, ge=0)
    popularity: str = bounded("uniform", choices=POPULARITY)
    zipf_alpha: float = bounded(1.0, ge=0)
    # Rank r: each adapted projection d_in -> d_out carries A (d_in x r) and B (r x d_out).
    rank: int = bounded(16, ge=1)
    # attention: q, k, v, o (S-LoRA's and Punica's evaluations); all: the MLP's too.
    targets: str = bounded("attention", choices=TARGETS)
    # Adapters resident per instance (vLLM's --max-loras; S-LoRA bounds it by memory).
    gpu_slots: int = bounded(8, ge=1)
    source: str = bounded("dram", choices=ADAPTER_SOURCES)
    # Fixed GPU time per LoRA kernel (a shrink or an expand of one projection group per
    # layer): launch and tail effects the roofline does not see (assumed: docs/MODELS.md).
    kernel_overhead_us: float = bounded(3.0, ge=0)

    def __post_init__(self) -> None:
        check(self, "lora.")


# Built-in generators whose requests carry no model name (a pool's ``serves`` never matches).
NO_MODEL_WORKLOADS = ("poisson", "agent", "conversation", "shared_prefix", "near_duplicate",
                      "reasoning", "rollout")


def validate_served_models(sim: Any) -> None:
    """A pool's ``serves`` must name a model the workload's requests carry, when the config
    says which (burstgpt's ``workload.models``, a trace's model filter; a generator that names
    none): a typo, or a generator without model names, left a pool that never served and its
    requests rejected (``unserved_model``) in a run that exited 0. A trace without a filter
    names its models only in its file: not checked."""
    from simkv.registry import name_of

    wl = sim.workload
    w = name_of(wl) if wl is not None else ""
    models = list(getattr(wl, "models", None) or [])
    if w in NO_MODEL_WORKLOADS:
        names: set[str] = set()
        have = f"workload={w}'s requests name no model"
    elif models and (w == "burstgpt" or hasattr(wl, "path")):
        names = set(models)
        have = f"workload.models: {', '.join(models)}"
    else:
        return
    for name, pc in sim.pools.items():
        for m in pc.serves:
            require(m in names,
                    f"pools.{name}.serves: no request names model '{m}' ({have}); name a model "
                    f"of the workload, or leave pools.{name}.serves empty to serve every model"
                    if names else
                    f"pools.{name}.serves cannot act: {have}, so a pool serving only named "
                    f"models never serves; leave pools.{name}.serves empty (every model) or use "
                    f"a workload whose requests name models (workload=burstgpt, or a trace "
                    f"with a model column)")


def validate_lora(sim: Any) -> None:
    """Rules tying ``lora`` to the rest of the run (called by SimConfig.validate)."""
    from simkv.registry import implementation, name_of

    c: LoRAConfig = sim.lora
    if not c.adapters:
        default = LoRAConfig()
        for k in ("popularity", "zipf_alpha", "rank", "targets", "gpu_slots", "source",
                  "kernel_overhead_us"):
            require(getattr(c, k) == getattr(default, k),
                    f"lora.{k} cannot act: no adapters (set lora.adapters)")
        return
    require(c.popularity == "zipf" or c.zipf_alpha == 1.0,
            "lora.zipf_alpha cannot act with lora.popularity=uniform")
    require(sim.scheduler is None or hasattr(implementation(sim.scheduler), "detach_running"),
            f"lora: adapters need a continuous-batching scheduler (scheduler="
            f"{name_of(sim.scheduler)} has no running batch to price)")
    roles = {p.role for p in sim.pools.values()}
    require(not roles - {"colocated"}, "lora: adapters on prefill/decode pools are not modelled")
    require(sim.spot.on_preempt != "migrate",
            "lora: moving a request with its adapter (spot.on_preempt=migrate) is not modelled")
    # Live migration hands a request to another instance without its adapter (the adapter
    # cache there never loads it: no load time, no slot), so it is refused the same way.
    require(sim.migration is None or name_of(sim.migration) == "none",
            f"lora: moving a request with its adapter (migration={name_of(sim.migration)}) is "
            f"not modelled; set migration=none")
    require(c.targets == "attention" or sim.model.num_experts == 1,
            "lora.targets=all on an MoE model (adapters per expert) is not modelled; use attention")

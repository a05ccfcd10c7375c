"""The built-in placements (config group ``offload``), each a few lines of description.

| name | tiers below HBM | moves KV when | system |
|---|---|---|---|
| none | - | never: evicted KV is dropped, preemption recomputes | vLLM's default |
| swap | DRAM (swap space) | a request is preempted | vLLM v0 ``preemption_mode=swap`` |
| dram | DRAM | a granule is evicted from HBM | CPU offload of the prefix cache (SGLang HiCache L2) |
| ssd | DRAM, SSD | evicted from HBM, then from DRAM | HiCache/LMCache three-level |
| csd | DRAM, CSD | as ssd, with computational storage drives below DRAM | InstInfer's drives as a KV tier |
| write_through | DRAM, SSD | every prefix, as soon as it is prefilled | LMCache |
| cluster | DRAM, SSD of all nodes, one pool | every prefix, written to the pool | Mooncake Store |
| instinfer | (the KV pool itself is on the CSDs) | always: decode attention runs in the drives | InstInfer |
| ssd_stream | (the KV pool itself is on the SSDs) | always: each decode step reads it over PCIe | FlexGen |
| dram_stream | (the KV pool itself is in CPU DRAM) | always: each decode step reads it over PCIe | FlexGen |
"""

from __future__ import annotations

from dataclasses import dataclass

from simkv.registry import register


@dataclass(slots=True)
class NoOffloadConfig:
    pass


@dataclass(slots=True)
class SwapConfig:
    pass


@dataclass(slots=True)
class DramConfig:
    pass


@dataclass(slots=True)
class SsdConfig:
    pass


@dataclass(slots=True)
class CsdConfig:
    pass


@dataclass(slots=True)
class WriteThroughConfig:
    pass


@dataclass(slots=True)
class ClusterStoreConfig:
    pass


@dataclass(slots=True)
class InstInferConfig:
    pass


@dataclass(slots=True)
class SsdStreamConfig:
    pass


@dataclass(slots=True)
class DramStreamConfig:
    pass


class _Placement:
    """Shared constructor: a placement is its class attributes."""

    tiers: tuple[str, ...] = ()
    demote = False
    write_through = False
    shared = False
    swap = False
    attention_in_storage = False
    kv_on_ssd = False
    kv_on_dram = False

    def __init__(self, cfg: object = None, **_: object) -> None:
        self.cfg = cfg


@register("offload", "none", NoOffloadConfig)
class NoOffload(_Placement):
    pass


@register("offload", "swap", SwapConfig)
class Swap(_Placement):
    tiers = ("dram",)
    swap = True


@register("offload", "dram", DramConfig)
class DramOffload(_Placement):
    tiers = ("dram",)
    demote = True


@register("offload", "ssd", SsdConfig)
class SsdOffload(_Placement):
    tiers = ("dram", "ssd")
    demote = True


@register("offload", "csd", CsdConfig)
class CsdOffload(_Placement):
    tiers = ("dram", "csd")
    demote = True


@register("offload", "write_through", WriteThroughConfig)
class WriteThrough(_Placement):
    tiers = ("dram", "ssd")
    write_through = True


@register("offload", "cluster", ClusterStoreConfig)
class ClusterStore(_Placement):
    tiers = ("dram", "ssd")
    write_through = True
    shared = True


@register("offload", "instinfer", InstInferConfig)
class InstInfer(_Placement):
    attention_in_storage = True


@register("offload", "ssd_stream", SsdStreamConfig)
class SsdStream(_Placement):
    kv_on_ssd = True


@register("offload", "dram_stream", DramStreamConfig)
class DramStream(_Placement):
    kv_on_dram = True

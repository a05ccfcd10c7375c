"""KV memory and weights of a replica: the paged KV cache, its allocator, the tiers below HBM
and where the weights live, with the rules that tie them to the rest of the run.

They live apart from ``schema.py`` (which holds a field of each and re-exports the classes)
because they are one concern, the memory a request's KV and the model's weights occupy
(docs/MEMORY.md), and its cross-section rules (what the prefix cache, an offload placement,
a tool-KV or eviction policy need of each other) are most of ``SimConfig.validate``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from simkv.config.bounds import ConfigError, bounded, require

ALLOCATORS = ("paged", "vattention")
PAGE_KIB = (64, 128, 256, 2048)


@dataclass(slots=True)
class AllocatorConfig:
    """How KV memory is allocated, as a cost (docs/MEMORY.md, "The KV allocator").

    ``paged`` (the default) is vLLM's PagedAttention, the kernels the hardware profiles'
    attention efficiencies stand for: it costs nothing beyond them. ``vattention`` keeps each
    request's KV in contiguous virtual memory and maps physical pages on demand through the
    CUDA driver (vAttention, arXiv 2405.04437): unmodified (contiguous) attention kernels, at
    the price of a driver call per page mapped, hidden behind the iteration in flight when
    ``overlap``, and of page-sized allocation granularity (a page holds one layer's keys or
    values of one request).
    """

    kind: str = bounded("paged", choices=ALLOCATORS)
    # Attention time relative to the hardware profile's, in prefill and in decode (None: the
    # kind's default: 1 for paged; for vattention 1/1.45 in prefill, FlashInfer's paged prefill
    # kernel against its contiguous one in the paper's abstract, and 1 in decode).
    prefill_attention_time: float | None = bounded(None, gt=0)
    decode_attention_time: float | None = bounded(None, gt=0)
    # vAttention's physical page (the CUDA driver maps 2 MiB; 64-256 KiB need its modified
    # driver, README of github microsoft/vattention).
    page_kib: int = bounded(2048, ge=64)
    # Driver time to map one page (cuMemCreate + cuMemMap + cuMemSetAccess): 46 us measured
    # on the lent H200 for a 2 MiB page (validation/vattention/).
    map_latency_us: float = bounded(46.0, ge=0)
    # Map the next iteration's pages while this one computes (vAttention's background
    # allocation); false: synchronously, before the iteration.
    overlap: bool = True

    def validate(self, prefix: str = "kv.allocator.") -> None:
        require(self.page_kib in PAGE_KIB,
                f"{prefix}page_kib: expected one of {', '.join(map(str, PAGE_KIB))} (the page "
                f"sizes vAttention supports), got {self.page_kib}")
        if self.kind == "paged":
            require(self.page_kib == 2048 and self.map_latency_us == 46.0 and self.overlap,
                    f"{prefix}page_kib, map_latency_us and overlap describe vAttention's "
                    f"allocator: set {prefix}kind=vattention")

    def attention_times(self) -> tuple[float, float]:
        """(prefill, decode) attention time factors, the kind's defaults filled in."""
        dp, dd = (1.0 / 1.45, 1.0) if self.kind == "vattention" else (1.0, 1.0)
        return (dp if self.prefill_attention_time is None else self.prefill_attention_time,
                dd if self.decode_attention_time is None else self.decode_attention_time)


@dataclass(slots=True)
class KVConfig:
    """Paged KV cache of a replica (vLLM's CacheConfig)."""

    block_size: int = bounded(16, ge=1)
    gpu_memory_utilization: float = bounded(0.9, gt=0, le=1)
    # Pin the number of KV blocks (e.g. the count a real engine reported) instead of deriving
    # it from memory; validation needs this to compare like with like.
    num_gpu_blocks_override: int | None = bounded(None, ge=1)
    # Automatic prefix caching (on by default, as in vLLM v1): requests reuse cached KV of
    # equal leading granules. Needs the vllm scheduler (static batching ignores it).
    prefix_caching: bool = True
    # Tokens per cached granule: the unit of prefix identity, of eviction and of transfers
    # between tiers. A trace's prefix hashes must cover this many tokens each (Mooncake: 512).
    prefix_block_tokens: int = bounded(512, ge=1)
    # PagedAttention (default) or vAttention, as a cost: AllocatorConfig.
    allocator: AllocatorConfig = field(default_factory=AllocatorConfig)


@dataclass(slots=True)
class MemoryConfig:
    """The tiers below HBM and their links (docs/MEMORY.md); used by ``offload`` placements."""

    # A node profile of hardware_profiles/nodes/ (without .yaml), or your own file.
    node: str = "dgx_h100"
    node_path: str | None = None
    # Eviction policy of the tiers below HBM (an `eviction` name); None: the same as HBM's.
    lower_eviction: str | None = None
    # One tier's own eviction policy (an `eviction` name); None: lower_eviction's.
    dram_eviction: str | None = None
    ssd_eviction: str | None = None
    csd_eviction: str | None = None
    # How concurrent transfers share a path of links: the min of equal shares (the default,
    # exact on one link) or max-min fairness (work-conserving on paths of several links).
    link_sharing: str = bounded("min_share", choices=("min_share", "max_min"))
    # A replica missing a cached granule reads it from another instance's HBM cache on its
    # node over NVLink (the GPUs' NVLink links, shared with weights and expert moves) before
    # looking below HBM.
    peer_hbm: bool = False
    # Per-node capacity given to the KV store, overriding the profile (GiB).
    dram_gib: float | None = bounded(None, gt=0)
    ssd_gib: float | None = bounded(None, gt=0)
    csd_gib: float | None = bounded(None, gt=0)


WEIGHT_SOURCES_OFFLOAD = ("dram", "ssd")


@dataclass(slots=True)
class WeightsConfig:
    """Where the model's weights live (FlexGen-style weight offloading, docs/MEMORY.md).

    ``gpu_fraction`` of every layer's weights stay in HBM; the rest lives in the node's CPU
    DRAM (or SSD) and crosses PCIe once per iteration, layer by layer, for the whole batch
    (FlexGen's block schedule with the running batch as the block). With ``overlap`` the
    next layer's weights load while this one computes (an iteration takes the longer of its
    compute and its loads), else they add up. 1 (the default): everything resident, no cost.
    """

    gpu_fraction: float = bounded(1.0, gt=0, le=1)
    source: str = bounded("dram", choices=WEIGHT_SOURCES_OFFLOAD)
    overlap: bool = True


def prefix_cache_acts(sim: Any) -> bool:
    """Whether the prefix cache is on and used: ``kv.prefix_caching`` with a scheduler that
    goes through the KV manager (static batching does not)."""
    return sim.kv.prefix_caching and getattr(sim.scheduler, "uses_kv_manager", True)


def validate_memory(sim: Any) -> None:
    """Rules tying the prefix cache, ``offload``, ``tool_kv``, ``eviction``, ``memory``,
    ``kv.allocator`` and ``kv_policy`` together (called by ``SimConfig.validate`` once the
    policy sections are filled in): an option that cannot act in this combination is refused
    with the key and what would make it valid."""
    from simkv.registry import build, config_for, name_of

    m, kv = sim.model, sim.kv
    kv_manager = getattr(sim.scheduler, "uses_kv_manager", True)
    cache = prefix_cache_acts(sim)
    why = ("kv.prefix_caching=false" if not kv.prefix_caching else
           f"scheduler={name_of(sim.scheduler)} (it does not use the prefix cache)")
    if kv.prefix_caching:
        require(kv.prefix_block_tokens % kv.block_size == 0,
                f"kv.prefix_block_tokens ({kv.prefix_block_tokens}) must be a multiple of "
                f"kv.block_size ({kv.block_size})")
    placement = build(sim.offload)
    offload = name_of(sim.offload)
    require(cache or not placement.tiers,
            f"offload={offload} cannot act with {why}: only cached prefixes move between "
            f"tiers; use offload=none, or turn the prefix cache on with the vllm scheduler")
    require(cache or name_of(sim.tool_kv) == "drop",
            f"tool_kv={name_of(sim.tool_kv)} cannot act with {why}; use tool_kv=drop")
    require(cache or name_of(sim.eviction) == "lru",
            f"eviction={name_of(sim.eviction)} cannot act with {why}: nothing is cached "
            f"to evict")
    tier = getattr(sim.tool_kv, "tier", None)
    require(tier is None or tier in placement.tiers,
            f"tool_kv=offload to '{tier}' needs that tier, which offload={offload} does not "
            f"have (it has: {', '.join(placement.tiers) or 'none'}); choose e.g. "
            f"offload=dram or offload=ssd")
    mem = sim.memory
    if mem.lower_eviction is not None:
        try:
            config_for("eviction", mem.lower_eviction)
        except KeyError as exc:
            raise ConfigError(f"memory.lower_eviction: {exc.args[0]}") from None
        require(bool(placement.tiers), f"memory.lower_eviction cannot act: offload={offload} "
                                       f"has no tier below HBM")
    for t in ("dram", "ssd", "csd"):
        name = getattr(mem, f"{t}_eviction")
        if name is None:
            continue
        try:
            config_for("eviction", name)
        except KeyError as exc:
            raise ConfigError(f"memory.{t}_eviction: {exc.args[0]}") from None
        require(t in placement.tiers, f"memory.{t}_eviction cannot act: offload={offload} has "
                                      f"no {t} tier (it has: {', '.join(placement.tiers) or 'none'})")
    require(not mem.peer_hbm or cache,
            f"memory.peer_hbm cannot act with {why}: only cached prefixes are read from "
            f"another instance's HBM")
    require(not mem.peer_hbm or sim.autoscaler is None or name_of(sim.autoscaler) == "none",
            f"memory.peer_hbm reads the HBM of the instances serving from the start: "
            f"use autoscaler=none (got {name_of(sim.autoscaler) if sim.autoscaler else ''})")
    if kv.allocator.kind == "vattention":
        require(not cache, "kv.allocator.kind=vattention keeps each request's KV in its own "
                           "contiguous virtual tensors, which requests do not share: set "
                           "kv.prefix_caching=false")
    drives = {"ssd": placement.kv_on_ssd, "csd": placement.attention_in_storage,
              "dram": placement.kv_on_dram}
    for t in ("dram", "ssd", "csd"):
        require(getattr(mem, f"{t}_gib") is None or t in placement.tiers or drives.get(t, False),
                f"memory.{t}_gib cannot act: offload={offload} has no {t} tier "
                f"(it has: {', '.join(placement.tiers) or 'none'})")
    if sim.kv_policy is not None:
        # A KV policy (or a diffusion or var model) keeps per-request KV that is not a
        # shareable prefix, on schedulers with a shaped decode batch (docs/KV_METHODS.md).
        policy = name_of(sim.kv_policy)
        what = (f"kv_policy={policy}" if policy != "full" else f"a {m.kind} model")
        if policy != "full" or m.kind != "autoregressive":
            require(not cache, f"kv.prefix_caching: {what} keeps KV that is not a shareable "
                               f"prefix: set kv.prefix_caching=false")
            require(kv_manager, f"scheduler: {what} needs scheduler=vllm or continuum "
                                f"(scheduler=static runs full KV of autoregressive models only)")

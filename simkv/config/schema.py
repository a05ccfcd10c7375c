"""The run configuration as typed dataclasses.

Hydra composes YAML and command-line overrides against these schemas (so a typo or a wrong
type fails before the run); ``OmegaConf.to_object`` then turns the result into plain
dataclass instances once, at the boundary. The engine, KV manager and policies only ever see
these dataclasses (attribute access on a DictConfig is ~700x slower: STACK.md).

``slots=True`` but not frozen: Hydra refuses overrides on frozen nodes.
Policy sections (``scheduler``, ``router``, ``workload``, ``eviction``, ``offload``,
``tool_kv``) are typed ``Any`` here because each
registered policy brings its own dataclass; ``simkv.registry.build`` dispatches on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from simkv.entities.model import ModelSpec


@dataclass(slots=True)
class HardwareConfig:
    """Which GPU profile to use.

    ``profile`` names a file of the shipped ``hardware_profiles/`` (without ``.yaml``);
    ``path`` points to your own profile file (for example one written by calibration) and wins
    over ``profile`` when set.
    """

    profile: str = "h100_sxm_80gb"
    path: str | None = None


@dataclass(slots=True)
class ClusterConfig:
    """Replicas and their parallelism; every replica is identical."""

    replicas: int = 2
    tensor_parallel: int = 1
    # NOTE: pipeline stages split the layers (memory) but are modelled without micro-batch
    # overlap, so an iteration takes the sum of its stages: docs/ARCHITECTURE.md.
    pipeline_parallel: int = 1


@dataclass(slots=True)
class KVConfig:
    """Paged KV cache of a replica (vLLM's CacheConfig)."""

    block_size: int = 16
    gpu_memory_utilization: float = 0.9
    # Pin the number of KV blocks (e.g. the count a real engine reported) instead of deriving
    # it from memory; validation needs this to compare like with like.
    num_gpu_blocks_override: int | None = None
    # Automatic prefix caching (on by default, as in vLLM v1): requests reuse cached KV of
    # equal leading granules. Needs the vllm scheduler (static batching ignores it).
    prefix_caching: bool = True
    # Tokens per cached granule: the unit of prefix identity, of eviction and of transfers
    # between tiers. A trace's prefix hashes must cover this many tokens each (Mooncake: 512).
    prefix_block_tokens: int = 512


@dataclass(slots=True)
class MemoryConfig:
    """The tiers below HBM and their links (docs/MEMORY.md); used by ``offload`` placements."""

    # A node profile of hardware_profiles/nodes/ (without .yaml), or your own file.
    node: str = "dgx_h100"
    node_path: str | None = None
    # Eviction policy of the tiers below HBM (an `eviction` name); None: the same as HBM's.
    lower_eviction: str | None = None
    # Per-node capacity given to the KV store, overriding the profile (GiB).
    dram_gib: float | None = None
    ssd_gib: float | None = None
    csd_gib: float | None = None


@dataclass(slots=True)
class EngineConfig:
    """Costs outside the GPU kernels, and how the engine advances time."""

    # Host-side time per iteration (scheduling, input preparation, sampling, detokenising).
    # Assumed until validation (issue 5) fits them per engine.
    iteration_overhead_s: float = 0.002
    per_sequence_overhead_s: float = 1.0e-5
    # Host time per prefill token (input preparation, eager per-token work); 0 for engines
    # whose prefill is GPU-bound. Fitted per engine by validation.
    per_prefill_token_overhead_s: float = 0.0
    # Host time per KV token a step reads (engines that build their KV read index token by
    # token in Python: transformers' continuous batching). Fitted by validation.
    per_context_token_overhead_s: float = 0.0
    # Dense padded attention: engines that attend through one masked SDPA call over the whole
    # batch's KV, padded to a multiple of kv_padding_tokens for CUDA graphs (transformers'
    # paged|sdpa, kv_padding_interval_size 16384). 0 = per-sequence attention priced by the
    # roofline. Otherwise attention per step is padded KV x (padded_kv_token_s + query tokens
    # x padded_kv_query_token_s), all layers, measured on the engine's steps (validation).
    kv_padding_tokens: int = 0
    padded_kv_token_s: float = 0.0
    padded_kv_query_token_s: float = 0.0
    # That attention's query tile: its query tokens count in multiples of this (0 = exact).
    # Selected by the step fit: 512 for transformers' paged SDPA on the H100 (VALIDATION.md).
    attention_query_tile: int = 0
    # Most decode iterations advanced at once between two batch changes; 1 = step by step.
    max_fast_forward: int = 4096
    # Raise LivelockError after this many consecutive iterations with no request finishing.
    livelock_iterations: int = 2_000_000


@dataclass(slots=True)
class SLOConfig:
    """Per-request service-level objectives; goodput counts requests meeting both."""

    ttft_s: float = 2.0
    tpot_s: float = 0.1


@dataclass(slots=True)
class OutputConfig:
    """What is written besides requests.parquet and summary.json."""

    iterations: bool = False
    # transfers.parquet: one row per KV transfer between tiers (start, end, bytes, links).
    transfers: bool = False
    plot: bool = True
    # tqdm bar on an interactive terminal; elsewhere progress goes to the log only.
    progress: bool = True
    row_group_size: int = 65536


@dataclass(slots=True)
class SimConfig:
    """Everything one simulation run needs; its canonical JSON is hashed into every output."""

    seed: int = 0
    model: ModelSpec = field(default_factory=ModelSpec)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    kv: KVConfig = field(default_factory=KVConfig)
    scheduler: Any = None
    router: Any = None
    workload: Any = None
    eviction: Any = None
    offload: Any = None
    tool_kv: Any = None
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    slo: SLOConfig = field(default_factory=SLOConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

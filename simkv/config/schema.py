"""The run configuration as typed dataclasses.

Hydra composes YAML and command-line overrides against these schemas (so a typo or a wrong
type fails before the run); ``OmegaConf.to_object`` then turns the result into plain
dataclass instances once, at the boundary. The engine, KV manager and policies only ever see
these dataclasses (attribute access on a DictConfig is ~700x slower: STACK.md).

``slots=True`` but not frozen: Hydra refuses overrides on frozen nodes.
Policy sections (``scheduler``, ``router``, ``workload``, ``eviction``, ``offload``,
``tool_kv``, ``autoscaler``) are typed ``Any`` here because each
registered policy brings its own dataclass; ``simkv.registry.build`` dispatches on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from simkv.config.bounds import bounded
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
    """The one-pool cluster: identical replicas of the run's model on the run's hardware.

    ``pools`` (below) replaces this with several pools; see docs/CLUSTER.md.
    """

    replicas: int = 2
    tensor_parallel: int = 1
    # NOTE: pipeline stages split the layers (memory) but are modelled without micro-batch
    # overlap, so an iteration takes the sum of its stages: docs/ARCHITECTURE.md.
    pipeline_parallel: int = 1
    # Bounds an autoscaler keeps the replica count within (None: replicas, i.e. fixed).
    min_replicas: int | None = None
    max_replicas: int | None = None
    # A network model store every node can load weights from (an object store or NFS):
    # its total read bandwidth, shared by all loads at once.
    weight_store_gb_s: float = bounded(10.0, gt=0)
    weight_store_latency_s: float = bounded(0.01, ge=0)


ROUTINGS = ("uniform", "zipf", "file")
PLACEMENTS = ("contiguous", "balanced")


@dataclass(slots=True)
class MoEConfig:
    """MoE routing: how tokens pick experts, and how experts are placed on an EP group's GPUs."""

    # uniform | zipf | file (a per-expert popularity vector, one number per line or comma-separated)
    routing: str = "uniform"
    zipf_exponent: float = bounded(1.0, ge=0)
    popularity_path: str | None = None
    # contiguous: GPU g holds experts [g E/ep, (g+1) E/ep) (vLLM's default linear map);
    # balanced: greedy by popularity, hottest first onto the least loaded GPU (EPLB-like,
    # without replicas).
    placement: str = "contiguous"
    # Bytes per element of dispatched activations (2: bf16; DeepEP can dispatch FP8: 1).
    # Combine always returns bf16.
    dispatch_bytes_per_element: float = bounded(2.0, gt=0)

    def __post_init__(self) -> None:
        if self.routing not in ROUTINGS:
            raise ValueError(f"moe.routing must be one of {', '.join(ROUTINGS)}, got {self.routing!r}")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"moe.placement must be one of {', '.join(PLACEMENTS)}, "
                             f"got {self.placement!r}")


@dataclass(slots=True)
class DisaggConfig:
    """The second stage of routing and how KV moves (used when pools have roles)."""

    # A router name (router group) choosing the decode instance.
    decode_router: str = "least_outstanding"
    # Decode instances on the prefill instance's node first (NVLink instead of RDMA).
    prefer_same_node: bool = True
    # Layer-by-layer KV streaming overlapping the prefill.
    kv_streaming: bool = False
    # Bytes per KV value on the wire relative to the cache's (1: as stored).
    wire_fraction: float = bounded(1.0, gt=0, le=1)


ROLES = ("colocated", "prefill", "decode")
WEIGHT_SOURCES = ("ssd", "network", "peer")


@dataclass(slots=True)
class PoolConfig:
    """A pool of identical instances: one model, one GPU kind, one parallel layout, one role.

    An instance holds ``tensor_parallel x pipeline_parallel x data_parallel_attention`` GPUs.
    MoE models may run attention data-parallel (``data_parallel_attention`` ranks, each with
    its own sequences) with experts spread over all GPUs of a stage (``expert_parallel`` =
    tensor_parallel x data_parallel_attention); elastic scaling changes the data-parallel
    degree. Lifecycle and weight-loading parameters: docs/CLUSTER.md (with sources).
    """

    role: str = "colocated"
    # A model spec of conf/model (e.g. qwen3_30b_a3b) or a hardware profile name; None: the
    # run's `model` / `hardware`.
    model: str | None = None
    hardware: str | None = None
    # Instances serving at time 0, and the bounds an autoscaler keeps.
    instances: int = bounded(1, ge=0)
    min_instances: int | None = None
    max_instances: int | None = None
    tensor_parallel: int = bounded(1, ge=1)
    pipeline_parallel: int = bounded(1, ge=1)
    data_parallel_attention: int = bounded(1, ge=1)
    expert_parallel: int = bounded(1, ge=1)
    # Largest and smallest data-parallel degree a resize may reach (None: the initial one).
    max_data_parallel: int | None = None
    min_data_parallel: int | None = None
    # GPU allocation, container and engine process start before weights load (seconds).
    provisioning_s: float = bounded(30.0, ge=0)
    # Engine warm-up after the weights land (CUDA-graph capture, KV-cache profiling).
    warmup_s: float = bounded(10.0, ge=0)
    # Where a new instance reads its weights: the node's SSDs, the network store, or the GPUs
    # of a serving instance of this pool (NVLink on the same node, RDMA across nodes; SSD when
    # none serves).
    weight_source: str = "ssd"
    # Throughput of the weight loader per GPU (GB/s): the software's limit on top of the links
    # (safetensors readers reach 1-4 GB/s per GPU: docs/CLUSTER.md).
    loader_gb_s_per_gpu: float = bounded(2.0, gt=0)
    # Price of one GPU-hour (any currency), for equal-cost comparisons; 0 = not priced.
    gpu_hour_cost: float = bounded(0.0, ge=0)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"pool role must be one of {', '.join(ROLES)}, got {self.role!r}")
        if self.weight_source not in WEIGHT_SOURCES:
            raise ValueError(f"pool weight_source must be one of {', '.join(WEIGHT_SOURCES)}, "
                             f"got {self.weight_source!r}")


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
    autoscaler: Any = None
    # Several pools (heterogeneous GPUs, other layouts) instead of `cluster`'s one pool.
    pools: dict[str, PoolConfig] = field(default_factory=dict)
    moe: MoEConfig = field(default_factory=MoEConfig)
    disagg: DisaggConfig = field(default_factory=DisaggConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    slo: SLOConfig = field(default_factory=SLOConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

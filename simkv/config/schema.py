"""The run configuration as typed dataclasses.

Hydra composes YAML and command-line overrides against these schemas (so a typo or a wrong
type fails before the run); ``OmegaConf.to_object`` then turns the result into plain
dataclass instances once, at the boundary. The engine, KV manager and policies only ever see
these dataclasses (attribute access on a DictConfig is ~700x slower: STACK.md).

``slots=True`` but not frozen: Hydra refuses overrides on frozen nodes.
Policy sections (``scheduler``, ``router``, ``workload``, ``eviction``, ``offload``,
``tool_kv``, ``autoscaler``, ``kv_policy``, ``kv_pool``, ``predictor``) are typed ``Any`` here because each
registered policy brings its own dataclass; ``simkv.registry.build`` dispatches on it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from simkv.config.bounds import bounded, check, require
from simkv.config.energy import EnergyConfig, validate_energy
from simkv.config.faults import FaultsConfig, SpotConfig, validate_against
from simkv.config.memory import KVConfig, MemoryConfig, WeightsConfig, prefix_cache_acts, validate_memory
from simkv.config.models import LoRAConfig, validate_lora, validate_served_models
from simkv.config.parallel import CollectivesConfig, PipelineConfig, check_parallel
from simkv.entities.model import ModelSpec

log = logging.getLogger("simkv")


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

    replicas: int = bounded(2, ge=1)
    tensor_parallel: int = bounded(1, ge=1)
    # NOTE: pipeline stages split the layers; without `pipeline.micro_batches` an iteration
    # takes the sum of its stages (docs/PARALLELISM.md).
    pipeline_parallel: int = bounded(1, ge=1)
    # Bounds an autoscaler keeps the replica count within (None: replicas, i.e. fixed).
    min_replicas: int | None = bounded(None, ge=1)
    max_replicas: int | None = bounded(None, ge=1)
    # Bounds of the tensor-parallel degree a vertical autoscaler may resize a replica to
    # (autoscaler=vertical restarts, elastic_tp resizes in place; None: tensor_parallel).
    min_tensor_parallel: int | None = bounded(None, ge=1)
    max_tensor_parallel: int | None = bounded(None, ge=1)
    # A network model store every node can load weights from (an object store or NFS):
    # its total read bandwidth, shared by all loads at once.
    weight_store_gb_s: float = bounded(10.0, gt=0)
    weight_store_latency_s: float = bounded(0.01, ge=0)


ROUTINGS = ("uniform", "zipf", "file")
PLACEMENTS = ("contiguous", "balanced", "eplb")
ALL_TO_ALL = ("deepep_high_throughput", "deepep_low_latency", "allgather_reducescatter")
DP_BALANCES = ("even", "sequences")


@dataclass(slots=True)
class MoEConfig:
    """MoE routing: how tokens pick experts, and how experts are placed on an EP group's GPUs."""

    # uniform | zipf | file (a per-expert popularity vector, one number per line or comma-separated)
    routing: str = bounded("uniform", choices=ROUTINGS)
    zipf_exponent: float = bounded(1.0, ge=0)
    popularity_path: str | None = None
    # contiguous: GPU g holds experts [g E/ep, (g+1) E/ep) (vLLM's default linear map);
    # balanced: greedy by popularity, hottest first onto the least loaded GPU (EPLB-like,
    # without replicas); eplb: DeepSeek's EPLB, hot experts replicated into
    # `redundant_experts` extra slots, replicas packed evenly (docs/PARALLELISM.md).
    placement: str = bounded("contiguous", choices=PLACEMENTS)
    # Bytes per element of dispatched activations (2: bf16; DeepEP can dispatch FP8: 1).
    # Combine always returns bf16.
    dispatch_bytes_per_element: float = bounded(2.0, gt=0)
    # Extra expert slots for replicas of hot experts (vLLM --num-redundant-experts; DeepSeek
    # serves 256 experts in 288 slots); needs placement=eplb.
    redundant_experts: int = bounded(0, ge=0)
    # The dispatch/combine backend (vLLM --all2all-backend names; perf/all_to_all.py).
    all_to_all: str = bounded("deepep_high_throughput", choices=ALL_TO_ALL)
    # Data-parallel attention ranks: even (work split perfectly) or sequences (whole
    # sequences per rank, the busiest decides; rank_context_cv: the spread of their
    # contexts, coefficient of variation). perf/ranks.py.
    dp_balance: str = bounded("even", choices=DP_BALANCES)
    rank_context_cv: float = bounded(0.0, ge=0)

    def __post_init__(self) -> None:
        check(self, "moe.")

    def validate(self, prefix: str = "moe.") -> None:
        require(self.redundant_experts == 0 or self.placement == "eplb",
                f"{prefix}redundant_experts cannot act with {prefix}placement={self.placement}: "
                f"replicas are placed by EPLB; set {prefix}placement=eplb")
        require(self.rank_context_cv == 0 or self.dp_balance == "sequences",
                f"{prefix}rank_context_cv cannot act with {prefix}dp_balance=even; set "
                f"{prefix}dp_balance=sequences")


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
WEIGHT_SOURCES = ("ssd", "network", "peer", "dram")


@dataclass(slots=True)
class PoolConfig:
    """A pool of identical instances: one model, one GPU kind, one parallel layout, one role.

    An instance holds ``tensor_parallel x pipeline_parallel x data_parallel_attention`` GPUs.
    MoE models may run attention data-parallel (``data_parallel_attention`` ranks, each with
    its own sequences) with experts spread over all GPUs of a stage (``expert_parallel`` =
    tensor_parallel x data_parallel_attention); elastic scaling changes the data-parallel
    degree. Lifecycle and weight-loading parameters: docs/CLUSTER.md (with sources).
    """

    role: str = bounded("colocated", choices=ROLES)
    # A model spec of conf/model (e.g. qwen3_30b_a3b) or a hardware profile name; None: the
    # run's `model` / `hardware`.
    model: str | None = None
    hardware: str | None = None
    # Instances serving at time 0, and the bounds an autoscaler keeps.
    instances: int = bounded(1, ge=0)
    min_instances: int | None = bounded(None, ge=0)
    max_instances: int | None = bounded(None, ge=1)
    tensor_parallel: int = bounded(1, ge=1)
    pipeline_parallel: int = bounded(1, ge=1)
    data_parallel_attention: int = bounded(1, ge=1)
    expert_parallel: int = bounded(1, ge=1)
    # Largest and smallest data-parallel degree a resize may reach (None: the initial one).
    max_data_parallel: int | None = bounded(None, ge=1)
    min_data_parallel: int | None = bounded(None, ge=1)
    # Or the tensor-parallel degree (dense models' vertical scaling: a TP resize,
    # docs/PARALLELISM.md); one resize dimension per pool.
    max_tensor_parallel: int | None = bounded(None, ge=1)
    min_tensor_parallel: int | None = bounded(None, ge=1)
    # GPU allocation, container and engine process start before weights load (seconds).
    provisioning_s: float = bounded(30.0, ge=0)
    # Engine warm-up after the weights land (CUDA-graph capture, KV-cache profiling).
    warmup_s: float = bounded(10.0, ge=0)
    # Where a new instance reads its weights: the node's SSDs, the network store, the GPUs
    # of a serving instance of this pool (NVLink on the same node, RDMA across nodes; SSD when
    # none serves), or a checkpoint cache in the node's DRAM (ServerlessLLM: docs/MODELS.md).
    weight_source: str = bounded("ssd", choices=WEIGHT_SOURCES)
    # Throughput of the weight loader per GPU (GB/s): the software's limit on top of the links
    # (safetensors readers reach 1-4 GB/s per GPU: docs/CLUSTER.md).
    loader_gb_s_per_gpu: float = bounded(2.0, gt=0)
    # Price of one GPU-hour (any currency), for equal-cost comparisons; 0 = not priced.
    gpu_hour_cost: float = bounded(0.0, ge=0)
    # This pool's GPUs' board power limit (W) and locked SM clock (MHz); None: energy.*'s
    # (docs/ENERGY.md). Needs energy.enabled.
    power_cap_w: float | None = bounded(None, gt=0)
    sm_clock_mhz: float | None = bounded(None, gt=0)
    # Attention-FFN disaggregation (MegaScale-Infer): this many GPUs hold the routed experts,
    # the TP x DP GPUs only attention; micro-batches of the ping-pong pipeline (perf/afd.py).
    afd_expert_gpus: int = bounded(0, ge=0)
    afd_micro_batches: int = bounded(3, ge=1)
    # Many models on one cluster (docs/MODELS.md): the request model names this pool serves
    # (a trace's or generator's ``model``; empty: every request), and a GPU group whose nodes
    # the pools naming it share (models swap in and out of the same GPUs).
    serves: list[str] = field(default_factory=list)
    gpu_group: str | None = None
    # NOTE: no check when made: a pool does not know its name, and its errors must say
    # pools.<name>.<key> (issue 18); simulate() checks every pool under that key first.

    def validate(self, prefix: str = "pool.") -> None:
        tp_range = (self.min_tensor_parallel not in (None, self.tensor_parallel)
                    or self.max_tensor_parallel not in (None, self.tensor_parallel))
        dp_range = (self.min_data_parallel not in (None, self.data_parallel_attention)
                    or self.max_data_parallel not in (None, self.data_parallel_attention))
        require(not (tp_range and dp_range),
                f"{prefix}max_tensor_parallel: a pool resizes one dimension; set either the "
                f"tensor-parallel or the data-parallel range")
        if self.afd_expert_gpus:
            require(self.expert_parallel == 1 and self.pipeline_parallel == 1,
                    f"{prefix}afd_expert_gpus: the experts live on the expert GPUs; set "
                    f"{prefix}expert_parallel=1 and {prefix}pipeline_parallel=1")
        else:
            require(self.afd_micro_batches == 3,
                    f"{prefix}afd_micro_batches cannot act with {prefix}afd_expert_gpus=0")


@dataclass(slots=True)
class EngineConfig:
    """Costs outside the GPU kernels, and how the engine advances time."""

    # Host-side time per iteration (scheduling, input preparation, sampling, detokenising).
    # Assumed until validation (issue 5) fits them per engine.
    iteration_overhead_s: float = bounded(0.002, ge=0)
    per_sequence_overhead_s: float = bounded(1.0e-5, ge=0)
    # Host time per prefill token (input preparation, eager per-token work); 0 for engines
    # whose prefill is GPU-bound. Fitted per engine by validation.
    per_prefill_token_overhead_s: float = bounded(0.0, ge=0)
    # ... and GPU time per dense GEMM FLOP of each prefill token (perf/gemm.py
    # dense_flops_per_token): an engine's long, compute-bound prefill steps run their GEMMs
    # below the rate the profile's GEMMs reach alone (validation: fitted on its steps).
    prefill_flop_s: float = bounded(0.0, ge=0)
    # Host time per KV token a step reads (engines that build their KV read index token by
    # token in Python: transformers' continuous batching). Fitted by validation.
    per_context_token_overhead_s: float = bounded(0.0, ge=0)
    # Dense padded attention: engines that attend through one masked SDPA call over the whole
    # batch's KV, padded to a multiple of kv_padding_tokens for CUDA graphs (transformers'
    # paged|sdpa, kv_padding_interval_size 16384). 0 = per-sequence attention priced by the
    # roofline. Otherwise attention per step is padded KV x (padded_kv_token_s + query tokens
    # x padded_kv_query_token_s), all layers, measured on the engine's steps (validation).
    kv_padding_tokens: int = bounded(0, ge=0)
    padded_kv_token_s: float = bounded(0.0, ge=0)
    padded_kv_query_token_s: float = bounded(0.0, ge=0)
    # That attention's query tile: its query tokens count in multiples of this (0 = exact).
    # Selected by the step fit: 512 for transformers' paged SDPA on the H100 (VALIDATION.md).
    attention_query_tile: int = bounded(0, ge=0)
    # The same padded attention in the model's own dimensions, so one fit transfers across
    # model shapes (issue 14): per padded KV token and layer, seconds whatever the shape (the
    # kernel's walk over the keys), per KV element (KV heads x head dim, on one GPU) and per
    # query-head element x (tiled) query token (the masked score and value products). Added
    # to the all-layer terms above.
    padded_kv_layer_s: float = bounded(0.0, ge=0)
    padded_kv_element_s: float = bounded(0.0, ge=0)
    padded_query_element_s: float = bounded(0.0, ge=0)
    # Engines that pad a step's query tokens to a multiple of this for CUDA graphs
    # (transformers: q_padding_interval_size 64): every projection runs on the padded count.
    query_padding_tokens: int = bounded(0, ge=0)
    # The LM head runs on min(padded query tokens, this) rows instead of the sampled
    # sequences (transformers pads its logits indices likewise: max_requests_per_batch 1024).
    padded_logits_rows: int = bounded(0, ge=0)
    # GPU time per layer per step that no operator's bytes or FLOPs account for: the fixed
    # cost of the layer's small kernels replayed from a CUDA graph.
    per_layer_overhead_s: float = bounded(0.0, ge=0)
    # MoE layers of engines whose grouped expert GEMMs run below the dense GEMM model: GPU
    # time per MoE layer per step (routing, sorting, gathers) and per routed expert FLOP.
    moe_layer_overhead_s: float = bounded(0.0, ge=0)
    moe_expert_flop_s: float = bounded(0.0, ge=0)
    # ... and per byte of the routed experts' weights a step reads, as a fraction of the time
    # HBM takes to read it at its peak (grouped GEMMs reading weights slower than dense ones).
    moe_weight_read_factor: float = bounded(0.0, ge=0)
    # CUDA-graph capture, for schedulers that know when the engine meets a new graph shape
    # (scheduler=transformers with cuda_graphs=on_first_use): such an iteration costs this much
    # more, plus graph_capture_layer_s per layer (the eager forward's launches and the
    # capture's) and graph_capture_factor times its own price (its GPU work, run once more).
    graph_capture_s: float = bounded(0.0, ge=0)
    graph_capture_layer_s: float = bounded(0.0, ge=0)
    graph_capture_factor: float = bounded(0.0, ge=0)
    # ... plus this per MoE layer: an MoE layer launches several times a dense layer's kernels
    # (router, top-k, sort, histogram, gathers, grouped GEMMs), each captured and run eagerly.
    graph_capture_moe_layer_s: float = bounded(0.0, ge=0)
    # Most decode iterations advanced at once between two batch changes; 1 = step by step
    # (kv_pool=distattention always plans one at a time: its lending changes every iteration).
    max_fast_forward: int = bounded(4096, ge=1)
    # Raise LivelockError after this many consecutive iterations with no request finishing.
    livelock_iterations: int = bounded(2_000_000, ge=1)


@dataclass(slots=True)
class SLOConfig:
    """Per-request service-level objectives; goodput counts requests meeting both."""

    ttft_s: float = bounded(2.0, gt=0)
    tpot_s: float = bounded(0.1, gt=0)


@dataclass(slots=True)
class PriorityConfig:
    """Request priority classes (docs/SCHEDULING.md): 0 is normal; a larger number is served
    first by the priority-aware schedulers (scheduler=priority, sjf) and migration."""

    # Each arriving request is of class ``high`` with this probability (seeded, in arrival
    # order), as Llumnix's and BLIS's priority experiments mark a random share of requests.
    high_fraction: float = bounded(0.0, ge=0, le=1)
    high: int = bounded(1, ge=1)


@dataclass(slots=True)
class OutputConfig:
    """What is written besides requests.parquet and summary.json."""

    iterations: bool = False
    # transfers.parquet: one row per KV transfer between tiers (start, end, bytes, links).
    transfers: bool = False
    plot: bool = True
    # trace.json: the run's timeline for Perfetto / chrome://tracing (simkv/metrics/trace.py);
    # records iterations.parquet and transfers.parquet too, which it is drawn from.
    trace: bool = False
    # tqdm bar on an interactive terminal; elsewhere progress goes to the log only.
    progress: bool = True
    row_group_size: int = bounded(65536, ge=1, le=2**31 - 1)


@dataclass(slots=True)
class SimConfig:
    """Everything one simulation run needs; its canonical JSON is hashed into every output."""

    # numpy's SeedSequence takes a non-negative integer.
    seed: int = bounded(0, ge=0)
    # Simulate the one-pool cluster in this many processes, instance g in shard g mod shards,
    # merged into one dataset (simkv/shard.py; docs/PERFORMANCE.md says when the answer is
    # one process's exactly: router=round_robin).
    shards: int = bounded(1, ge=1)
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
    # How much KV a sequence keeps (full, h2o, sentencekv, epicache, elastic_cache, scalekv).
    kv_policy: Any = None
    # Memory borrowed across instances (DistAttention): none or distattention.
    kv_pool: Any = None
    # What routers and schedulers believe a request's output length is (running_mean, fixed,
    # or oracle: the trace's true length, which no real system has).
    predictor: Any = None
    # Speculative decoding (none, draft, eagle, ngram): docs/SCHEDULING.md.
    speculative: Any = None
    # Live migration of running requests between instances (none, llumnix).
    migration: Any = None
    # Several pools (heterogeneous GPUs, other layouts) instead of `cluster`'s one pool.
    pools: dict[str, PoolConfig] = field(default_factory=dict)
    moe: MoEConfig = field(default_factory=MoEConfig)
    disagg: DisaggConfig = field(default_factory=DisaggConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    # Pipeline micro-batches; collectives on the fabric's links (docs/PARALLELISM.md).
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    collectives: CollectivesConfig = field(default_factory=CollectivesConfig)
    slo: SLOConfig = field(default_factory=SLOConfig)
    priority: PriorityConfig = field(default_factory=PriorityConfig)
    # Instances lost: failures and spot preemption (config/faults.py, docs/FAULTS.md).
    faults: FaultsConfig = field(default_factory=FaultsConfig)
    spot: SpotConfig = field(default_factory=SpotConfig)
    # LoRA adapters on the base model's instances (config/models.py, docs/MODELS.md).
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    # Energy and power: accounting, caps and clocks (config/energy.py, docs/ENERGY.md).
    energy: EnergyConfig = field(default_factory=EnergyConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def validate(self, prefix: str = "") -> None:
        """Rules across sections: values each valid alone that no system can combine, and
        options that could not act in this combination (a sweep would show them having no
        effect). Called by ``bounds.check`` after every field passed its own range."""
        m, c, kv = self.model, self.cluster, self.kv
        # vLLM refuses both: attention heads are split across the tensor-parallel GPUs, and
        # every pipeline stage holds at least one layer.
        require(m.num_heads % c.tensor_parallel == 0,
                f"cluster.tensor_parallel: expected a divisor of model.num_heads "
                f"({m.num_heads}), as vLLM requires, got {c.tensor_parallel}")
        require(c.pipeline_parallel <= m.num_layers,
                f"cluster.pipeline_parallel: expected at most model.num_layers "
                f"({m.num_layers}), got {c.pipeline_parallel}")
        if self.scheduler is None or self.offload is None or self.tool_kv is None:
            return  # sections filled in later (runner defaults); checked again then
        validate_memory(self)
        validate_against(self)
        validate_lora(self)
        validate_served_models(self)
        validate_energy(self)
        # Pools, autoscalers, disaggregation, DistAttention, MoE, weights, prefetch (issue 18).
        from simkv.config.surfaces import check_surfaces

        check_surfaces(self)
        block = getattr(self.workload, "block_tokens", None)
        require(block is None or not prefix_cache_acts(self) or block == kv.prefix_block_tokens,
                f"workload.block_tokens ({block}) must equal kv.prefix_block_tokens "
                f"({kv.prefix_block_tokens}): the workload's prefix ids stand for blocks of that "
                f"many tokens")
        budget = getattr(self.scheduler, "max_num_batched_tokens", None)
        if (budget is not None and not getattr(self.scheduler, "chunked_prefill", True)
                and budget < m.max_model_len):
            log.warning("scheduler.max_num_batched_tokens (%d) < model.max_model_len (%d) without "
                        "chunked prefill: vLLM refuses this; simkv rejects (token_budget) every "
                        "request whose prompt + output - 1 tokens exceed the budget",
                        budget, m.max_model_len)
        check_parallel(self)
        if self.shards > 1:  # what a run in several processes cannot be (simkv/shard.py)
            from simkv.shard import shards_refusal

            why = shards_refusal(self)
            require(not why, why)

"""How many KV blocks a replica has: HBM x utilisation - weights - activations, per GPU.

Mirrors vLLM's profiling step (``gpu_memory_utilization`` of the card's memory, minus the
weights and the peak activations of a forward pass over ``max_num_batched_tokens``). A
model that leaves no room fails here, before the run, with the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from simkv.config.schema import KVConfig
from simkv.entities.hardware import HardwareProfile
from simkv.perf.roofline import CostModel

GIB = 2**30


class DoesNotFitError(ValueError):
    """The model (or its KV cache) does not fit in a replica's memory."""


@dataclass(frozen=True, slots=True)
class KVCapacity:
    num_blocks: int
    block_size: int
    bytes_per_gpu: float
    weights_per_gpu: float
    activations_per_gpu: float

    @property
    def tokens(self) -> int:
        return self.num_blocks * self.block_size


def kv_capacity(cost: CostModel, hw: HardwareProfile, kv: KVConfig,
                max_batched_tokens: int, max_seqs: int,
                seats_key: str = "scheduler.max_num_seqs") -> KVCapacity:
    """KV blocks of one instance of the cost model's layout (a data-parallel instance has
    one pool per rank; simkv counts their sum, ranks assumed balanced). ``seats_key``: the
    key that sets ``max_seqs``, which a message may advise lowering."""
    if not 0 < kv.gpu_memory_utilization <= 1:
        raise ValueError(f"kv.gpu_memory_utilization must be in (0, 1], got {kv.gpu_memory_utilization}")
    if kv.block_size < 1:
        raise ValueError(f"kv.block_size must be >= 1, got {kv.block_size}")
    budget = hw.memory_bytes * kv.gpu_memory_utilization
    weights = cost.weight_bytes_per_gpu()
    acts = cost.activation_bytes_per_gpu(max_batched_tokens, max_seqs)
    free = budget - weights - acts
    block_size = kv.block_size
    if kv.allocator.kind == "vattention":
        # vAttention allocates whole pages, each one layer's keys or values of one request:
        # that is its allocation granularity in tokens (perf/options.py).
        from simkv.perf.options import page_tokens

        block_size = page_tokens(cost, kv.allocator.page_kib)
    block_bytes = block_size * cost.kv_bytes_per_token_per_gpu()
    where = (f"{cost.model.name} on {hw.name} with tensor_parallel={cost.tp}, "
             f"pipeline_parallel={cost.pp}")
    if cost.ep > 1:
        where += f", expert_parallel={cost.ep}"
    if free < block_bytes:
        # Activations scale with the token budget and the logits with the seats: when they
        # outweigh the weights and alone fill the memory, the limit is what to lower (a budget
        # of 1e8 tokens was told to raise tensor_parallel, a static batch of 1e7 to lower a
        # token budget it does not have).
        fix = "raise cluster.tensor_parallel or choose a larger GPU"
        if acts > budget - weights and acts > weights:
            token_acts = cost.activation_bytes_per_gpu(max_batched_tokens, 0)
            fix = (f"lower scheduler.max_num_batched_tokens ({max_batched_tokens:,} tokens' "
                   f"activations: {token_acts / GIB:.1f} GiB)" if token_acts >= acts - token_acts
                   else f"lower {seats_key} ({max_seqs:,} sequences' logits: "
                        f"{(acts - token_acts) / GIB:.1f} GiB)")
        raise DoesNotFitError(
            f"{where} does not fit: per GPU {weights / GIB:.1f} GiB of weights + "
            f"{acts / GIB:.1f} GiB of activations leave {free / GIB:.2f} GiB for KV out of "
            f"{budget / GIB:.1f} GiB ({kv.gpu_memory_utilization:.0%} of {hw.memory_bytes / GIB:.1f} "
            f"GiB); {fix}"
        )
    blocks = int(free // block_bytes) * cost.dp
    if kv.num_gpu_blocks_override is not None:
        if kv.num_gpu_blocks_override < 1:
            raise ValueError("kv.num_gpu_blocks_override must be >= 1")
        blocks = kv.num_gpu_blocks_override
    return KVCapacity(blocks, block_size, free, weights, acts)


def drive_capacity(cost: CostModel, replicas: int, kv: KVConfig, hbm: KVCapacity,
                   csd_bytes_per_node: float, gpus_per_node: int) -> KVCapacity:
    """KV blocks of a replica whose KV cache lives on the node's drives (CSDs or SSDs).

    The replica gets its share of the node's drives (replicas on a node split them evenly);
    HBM must still hold the weights and activations, which ``hbm`` (the usual capacity) has
    already checked.
    """
    gpus = cost.gpus
    per_node = max(1, min(replicas, gpus_per_node // gpus))
    block_bytes = kv.block_size * cost.kv_bytes_per_token_per_gpu() * gpus
    blocks = int(csd_bytes_per_node / per_node // block_bytes)
    if kv.num_gpu_blocks_override is not None:
        blocks = kv.num_gpu_blocks_override
    return KVCapacity(blocks, kv.block_size, csd_bytes_per_node / per_node, hbm.weights_per_gpu,
                      hbm.activations_per_gpu)

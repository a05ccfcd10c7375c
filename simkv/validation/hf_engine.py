"""The engine side of a GPU measurement campaign (``hf_campaign``): transformers' model of a
simkv model spec with random bf16 weights (sharded under tensor parallelism), the CUDA
graphs recorded before measuring, and what the engine resolved.

Why a module of its own: this is the part that knows transformers' classes (imported inside
each function, so the campaign's CPU-side parts and their tests need neither torch nor
transformers); ``hf_campaign`` drives it and re-exports its names for the scripts that import
them from there.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from simkv.entities.model import ModelSpec


def model_spec(shape: str) -> ModelSpec:
    """simkv's model spec of a shape (the one the engine's random model is built from)."""
    from importlib import resources

    if shape.endswith(".yaml"):  # a spec file of one's own (tests: a tiny model on the CPU)
        return ModelSpec(**yaml.safe_load(Path(shape).read_text()))
    text = resources.files("simkv.conf").joinpath(f"model/{shape}.yaml").read_text()
    return ModelSpec(**yaml.safe_load(text))


# --- CUDA-graph pre-capture --------------------------------------------------------------------

def pow2_at_least(x: int, lo: int) -> int:
    return max(lo, 1 << max(0, math.ceil(math.log2(max(x, 1)))))


@dataclass(frozen=True, slots=True)
class CapturePlan:
    """Fake requests whose step has one graph key: ``num`` sequences of ``q_each`` new and
    ``kv_each`` cached tokens."""

    num: int
    q_each: int
    kv_each: int

    def key(self, q_pad: int, kv_pad: int, max_tokens: int, pages: int) -> tuple[int, int, int]:
        """transformers 5.17's graph key of this step (``_get_graph_key``, varlen path)."""
        q = min(-(-self.num * self.q_each // q_pad) * q_pad, max_tokens)
        kv_read = self.num * self.kv_each
        kv = min(max(1, -(-kv_read // kv_pad)) * kv_pad, pages)
        return q, kv, min(pow2_at_least(self.q_each + self.kv_each, 1024), pages)


def capture_plans(max_tokens: int, pages: int, q_pad: int = 64, kv_pad: int = 16384,
                  seqlens: tuple[int, ...] = (1024, 2048, 4096, 8192, 16384), kv_intervals: int = 4,
                  max_seqs: int = 64, prefill_seqlen: int = 8192) -> list[CapturePlan]:
    """Graph keys worth recording before measuring, most likely first, one plan per key.

    Decode-like steps (``max_seqs`` or fewer sequences of one new token) at each longest
    sequence and KV interval; then single prompts (light loads: one prefill chunk) of every
    padded query size at each longest sequence up to ``prefill_seqlen``.
    """
    plans: list[CapturePlan] = []
    seen: set[tuple[int, int, int]] = set()

    def add(p: CapturePlan) -> None:
        k = p.key(q_pad, kv_pad, max_tokens, pages)
        if k not in seen and p.num * (p.q_each + p.kv_each) <= pages:
            seen.add(k)
            plans.append(p)

    for s in seqlens:
        per_seq = s - 1  # cached tokens of the longest sequence, its new token on top
        for j in range(1, kv_intervals + 1):
            n = max(1, -(-((j - 1) * kv_pad + 1) // per_seq))
            if n <= max_seqs and n * per_seq <= j * kv_pad:
                add(CapturePlan(n, 1, per_seq))
    for s in (x for x in seqlens if x <= prefill_seqlen):
        for q in range(q_pad, min(s, max_tokens) + 1, q_pad):
            add(CapturePlan(1, q, s - q))
    return plans


def precapture(manager: Any, model: Any, plans: list[CapturePlan], budget_s: float) -> list[dict]:
    """Record the CUDA graphs of ``plans`` through the engine's own warm-up path, within
    ``budget_s`` seconds; one row per plan (its key, seconds, or why it was skipped)."""
    import torch
    from transformers.generation.continuous_batching.requests import RequestStatus
    from transformers.generation.continuous_batching.utils import create_warmup_future_states

    if manager.batch_processor is None:
        manager.batch_processor = manager._create_batch_processor()
    bp = manager.batch_processor
    runner, io, cache = bp.model_runner, bp.inputs_and_outputs, bp.cache
    rows: list[dict] = []
    t_start = time.perf_counter()
    for plan in plans:
        row: dict[str, Any] = asdict(plan)
        if time.perf_counter() - t_start > budget_s:
            row["status"] = "out_of_time"
            rows.append(row)
            continue
        states = create_warmup_future_states(plan.num, RequestStatus.PREFILLING, plan.q_each,
                                             plan.kv_each, cache)
        try:
            if len(states) < plan.num:
                row["status"] = "no_blocks"
                continue
            q, kv = runner.maybe_pad_inputs(plan.num * plan.q_each, plan.num * plan.kv_each, False)
            t0 = time.perf_counter()
            with torch.no_grad():
                io.prepare_batch_tensors(states, bp.logit_processor, False, q, kv, use_padding=True)
                batch = io.get_model_kwargs(use_padding=True)
                row["key"] = "/".join(str(k) for k in io._get_graph_key())
                if io.get_graph() is not None:
                    row["status"] = "had"
                else:
                    runner.compute_batch(model, batch)
                    if torch.cuda.is_available():
                        torch.cuda.synchronize()
                    row["status"] = "captured"
            row["seconds"] = time.perf_counter() - t0
        except Exception as exc:  # recorded, the campaign goes on
            row["status"] = f"error: {type(exc).__name__}: {exc}"[:300]
        finally:
            for fs in states:
                cache.free_blocks(fs.state.request_id)
            rows.append(row)
    bp.reset()
    return rows


# --- the model -------------------------------------------------------------------------------

def hf_config(spec: ModelSpec) -> Any:
    """transformers' config of the same architecture (Llama, Qwen2 with QKV bias, Mixtral)."""
    common = {"hidden_size": spec.hidden_size, "intermediate_size": spec.ffn_size,
              "num_hidden_layers": spec.num_layers, "num_attention_heads": spec.num_heads,
              "num_key_value_heads": spec.num_kv_heads, "vocab_size": spec.vocab_size,
              "max_position_embeddings": spec.max_model_len,
              "tie_word_embeddings": spec.tie_embeddings}
    if spec.is_moe:
        from transformers import MixtralConfig

        return MixtralConfig(**common, num_local_experts=spec.num_experts,
                             num_experts_per_tok=spec.experts_per_token, rope_theta=1e6)
    if spec.qkv_bias:
        from transformers import Qwen2Config

        return Qwen2Config(**common, rope_theta=1e6, use_sliding_window=False)
    from transformers import LlamaConfig

    return LlamaConfig(**common, head_dim=spec.head_dim, rope_theta=500000.0)


def model_class(cfg: Any) -> Any:
    import transformers

    return {"mixtral": transformers.MixtralForCausalLM, "qwen2": transformers.Qwen2ForCausalLM,
            "llama": transformers.LlamaForCausalLM}[cfg.model_type]


def build_model(spec: ModelSpec, attn: str, device: str = "cuda", tp: int = 1) -> Any:
    """Random bf16 weights of ``spec`` (timing does not depend on weight values)."""
    import torch

    cfg = hf_config(spec)
    cfg._attn_implementation = attn
    cls = model_class(cfg)
    torch.set_default_dtype(torch.bfloat16)
    if tp <= 1:
        with torch.device(device):
            model = cls(cfg)
        return model.eval()
    return build_tp_model(cls, cfg, tp, device).eval()


def build_tp_model(cls: Any, cfg: Any, tp: int, device: str) -> Any:
    """Shard by the model's own TP plan, then materialise only the local shards."""
    import torch
    from torch.distributed.tensor import DTensor
    from transformers.distributed.configuration_utils import DistributedConfig

    dc, _map, mesh = cls.prepare_distribute_model(DistributedConfig(tp_size=tp))
    with torch.device("meta"):
        model = cls(cfg)
    model = cls.maybe_distribute_model(model, dc, mesh)
    dev = torch.device(device, int(os.environ.get("LOCAL_RANK", 0))) if device == "cuda" \
        else torch.device(device)
    gen = torch.Generator(device=dev).manual_seed(0)
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is None:
                continue
            if isinstance(p, DTensor):
                local = torch.empty(p.to_local().shape, dtype=torch.bfloat16, device=dev)
                local.normal_(0.0, 0.02, generator=gen)
                new = DTensor.from_local(local, p.device_mesh, p.placements, run_check=False,
                                         shape=p.shape, stride=p.stride())
            else:
                new = torch.empty(p.shape, dtype=torch.bfloat16, device=dev).normal_(
                    0.0, 0.02, generator=gen)
            module._parameters[name] = torch.nn.Parameter(new, requires_grad=False)
        for name, b in list(module._buffers.items()):
            if b is not None and b.is_meta:
                module._buffers[name] = torch.zeros(b.shape, dtype=b.dtype, device=dev)
    # Rotary frequencies are buffers computed at construction: rebuild them on the device.
    for module in model.modules():
        if type(module).__name__.endswith("RotaryEmbedding"):
            fresh = type(module)(config=cfg, device=dev)
            for name, b in fresh._buffers.items():
                module._buffers[name] = b
    return model


# --- the engine's state and the process -----------------------------------------------------

def engine_state(manager: Any, model: Any) -> dict[str, Any]:
    """The values the engine resolved (scheduler, cache, experts), as a model of it needs them."""
    bp = getattr(manager, "batch_processor", None)
    sched, cache = getattr(bp, "scheduler", None), getattr(bp, "cache", None)
    cb = getattr(manager, "continuous_batching_config", None)
    out = {"scheduler": type(sched).__name__ if sched is not None else None,
           "safety_margin": getattr(sched, "safety_margin", None),
           "max_requests_per_batch": getattr(sched, "max_requests_per_batch", None),
           "max_blocks_per_request": getattr(cache, "max_blocks_per_request", None),
           "num_pages": getattr(cache, "num_pages", None),
           "num_blocks": getattr(cache, "num_blocks", None),
           "block_size": getattr(cache, "block_size", None),
           "max_batch_tokens": getattr(cache, "max_batch_tokens", None),
           "allow_block_sharing": getattr(cache, "allow_block_sharing", None),
           "cpu_offload_space": getattr(cb, "cpu_offload_space", None),
           "num_cpu_blocks": getattr(getattr(bp, "offloading_manager", None), "_num_cpu_blocks", None),
           "use_cuda_graph": getattr(cb, "use_cuda_graph", None),
           "experts_implementation": getattr(getattr(model, "config", None), "_experts_implementation", None)}
    return {k: (v if v is None or isinstance(v, int | float | str | bool) else str(v))
            for k, v in out.items()}


def gpu_info() -> dict[str, Any]:
    """GPU name, driver and memory as nvidia-smi reports them (empty without one)."""
    import subprocess

    try:
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,power.limit",
                            "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return {}
    first = q.stdout.strip().split("\n")[0] if q.returncode == 0 else ""
    parts = [x.strip() for x in first.split(",")]
    return dict(zip(("gpu_name", "driver", "memory_total", "power_limit"), parts, strict=False))


def free_manager(manager: Any, hard: bool) -> None:
    import gc

    import torch

    try:
        manager.stop(block=True, timeout=60, hard_stop=hard)
    except Exception as exc:  # recorded by the caller's log; the next configuration goes on
        print(f"manager stop: {type(exc).__name__}: {exc}", flush=True)
    manager.batch_processor = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

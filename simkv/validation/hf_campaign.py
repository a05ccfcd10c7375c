"""A measurement campaign against transformers' continuous batching: one engine process per
model shape, every stream of a plan replayed twice, then (same process, same model) the same
stream under other engine configurations.

    python -m simkv.validation.hf_campaign --shape qwen2_5_7b --out DIR \
        --plan "conv:0.3,0.8,2;burst:1" --reps 2 --data DIR_WITH_AZURE_CSVS [--tp 2]
    python -m simkv.validation.hf_campaign --shape llama3_8b --out CAMPAIGN/llama3_8b \
        --plan "burst:2*2,3,1.5" --requests 400 --probe-requests 160 \
        --capacity-method burst-middle --variant-plan "burst:2" \
        --variants "kv160:num_blocks=160;tb512:max_batch_tokens=512"

Layout (one folder per engine configuration; a variant ``NAME`` writes ``<out>_NAME``, and a
pair is the same tag in two folders): ``engine.json`` (versions, GPU, the model spec, the
configuration asked and the one the engine resolved, capacities, every stream with its clock),
``requests_<tag>.csv``, ``iterations_<tag>.csv``, ``evictions_<tag>.csv``, ``precapture.csv``,
the probe's and warm-up's requests and iterations. Tags: ``burst-sustained-2x-400-a`` =
workload, regime (``sustained``: at least 400 requests above capacity; ``transient``: fewer;
``light``: at or under capacity), load, requests, replay; without ``--requests``, the
2026-11-30 campaign's ``conv-0.3-a``.

Why this shape of experiment (docs/VALIDATION.md, issue 14): a fit must be scored on runs,
loads and model shapes it did not see, beside the engine's own run-to-run spread. So each
engine process (one model shape, random bf16 weights built from simkv's own model spec,
``simkv/conf/model/<shape>.yaml``) replays several streams, each stream twice (reps ``a``
and ``b``: the same arrival times and lengths, other token ids), at loads that are multiples
of the engine's capacity on that workload (a closed burst of 48 requests measures it).

Workloads, from real per-request data where it exists:

* ``conv``: prompt and output lengths of rows drawn from the Azure LLM inference trace 2023,
  conversation service (``AzureLLMInferenceTrace_conv.csv``), Poisson arrivals;
* ``code``: the same from its code service (long prompts, short outputs), Poisson arrivals;
* ``burst``: BurstGPT-shaped: lengths from BurstGPT_1's published percentiles (the defaults of
  ``simkv.workload.burstgpt``), Gamma(0.5) inter-arrival gaps (bursty, CV about 1.4).

Prompts are capped at ``--max-prompt`` and outputs at ``--max-output`` tokens to bound a
device call; the committed requests CSVs carry the lengths that ran.

CUDA graphs: transformers records one graph per (query tokens padded to 64, KV read padded to
16,384, longest sequence padded to a power of two >= 1,024) on first sight, 0.1-0.3 s each
(``input_outputs._get_graph_key`` in 5.17). A long-running server has paid those; a replay
that meets them measures start-up, not serving. So before measuring, ``--precapture`` records
the graphs of a grid of such keys with the engine's own warm-up machinery (fake requests of
chosen lengths through ``ModelRunner.compute_batch``), and the capacity probes record the
heavy-load ones; whatever the measured streams still capture is counted per step
(``captured``) and reported, not hidden.

``--tp N`` runs under ``torchrun --nproc-per-node N``: the model is built on the meta device,
sharded by transformers' own tensor-parallel plan (``maybe_distribute_model``) and only the
local shards are materialised (random bf16); rank 0 drives the streams, the other ranks
follow the engine's broadcasts.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from simkv.entities.model import ModelSpec

# Azure LLM inference trace 2023 files (../shared/data/azure_llm_2023/README.md).
AZURE_FILES = {"conv": "AzureLLMInferenceTrace_conv.csv", "code": "AzureLLMInferenceTrace_code.csv"}
WORKLOADS = ("conv", "code", "burst")
PROBE_REQUESTS = 48
SUSTAINED_REQUESTS = 400
MIDDLE_CAP = 1.6  # a closed burst's middle-half rate, at most this times its whole rate
BURST_ARRIVAL_SHAPE = 0.5  # BurstGPT's generator default (simkv.workload.burstgpt)


def model_spec(shape: str) -> ModelSpec:
    """simkv's model spec of a shape (the one the engine's random model is built from)."""
    from importlib import resources

    if shape.endswith(".yaml"):  # a spec file of one's own (tests: a tiny model on the CPU)
        return ModelSpec(**yaml.safe_load(Path(shape).read_text()))
    text = resources.files("simkv.conf").joinpath(f"model/{shape}.yaml").read_text()
    return ModelSpec(**yaml.safe_load(text))


# --- request streams ---------------------------------------------------------------------------

def read_lengths(kind: str, data: Path) -> tuple[np.ndarray, np.ndarray]:
    """(prompt, output) tokens of every row of an Azure 2023 trace file."""
    path = data / AZURE_FILES[kind]
    with path.open() as f:
        rows = list(csv.DictReader(f))
    return (np.array([int(r["ContextTokens"]) for r in rows]),
            np.array([int(r["GeneratedTokens"]) for r in rows]))


def draw_lengths(kind: str, rng: np.random.Generator, n: int, data: Path | None,
                 max_prompt: int, max_output: int) -> tuple[np.ndarray, np.ndarray]:
    if kind == "burst":
        from simkv.workload.burstgpt import BurstGPTWorkloadConfig
        from simkv.workload.distributions import from_quantiles, tokens

        cfg = BurstGPTWorkloadConfig()
        p = tokens(from_quantiles(rng, cfg.prompt_quantiles, n))
        o = tokens(from_quantiles(rng, cfg.output_quantiles, n))
    else:
        if data is None:
            raise ValueError(f"workload {kind!r} draws rows of the Azure trace: give --data")
        prompts, outputs = read_lengths(kind, data)
        idx = rng.integers(0, len(prompts), n)
        p, o = prompts[idx], outputs[idx]
    # Two output tokens at least: TPOT needs a second token.
    return np.clip(p, 1, max_prompt).astype(int), np.clip(o, 2, max_output).astype(int)


def stream(kind: str, n: int, rate: float, seed: int, data: Path | None, max_prompt: int = 8192,
           max_output: int = 256) -> list[tuple[float, int, int]]:
    """``n`` requests (arrival s, prompt, output) at mean ``rate`` req/s, seeded."""
    if kind not in WORKLOADS:
        raise ValueError(f"unknown workload {kind!r}; choose from {', '.join(WORKLOADS)}")
    rng = np.random.default_rng(seed)
    if kind == "burst":
        gaps = rng.gamma(BURST_ARRIVAL_SHAPE, 1.0 / (rate * BURST_ARRIVAL_SHAPE), n)
    else:
        gaps = rng.exponential(1.0 / rate, n)
    t = np.cumsum(gaps)
    p, o = draw_lengths(kind, rng, n, data, max_prompt, max_output)
    return list(zip(t.tolist(), p.tolist(), o.tolist(), strict=True))


def stream_size(rate: float, span_s: float, lo: int, hi: int) -> int:
    """Requests of a stream: about ``span_s`` seconds of arrivals, within [lo, hi]."""
    return int(min(hi, max(lo, round(rate * span_s))))


def parse_plan(plan: str) -> list[tuple[str, float]]:
    """``"conv:0.3,0.8,2;code:1.5"`` -> [("conv", 0.3), ("conv", 2.0), ...]; a load may carry its
    own replay count, ``2*2`` (see ``plan_reps``)."""
    return [(k, load) for k, load, _ in parse_plan_reps(plan)]


def parse_plan_reps(plan: str) -> list[tuple[str, float, int | None]]:
    """``"burst:2*2,3,1.5"`` -> [("burst", 2.0, 2), ("burst", 3.0, None), ("burst", 1.5, None)]:
    each load with its replay count (None: the campaign's ``--reps``)."""
    out: list[tuple[str, float, int | None]] = []
    for part in filter(None, (p.strip() for p in plan.split(";"))):
        kind, _, loads = part.partition(":")
        if kind not in WORKLOADS or not loads:
            raise ValueError(f"plan part {part!r}: expected WORKLOAD:LOAD[*REPS][,LOAD...] with WORKLOAD "
                             f"one of {', '.join(WORKLOADS)}")
        for x in loads.split(","):
            load, _, reps = x.partition("*")
            out.append((kind, float(load), int(reps) if reps else None))
    return out


def regime(load: float, n: int) -> str:
    """How a reader should take a stream: ``sustained`` overload (at least 400 requests above
    capacity: the queue grows for minutes), ``transient`` overload (fewer requests: a burst the
    engine absorbs), or ``light`` (at or under capacity)."""
    if load <= 1.0:
        return "light"
    return "sustained" if n >= SUSTAINED_REQUESTS else "transient"


def tag(kind: str, load: float, rep: str, n: int | None = None) -> str:
    """File tag of one replay: ``burst-sustained-2x-400-a`` (requests_<tag>.csv,
    iterations_<tag>.csv); without ``n``, the 2026-11-30 campaign's ``conv-0.3-a``."""
    if n is None:
        return f"{kind}-{load:g}-{rep}"
    return f"{kind}-{regime(load, n)}-{load:g}x-{n}-{rep}"


def stream_seed(kind: str, load: float) -> int:
    return 1000 * WORKLOADS.index(kind) + round(load * 100)


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


# --- the campaign ----------------------------------------------------------------------------

def write_json(path: Path, doc: dict) -> None:
    path.write_text(json.dumps(doc, indent=1, default=str) + "\n")


def sustained_capacity(rows: list[dict[str, Any]]) -> tuple[float, float]:
    """(sustained, whole-burst) completion rate of a closed burst, requests per second.

    A closed burst starts with an empty engine and ends with a draining one; both ends run
    below capacity. The sustained rate counts only the middle half of the completions (from
    the 25th to the 75th percentile of completion times), where the queue is still long."""
    done = sorted(float(r["completion_s"]) for r in rows
                  if r.get("status") != "missing" and math.isfinite(float(r.get("completion_s", "nan"))))
    if not done:
        return 0.0, 0.0
    whole = len(done) / max(done[-1], 1e-9)
    lo, hi = len(done) // 4, (3 * len(done)) // 4
    if len(done) < 8 or done[hi] <= done[lo]:
        return whole, whole
    # Where step time hardly grows with the batch (a tiny model), the middle half can finish
    # in a blink; on the GPU it is 1.2-1.5 times the whole rate. Bounded, so a load stays a load.
    return min((hi - lo) / (done[hi] - done[lo]), MIDDLE_CAP * whole), whole


def _value(text: str) -> Any:
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


VARIANT_OPTIONS = ("requests", "reps", "precapture")  # run options; every other key is an engine one


def parse_variants(text: str) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """``"tb512:max_batch_tokens=512;kv160:num_blocks=160,requests=200"`` -> [(name, engine
    config changes, run options)]: the engine's ContinuousBatchingConfig keys, and
    ``requests``/``reps``/``precapture`` for the run."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, kvs = part.partition(":")
        if not name or not kvs:
            raise ValueError(f"variant {part!r}: expected NAME:KEY=VALUE[,KEY=VALUE...]")
        cb: dict[str, Any] = {}
        opts: dict[str, Any] = {}
        for kv in kvs.split(","):
            k, _, v = kv.partition("=")
            if not v:
                raise ValueError(f"variant {part!r}: {kv!r} is not KEY=VALUE")
            (opts if k in VARIANT_OPTIONS else cb)[k.strip()] = _value(v.strip())
        out.append((name.strip(), cb, opts))
    return out


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


def _free_manager(manager: Any, hard: bool) -> None:
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", required=True, help="a simkv model spec (simkv/conf/model/)")
    ap.add_argument("--out", required=True, help="this engine configuration's folder")
    ap.add_argument("--plan", required=True, help='e.g. "conv:0.3,0.8,2;code:1.5" ("" for none)')
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--data", default=None, help="folder with the Azure 2023 trace CSVs")
    ap.add_argument("--span", type=float, default=20.0, help="seconds of arrivals per stream")
    ap.add_argument("--min-requests", type=int, default=24)
    ap.add_argument("--max-requests", type=int, default=48)
    ap.add_argument("--requests", type=int, default=0,
                    help="requests per stream (0: --span seconds within the min and max)")
    ap.add_argument("--probe-requests", type=int, default=PROBE_REQUESTS)
    ap.add_argument("--capacity-method", choices=("burst", "burst-middle"), default="burst",
                    help="load unit: a closed burst's whole rate, or its middle half (sustained)")
    ap.add_argument("--capacity-file", default=None,
                    help="an engine.json whose capacity_req_per_s to reuse instead of probing")
    ap.add_argument("--max-prompt", type=int, default=8192)
    ap.add_argument("--max-output", type=int, default=256)
    ap.add_argument("--num-blocks", type=int, default=1024)
    ap.add_argument("--max-batch-tokens", type=int, default=2048)
    ap.add_argument("--num-layers", type=int, default=0,
                    help="build the shape with this many layers (each layer as the spec's)")
    ap.add_argument("--attn", default="paged|sdpa")
    ap.add_argument("--no-cuda-graph", action="store_true")
    ap.add_argument("--precapture", type=float, default=0.0, metavar="SECONDS",
                    help="record the CUDA graphs of a key grid first, for at most this long")
    ap.add_argument("--variants", default="",
                    help='after the plan, other engine configurations over --variant-plan, e.g. '
                         '"tb512:max_batch_tokens=512;kv160:num_blocks=160,requests=200"; each '
                         "writes the folder <out>_<name>")
    ap.add_argument("--variant-plan", default="", help='streams the variants replay, e.g. "burst:2"')
    ap.add_argument("--variant-precapture", type=float, default=10.0)
    ap.add_argument("--skip-done", action="store_true",
                    help="skip a configuration whose folder already holds a measured stream")
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--deadline", type=float, default=1e9,
                    help="seconds after start when no new stream begins (device call limit)")
    args = ap.parse_args()
    t_begin = time.perf_counter()
    os.environ.setdefault("NCCL_GRAPH_MIXING_SUPPORT", "0")  # before any process group (TP)
    import torch
    import transformers

    from simkv.validation.hf_replay import (
        StepProfiler,
        engine_limits,
        graph_keys,
        make_manager,
        replay,
        write_csv,
    )

    rank = 0
    if args.tp > 1:
        import torch.distributed as dist

        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        rank = dist.get_rank()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = Path(args.out)
    data = Path(args.data) if args.data else None
    spec = model_spec(args.shape)
    if args.num_layers:
        spec = dataclasses.replace(spec, num_layers=args.num_layers)
    base_info: dict[str, Any] = {
        "shape": args.shape, "model_spec": asdict(spec), "torch": torch.__version__,
        "transformers": transformers.__version__, "attention": args.attn, "tp": args.tp,
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", **gpu_info(),
        "argv": vars(args), "command": " ".join(["python -m simkv.validation.hf_campaign", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "max_prompt": args.max_prompt, "max_output": args.max_output,
    }
    if args.num_layers:
        base_info["layers_note"] = (f"built with {args.num_layers} layers (each as the spec's); "
                                    "model_spec.num_layers says so")
    t = time.perf_counter()
    model = build_model(spec, args.attn, device, args.tp)
    base_info["build_s"] = time.perf_counter() - t
    base_cb = {"max_batch_tokens": args.max_batch_tokens, "use_cuda_graph": not args.no_cuda_graph,
               "block_size": 256, "num_blocks": args.num_blocks, "allow_block_sharing": False}
    configs: list[tuple[Path, str, dict[str, Any], list[tuple[str, float, int | None]], dict[str, Any]]] = [
        (out, "", base_cb, parse_plan_reps(args.plan), {"reps": args.reps, "precapture": args.precapture})]
    for name, cb_mod, opts in parse_variants(args.variants):
        configs.append((out.parent / f"{out.name}_{name}", name, {**base_cb, **cb_mod},
                        parse_plan_reps(args.variant_plan),
                        {"reps": 1, "precapture": args.variant_precapture, **opts}))
    capacity: dict[str, float] = {}
    if args.capacity_file and Path(args.capacity_file).exists():
        capacity.update(json.loads(Path(args.capacity_file).read_text()).get("capacity_req_per_s", {}))
    profiler = StepProfiler() if rank == 0 else None
    vocab = spec.vocab_size
    for folder, variant, cb, plan, opts in configs:
        if not plan:  # nothing to replay (e.g. variants only): leave the folder as it is
            continue
        if rank == 0 and time.perf_counter() - t_begin + 60 > args.deadline:
            print(f"{folder.name}: skipped (deadline)", flush=True)
            continue
        earlier: list[dict[str, Any]] = []  # streams an earlier process measured in this folder
        if args.skip_done and (folder / "engine.json").exists():
            earlier = [x for x in json.loads((folder / "engine.json").read_text()).get("streams", [])
                       if "done" in x]
            done_tags = {x["tag"] for x in earlier}
            todo = [(k, ld, rp) for k, ld, rp in plan
                    if any(tag(k, ld, rep, opts.get("requests") or args.requests or None) not in done_tags
                           for rep in "abcdefgh"[:int(rp or opts.get("reps", 1))])]
            if not todo:
                print(f"{folder.name}: skipped (already measured)", flush=True)
                continue
        folder.mkdir(parents=True, exist_ok=True)
        info = {**base_info, "variant": variant, "cb_config": cb, "streams": list(earlier),
                "capacity_method": args.capacity_method}
        if earlier:
            old = json.loads((folder / "engine.json").read_text())
            info["earlier_process"] = {k: old.get(k) for k in ("date", "command", "precapture",
                                                               "capacity_req_per_s")}
        manager = make_manager(model, cb)
        if rank == 0:
            write_json(folder / "engine.json", info)
        if opts.get("precapture", 0) > 0 and args.tp == 1:
            plans = capture_plans(cb["max_batch_tokens"], cb["num_blocks"] * 256)
            t = time.perf_counter()
            rows = precapture(manager, model, plans, float(opts["precapture"]))
            info["precapture"] = {"plans": len(plans), "seconds": time.perf_counter() - t,
                                  "captured": sum(r.get("status") == "captured" for r in rows)}
            write_csv(folder / "precapture.csv", rows)
        manager.start()
        time.sleep(1.0)
        if rank != 0:  # TP followers: the engine's loop follows rank 0's broadcasts until it stops
            manager._generation_thread.join()
            os._exit(0)
        info.update(engine_limits(manager))
        info["engine_resolved"] = engine_state(manager, model)
        resolved = manager.continuous_batching_config
        info["cb_resolved"] = {k: getattr(resolved, k, None) for k in (
            "q_padding_interval_size", "kv_padding_interval_size", "max_requests_per_batch",
            "max_blocks_per_request", "safety_margin", "use_async_batching", "scheduler_type",
            "cpu_offload_space")}
        steps: list[dict[str, Any]] = []
        warm = replay(manager, stream("conv" if data else "burst", 8, 50.0, 99, data, args.max_prompt,
                                      args.max_output),
                      timeout=180, ids_seed=99, vocab=vocab, steps=steps, profiler=profiler)
        write_csv(folder / "requests_warmup.csv", warm)
        write_csv(folder / "iterations_warmup.csv", steps)
        for kind in dict.fromkeys(k for k, _, _ in plan):  # one closed burst per workload
            if kind in capacity:
                continue
            reqs = [(0.0, p, o) for _, p, o in stream(kind, args.probe_requests, 1.0,
                                                     7 + WORKLOADS.index(kind), data,
                                                     args.max_prompt, args.max_output)]
            steps = []
            meta: dict[str, Any] = {"graphs_before": graph_keys(manager)}
            got = replay(manager, reqs, timeout=300, ids_seed=10**6 + WORKLOADS.index(kind),
                         vocab=vocab, steps=steps, profiler=profiler, meta=meta)
            sustained, whole = sustained_capacity(got)
            capacity[kind] = sustained if args.capacity_method == "burst-middle" else whole
            write_csv(folder / f"requests_probe-{kind}.csv", got)
            write_csv(folder / f"iterations_probe-{kind}.csv", steps)
            info["streams"].append({"tag": f"probe-{kind}", "workload": kind, "requests": len(reqs),
                                    "closed_burst": True, "sustained_req_per_s": sustained,
                                    "whole_req_per_s": whole, **meta,
                                    "captured": sum(s["captured"] for s in steps)})
            info["capacity_req_per_s"] = capacity
            write_json(folder / "engine.json", info)
            print(f"{folder.name} probe {kind}: {sustained:.2f} req/s sustained, {whole:.2f} whole",
                  flush=True)
        info["capacity_req_per_s"] = dict(capacity)
        stopped_hard = False
        # Each stream's replicates back to back, so a deadline cuts whole streams, not pairs.
        for kind, load, reps in plan:
            for r, rep in enumerate("abcdefgh"[:int(reps or opts.get("reps", 1))]):
                rate = load * capacity[kind]
                n = int(opts["requests"]) if opts.get("requests") else (
                    args.requests or stream_size(rate, args.span, args.min_requests, args.max_requests))
                reqs = stream(kind, n, rate, stream_seed(kind, load), data, args.max_prompt,
                              args.max_output)
                name = tag(kind, load, rep, n if (args.requests or opts.get("requests")) else None)
                if any(x.get("tag") == name for x in earlier):
                    continue  # measured by an earlier process (--skip-done)
                left = args.deadline - (time.perf_counter() - t_begin)
                expected = max(reqs[-1][0], n / max(capacity[kind], 1e-9)) * 1.2 + 10
                if stopped_hard or not manager.is_running():
                    info["streams"].append({"tag": name, "skipped": "engine stopped"})
                    continue
                if expected > left:
                    info["streams"].append({"tag": name, "skipped": "deadline",
                                            "expected_s": expected, "left_s": left})
                    continue
                steps, evictions = [], []
                meta = {"graphs_before": graph_keys(manager)}
                got = replay(manager, reqs, timeout=max(20.0, left - reqs[-1][0] - 5), steps=steps,
                             profiler=profiler, meta=meta, evictions=evictions,
                             ids_seed=10**5 * (r + 1) + stream_seed(kind, load), vocab=vocab)
                write_csv(folder / f"requests_{name}.csv", got)
                write_csv(folder / f"iterations_{name}.csv", steps)
                write_csv(folder / f"evictions_{name}.csv", evictions)
                done = sum(x["status"] != "missing" for x in got)
                stopped_hard = bool(meta.get("timed_out"))
                info["streams"].append({"tag": name, "process_date": base_info["date"],
                                        "workload": kind, "load": load, "rep": rep,
                                        "regime": regime(load, n), "rate": rate, "requests": n,
                                        "done": done, "evictions": len(evictions),
                                        "captured": sum(s["captured"] for s in steps), **meta})
                write_json(folder / "engine.json", info)
                print(f"{folder.name} {name}: {rate:.2f} req/s, {done}/{n} done, "
                      f"{sum(s['captured'] for s in steps)} captures, {len(evictions)} evictions, "
                      f"{meta.get('end_s', 0):.1f} s", flush=True)
        info["wall_s"] = time.perf_counter() - t_begin
        if device == "cuda":
            info["memory_allocated_end"] = torch.cuda.memory_allocated()
        write_json(folder / "engine.json", info)
        if args.tp > 1:
            manager.stop(block=True, timeout=60)
            break
        if (folder, variant) != (configs[-1][0], configs[-1][1]):  # the last one exits below
            _free_manager(manager, hard=stopped_hard)
    os._exit(0)  # the manager's thread would keep the process alive


if __name__ == "__main__":
    main()

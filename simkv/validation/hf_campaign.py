"""A measurement campaign against transformers' continuous batching: one engine process per
model shape, every stream of a plan replayed twice.

    python -m simkv.validation.hf_campaign --shape qwen2_5_7b --out DIR \
        --plan "conv:0.3,0.8,2;burst:1" --reps 2 --data DIR_WITH_AZURE_CSVS [--tp 2]

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
import json
import math
import os
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
    """``"conv:0.3,0.8,2;code:1.5"`` -> [("conv", 0.3), ("conv", 0.8), ("conv", 2.0), ("code", 1.5)]."""
    out = []
    for part in filter(None, (p.strip() for p in plan.split(";"))):
        kind, _, loads = part.partition(":")
        if kind not in WORKLOADS or not loads:
            raise ValueError(f"plan part {part!r}: expected WORKLOAD:LOAD[,LOAD...] with WORKLOAD "
                             f"one of {', '.join(WORKLOADS)}")
        out += [(kind, float(x)) for x in loads.split(",")]
    return out


def tag(kind: str, load: float, rep: str) -> str:
    """File tag of one replay: ``conv-0.3-a`` (requests_<tag>.csv, iterations_<tag>.csv)."""
    return f"{kind}-{load:g}-{rep}"


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", required=True, help="a simkv model spec (simkv/conf/model/)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--plan", required=True, help='e.g. "conv:0.3,0.8,2;code:1.5"')
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--data", default=None, help="folder with the Azure 2023 trace CSVs")
    ap.add_argument("--span", type=float, default=20.0, help="seconds of arrivals per stream")
    ap.add_argument("--min-requests", type=int, default=24)
    ap.add_argument("--max-requests", type=int, default=48)
    ap.add_argument("--probe-requests", type=int, default=PROBE_REQUESTS)
    ap.add_argument("--max-prompt", type=int, default=8192)
    ap.add_argument("--max-output", type=int, default=256)
    ap.add_argument("--num-blocks", type=int, default=1024)
    ap.add_argument("--max-batch-tokens", type=int, default=2048)
    ap.add_argument("--attn", default="paged|sdpa")
    ap.add_argument("--no-cuda-graph", action="store_true")
    ap.add_argument("--precapture", type=float, default=0.0, metavar="SECONDS",
                    help="record the CUDA graphs of a key grid first, for at most this long")
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--deadline", type=float, default=1e9,
                    help="seconds after start when no new stream begins (device call limit)")
    args = ap.parse_args()
    t_begin = time.perf_counter()
    os.environ.setdefault("NCCL_GRAPH_MIXING_SUPPORT", "0")  # before any process group (TP)
    import torch
    import transformers

    from simkv.validation.hf_replay import StepProfiler, engine_limits, make_manager, replay, write_csv

    rank = 0
    if args.tp > 1:
        import torch.distributed as dist

        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        rank = dist.get_rank()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data) if args.data else None
    spec = model_spec(args.shape)
    info: dict[str, Any] = {
        "shape": args.shape, "model_spec": asdict(spec), "torch": torch.__version__,
        "transformers": transformers.__version__, "attention": args.attn, "tp": args.tp,
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "argv": vars(args), "date": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }
    t = time.perf_counter()
    model = build_model(spec, args.attn, device, args.tp)
    info["build_s"] = time.perf_counter() - t
    cb = {"max_batch_tokens": args.max_batch_tokens, "use_cuda_graph": not args.no_cuda_graph,
          "block_size": 256, "num_blocks": args.num_blocks, "allow_block_sharing": False}
    manager = make_manager(model, cb)
    info["cb_config"] = cb
    if rank == 0:
        write_json(out / "engine.json", info)
    rows: list[dict] = []
    if args.precapture > 0 and args.tp == 1:
        plans = capture_plans(args.max_batch_tokens, args.num_blocks * 256)
        t = time.perf_counter()
        rows = precapture(manager, model, plans, args.precapture)
        info["precapture"] = {"plans": len(plans), "seconds": time.perf_counter() - t,
                              "captured": sum(r.get("status") == "captured" for r in rows)}
        write_csv(out / "precapture.csv", rows)
    profiler = StepProfiler() if rank == 0 else None
    manager.start()
    time.sleep(1.0)
    if rank != 0:  # TP followers: the engine's loop follows rank 0's broadcasts until it stops
        manager._generation_thread.join()
        os._exit(0)
    info.update(engine_limits(manager))
    resolved = manager.continuous_batching_config
    info["cb_resolved"] = {k: getattr(resolved, k, None) for k in (
        "q_padding_interval_size", "kv_padding_interval_size", "max_requests_per_batch",
        "max_blocks_per_request", "safety_margin", "use_async_batching", "scheduler_type")}
    vocab = spec.vocab_size
    replay(manager, stream("conv", 8, 50.0, 99, data, args.max_prompt, args.max_output),
           timeout=180, ids_seed=99, vocab=vocab)  # kernels compile, allocator settles
    plan = parse_plan(args.plan)
    capacity: dict[str, float] = {}
    info["streams"] = []
    for kind in dict.fromkeys(k for k, _ in plan):  # one closed burst per workload
        reqs = [(0.0, p, o) for _, p, o in stream(kind, args.probe_requests, 1.0, 7 + WORKLOADS.index(kind),
                                                 data, args.max_prompt, args.max_output)]
        t = time.perf_counter()
        got = replay(manager, reqs, timeout=300, ids_seed=10**6 + WORKLOADS.index(kind), vocab=vocab)
        capacity[kind] = sum(r["status"] != "missing" for r in got) / (time.perf_counter() - t - 0.5)
        write_csv(out / f"requests_probe-{kind}.csv", got)
        info["capacity_req_per_s"] = capacity
        write_json(out / "engine.json", info)
        print(f"{args.shape} probe {kind}: {capacity[kind]:.2f} req/s", flush=True)
    # Each stream's replicates back to back, so a deadline cuts whole streams, not pairs.
    for kind, load in plan:
        for r, rep in enumerate("abcdefgh"[:args.reps]):
            rate = load * capacity[kind]
            n = stream_size(rate, args.span, args.min_requests, args.max_requests)
            reqs = stream(kind, n, rate, stream_seed(kind, load), data, args.max_prompt, args.max_output)
            name = tag(kind, load, rep)
            if not manager.is_running():
                info["streams"].append({"tag": name, "skipped": "engine stopped"})
                continue
            if time.perf_counter() - t_begin + reqs[-1][0] + 45 > args.deadline:
                info["streams"].append({"tag": name, "skipped": "deadline"})
                continue
            steps: list[dict] = []
            got = replay(manager, reqs, timeout=300, steps=steps, profiler=profiler,
                         ids_seed=10**5 * (r + 1) + stream_seed(kind, load), vocab=vocab)
            write_csv(out / f"requests_{name}.csv", got)
            write_csv(out / f"iterations_{name}.csv", steps)
            done = sum(x["status"] != "missing" for x in got)
            info["streams"].append({"tag": name, "workload": kind, "load": load, "rep": rep,
                                    "rate": rate, "requests": n, "done": done,
                                    "captured": sum(s["captured"] for s in steps)})
            write_json(out / "engine.json", info)
            print(f"{args.shape} {name}: {rate:.2f} req/s, {done}/{n} done, "
                  f"{sum(s['captured'] for s in steps)} captures", flush=True)
    info["wall_s"] = time.perf_counter() - t_begin
    write_json(out / "engine.json", info)
    if args.tp > 1:
        manager.stop(block=True, timeout=60)
    os._exit(0)  # the manager's thread would keep the process alive


if __name__ == "__main__":
    main()

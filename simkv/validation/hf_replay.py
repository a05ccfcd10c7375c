"""Replay a request stream against Hugging Face transformers' continuous batching on a GPU.

    python -m simkv.validation.hf_replay --out DIR [--probe] [--loads 0.2 0.5 1.2]

The model is Llama-3.1-8B-shaped with random weights (nothing can be downloaded; timing does
not depend on weight values), bf16, on one GPU. ``eos_token_id = -1`` makes every request
generate exactly its requested tokens. Requests are submitted in real time at their arrival
times from a fixed, seeded stream (prompt lengths drawn from the Azure 2023 conversation
trace's published percentiles, outputs capped to keep a call short); per request the script
records submission, first-token and completion times on ``time.perf_counter``, and the
engine's own KV and batch limits, so simkv can be configured with exactly those.

Writes ``requests_<load>.csv`` (with every token's time, ``stamps_ms``), ``engine.json`` and,
with ``--probe``, ``probe.json`` and the burst's requests; with ``--profile-steps``,
``iterations_<load>.csv``: every step of the engine's loop, its batch and KV read, and
whether it recorded a CUDA graph. The validation of docs/VALIDATION.md ran

    python -m simkv.validation.hf_replay --out DIR --capacity 3.38 --cuda-graph --warm-bursts 1 \
        --warm-plan 0.2:20 0.5:30 1.2:60 1.2:60 3:60 3:60 --profile-steps \
        --loads 0.2 0.5 1.2 3 --requests 60
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from simkv.validation.hf_profiler import StepProfiler

# Azure LLM inference trace 2023, conversation: prompt tokens p10/p25/p50/p75/p90 and the
# generated tokens' (../shared/data/burstgpt/STATS.md section 4), capped for a bounded run.
PROMPT_KNOTS = [(0.0, 16), (0.1, 207), (0.25, 396), (0.5, 1020), (0.75, 1189), (0.9, 2048),
                (1.0, 2048)]
OUTPUT_KNOTS = [(0.0, 8), (0.1, 54), (0.25, 85), (0.5, 128), (1.0, 128)]


def draw(rng: np.random.Generator, knots: list[tuple[float, int]], n: int) -> np.ndarray:
    q = np.array([k[0] for k in knots])
    v = np.log(np.array([k[1] for k in knots], float))
    return np.maximum(1, np.rint(np.exp(np.interp(rng.random(n), q, v)))).astype(int)


def stream(n: int, rate: float, seed: int) -> list[tuple[float, int, int]]:
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(1.0 / rate, n))
    return list(zip(t.tolist(), draw(rng, PROMPT_KNOTS, n).tolist(),
                    draw(rng, OUTPUT_KNOTS, n).tolist(), strict=True))


def build_model(attn: str | None) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                      vocab_size=128256, max_position_embeddings=131072, rope_theta=500000.0,
                      tie_word_embeddings=False)
    if attn:
        cfg._attn_implementation = attn
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg)
    model.eval()
    return model


def graph_keys(manager: Any) -> list[str]:
    """The CUDA-graph keys the engine holds now (``q/kv/seqlen_k``; ``q`` alone on the decode
    fast path): with them a model predicts which of a stream's steps will capture."""
    io = getattr(getattr(manager, "batch_processor", None), "inputs_and_outputs", None)
    ios = [io] if io is not None and hasattr(io, "graphs") else [
        getattr(p, "device_io", None) for p in getattr(io, "io_pairs", []) or []]
    keys: set[str] = set()
    for x in ios:
        storage = getattr(getattr(x, "graphs", None), "_storage", {}) or {}
        keys |= {"/".join(str(k) for k in key) for key in storage}
    return sorted(keys)


def engine_limits(manager: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    bp = getattr(manager, "batch_processor", None)
    cache = getattr(bp, "cache", None)
    for obj, names in ((cache, ("block_size", "num_blocks", "max_batch_tokens")),
                       (bp, ("max_batch_tokens", "max_requests_per_batch")),
                       (getattr(bp, "scheduler", None), ("__class__",))):
        for name in names:
            if obj is not None and hasattr(obj, name):
                v = getattr(obj, name)
                out[f"{type(obj).__name__}.{name}"] = v.__name__ if name == "__class__" else v
    return {k: (v if isinstance(v, int | float | str | bool) else str(v)) for k, v in out.items()}


def make_manager(model: Any, cb_kwargs: dict[str, Any]) -> Any:
    from transformers import GenerationConfig

    gc = GenerationConfig(max_new_tokens=128, do_sample=False, eos_token_id=-1, pad_token_id=0)
    try:
        from transformers import ContinuousBatchingConfig

        names = {f.name for f in dataclasses.fields(ContinuousBatchingConfig)}
        cbc = ContinuousBatchingConfig(**{k: v for k, v in cb_kwargs.items() if k in names})
        manager = model.init_continuous_batching(generation_config=gc,
                                                 continuous_batching_config=cbc)
    except (ImportError, TypeError):
        manager = model.init_continuous_batching(generation_config=gc)
    return manager


def replay(manager: Any, reqs: list[tuple[float, int, int]], timeout: float,
           steps: list[dict[str, Any]] | None = None,
           profiler: StepProfiler | None = None, ids_seed: int = 0,
           vocab: int = 120000, meta: dict[str, Any] | None = None,
           evictions: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Submit at the arrival times (real time), collect results; times are perf_counter.

    With a ``profiler``, the engine's steps during the replay go into ``steps`` and its
    evictions into ``evictions``; ``meta`` receives the stream's clock (``t0_perf``, and
    ``t0_unix`` to align GPU power samples) and how the replay ended. ``timeout`` bounds the
    wait for results after the last submission; what has not finished by then is ``missing``.
    ``ids_seed`` seeds the random prompt token ids: give every replay its own, or the engine's
    block sharing finds the previous replay's first prompt in its cache (seen on 2026-11-25:
    the first request of each load prefilled 44 of 300 tokens). Token ids lie in [10, vocab).
    """
    submitted: dict[str, float] = {}
    results: dict[str, Any] = {}
    t0 = time.perf_counter() + 0.5
    if meta is not None:
        meta.update(t0_perf=t0, t0_unix=time.time() + 0.5)
    if profiler is not None:
        profiler.take(t0)  # drop what came before
        profiler.take_events()
    rng = np.random.default_rng(ids_seed)

    def collect() -> None:
        while len(results) < len(reqs) and manager.is_running():
            r = manager.get_result(timeout=1.0)
            if r is not None:
                results[str(r.request_id)] = (r, time.perf_counter())

    th = threading.Thread(target=collect, daemon=True)
    th.start()
    for i, (t, p, o) in enumerate(reqs):
        delay = t0 + t - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        ids = rng.integers(10, vocab, p).tolist()
        rid = f"r{i}"
        submitted[rid] = time.perf_counter()
        manager.add_request(ids, request_id=rid, max_new_tokens=o, record_timestamps=True)
    th.join(timeout=timeout)
    queued: dict[str, list[tuple[int, float]]] = {}
    evicted: list[dict[str, Any]] = []
    if profiler is not None:
        if steps is not None:
            steps.extend(profiler.take(t0))
        queued, evicted = profiler.take_events()
    if evictions is not None:
        evictions.extend({**{k: v for k, v in e.items() if k != "stamps"}, "t_s": e["t"] - t0}
                         for e in evicted)
    if meta is not None:
        meta.update(end_s=time.perf_counter() - t0, timed_out=th.is_alive(),
                    engine_running=bool(manager.is_running()))
    before: dict[str, list[float]] = {}  # token times of a request's states before soft resets
    for e in evicted:
        before.setdefault(e["rid"], []).extend(e["stamps"])
    rows = []
    for i, (t, p, o) in enumerate(reqs):
        rid = f"r{i}"
        q = queued.get(rid, [])
        extra = {"queued_step": q[0][0] if q else -1,
                 "queued_s": (q[0][1] - t0) if q else float("nan"),
                 "requeued_steps": " ".join(str(s) for s, _ in q[1:]),
                 "evictions": " ".join(f"{(e['t'] - t0) * 1e3:.2f}:{e['kind']}:{e['generated_before']}"
                                       for e in evicted if e["rid"] == rid)}
        if rid not in results:
            rows.append({"id": i, "arrival_s": t, "prompt_tokens": p, "output_tokens": o,
                         "status": "missing", **extra})
            continue
        r, got = results[rid]
        stamps = before.get(rid, []) + list(getattr(r, "timestamps", None) or [])
        gen = len(getattr(r, "generated_tokens", []) or [])
        rows.append({
            "id": i, "arrival_s": t, "prompt_tokens": p, "output_tokens": o,
            "generated": gen, "submit_s": submitted[rid] - t0,
            "first_token_s": (stamps[0] - t0) if stamps else float("nan"),
            "completion_s": (stamps[-1] - t0) if stamps else got - t0,
            "collected_s": got - t0, "n_stamps": len(stamps),
            "created_s": float(getattr(r, "created_time", float("nan"))) - t0,
            "status": str(getattr(r, "status", "")),
            # every token's time (ms after t0): the engine's step ends, also when its forward
            # passes run as CUDA graphs that a forward wrapper cannot see
            "stamps_ms": " ".join(f"{(x - t0) * 1e3:.2f}" for x in stamps),
            **extra,
        })
    return rows


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    import csv

    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=sorted({k for r in rows for k in r})
                           or ["start_s", "forward_s", "tokens", "sequences"])
        w.writeheader()
        w.writerows(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True)
    ap.add_argument("--attn", default=None, help="attention implementation (default: probe)")
    ap.add_argument("--probe", action="store_true")
    ap.add_argument("--loads", nargs="*", type=float, default=[])
    ap.add_argument("--capacity", type=float, default=0.0, help="saturated req/s, if known")
    ap.add_argument("--requests", type=int, default=120)
    ap.add_argument("--max-batch-tokens", type=int, default=2048)
    ap.add_argument("--num-blocks", type=int, default=0)
    ap.add_argument("--cuda-graph", action="store_true")
    ap.add_argument("--async-batching", action="store_true")
    ap.add_argument("--warm-requests", type=int, default=0,
                    help="before measuring, replay this many requests at each load (other draws)")
    ap.add_argument("--warm-plan", nargs="*", default=[], metavar="LOAD:REQUESTS",
                    help="warm-up replays before measuring, e.g. 1.2:60 3:60 (other draws)")
    ap.add_argument("--warm-bursts", type=int, default=0,
                    help="closed bursts of 64 requests replayed before measuring")
    ap.add_argument("--compile-level", type=int, default=0)
    ap.add_argument("--q-pad", type=int, default=0, help="q_padding_interval_size (0: default)")
    ap.add_argument("--kv-pad", type=int, default=0, help="kv_padding_interval_size (0: default)")
    ap.add_argument("--profile-steps", action="store_true",
                    help="also time every forward pass (iterations_<load>.csv)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import torch
    import transformers
    from transformers import ContinuousBatchingManager

    info: dict[str, Any] = {"torch": torch.__version__, "transformers": transformers.__version__,
                            "device": torch.cuda.get_device_name(0)}
    import inspect

    try:
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        supported = sorted(ALL_ATTENTION_FUNCTIONS.valid_keys()
                           if hasattr(ALL_ATTENTION_FUNCTIONS, "valid_keys")
                           else ALL_ATTENTION_FUNCTIONS.keys())
    except ImportError:
        supported = []
    info["attention_functions"] = supported
    info["init_signature"] = str(inspect.signature(
        transformers.LlamaForCausalLM.init_continuous_batching))
    try:
        from transformers import ContinuousBatchingConfig

        info["cb_config_fields"] = [f.name for f in dataclasses.fields(ContinuousBatchingConfig)]
    except ImportError:
        info["cb_config_fields"] = None
    info["manager_methods"] = sorted(m for m in dir(ContinuousBatchingManager) if not m.startswith("__"))
    attn = args.attn
    if attn is None:
        for cand in ("paged|sdpa", "sdpa_paged", "paged|flex_attention", "flex_attention_paged"):
            if cand in supported:
                attn = cand
                break
    info["attention"] = attn
    print(json.dumps(info, indent=1), flush=True)
    model = build_model(attn)
    profiler = StepProfiler() if args.profile_steps else None
    cb = {"max_batch_tokens": args.max_batch_tokens, "use_cuda_graph": args.cuda_graph,
          "block_size": 256, "use_async_batching": args.async_batching,
          "default_compile_level": args.compile_level}
    if args.q_pad:
        cb["q_padding_interval_size"] = args.q_pad
    if args.kv_pad:
        cb["kv_padding_interval_size"] = args.kv_pad
    if args.num_blocks:
        cb["num_blocks"] = args.num_blocks
    manager = make_manager(model, cb)
    manager.start()
    time.sleep(1.0)
    info.update(engine_limits(manager))
    info["cb_config"] = cb
    print(json.dumps(info, indent=1), flush=True)
    # Warm-up: a few requests (kernels compile, allocator settles).
    replay(manager, stream(8, 50.0, 99), timeout=120)
    for _ in range(args.warm_bursts):  # with CUDA graphs: record the common shapes' graphs
        replay(manager, stream(64, 1000.0, 7), timeout=300, ids_seed=7 + _)
    if args.probe:
        t = time.perf_counter()
        steps_probe: list[dict[str, Any]] = []
        rows = replay(manager, stream(64, 1000.0, 1), timeout=300, steps=steps_probe,
                      profiler=profiler, ids_seed=10**6)  # a closed burst
        span = time.perf_counter() - t
        write_csv(out / "requests_probe.csv", rows)
        if profiler is not None:
            write_csv(out / "iterations_probe.csv", steps_probe)
        done = [r for r in rows if r["status"] != "missing"]
        info["probe"] = {"requests": len(done), "wall_s": span,
                         "saturated_req_per_s": len(done) / span, "first_row": rows[0]}
        (out / "probe.json").write_text(json.dumps(info, indent=1, default=str))
        print(json.dumps(info["probe"], indent=1, default=str), flush=True)
    capacity = args.capacity or info.get("probe", {}).get("saturated_req_per_s", 0.0)
    # Warm the engine with traffic like the measured one but other draws: with CUDA graphs,
    # every new (query, KV, longest sequence) shape records a graph (~0.1-0.3 s) on first
    # sight, a start-up cost of the engine that a long-running server has paid.
    plan = [(load, args.warm_requests) for load in args.loads] if args.warm_requests else []
    plan += [(float(a), int(b)) for a, b in (x.split(":") for x in args.warm_plan)]
    for i, (load, n) in enumerate(plan):
        replay(manager, stream(n, load * capacity, 500 + 17 * i + int(load * 1000)),
               timeout=420, profiler=profiler, ids_seed=500 + 17 * i + int(load * 1000))
    info["warm_plan"] = plan
    for load in args.loads:
        rate = load * capacity
        steps: list[dict[str, Any]] = []
        rows = replay(manager, stream(args.requests, rate, int(load * 1000)), timeout=420,
                      steps=steps, profiler=profiler, ids_seed=1 + int(load * 1000))
        write_csv(out / f"requests_{load:g}.csv", rows)
        if profiler is not None:
            write_csv(out / f"iterations_{load:g}.csv", steps)
        done = [r for r in rows if r["status"] != "missing"]
        print(f"load {load}: rate {rate:.2f}/s, {len(done)}/{len(rows)} done", flush=True)
    info["capacity_req_per_s"] = capacity
    (out / "engine.json").write_text(json.dumps(info, indent=1, default=str))
    os._exit(0)  # the manager's thread would keep the process alive


if __name__ == "__main__":
    main()

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
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from simkv.validation.hf_engine import (
    build_model,
    capture_plans,
    engine_state,
    free_manager,
    gpu_info,
    model_spec,
    precapture,
)
from simkv.validation.hf_streams import (
    WORKLOADS,
    parse_plan_reps,
    regime,
    stream,
    stream_seed,
    stream_size,
    tag,
)
from simkv.validation.hf_streams import (
    parse_plan as parse_plan,  # re-exported: tests import it from here
)

PROBE_REQUESTS = 48
MIDDLE_CAP = 1.6  # a closed burst's middle-half rate, at most this times its whole rate


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
    if data is not None:  # before the model loads: a missing file would surface minutes later
        from simkv.validation.hf_streams import missing_trace_files

        missing = missing_trace_files(data, (args.plan, args.variant_plan))
        if missing:
            raise SystemExit(f"--data {data}: no {', '.join(missing)} there (the Azure 2023 "
                             f"trace files, ../shared/data/azure_llm_2023)")
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
            free_manager(manager, hard=stopped_hard)
    os._exit(0)  # the manager's thread would keep the process alive


def run() -> None:
    """main(), ended by os._exit on any error too: the continuous-batching manager's thread is
    not a daemon, so an exception (a missing trace CSV) left the process alive until the device
    call's timeout, measuring nothing (390 s of a lease on 2026-12-07)."""
    try:
        main()
    except Exception:  # any error: print it, then end the process for certain
        import traceback

        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)


if __name__ == "__main__":
    run()

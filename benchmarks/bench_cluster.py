"""Cluster-scale speed: a heterogeneous, autoscaled cluster of up to 1,000 GPUs.

``--disaggregated``: an H100 prefill pool and an H200 decode pool instead (every request's
KV moves between them over RDMA; the decode router is power_of_two).

Two pools of Llama-3.1-8B (one GPU per instance): H100 and A100, each starting at 40% of its
maximum and scaled horizontally by queue length; power-of-two-choices routing (O(1) per
request at any cluster size); BurstGPT-shaped requests (Gamma hourly volumes with the real
trace's CV, one trace hour = 300 simulated seconds) at a mean rate the starting capacity
roughly sustains, so bursts force scale-ups and lulls scale-downs.

    python benchmarks/bench_cluster.py [--requests 10000000] [--gpus 1000] [--shards 2]

``--shards k``: the same cluster as k shards in k processes (simkv/shard.py: each a
sub-cluster of 1/k of the pools and of the autoscaler's bounds; approximate, measured against
one process in docs/PERFORMANCE.md). CPU time then counts the shard processes too.

Prints wall time, CPU time (user + system: the machine is shared, so wall time alone says
little), simulated requests per second, peak RSS, the load average, and what the cluster did.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import simkv
from simkv.config.schema import PoolConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import in_process, machine, record


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=10_000_000)
    ap.add_argument("--gpus", type=int, default=1000)
    ap.add_argument("--disaggregated", action="store_true",
                    help="H100 prefill pool and H200 decode pool instead of H100 + A100 colocated")
    ap.add_argument("--rate-per-gpu", type=float, default=3.0,
                    help="mean requests/s per GPU of the maximum cluster")
    ap.add_argument("--shards", type=int, default=1, help="simulate as this many shards")
    ap.add_argument("--record", help="append one JSON line to this file")
    args = ap.parse_args()
    half = args.gpus // 2
    cfg = simkv.compose([
        "output.plot=false", "output.progress=false", "router=power_of_two",
        "autoscaler=horizontal", "autoscaler.metric=outstanding", "autoscaler.target=24",
        "workload=burstgpt", "workload.hour_s=300", f"workload.num_requests={args.requests}",
        f"workload.mean_rate={args.rate_per_gpu * args.gpus}", f"shards={args.shards}",
    ])
    pools = ((("prefill", "h100_sxm_80gb", "prefill"), ("decode", "h200", "decode"))
             if args.disaggregated else
             (("h100", "h100_sxm_80gb", "colocated"), ("a100", "a100_80gb", "colocated")))
    if args.disaggregated:
        cfg.disagg.decode_router = "power_of_two"
    for name, hw, role in pools:
        cfg.pools[name] = PoolConfig(role=role, hardware=hw, instances=int(0.4 * half),
                                     min_instances=int(0.2 * half), max_instances=half)
    d = tempfile.mkdtemp(prefix="bench_cluster_")
    result, m = in_process(lambda: simkv.simulate(cfg, d))
    s = result.summary
    c = s["cluster"]
    print(f"machine: {machine()}")
    print(f"requests: {s['requests']['finished']} finished, {s['requests']['rejected']} rejected; "
          f"simulated {s['makespan_s']:.0f} s; {s['engine']['iterations']} iterations in "
          f"{s['engine']['runs']} runs")
    for name, p in c["pools"].items():
        print(f"pool {name}: {p['instances_started']} instances started, {p['gpu_hours']:.1f} GPU-hours")
    sc = c.get("scaling", {})
    print(f"scaling events: {len(sc.get('events', []))}, scale-ups {sc.get('scale_ups', 0)}")
    print(f"TTFT p50 {s['ttft_s']['p50'] * 1e3:.1f} ms, p99 {s['ttft_s']['p99'] * 1e3:.1f} ms")
    print(f"simulate(): {m.line(args.requests)}")
    if args.shards > 1:
        from bench_shards import phases_line

        print(phases_line(json.loads((Path(d) / "run.json").read_text())))
    record(args.record, {"bench": "cluster", "requests": args.requests, "gpus": args.gpus,
                         "disaggregated": args.disaggregated, "shards": args.shards}, m)
    shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()

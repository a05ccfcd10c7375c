"""How far a sharded cluster is from one process: bench_cluster.py's clusters, one summary line.

    python benchmarks/shard_accuracy.py REQUESTS GPUS DISAGGREGATED(0|1) SHARDS OUT_DIR

Runs ``bench_cluster.py``'s configuration (H100 + A100 autoscaled, or H100 prefill / H200
decode with ``1``) in one process (SHARDS=1) or as SHARDS shards, and prints one JSON line of
the figures docs/PERFORMANCE.md compares (requests finished and rejected, TTFT / TPOT / E2E
percentiles, GPU-hours, goodput, scaling events, the KV transfer's p50).
"""

from __future__ import annotations

import json
import sys
import time

import simkv
from simkv.config.schema import PoolConfig
from simkv.shard import simulate_sharded


def config(requests: int, gpus: int, disaggregated: bool) -> object:
    half = gpus // 2
    cfg = simkv.compose([
        "output.plot=false", "output.progress=false", "router=power_of_two",
        "autoscaler=horizontal", "autoscaler.metric=outstanding", "autoscaler.target=24",
        "workload=burstgpt", "workload.hour_s=300", f"workload.num_requests={requests}",
        f"workload.mean_rate={3.0 * gpus}"])
    pools = ((("prefill", "h100_sxm_80gb", "prefill"), ("decode", "h200", "decode"))
             if disaggregated else
             (("h100", "h100_sxm_80gb", "colocated"), ("a100", "a100_80gb", "colocated")))
    if disaggregated:
        cfg.disagg.decode_router = "power_of_two"
    for name, hw, role in pools:
        cfg.pools[name] = PoolConfig(role=role, hardware=hw, instances=int(0.4 * half),
                                     min_instances=int(0.2 * half), max_instances=half)
    return cfg


def figures(s: dict) -> dict:
    c = s["cluster"]
    return {"finished": s["requests"]["finished"], "rejected": s["requests"]["rejected"],
            "ttft_p50": s["ttft_s"]["p50"], "ttft_p99": s["ttft_s"]["p99"],
            "tpot_p50": s["tpot_s"]["p50"], "e2e_p50": s["e2e_s"]["p50"],
            "gpu_hours": c["gpu_hours"], "goodput": s["goodput"], "makespan": s["makespan_s"],
            "scale_ups": c.get("scaling", {}).get("scale_ups"),
            "events": len(c.get("scaling", {}).get("events", [])),
            **({"kv_p50": c["disaggregation"]["kv_transfer_s"]["p50"]}
               if "disaggregation" in c else {})}


def main() -> None:
    requests, gpus, dis, k, out = (int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1",
                                   int(sys.argv[4]), sys.argv[5])
    t = time.perf_counter()
    cfg = config(requests, gpus, dis)
    r = simkv.simulate(cfg, out) if k == 1 else simulate_sharded(cfg, out, shards=k)
    print(json.dumps({"k": k, "wall": time.perf_counter() - t, **figures(r.summary)}))


if __name__ == "__main__":
    main()

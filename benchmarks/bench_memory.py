"""Speed with the memory hierarchy at work: prefix caching, demotion to DRAM/SSD, transfers.

    python benchmarks/bench_memory.py [--conversations 20000]

Runs ShareGPT-shaped conversations (closed loop, every call after the first hits the prefix
cache) on 8 Llama-3.1-8B / H100 replicas with session-affinity routing, with the prefix cache
off, on (HBM only), and on with DRAM/SSD demotion; prints wall time, simulated requests per
wall second and peak RSS for each. docs/PERFORMANCE.md records the figures.
"""

from __future__ import annotations

import argparse
import platform
import resource
import tempfile
import time

import simkv

VARIANTS = {
    "prefix cache off": ["kv.prefix_caching=false"],
    "prefix cache on (HBM)": [],
    "on, DRAM/SSD demotion": ["offload=ssd"],
    "on, TTL pin + DRAM offload": ["offload=dram", "tool_kv=ttl_pin", "scheduler=continuum"],
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--conversations", type=int, default=20_000)
    ap.add_argument("--rate", type=float, default=40.0, help="conversations started per second")
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    for name, extra in VARIANTS.items():
        cfg = simkv.compose(["cluster.replicas=8", "router=session_affinity", "workload=sharegpt",
                             f"workload.num_conversations={args.conversations}",
                             f"workload.conversation_rate={args.rate}", "output.plot=false",
                             "output.progress=false", *extra])
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            s = simkv.simulate(cfg, d).summary
            wall = time.perf_counter() - t0
        n = s["requests"]["total"]
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        transfers = s.get("memory", {}).get("transfers", 0)
        print(f"{name:<28} {n:>7} requests in {wall:6.2f} s: {n / wall:8,.0f} req/s; hit rate "
              f"{s['prefix_cache']['hit_rate_all']:.3f}; {transfers} transfers; peak RSS {rss:.0f} MiB")


if __name__ == "__main__":
    main()

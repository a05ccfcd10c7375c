"""Core speed: 100,000 requests on 8 Llama-3.1-8B / H100 replicas at about 80% load.

Prints wall time, simulated requests per wall second and peak RSS. The load is 80% of the
saturated throughput measured by this script itself (one replica, overloaded), so the
number stays meaningful if the cost model changes.

    python benchmarks/bench_core.py [--requests 100000] [--replicas 8] [--load 0.8]
"""

from __future__ import annotations

import argparse
import platform
import resource
import tempfile
import time

import simkv


def saturated_rate(extra: list[str]) -> float:
    cfg = simkv.compose(["cluster.replicas=1", "workload=poisson", "workload.rate=200",
                         "workload.num_requests=4000", "output.plot=false", "output.progress=false",
                         *extra])
    with tempfile.TemporaryDirectory() as d:
        return simkv.simulate(cfg, d).summary["throughput"]["requests_per_s"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--replicas", type=int, default=8)
    ap.add_argument("--load", type=float, default=0.8)
    ap.add_argument("--max-fast-forward", type=int, default=None)
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    args = ap.parse_args()
    extra = list(args.overrides)
    if args.max_fast_forward is not None:
        extra.append(f"engine.max_fast_forward={args.max_fast_forward}")
    per_replica = saturated_rate(extra)
    rate = args.load * per_replica * args.replicas
    cfg = simkv.compose([f"cluster.replicas={args.replicas}", "workload=poisson", f"workload.rate={rate}",
                         f"workload.num_requests={args.requests}", "output.plot=false",
                         "output.progress=false", *extra])
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        result = simkv.simulate(cfg, d)
        wall = time.perf_counter() - t0
    s = result.summary
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"machine: {platform.processor() or platform.machine()}, {platform.python_version()}")
    print(f"saturated throughput of one replica: {per_replica:.2f} req/s; offered {rate:.1f} req/s "
          f"({args.load:.0%} of {args.replicas} replicas)")
    print(f"requests: {s['requests']['finished']} finished; simulated {s['makespan_s']:.1f} s; "
          f"{s['engine']['iterations']} iterations in {s['engine']['runs']} runs")
    print(f"TTFT p50 {s['ttft_s']['p50'] * 1e3:.1f} ms, TPOT p50 {s['tpot_s']['p50'] * 1e3:.1f} ms")
    print(f"wall time (simulate, incl. writing results): {wall:.2f} s")
    print(f"simulated requests per wall second: {args.requests / wall:,.0f}")
    print(f"peak RSS: {rss_mib:.0f} MiB")


if __name__ == "__main__":
    main()

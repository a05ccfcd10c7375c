"""Routers at 1,000+ instances: what routing costs per request, whole run.

    python benchmarks/bench_routers.py [--instances 1000] [--requests 20000] [--routers ...]

Each router runs the same job, a whole ``simkv`` process measured by os.wait4: ``--instances``
Llama-3.1-8B / H100 replicas, near-duplicate agent prompts (workload=near_duplicate: 8 tenants'
15.5k-token harnesses as prefix hashes, so the cache-aware routers have caches to read) at
0.4 requests/s per instance. Printed: wall and CPU time, CPU microseconds per request, and the
CPU per request above round_robin's (which reads nothing): the routing cost. Issue 22's target:
every built-in router O(log n) or O(1) per request at 1,000+ instances.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import command, machine, record, simkv_command

ROUTERS = ["round_robin", "power_of_two", "least_outstanding", "least_work", "session_affinity",
           "prefix_affinity", "slo_aware"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, nargs="+", default=[1000])
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--rate-per-instance", type=float, default=0.4)
    ap.add_argument("--routers", nargs="+", default=ROUTERS)
    ap.add_argument("--record", help="append one JSON line per run to this file")
    ap.add_argument("extra", nargs="*", help="extra simkv overrides")
    args = ap.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as d:
        for n in args.instances:
            base = None
            for router in args.routers:
                m = command([*simkv_command(), f"cluster.replicas={n}", f"router={router}",
                             "workload=near_duplicate", f"workload.num_requests={args.requests}",
                             f"workload.rate={args.rate_per_instance * n}", "output.plot=false",
                             "output.progress=false", f"hydra.run.dir={d}/{n}_{router}",
                             *args.extra])
                per = m.cpu_s / args.requests * 1e6
                if router == "round_robin":
                    base = per
                extra = f"; routing +{per - base:,.0f} us/request" if base is not None else ""
                print(f"{n:>6} instances, {router:<18} {per:8,.0f} CPU us/request{extra}; {m.line()}")
                record(args.record, {"bench": "routers", "instances": n, "router": router,
                                     "requests": args.requests}, m)


if __name__ == "__main__":
    main()

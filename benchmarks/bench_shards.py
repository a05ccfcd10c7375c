"""A cluster beyond one process: the same run in one process and as k shards (simkv/shard.py).

    python benchmarks/bench_shards.py [--requests 1000000] [--replicas 1000] [--shards 2]

BurstGPT-shaped requests on ``--replicas`` Llama-3.1-8B / H100 replicas (the setting of
benchmarks/bench_replicas.py), round-robin routing (sharded exactly). Prints, for one process
and for the shards, wall time, CPU time (this process plus the shards' processes), peak RSS
of this process, the load average, and whether the sharded requests equal one process's row
for row (compared by request id). ``--skip-one`` runs only the sharded version.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

import simkv
from simkv.shard import simulate_sharded

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import in_process, machine, record


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def same_rows(a: Path, b: Path) -> bool:
    ta = pq.read_table(a).sort_by("request_id")
    tb = pq.read_table(b).sort_by("request_id")
    if ta.num_rows != tb.num_rows:
        return False
    for col in ta.column_names:
        try:
            np.testing.assert_array_equal(ta.column(col).to_numpy(zero_copy_only=False),
                                          tb.column(col).to_numpy(zero_copy_only=False))
        except AssertionError:
            return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--replicas", type=int, default=1000)
    ap.add_argument("--rate-per-gpu", type=float, default=3.0)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--router", default="round_robin")
    ap.add_argument("--skip-one", action="store_true")
    ap.add_argument("--record", help="append one JSON line per run to this file")
    args = ap.parse_args()
    overrides = [f"cluster.replicas={args.replicas}", f"router={args.router}", "workload=burstgpt",
                 "workload.hour_s=300", f"workload.num_requests={args.requests}",
                 f"workload.mean_rate={args.rate_per_gpu * args.replicas}", "output.plot=false",
                 "output.progress=false"]
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as d:
        if not args.skip_one:
            _, m = in_process(lambda: simkv.simulate(simkv.compose(overrides), Path(d) / "one"))
            print(f"one process:        {m.line(args.requests)}")
            record(args.record, {"bench": "shards", "shards": 1, **vars(args)}, m)
        c0 = children_cpu()
        _, m = in_process(lambda: simulate_sharded(simkv.compose(overrides), Path(d) / "sharded",
                                                   shards=args.shards))
        kids = children_cpu() - c0
        parent = m.cpu_s
        m.cpu_s += kids
        run = json.loads((Path(d) / "sharded" / "run.json").read_text())
        # A shard process's start (imports) is what its CPU has beyond its simulation.
        start = (kids - sum(run["shard_cpu_s"])) / args.shards
        slowest = max(run["shard_cpu_s"]) + start
        print(f"{args.shards} shards ({args.shards} processes): {m.line(args.requests)} "
              f"(CPU of this process and its shards; {kids:.1f} s in the shards, the slowest "
              f"{slowest:.1f} s with its start: this process's {parent:.1f} s plus that, "
              f"{parent + slowest:.1f} s, is the wall time with a free core per shard)")
        record(args.record, {"bench": "shards", **vars(args)}, m)
        if not args.skip_one:
            ok = same_rows(Path(d) / "one" / "requests.parquet", Path(d) / "sharded" / "requests.parquet")
            print(f"requests row for row equal to one process's (by request id): {ok}")


if __name__ == "__main__":
    main()

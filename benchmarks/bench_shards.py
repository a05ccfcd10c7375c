"""A cluster beyond one process: the same run in one process and as k shards (simkv/shard.py).

    python benchmarks/bench_shards.py [--requests 1000000] [--replicas 1000] [--shards 2]
    python benchmarks/bench_shards.py --requests 100000000 --replicas 10000 --shards 16 --only-shard 0

BurstGPT-shaped requests on ``--replicas`` Llama-3.1-8B / H100 replicas (the setting of
benchmarks/bench_replicas.py), round-robin routing (sharded exactly). Each run is a whole
process (interpreter, imports, the run, every file), measured by os.wait4: wall time, CPU time
(user + system, the shards' processes included), the largest peak RSS of the process and its
shards, the load average. For the sharded run it prints where the wall time went (the run's
phases, from run.json) and each shard's start, CPU, wall time and peak RSS, and whether its
requests equal one process's row for row (compared by request id). ``--skip-one`` runs only
the sharded version; ``--repeat`` runs both that many times, interleaved.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import command, machine, record

from simkv.command import one_blas_thread


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


def overrides(args: argparse.Namespace) -> list[str]:
    return [f"cluster.replicas={args.replicas}", f"router={args.router}", "workload=burstgpt",
            "workload.hour_s=300", f"workload.num_requests={args.requests}",
            f"workload.mean_rate={args.rate_per_gpu * args.replicas}", "output.plot=false",
            "output.progress=false", *args.extra]


def run_here(args: argparse.Namespace) -> None:
    """The child's side: one run in this process (``--run one|sharded OUT``)."""
    import simkv
    from simkv.shard import simulate_sharded

    mode, out = args.run
    if mode == "one":
        simkv.simulate(simkv.compose(overrides(args)), out)
    elif mode.startswith("only"):
        # One shard alone, as simulate_sharded would run it (its share of the stream, its
        # instances): a run too large for this machine, projected from one measured shard.
        from simkv.engine.pool import pool_configs
        from simkv.shard import _run_shard, _shard_config, is_exact

        cfg = simkv.compose([*overrides(args), f"shards={args.shards}"])
        n = next(iter(pool_configs(cfg).values())).instances
        s = int(mode.removeprefix("only"))
        report = _run_shard((_shard_config(cfg, s, args.shards), out, s, args.shards, n, is_exact(cfg)))
        Path(out, "shard_run.json").write_text(json.dumps(report))
    else:
        simulate_sharded(simkv.compose(overrides(args)), out, shards=args.shards)


# A sharded run's phases in the order they run (simkv/shard.py records them in run.json).
PHASES = ("split_s", "shards_s", "merge_requests_s", "merge_instances_s", "summary_s", "figure_s")


def phases_line(run: dict) -> str:
    ph = run.get("phases", {})
    parts = [f"{k.removesuffix('_s')} {ph[k]:.2f}" for k in PHASES if k in ph]
    shards = "; ".join(
        f"shard {i}: began {r['began']:.1f} s after the pool, start CPU {r['start_cpu_s']:.1f} s, "
        f"run CPU {r['cpu_s']:.1f} s, wall {r['wall_s']:.1f} s, peak RSS {r['peak_rss_mib']:.0f} MiB"
        for i, r in enumerate(run.get("shard_runs", [])))
    return (f"  phases (wall s): {', '.join(parts)}; parent peak RSS "
            f"{run.get('peak_rss_mib', float('nan')):.0f} MiB\n  {shards}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--replicas", type=int, default=1000)
    ap.add_argument("--rate-per-gpu", type=float, default=3.0)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--router", default="round_robin")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--skip-one", action="store_true")
    ap.add_argument("--only-shard", type=int, metavar="S",
                    help="run shard S of --shards alone (no merge): to project a run too "
                         "large for this machine from one measured shard")
    ap.add_argument("--record", help="append one JSON line per run to this file")
    ap.add_argument("--run", nargs=2, metavar=("MODE", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("extra", nargs="*", help="extra simkv overrides")
    args = ap.parse_args()
    if args.run:
        run_here(args)
        return
    # Every child with one OpenBLAS thread, as `simkv` and the shards' processes start (else
    # one process and a lone shard would carry spinning threads the shards do not).
    one_blas_thread()
    passed = [f"--requests={args.requests}", f"--replicas={args.replicas}",
              f"--rate-per-gpu={args.rate_per_gpu}", f"--shards={args.shards}",
              f"--router={args.router}", *args.extra]
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as d:
        if args.only_shard is not None:
            if not 0 <= args.only_shard < args.shards:
                raise SystemExit(f"--only-shard {args.only_shard}: a shard of 0..{args.shards - 1}")
            out = Path(d) / f"only{args.only_shard}"
            m = command([sys.executable, __file__, *passed, "--run", f"only{args.only_shard}",
                         str(out)])
            r = json.loads((out / "shard_run.json").read_text())
            share = args.requests // args.shards
            print(f"shard {args.only_shard} of {args.shards} alone (about {share:,} requests): "
                  f"{m.line(share)}\n  its run: CPU {r['cpu_s']:.1f} s, wall {r['wall_s']:.1f} s, "
                  f"peak RSS {r['peak_rss_mib']:.0f} MiB")
            record(args.record, {"bench": "shards", **vars(args)}, m)
            return
        for rep in range(args.repeat):
            modes = ["sharded"] if args.skip_one else ["one", "sharded"]
            for mode in modes:
                out = Path(d) / f"{mode}{rep}"
                m = command([sys.executable, __file__, *passed, "--run", mode, str(out)])
                name = "one process" if mode == "one" else f"{args.shards} shards"
                print(f"{name}: {m.line(args.requests)}", flush=True)
                run = json.loads((out / "run.json").read_text())
                if mode == "sharded":
                    print(phases_line(run.get("stats", run)), flush=True)
                record(args.record, {"bench": "shards", **vars(args),
                                     "shards": 1 if mode == "one" else args.shards}, m)
            if not args.skip_one:
                # NOTE: in a process of its own: reading two tables here would grow this
                # process, and a later run's child, forked from it, would report this
                # process's size as its peak RSS (Linux keeps the high-water mark across exec).
                with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as ex:
                    ok = ex.submit(same_rows, Path(d) / f"one{rep}" / "requests.parquet",
                                   Path(d) / f"sharded{rep}" / "requests.parquet").result()
                print(f"requests row for row equal to one process's (by request id): {ok}",
                      flush=True)


if __name__ == "__main__":
    main()

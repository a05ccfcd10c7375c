"""Reading and generating 1,000,000 requests: wall time and peak RSS per case.

    python benchmarks/bench_workloads.py            # runs every case in its own process

Cases: generate BurstGPT-shaped arrivals (in memory, streamed); write them as a native
Parquet trace (simkv-trace generate); read that Parquet back; read a 1M-row CSV in the
BurstGPT release schema (format=burstgpt). Target (issue 3): under 10 s and 500 MB each.
"""

from __future__ import annotations

import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

N = 1_000_000


def _consume(batches) -> int:  # type: ignore[no-untyped-def]
    return sum(len(b) for b in batches)


def case(name: str, work: Path) -> None:
    from simkv.trace_cli import main as trace_cli
    from simkv.workload import BurstGPTWorkload, BurstGPTWorkloadConfig, TraceWorkload, TraceWorkloadConfig

    t0 = time.perf_counter()
    if name == "generate":
        n = _consume(BurstGPTWorkload(BurstGPTWorkloadConfig(num_requests=N)).arrivals(
            np.random.default_rng(0)))
    elif name == "write_parquet":
        trace_cli(["generate", "burstgpt", f"num_requests={N}", "--out", str(work / "g.parquet")])
        n = N
    elif name == "read_parquet":
        n = _consume(TraceWorkload(TraceWorkloadConfig(path=str(work / "g.parquet"))).arrivals(
            np.random.default_rng(0)))
    elif name == "read_burstgpt_csv":
        n = _consume(TraceWorkload(TraceWorkloadConfig(path=str(work / "b.csv"), format="burstgpt"))
                     .arrivals(np.random.default_rng(0)))
    else:
        raise SystemExit(f"unknown case {name}")
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{name:<20} {n:>9,} requests  {wall:6.2f} s  {n / wall:>10,.0f} req/s  peak RSS {rss:5.0f} MiB")


def make_csv(work: Path) -> None:
    """A 1M-row CSV in the BurstGPT release schema, from the generator."""
    import pandas as pd

    t = pd.read_parquet(work / "g.parquet")
    pd.DataFrame({
        "Timestamp": np.floor(t["arrival_s"] * 3600 / 10).astype(np.int64),  # hour_s 10 -> real hours
        "Model": t["model"], "Request tokens": t["prompt_tokens"],
        "Response tokens": np.where(t["failed"], 0, t["output_tokens"]),
        "Total tokens": t["prompt_tokens"] + t["output_tokens"], "Log Type": t["log_type"],
    }).to_csv(work / "b.csv", index=False)


def main() -> None:
    if len(sys.argv) == 3:
        case(sys.argv[1], Path(sys.argv[2]))
        return
    print(f"machine: {platform.machine()}, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as d:
        for name in ("generate", "write_parquet", "read_parquet"):
            subprocess.run([sys.executable, __file__, name, d], check=True)
        make_csv(Path(d))
        subprocess.run([sys.executable, __file__, "read_burstgpt_csv", d], check=True)


if __name__ == "__main__":
    main()

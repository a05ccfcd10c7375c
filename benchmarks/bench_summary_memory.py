"""Peak memory of the summary step (summary.json and latency.png) at a given run length.

    python benchmarks/bench_summary_memory.py --requests 1000000 10000000 [--dir /tmp/x]

Simulating 10M requests takes hours on a small machine, and only the file matters to the
summary step, so this writes a requests.parquet of the given length with the result schema
and the recorder's row groups (65,536 rows): lognormal latencies, 2% rejected, one session
per 8 calls (conversation-like, so the per-session part is in the figure). Then, for each
length, a fresh process reads it: its RSS after the imports, and its peak RSS after
summarise() and plot_run(). docs/PERFORMANCE.md records the figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from simkv.metrics import schema

ROW_GROUP = 65536


def write_requests(path: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with pq.ParquetWriter(path, schema.REQUESTS, compression="zstd") as w:
        for start in range(0, n, ROW_GROUP):
            k = min(ROW_GROUP, n - start)
            ids = np.arange(start, start + k)
            done = rng.random(k) > 0.02
            arrival = ids * 0.001 + rng.random(k) * 1e-3
            ttft = rng.lognormal(-2.0, 1.0, k)
            out = np.maximum(1, rng.lognormal(4.0, 1.0, k)).astype(np.int32)
            tpot = rng.lognormal(-4.0, 0.5, k) * (out > 1)
            e2e = ttft + tpot * np.maximum(out - 1, 0)
            prompt = np.maximum(1, rng.lognormal(6.0, 1.0, k)).astype(np.int32)
            hbm = (prompt * rng.random(k) * 0.5).astype(np.int32)
            nan = np.where(done, 0.0, np.nan)
            cols = {
                "request_id": ids, "session": ids // 8, "turn": (ids % 8).astype(np.int32),
                "model": np.array([""] * k), "log_type": np.array([""] * k),
                "replica": (ids % 8).astype(np.int16),
                "status": np.where(done, "finished", "rejected"),
                "reject_reason": np.where(done, "", "kv_capacity"),
                "arrival_s": arrival, "first_scheduled_s": arrival + nan,
                "first_token_s": arrival + ttft + nan, "completion_s": arrival + e2e + nan,
                "prompt_tokens": prompt, "output_tokens": out,
                "cached_tokens": hbm, "cached_hbm_tokens": hbm,
                "cached_dram_tokens": np.zeros(k, np.int32), "cached_disk_tokens": np.zeros(k, np.int32),
                "cached_remote_tokens": np.zeros(k, np.int32), "kv_wait_s": np.zeros(k),
                "preemptions": np.zeros(k, np.int32), "ttft_s": ttft + nan, "tpot_s": tpot + nan,
                "e2e_s": e2e + nan, "slo_met": done & (ttft < 2) & (tpot < 0.1),
            }
            w.write_table(pa.Table.from_arrays(
                [pa.array(cols[f.name], f.type) for f in schema.REQUESTS], schema=schema.REQUESTS))


MEASURE = """
import json, resource, sys, time
from pathlib import Path
from simkv.metrics.plots import plot_run
from simkv.metrics.summary import summarise
path = Path(sys.argv[1])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.perf_counter()
summary = summarise(path, gpu_hours=8.0, slo={"ttft_s": 2.0, "tpot_s": 0.1}, extra={})
t_summary = time.perf_counter() - t
after_summary = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
plot_run(path, summary, path.with_suffix(".png"), "bench")
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"rss_after_imports_mib": base, "peak_after_summary_mib": after_summary,
                  "peak_after_plot_mib": peak, "summary_s": t_summary,
                  "wall_s": time.perf_counter() - t, "finished": summary["requests"]["finished"],
                  "sessions": summary["sessions"]["count"]}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args()
    folder = args.dir or Path(tempfile.mkdtemp(prefix="simkv-summary-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    for n in args.requests:
        path = folder / f"requests_{n}.parquet"
        if not path.exists():
            write_requests(path, n)
        out = subprocess.run([sys.executable, "-c", MEASURE, str(path)], check=True,
                             capture_output=True, text=True)
        result = json.loads(out.stdout)
        print(json.dumps({"requests": n, "file_mib": path.stat().st_size / 2**20, **result}))


if __name__ == "__main__":
    main()

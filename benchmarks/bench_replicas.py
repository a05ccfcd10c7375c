"""A 1,000-GPU day: 10.31M BurstGPT-shaped requests on 1,000 H100 replicas, no autoscaler.

10.31M is the size of the BurstGPT release (213 days of Azure OpenAI calls). Llama-3.1-8B,
one H100 per replica, vLLM continuous batching, power-of-two-choices routing; BurstGPT-shaped
arrivals (Gamma hourly volumes with the real trace's CV, one trace hour = 300 simulated
seconds) at 3 requests/s per replica, the rate of benchmarks/bench_cluster.py.

    python benchmarks/bench_replicas.py [--requests 10310000] [--replicas 1000] [--repeat 1]

Each run is a whole ``simkv`` process (no figure), measured by os.wait4: wall time, CPU time
(user + system), simulated requests per second, peak RSS, load average. Target of issue 22:
<= 300 s and <= 1 GiB at full size.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import command, machine, record, simkv_command


def overrides(requests: int, replicas: int, rate_per_gpu: float, router: str) -> list[str]:
    return [f"cluster.replicas={replicas}", f"router={router}", "workload=burstgpt",
            "workload.hour_s=300", f"workload.num_requests={requests}",
            f"workload.mean_rate={rate_per_gpu * replicas}", "output.plot=false",
            "output.progress=false"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=10_310_000)
    ap.add_argument("--replicas", type=int, default=1000)
    ap.add_argument("--rate-per-gpu", type=float, default=3.0)
    ap.add_argument("--router", default="power_of_two")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--record", help="append one JSON line per run to this file")
    ap.add_argument("extra", nargs="*", help="extra simkv overrides")
    args = ap.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as d:
        for rep in range(args.repeat):
            out = Path(d) / f"run{rep}"
            m = command([*simkv_command(), *overrides(args.requests, args.replicas,
                                                       args.rate_per_gpu, args.router),
                         f"hydra.run.dir={out}", *args.extra])
            s = json.loads((out / "summary.json").read_text())
            print(f"{args.requests:,} requests on {args.replicas} replicas: {s['engine']['iterations']} "
                  f"iterations in {s['engine']['runs']} runs; simulated {s['makespan_s']:.0f} s; "
                  f"TTFT p50 {s['ttft_s']['p50'] * 1e3:.1f} ms, p99 {s['ttft_s']['p99'] * 1e3:.1f} ms")
            print(f"  {m.line(args.requests)}")
            record(args.record, {"bench": "replicas", "requests": args.requests,
                                 "replicas": args.replicas}, m)


if __name__ == "__main__":
    main()

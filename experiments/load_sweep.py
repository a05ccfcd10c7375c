"""Latency and goodput against offered load: continuous batching (chunked and not) vs static.

    python experiments/load_sweep.py [--requests 3000] [--out experiments/results]

Writes load_sweep.csv (one row per run) and load_sweep.png. Each point is one simkv run of
Llama-3.1-8B on one H100 with the default Poisson workload; the load is given as a share of
the saturated throughput of vLLM-style continuous batching, measured first.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd

import simkv

POLICIES = {
    "vllm, chunked prefill": ["scheduler=vllm"],
    "vllm, no chunking (v0)": ["scheduler=vllm", "scheduler.chunked_prefill=false"],
    "static batching (32)": ["scheduler=static", "scheduler.max_batch_size=32"],
}


def run(overrides: list[str]) -> dict:
    cfg = simkv.compose(["cluster.replicas=1", "workload=poisson", "output.plot=false",
                         "output.progress=false", *overrides])
    with tempfile.TemporaryDirectory() as d:
        return simkv.simulate(cfg, d).summary


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--out", default="experiments/results")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n = f"workload.num_requests={args.requests}"
    capacity = run([n, "workload.rate=200"])["throughput"]["requests_per_s"]
    rows = []
    for load in (0.2, 0.4, 0.6, 0.7, 0.8, 0.9, 1.0):
        rate = load * capacity
        for name, ov in POLICIES.items():
            s = run([n, f"workload.rate={rate}", *ov])
            rows.append({"policy": name, "load": load, "rate": rate,
                         "ttft_p50_s": s["ttft_s"]["p50"], "ttft_p99_s": s["ttft_s"]["p99"],
                         "tpot_p50_s": s["tpot_s"]["p50"], "e2e_p50_s": s["e2e_s"]["p50"],
                         "goodput_rps": s["goodput"]["requests_per_s"],
                         "throughput_rps": s["throughput"]["requests_per_s"]})
            print(f"{name:<26} load {load:.1f}: TTFT p99 {s['ttft_s']['p99']:.3f} s, "
                  f"goodput {s['goodput']['requests_per_s']:.1f} req/s")
    df = pd.DataFrame(rows)
    df.to_csv(out / "load_sweep.csv", index=False)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for name, g in df.groupby("policy", sort=False):
        axes[0].plot(g["load"], g["ttft_p99_s"], marker="o", label=name)
        axes[1].plot(g["load"], g["tpot_p50_s"] * 1e3, marker="o", label=name)
        axes[2].plot(g["load"], g["goodput_rps"], marker="o", label=name)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("TTFT p99 (s)")
    axes[1].set_ylabel("TPOT p50 (ms)")
    axes[2].set_ylabel("goodput (req/s, TTFT<=2 s, TPOT<=100 ms)")
    for ax in axes:
        ax.set_xlabel(f"offered load (share of {capacity:.1f} req/s)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Llama-3.1-8B on one H100 (datasheet profile), Poisson arrivals", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "load_sweep.png", dpi=110)
    print(f"wrote {out / 'load_sweep.csv'} and {out / 'load_sweep.png'}")


if __name__ == "__main__":
    main()

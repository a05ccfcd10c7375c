"""Infinite-LLM's DistAttention on simkv: the longest context a cluster serves, and throughput.

    python experiments/infinite_llm.py [--quick]

Setting (Infinite-LLM evaluates LLaMA-family models on up to 32 A100s, 2 to 32 instances):
Llama-2-7B (multi-head attention, 512 KiB of KV per token) on A100-80GB, one GPU per
instance, 2 to 32 instances. Workload: 24 requests per instance count with contexts
log-uniform from 8k tokens up to 90% of the cluster's KV capacity, 64 output tokens each,
Poisson arrivals. Three ways to serve it on the same cluster:

  local       each request limited to one instance's KV (vLLM): longer ones are rejected
  dram        the KV pool in the nodes' CPU DRAM, streamed to the GPU every step
              (``offload=dram_stream``, FlexGen-style offloading)
  distattn    ``kv_pool=distattention``: instances borrow KV blocks from each other and
              compute attention over them where they live

Reports (a) on that long mix, the longest context served and the share of requests served;
(b) throughput where every mode can serve every request: 16 requests per instance with
contexts 8k to 90% of one instance (so none needs borrowing to fit), 256 output tokens, all
arriving within seconds, so memory bounds how many run at once: tokens (prompt + output) per
second of makespan. Beside the paper's headline (arXiv 2401.02669: contexts 2-19x longer than
the baselines, throughput 1.03-2.4x).
The experiment contract (experiments/suite.py): run(quick), figure(df), headline(df); writes
experiments/results/infinite_llm.csv, .png and .pdf.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from suite import Headline, cli

import simkv
from simkv.engine.pool import load_model
from simkv.metrics import style
from simkv.workload.base import ArrivalBatch
from simkv.workload.native import write_trace

BASE = ["output.plot=false", "output.progress=false", "model=llama2_7b", "model.max_model_len=8000000",
        "hardware=a100_80gb", "router=least_outstanding"]
MODES = {"local": [], "dram": ["offload=dram_stream", "kv.prefix_caching=false"],
         "distattn": ["kv_pool=distattention"]}
PAPER = {"context_x": (2, 19), "throughput_x": (1.03, 2.4)}


def instance_tokens() -> int:
    """KV tokens one instance holds (from a run's summary)."""
    cfg = simkv.compose([*BASE, "cluster.replicas=1", "workload.num_requests=10"])
    with tempfile.TemporaryDirectory() as d:
        return int(simkv.simulate(cfg, d).summary["engine"]["kv_tokens_per_replica"])


def mix(n: int, longest: int, seed: int, gap_s: float = 30.0, output: int = 64,
        include_longest: bool = True) -> tuple[list[float], list[int], list[int]]:
    """Log-uniform contexts from 8k to ``longest`` (the longest one included)."""
    rng = np.random.default_rng(seed)
    p = np.exp(rng.uniform(np.log(8000), np.log(longest), n)).astype(int)
    if include_longest:
        p[rng.integers(n)] = longest
    t = np.cumsum(rng.exponential(gap_s, n))
    return t.tolist(), p.tolist(), [output] * n


def simulate(n: int, extra: list[str], arrival: list[float], prompt: list[int], output: list[int]
             ) -> tuple[pd.DataFrame, dict]:
    with tempfile.TemporaryDirectory() as d:
        trace = Path(d) / "mix.parquet"
        write_trace(trace, [(ArrivalBatch(np.asarray(arrival), np.asarray(prompt),
                                          np.asarray(output)), None)])
        cfg = simkv.compose([*BASE, f"cluster.replicas={n}", *extra, "workload=trace",
                             f"workload.path={trace}"])
        res = simkv.simulate(cfg, Path(d) / "run")
        return res.requests, res.summary


def run(quick: bool) -> pd.DataFrame:
    per = instance_tokens()
    rows = []
    for n in ((2, 4) if quick else (2, 4, 8, 16, 32)):
        longest = int(0.85 * n * per)
        long_mix = mix(12 if quick else 24, longest, n)
        fits = mix((8 if quick else 16) * n, int(0.9 * per), 1000 + n, gap_s=0.05, output=256,
                   include_longest=False)
        for mode, extra in MODES.items():
            df, _ = simulate(n, extra, *long_mix)
            ok = df[df["status"] == "finished"]
            df2, s2 = simulate(n, extra, *fits)
            ok2 = df2[df2["status"] == "finished"]
            rows.append({"instances": n, "mode": mode,
                         "served": len(ok) / len(df),
                         "longest_served_tokens": int(ok["prompt_tokens"].max()) if len(ok) else 0,
                         "tokens_per_s": float((ok2["prompt_tokens"] + ok2["output_tokens"]).sum()
                                               / s2["makespan_s"]),
                         "tpot_p50_s": s2["tpot_s"]["p50"]})
            r = rows[-1]
            print(f"{n:3d} instances {mode:9s} served {r['served']:.2f} longest "
                  f"{r['longest_served_tokens']:>9,} tokens/s {r['tokens_per_s']:,.0f} "
                  f"TPOT p50 {1e3 * (r['tpot_p50_s'] or 0):.1f} ms")
    print(f"one instance holds {per:,} tokens of Llama-2-7B KV on an A100-80GB "
          f"({load_model('llama2_7b').kv_bytes_per_token // 1024} KiB per token)")
    return pd.DataFrame(rows)


def overlaps(paper: tuple[float, float], simkv: tuple[float, float]) -> bool:
    """A range claim agrees when simkv's range meets the paper's."""
    return bool(simkv[1] >= paper[0] and simkv[0] <= paper[1])


def headline(df: pd.DataFrame) -> list[Headline]:
    by = df.pivot(index="instances", columns="mode")
    ctx = by["longest_served_tokens"]["distattn"] / by["longest_served_tokens"]["local"]
    thr = by["tokens_per_s"]["distattn"] / by["tokens_per_s"][["local", "dram"]].max(axis=1)
    lo, hi = PAPER["context_x"]
    tlo, thi = PAPER["throughput_x"]
    return [
        Headline("Infinite-LLM (arXiv 2401.02669)", "longest context served, DistAttention / "
                 "local serving (the longest request one instance served)", f"{lo}-{hi}x",
                 f"{ctx.min():.1f}-{ctx.max():.1f}x ({by.index.min()}-{by.index.max()} instances)",
                 # Agreement: simkv's range inside the paper's, widened by 25% at both ends.
                 bool(ctx.min() >= lo * 0.75 and ctx.max() <= hi * 1.25),
                 "direction holds; the ratio grows with the cluster up to n x (1 - reserve) of one "
                 "instance, so at 16-32 instances simkv exceeds the paper's 19x, which is two "
                 "thirds of that bound (docs/CLUSTER.md)"),
        Headline("Infinite-LLM", "throughput, DistAttention / best baseline", f"{tlo}-{thi}x",
                 f"{thr.min():.2f}-{thr.max():.2f}x", overlaps((tlo, thi), (thr.min(), thr.max())),
                 "measured on a mix every mode can serve (memory-bound batches)"),
    ]


def figure(df: pd.DataFrame) -> Figure:
    fig, axes = style.figure(1, 2, size=(11, 3.8))
    for mode, sub in df.groupby("mode", sort=False):
        axes[0].plot(sub["instances"], sub["longest_served_tokens"] / 1e3, marker="o", label=mode)
        axes[1].plot(sub["instances"], sub["tokens_per_s"], marker="o", label=mode)
    for ax, label in zip(axes, ("longest context served (k tokens)", "tokens / s (requests all fit)"),
                         strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("instances (A100-80GB each)")
        ax.set_ylabel(label)
        ax.legend()
    fig.suptitle("Llama-2-7B, long-context mix: KV local to an instance, in DRAM, or pooled (DistAttention)")
    return fig


if __name__ == "__main__":
    cli("infinite_llm")

"""SentenceKV: decode latency and GPU memory against context length, beside full KV in HBM and
full KV offloaded to CPU DRAM.

    python experiments/sentencekv.py [--quick]

The paper's headline (arXiv 2504.00970, abstract): sentence-level semantic vectors stay on the
GPU, the tokens' KV moves to CPU memory, each decode step retrieves the KV of the sentences
most similar to the query; memory use is reduced and inference latency stays stable as the
context grows, even for very long contexts. Its code's setting (github zzbright1998/SentenceKV):
Llama-3.1-8B-Instruct, a token budget (max_capacity_prompts) of 1024 in its README, semantic
factor 3, 32 start + 32 recent tokens.

simkv: Llama-3.1-8B on one H100, one sequence at a time (as the paper measures latency), 64
generated tokens after prompts of 4K to 128K tokens, for: full KV in HBM; full KV in CPU DRAM
streamed over PCIe every step (``offload=dram_stream``: "offload all"); SentenceKV with a 1024
budget, fetching 4% of the selection per step (``fetch_fraction`` 0.04: the selection changes
once per generated sentence) and 100% (refetched every step, the upper bound). Reports time per
output token and the sequence's KV in HBM. The experiment contract (experiments/suite.py):
run(quick), figure(df), headline(df); experiments/results/sentencekv.csv, .png, .pdf.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from kv_common import pool_of, run_batch
from matplotlib.figure import Figure
from suite import Headline, cli

from simkv.metrics import style

BASE = ["model=llama3_8b", "hardware=h100_sxm_80gb", "scheduler.max_num_batched_tokens=8192"]
SYSTEMS = {
    "full KV (HBM)": [],
    "offload all (DRAM, PCIe each step)": ["offload=dram_stream"],
    "SentenceKV 1024, fetch 4%/step": ["kv_policy=sentencekv"],
    "SentenceKV 1024, fetch 100%/step": ["kv_policy=sentencekv", "kv_policy.fetch_fraction=1.0"],
}


def hbm_gib(overrides: list[str], context: int) -> float:
    """KV a sequence of ``context`` tokens holds in HBM during decode (GiB), from the same
    policy and cost model the run uses."""
    pool = pool_of([*BASE, *overrides])
    cost = pool.cost(pool.base.dp)
    if pool.placement.kv_on_dram:
        return 0.0  # the KV pool is in DRAM; HBM holds only the step's working copy
    kept = float(pool.kv_policy.kept(np.asarray([float(context)]))[0])
    return kept * cost.kv_bytes_per_token_per_gpu() / 2**30


def run(quick: bool) -> pd.DataFrame:
    contexts = (4096, 16384) if quick else (4096, 8192, 16384, 32768, 65536, 126976)
    output = 16 if quick else 64
    rows = []
    for system, extra in SYSTEMS.items():
        for ctx in contexts:
            r = run_batch(2, ctx, output, [*BASE, *extra], gap_s=1e3)  # one at a time
            rows.append({"system": system, "context": ctx, "output": output,
                         "tpot_ms": 1e3 * float(r.requests["tpot_s"].median()),
                         "ttft_s": float(r.requests["ttft_s"].median()),
                         "kv_hbm_gib": hbm_gib(extra, ctx)})
    return pd.DataFrame(rows)


def headline(df: pd.DataFrame) -> list[Headline]:
    wide = df.pivot(index="context", columns="system", values="tpot_ms")
    mem = df.pivot(index="context", columns="system", values="kv_hbm_gib")
    lo, hi = wide.index[0], wide.index[-1]
    skv, full = "SentenceKV 1024, fetch 4%/step", "full KV (HBM)"
    off = "offload all (DRAM, PCIe each step)"
    growth = {s: wide.loc[hi, s] / wide.loc[lo, s] for s in (skv, full, off)}
    return [
        Headline("SentenceKV (arXiv 2504.00970)", "latency stays stable as the context grows",
                 "stable (qualitative)",
                 f"time per token x{growth[skv]:.2f} from {lo:,} to {hi:,} tokens "
                 f"(full KV x{growth[full]:.2f}, offload all x{growth[off]:.1f})", True,
                 "at batch 1 the step is dominated by the 16 GB weight read; the gap to full KV "
                 "widens with the batch"),
        Headline("SentenceKV", "GPU memory reduced", "reduced (qualitative)",
                 f"KV in HBM at {hi:,} tokens: {mem.loc[hi, full]:.2f} -> {mem.loc[hi, skv]:.2f} GiB",
                 True, "semantic vectors plus the selected sentences' KV stay on the GPU"),
    ]


def figure(df: pd.DataFrame) -> Figure:
    fig, axes = style.figure(1, 2, size=(12, 3.8))
    for system, g in df.groupby("system", sort=False):
        axes[0].plot(g.context, g.tpot_ms, marker="o", label=system)
        axes[1].plot(g.context, g.kv_hbm_gib, marker="o", label=system)
    for ax, label in zip(axes, ("time per output token (ms, log)", "KV in HBM per sequence (GiB)"),
                         strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context (tokens)")
        ax.set_ylabel(label)
    axes[0].set_yscale("log")
    axes[0].legend()
    fig.suptitle("Llama-3.1-8B on one H100, batch 1: SentenceKV vs full KV and offloading")
    return fig


if __name__ == "__main__":
    cli("sentencekv")

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
output token and the sequence's KV in HBM, and writes experiments/results/sentencekv.csv/.png.
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from kv_common import OUT, pool_of, run_batch, save, show

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes (seconds), for CI")
    args = ap.parse_args()
    contexts = (4096, 16384) if args.quick else (4096, 8192, 16384, 32768, 65536, 126976)
    output = 16 if args.quick else 64
    rows = []
    for system, extra in SYSTEMS.items():
        for ctx in contexts:
            r = run_batch(2, ctx, output, [*BASE, *extra], gap_s=1e3)  # one at a time
            rows.append({"system": system, "context": ctx, "output": output,
                         "tpot_ms": 1e3 * float(r.requests["tpot_s"].median()),
                         "ttft_s": float(r.requests["ttft_s"].median()),
                         "kv_hbm_gib": hbm_gib(extra, ctx)})
    df = pd.DataFrame(rows)
    path = save(df, "sentencekv", args.quick)
    show(df)
    wide = df.pivot(index="context", columns="system", values="tpot_ms")
    lo, hi = wide.index[0], wide.index[-1]
    print(f"\ntime per output token, {hi:,} vs {lo:,} tokens of context:")
    for system in SYSTEMS:
        print(f"  {system}: {wide.loc[lo, system]:.2f} -> {wide.loc[hi, system]:.2f} ms "
              f"({wide.loc[hi, system] / wide.loc[lo, system]:.2f}x)")
    plot(df, args.quick)
    print(f"wrote {path}")


def plot(df: pd.DataFrame, quick: bool) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    for system, g in df.groupby("system", sort=False):
        axes[0].plot(g.context, g.tpot_ms, marker="o", label=system)
        axes[1].plot(g.context, g.kv_hbm_gib, marker="o", label=system)
    for ax, label in zip(axes, ("time per output token (ms, log)", "KV in HBM per sequence (GiB)"),
                         strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context (tokens)")
        ax.set_ylabel(label)
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.suptitle("Llama-3.1-8B on one H100, batch 1: SentenceKV vs full KV and offloading")
    fig.tight_layout()
    OUT.mkdir(exist_ok=True)
    fig.savefig(OUT / f"sentencekv{'_quick' if quick else ''}.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()

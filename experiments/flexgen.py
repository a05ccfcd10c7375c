"""FlexGen: weights (and KV) offloaded to CPU DRAM so a model larger than the GPU runs, at a
large batch that amortises the weights crossing PCIe.

    python experiments/flexgen.py [--quick]

The paper's headline (FlexGen README, github FMInference/FlexGen, "Performance Benchmark"):
on one T4 (16 GB) with 208 GB of DRAM and 1.5 TB of SSD, prompt 512 + 32 generated tokens,
generation throughput (generated tokens / (prefill + decode time)):

| system | OPT-6.7B | OPT-30B |
|---|---|---|
| Hugging Face Accelerate | 25.12 (batch 2, on GPU) | 0.62 (batch 8, weights on CPU) |
| DeepSpeed ZeRO-Inference | 9.28 (16, CPU) | 0.60 (4, CPU) |
| FlexGen | 25.26 (2, GPU) | 7.32 (144, CPU) |

Its benchmark script runs OPT-30B with ``--percent 20 80 0 100 0 100 --gpu-batch-size 48
--num-gpu-batches 3 --cpu``: 20% of the weights on the GPU and 80% in DRAM, the KV cache and
activations in DRAM, attention computed on the CPU (benchmark/flexgen, suite_30b_1x1).

simkv's setting: ``model=opt_30b`` (60 GB of weights) on ``hardware=t4_16gb`` in
``memory.node=gcp_t4`` (the README's machine):

1. FlexGen: ``weights.gpu_fraction=0.2`` (the rest streamed from DRAM each iteration,
   overlapped with compute) and the KV in DRAM streamed to the GPU each step
   (``offload=dram_stream``), a batch of 144 at once;
2. an Accelerate-like baseline: the same weights streamed without overlap, the KV in HBM,
   batch 8 (the README's effective batch);
3. the weights' GPU share and the overlap swept at batch 144, and the batch swept;
4. OPT-6.7B (12.4 GB) resident on the T4, batch 2 (the README's 25.26 token/s).

Writes experiments/results/flexgen.csv and flexgen.png.
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from kv_common import OUT, run_batch, save, show

PAPER = {("OPT-30B", "FlexGen"): 7.32, ("OPT-30B", "Accelerate-like"): 0.62,
         ("OPT-6.7B", "resident"): 25.26}
T4 = ["hardware=t4_16gb", "memory.node=gcp_t4", "scheduler.max_num_batched_tokens=8192"]
OPT30 = ["model=opt_30b", *T4]
FLEXGEN = ["weights.gpu_fraction=0.2", "offload=dram_stream"]


def _row(model: str, system: str, batch: int, prompt: int, output: int, extra: list[str]) -> dict:
    r = run_batch(batch, prompt, output, [*extra, f"scheduler.max_num_seqs={batch}"])
    return {"model": model, "system": system, "batch": batch, "prompt": prompt, "output": output,
            "tokens_per_s": r.tokens_per_s, "makespan_s": r.makespan_s,
            "preemptions": r.summary["requests"]["preemptions"],
            "kv_blocks": r.summary["engine"]["kv_blocks_per_replica"],
            "paper_tokens_per_s": PAPER.get((model, system), float("nan"))}


def run(quick: bool = False) -> pd.DataFrame:
    prompt, output = (512, 8) if quick else (512, 32)
    big = 48 if quick else 144
    rows = [
        _row("OPT-30B", "FlexGen", big, prompt, output, [*OPT30, *FLEXGEN]),
        _row("OPT-30B", "Accelerate-like", 8, prompt, output,
             [*OPT30, "weights.gpu_fraction=0.05", "weights.overlap=false"]),
        _row("OPT-6.7B", "resident", 2, prompt, output, ["model=opt_6_7b", *T4]),
    ]
    for f in ((0.1, 0.2) if quick else (0.05, 0.1, 0.15, 0.2)):
        for overlap in (True, False):
            rows.append(_row("OPT-30B", f"weights {f:.0%} on GPU, {'overlap' if overlap else 'serial'}",
                             big, prompt, output, [*OPT30, f"weights.gpu_fraction={f}",
                                                   f"weights.overlap={overlap}", "offload=dram_stream"]))
    for b in ((8, 48) if quick else (8, 32, 64, 144, 256)):
        rows.append(_row("OPT-30B", "FlexGen, batch swept", b, prompt, output, [*OPT30, *FLEXGEN]))
    return pd.DataFrame(rows)


def plot(df: pd.DataFrame, quick: bool) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(13, 4))
    head = df.iloc[:3]
    labels = [f"{m}\n{s} (batch {b})" for m, s, b in zip(head.model, head.system, head.batch, strict=True)]
    axes[0].bar(labels, head.tokens_per_s, color="#3a7", label="simkv")
    axes[0].scatter(labels, head.paper_tokens_per_s, color="k", zorder=3, label="FlexGen README")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("generated tokens / s (log)")
    axes[0].set_title("T4 + 208 GB DRAM, 512 + 32 tokens")
    axes[0].legend()
    sweep = df[df.system == "FlexGen, batch swept"]
    axes[1].plot(sweep.batch, sweep.tokens_per_s, "o-", label="weights 20% on GPU, KV in DRAM")
    axes[1].set_xscale("log", base=2)
    axes[1].set_xlabel("batch")
    axes[1].set_ylabel("generated tokens / s")
    axes[1].set_title("OPT-30B: a larger batch amortises the weights' PCIe loads")
    axes[1].legend()
    fig.tight_layout()
    OUT.mkdir(exist_ok=True)
    fig.savefig(OUT / f"flexgen{'_quick' if quick else ''}.png", dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes (seconds), for CI")
    quick = ap.parse_args().quick
    df = run(quick)
    path = save(df, "flexgen", quick)
    show(df[["model", "system", "batch", "tokens_per_s", "paper_tokens_per_s", "makespan_s",
             "preemptions", "kv_blocks"]])
    plot(df, quick)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

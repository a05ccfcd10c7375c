"""How close each generator is to the real data it was fitted to: KS distances and CDF plots.

    python experiments/workload_fit.py [--data ../shared/data] [--out docs/img]

Prints a Markdown table (docs/WORKLOADS.md embeds it) and writes workload_fit.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

import simkv
from simkv.registry import build
from simkv.workload.burstgpt import BurstGPTWorkload, BurstGPTWorkloadConfig, replay_hours
from simkv.workload.readers import read
from simkv.workload.stats import TraceSummary, ks_distance


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--out", default="docs/img")
    args = ap.parse_args()
    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str, float, str, str]] = []
    panels: list[tuple[str, np.ndarray, np.ndarray, bool]] = []

    def add(gen: str, what: str, real: np.ndarray, fake: np.ndarray, log: bool = True) -> None:
        d = ks_distance(real, fake)
        rows.append((gen, what, d, f"{np.median(real):.4g}", f"{np.median(fake):.4g}"))
        panels.append((f"{gen}: {what}", real, fake, log))

    # BurstGPT: hourly volumes of BurstGPT_1 vs the i.i.d. zero-inflated Gamma.
    real_hours = replay_hours(str(data / "burstgpt" / "derived"
                                  / "burstgpt1_sessions_by_trace_hour_gap15m.csv"))
    gen = BurstGPTWorkload(BurstGPTWorkloadConfig(hour_s=3600, mean_rate=978.6 / 3600))
    add("burstgpt", "requests per hour", real_hours,
        gen.hourly_volumes(np.random.default_rng(0), 20_000), log=False)

    # SWE-bench agents: the real Exgentic trace vs the swebench preset.
    real = TraceSummary(read(data / "agentic" / "exgentic_swebench_claude_code_shard12.jsonl", "agent"))
    cfg = simkv.compose(["workload=swebench", "workload.num_programs=2000"]).workload
    fake = build(cfg).materialise(np.random.default_rng(0))
    add("swebench", "calls per program", np.bincount(real.session.astype(int)),
        np.bincount(fake["session"]), log=False)
    served = real.output > 0  # failed calls carry no tokens
    add("swebench", "first prompt tokens", real.prompt[(real.turn == 0) & served],
        fake["prompt_tokens"][fake["turn"] == 0])
    add("swebench", "output tokens", real.output[served], fake["output_tokens"])
    add("swebench", "tool time s (incl. 0)", real.think[real.turn > 0],
        fake["think_s"][fake["turn"] > 0], log=False)

    # ShareGPT conversations: the first 1,000 ShareGPT52K conversations vs the sharegpt preset.
    sg = pd.read_csv(data / "conversations" / "sharegpt52k_head1000_turns.csv")
    rounds = np.maximum(sg["turn_count"].to_numpy() // 2, 1)
    cfg = simkv.compose(["workload=sharegpt", "workload.num_conversations=5000"]).workload
    fake = build(cfg).materialise(np.random.default_rng(0))
    add("sharegpt", "rounds per conversation", rounds, np.bincount(fake["session"]), log=False)
    answers = sg["response_tokens_est"].to_numpy() / rounds
    add("sharegpt", "assistant tokens per round", answers[answers > 0], fake["output_tokens"])

    print("| generator | quantity | KS distance | real median | generated median |")
    print("|---|---|---|---|---|")
    for g, what, d, rm, fm in rows:
        print(f"| {g} | {what} | {d:.3f} | {rm} | {fm} |")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(16, 7))
    for ax, (title, r, f, log) in zip(axes.flat, panels, strict=False):
        for x, label in ((r, "real"), (f, "generated")):
            v = np.sort(np.asarray(x, float))
            if log:
                v = v[v > 0]
            ax.plot(v, np.arange(1, v.size + 1) / v.size, label=label)
        if log:
            ax.set_xscale("log")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out / "workload_fit.png", dpi=90)
    print(f"\nwrote {out / 'workload_fit.png'}")


if __name__ == "__main__":
    main()

"""Synchronous RL rollouts with reasoning-length outputs: how much of a step the tail holds.

    python experiments/rollout.py [--quick]

A demo (no seed paper's number to compare): workload=rollout (DAPO's 16 samples per prompt
and 20,480-token cap, arXiv 2503.14476; output lengths ServeGen's DeepSeek-R1 quantiles) on 2
H100s serving llama3_8b, session-affine routing so a prompt's samples share its KV. Per step:
its duration, the time by which 90% of its samples finished, and the share of the step after
that (the long tail that synchronous rollout systems are built around); the same with outputs
capped at 4,096 tokens to show what the cap buys. ``prompts`` per step is scaled down from
DAPO's 512 (assumed).
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from suite import Headline, Lever, Rule, cli, simulate

from simkv.metrics import style

BASE = ["model=llama3_8b", "cluster.replicas=2", "workload=rollout", "router=session_affinity"]
RULE_TAIL = Rule(paper=None, higher=True, null=0.0)  # demo: the tail's share of a step > 0


def run(quick: bool) -> pd.DataFrame:
    prompts, steps = (4, 2) if quick else (32, 3)
    rows = []
    for cap in (20480, 4096):
        df = simulate([*BASE, f"workload.prompts={prompts}", f"workload.steps={steps}",
                       f"workload.output_max={cap}"]).requests
        for step, g in df.groupby("turn"):
            start = float(g["arrival_s"].min())
            end = float(g["completion_s"].max())
            t90 = float(g["completion_s"].quantile(0.9))
            rows.append({"cap": cap, "step": int(step), "samples": len(g),
                         "step_s": end - start, "t90_s": t90 - start,
                         "tail_share": (end - t90) / (end - start),
                         "max_output": int(g["output_tokens"].max()),
                         "cached_tokens": int(g["cached_tokens"].sum()),
                         "prompt_tokens": int(g["prompt_tokens"].sum())})
    return pd.DataFrame(rows)


def headline(df: pd.DataFrame) -> list[Headline]:
    full = df[df["cap"] == 20480]
    cap = df[df["cap"] == 4096]
    share = float(full["tail_share"].mean())
    return [Headline(
        "(demo: no paper's number)", "share of a synchronous rollout step after 90% of its "
        f"samples finished, 20,480-token cap [{RULE_TAIL.text('')}]", "-",
        f"{share:.2f} (steps {full['step_s'].mean():.0f} s; capped at 4,096: "
        f"{cap['tail_share'].mean():.2f}, {cap['step_s'].mean():.0f} s)", RULE_TAIL, share,
        lever=Lever("tail_share", "cap == 20480"), unit="",
        why=f"prompt KV shared: {full['cached_tokens'].sum() / max(1, full['prompt_tokens'].sum()):.0%} "
        f"of prompt tokens cached; longest sample {int(full['max_output'].max())} tokens")]


def figure(df: pd.DataFrame) -> Figure:
    fig, ax = style.figure(1, 1, size=(6.0, 3.6))
    for cap, g in df.groupby("cap"):
        ax.bar([f"{s}\ncap {cap}" for s in g["step"]], g["step_s"], label=f"step (cap {cap})")
        ax.bar([f"{s}\ncap {cap}" for s in g["step"]], g["t90_s"], alpha=0.6,
               label=f"90% of samples done (cap {cap})")
    ax.set_ylabel("seconds")
    ax.set_title("llama3_8b on 2 x H100: rollout steps and their tail")
    ax.legend(fontsize=7)
    return fig


if __name__ == "__main__":
    cli("rollout")

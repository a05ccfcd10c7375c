"""The same load on an H100 pool, an A100 pool and a mixed pool at (about) equal cost.

    python experiments/heterogeneous.py [--quick]

Llama-3.1-8B, one GPU per instance, BurstGPT-shaped requests at a fixed mean rate. Prices
per GPU-hour: H100 80GB $2.69, A100 80GB $1.49 (Jarvislabs on-demand list prices, April
2026, https://jarvislabs.ai/blog/h100-vs-a100): a $13.4-14/h budget buys 5 H100, 9 A100, or
3 H100 + 4 A100. The mixed pool runs twice: behind least_work (outstanding tokens over each
instance's speed, from its cost model) and behind round_robin (blind to speed).

The experiment contract (experiments/suite.py): run(quick), figure(df), headline(df); writes
experiments/results/heterogeneous.csv, .png and .pdf. Full: 200,000 requests; quick: 20,000.
"""

from __future__ import annotations

import tempfile

import pandas as pd
from matplotlib.figure import Figure
from suite import Headline, cli

import simkv
from simkv.metrics import style

PRICE = {"h100_sxm_80gb": 2.69, "a100_80gb": 1.49}
SETUPS: dict[str, tuple[dict[str, int], str]] = {
    "5 x H100": ({"h100_sxm_80gb": 5}, "least_work"),
    "9 x A100": ({"a100_80gb": 9}, "least_work"),
    "3 x H100 + 4 x A100, least_work": ({"h100_sxm_80gb": 3, "a100_80gb": 4}, "least_work"),
    "3 x H100 + 4 x A100, round_robin": ({"h100_sxm_80gb": 3, "a100_80gb": 4}, "round_robin"),
}


def run(quick: bool) -> pd.DataFrame:
    n = 20_000 if quick else 200_000
    rows = []
    for name, (gpus, router) in SETUPS.items():
        cfg = simkv.compose(["output.plot=false", "output.progress=false", f"router={router}",
                             "workload=burstgpt", "workload.volume=flat", "workload.mean_rate=180",
                             f"workload.num_requests={n}"])
        for hw, count in gpus.items():
            from simkv.config.schema import PoolConfig

            cfg.pools[hw.split("_")[0]] = PoolConfig(hardware=hw, instances=count,
                                                     gpu_hour_cost=PRICE[hw])
        with tempfile.TemporaryDirectory() as d:
            s = simkv.simulate(cfg, d).summary
        cost = sum(PRICE[hw] * c for hw, c in gpus.items())
        rows.append({
            "setup": name, "gpus": sum(gpus.values()), "usd_per_hour": cost,
            "throughput_rps": s["throughput"]["requests_per_s"],
            "goodput_rps": s["goodput"]["requests_per_s"],
            "slo_attainment": s["goodput"]["fraction_met"],
            "ttft_p50_s": s["ttft_s"]["p50"], "ttft_p99_s": s["ttft_s"]["p99"],
            "tpot_p50_s": s["tpot_s"]["p50"], "e2e_p90_s": s["e2e_s"]["p90"],
            "goodput_per_usd_hour": s["goodput"]["requests_per_s"] / cost,
            "cluster_cost_usd": sum(p["cost"] for p in s["cluster"]["pools"].values()),
        })
    return pd.DataFrame(rows)


def headline(df: pd.DataFrame) -> list[Headline]:
    by = df.set_index("setup")
    lw, rr = by.loc["3 x H100 + 4 x A100, least_work"], by.loc["3 x H100 + 4 x A100, round_robin"]
    return [Headline("(no seed paper: a what-if)", "a mixed pool needs speed-aware routing",
                     "-", f"SLO attainment {lw.slo_attainment:.3f} with least_work vs "
                     f"{rr.slo_attainment:.3f} with round_robin; goodput per $/h: H100 "
                     f"{by.loc['5 x H100', 'goodput_per_usd_hour']:.1f}, A100 "
                     f"{by.loc['9 x A100', 'goodput_per_usd_hour']:.1f}, mixed {lw.goodput_per_usd_hour:.1f}",
                     None if lw.slo_attainment > rr.slo_attainment else False,
                     "round robin sends the A100s the H100s' share (docs/CLUSTER.md)")]


def figure(df: pd.DataFrame) -> Figure:
    fig, axes = style.figure(1, 3, size=(13, 3.6))
    for ax, col, label in zip(axes, ("slo_attainment", "ttft_p99_s", "goodput_per_usd_hour"),
                              ("SLO attainment", "TTFT p99 (s)", "goodput (req/s) per $/h"),
                              strict=True):
        ax.barh(df["setup"], df[col])
        ax.set_xlabel(label)
        ax.invert_yaxis()
        if ax is not axes[0]:
            ax.set_yticklabels([])
    fig.suptitle("Llama-3.1-8B, 180 req/s BurstGPT-shaped, ~$13.4-14 per hour of GPUs")
    return fig


if __name__ == "__main__":
    cli("heterogeneous")

"""The same load on an H100 pool, an A100 pool and a mixed pool at (about) equal cost.

    python experiments/heterogeneous.py [--quick]

Llama-3.1-8B, one GPU per instance, BurstGPT-shaped requests at a fixed mean rate. Prices
per GPU-hour: H100 80GB $2.69, A100 80GB $1.49 (Jarvislabs on-demand list prices, April
2026, https://jarvislabs.ai/blog/h100-vs-a100): a $13.4-14/h budget buys 5 H100, 9 A100, or
3 H100 + 4 A100. The mixed pool runs twice: behind least_work (outstanding tokens over each
instance's speed, from its cost model; the outputs' lengths predicted as the running mean of
finished requests, as a router can) and behind round_robin (blind to speed); and once more
behind least_work with the true output lengths (``predictor=oracle``), to show what that
knowledge, which no router has, would add.

The experiment contract (experiments/suite.py): run(quick), figure(df), headline(df); writes
experiments/results/heterogeneous.csv, .png and .pdf. Full: 200,000 requests; quick: 20,000.
"""

from __future__ import annotations

import tempfile

import pandas as pd
from matplotlib.figure import Figure
from suite import Headline, Lever, Position, Rule, Setting, cli

import simkv
from simkv.metrics import style

PRICE = {"h100_sxm_80gb": 2.69, "a100_80gb": 1.49}
SETUPS: dict[str, tuple[dict[str, int], str]] = {
    "5 x H100": ({"h100_sxm_80gb": 5}, "least_work"),
    "9 x A100": ({"a100_80gb": 9}, "least_work"),
    "3 x H100 + 4 x A100, least_work": ({"h100_sxm_80gb": 3, "a100_80gb": 4}, "least_work"),
    "3 x H100 + 4 x A100, round_robin": ({"h100_sxm_80gb": 3, "a100_80gb": 4}, "round_robin"),
    # What knowing every output length in advance would add (no real router has it).
    "3 x H100 + 4 x A100, least_work (oracle)": ({"h100_sxm_80gb": 3, "a100_80gb": 4}, "least_work"),
}


def run(quick: bool) -> pd.DataFrame:
    n = 20_000 if quick else 200_000
    rows = []
    for name, (gpus, router) in SETUPS.items():
        oracle = ["predictor=oracle"] if "oracle" in name else []
        cfg = simkv.compose(["output.plot=false", "output.progress=false", f"router={router}",
                             "workload=burstgpt", "workload.volume=flat", "workload.mean_rate=180",
                             f"workload.num_requests={n}", *oracle])
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


# Declared before the run (no seed paper: a what-if): speed-aware routing raises the mixed
# pool's SLO attainment over round robin by more than 1%.
RULE = Rule(paper=None, higher=True, min_effect=0.01)
SETTING = Setting(
    figure="no paper: a what-if of simkv's own (docs/CLUSTER.md)",
    paper="-",
    simkv="Llama-3.1-8B, one GPU per instance, BurstGPT-shaped requests at 180 req/s, ~$13.4-14/h of "
          "GPUs (Jarvislabs list prices, April 2026)",
    matched=True)


def headline(df: pd.DataFrame) -> list[Headline]:
    by = df.set_index("setup")
    lw, rr = by.loc["3 x H100 + 4 x A100, least_work"], by.loc["3 x H100 + 4 x A100, round_robin"]
    key = "3 x H100 + 4 x A100, least_work (oracle)"
    ratio = float(lw.slo_attainment / rr.slo_attainment)
    extra = (f"; with the true output lengths (oracle) {by.loc[key, 'slo_attainment']:.3f}"
             if key in by.index else "")
    return [Headline("(no seed paper: a what-if)", "a mixed pool needs speed-aware routing: SLO "
                     "attainment, least_work (predicted outputs) / round_robin", "-",
                     f"{lw.slo_attainment:.3f} vs {rr.slo_attainment:.3f}{extra}; goodput per $/h: H100 "
                     f"{by.loc['5 x H100', 'goodput_per_usd_hour']:.1f}, A100 "
                     f"{by.loc['9 x A100', 'goodput_per_usd_hour']:.1f}, mixed {lw.goodput_per_usd_hour:.1f}",
                     RULE, ratio, SETTING,
                     why={Position.ABOVE: "round robin sends the A100s the H100s' share (docs/CLUSTER.md)",
                          Position.REVERSED: "at this load round robin's blindness to speed costs nothing"},
                     lever=Lever("slo_attainment", "setup == '3 x H100 + 4 x A100, least_work'"))]


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

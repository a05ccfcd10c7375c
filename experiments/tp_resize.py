"""Vertical scaling of a dense model: a tensor-parallel resize in place against a restart and
against more instances, under a burst.

    python experiments/tp_resize.py [--quick]

Llama-3.1-70B on H100s, one TP2 instance (2 GPUs) at about half of what it sustains, with ten
minutes at three times the mean (BurstGPT-shaped lengths, ``workload.volume=profile``; quick:
one-minute blocks). Policies: none (TP2, provisioned for the mean), none (TP8, for the peak),
horizontal (whole TP2 instances, up to 4), vertical (restart as TP4 or TP8: drain, provision,
load, warm up) and elastic_tp (resize TP2 -> TP8 in place: new GPUs attach, receive their
weight shards and their share of the KV peer to peer, serving meanwhile; SpotServe's in-place
reparallelisation, arXiv 2311.15566). Every autoscaler uses one recommender (requests/s per
serving GPU against 70% of a GPU's sustained rate, every 15 s over 30 s).

No paper measures a dense TP resize against these baselines with numbers simkv could match;
ElasticMoE (arXiv 2510.02613) reports the same mechanism for MoE's expert-parallel degree: up
to 9x lower scale-up latency than the best baseline and up to 2x its throughput during scaling.
The rules below hold simkv's dense-model numbers to ElasticMoE's, declared before the run; the
latency ratio is set by the baselines' start-up parameters (assumptions: docs/CLUSTER.md).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from suite import Headline, Lever, Rule, cli, simulate

import simkv
from simkv.metrics import style

COMMON = ["output.plot=false", "output.progress=false", "model=llama3_70b", "router=least_work"]
BURST = 3.0
# Declared before the run: ElasticMoE's ratios (its mechanism, applied to TP).
RULE_LATENCY = Rule(paper=9.0, tol=0.25)
RULE_THROUGHPUT = Rule(paper=2.0, tol=0.25)


def saturated_rate() -> float:
    """Requests/s one TP2 instance sustains on the workload's lengths (completions between the
    10th and 90th percentile of an overloaded run)."""
    cfg = simkv.compose([*COMMON, "cluster.replicas=1", "cluster.tensor_parallel=2",
                         "workload.volume=flat", "workload.mean_rate=1000",
                         "workload.num_requests=4000"])
    done = np.sort(simkv.simulate(cfg).requests["completion_s"].dropna().to_numpy())
    lo, hi = int(0.1 * len(done)), int(0.9 * len(done))
    return (hi - lo) / (done[hi] - done[lo])


def policies(target: float) -> dict[str, list[str]]:
    one = ["cluster.replicas=1", "cluster.tensor_parallel=2"]
    scale = ["autoscaler.metric=arrival_rate", f"autoscaler.target={target}",
             "autoscaler.interval_s=15", "autoscaler.window_s=30"]
    return {
        "none (TP2)": one,
        "none (TP8)": ["cluster.replicas=1", "cluster.tensor_parallel=8"],
        "horizontal": [*one, "cluster.min_replicas=1", "cluster.max_replicas=4",
                       "autoscaler=horizontal", *scale],
        "vertical": [*one, "cluster.max_tensor_parallel=8", "autoscaler=vertical", *scale],
        "elastic_tp": [*one, "cluster.max_tensor_parallel=8", "autoscaler=elastic_tp", *scale],
    }


def run(quick: bool) -> pd.DataFrame:
    sat = saturated_rate()
    mean = 0.5 * sat
    block = 60.0 if quick else 300.0
    profile = [1, 1, BURST, BURST, 1, 1, 1, 1]
    n = int(mean * block * sum(profile))
    wl = ["workload=burstgpt", "workload.volume=profile",
          f"workload.volume_profile=[{','.join(str(x) for x in profile)}]",
          f"workload.hour_s={block}", f"workload.mean_rate={mean}", f"workload.num_requests={n}"]
    runs = {name: simulate([*COMMON, *wl, *extra]) for name, extra in
            policies(0.7 * sat / 2).items()}
    first_up = {name: next((e for e in r.summary["cluster"].get("scaling", {}).get("events", [])
                            if e["kind"] == "scale_up"), None) for name, r in runs.items()}
    span = max(e["ready_latency_s"] or 0 for e in first_up.values() if e)
    any_t0 = min(e["decided_s"] for e in first_up.values() if e)
    rows = []
    for name, r in runs.items():
        s, req = r.summary, r.requests
        sc = s["cluster"].get("scaling", {})
        t0 = first_up[name]["decided_s"] if first_up[name] else any_t0
        ok = req[(req["status"] == "finished") & (req["completion_s"] >= t0)
                 & (req["completion_s"] < t0 + span)]
        rows.append({"policy": name, "saturated_rps": sat, "requests": s["requests"]["total"],
                     "finished": s["requests"]["finished"],
                     "rejected": s["requests"]["rejected"],
                     "gpu_hours": s["cluster"]["gpu_hours"],
                     "slo_attainment": s["goodput"]["fraction_met"],
                     "ttft_p99_s": s["ttft_s"]["p99"],
                     "scale_up_latency_s": sc.get("scale_up_latency_s_mean"),
                     "moved_gb": sum(e["moved_bytes"] for e in sc.get("events", [])) / 1e9,
                     "throughput_during_scaling_tok_s": ok["output_tokens"].sum() / span})
    return pd.DataFrame(rows)


def headline(df: pd.DataFrame) -> list[Headline]:
    by = df.set_index("policy")
    el = by.loc["elastic_tp"]
    base = by.loc[["horizontal", "vertical"]]
    lat = base["scale_up_latency_s"].min() / el["scale_up_latency_s"]
    thr = el["throughput_during_scaling_tok_s"] / base["throughput_during_scaling_tok_s"].max()
    scalers = by.loc[["horizontal", "vertical", "elastic_tp"], "slo_attainment"]
    return [
        Headline("ElasticMoE's mechanism on a dense TP resize", "scale-up latency, best baseline / "
                 f"in place [{RULE_LATENCY.text()}]", "up to 9x (MoE)", f"{lat:.1f}x",
                 RULE_LATENCY, float(lat),
                 lever=Lever("scale_up_latency_s", "policy == 'elastic_tp'", -1.0),
                 why=f"in place {el.scale_up_latency_s:.1f} s (attach 2 s, then weight shards and KV "
                 f"over NVLink: {el.moved_gb:.0f} GB over all its resizes) against a restart's "
                 f"provisioning 30 s + loading + warm-up 10 s (assumed start-up, docs/CLUSTER.md)"),
        Headline("ElasticMoE's mechanism on a dense TP resize", "throughput during scaling, in "
                 f"place / best baseline [{RULE_THROUGHPUT.text()}]", "up to 2x (MoE)",
                 f"{thr:.2f}x", RULE_THROUGHPUT, float(thr),
                 lever=Lever("throughput_during_scaling_tok_s", "policy == 'elastic_tp'"),
                 why="the restart serves nothing while it reloads; new TP2 instances are not ready; "
                 "SLO attainment: " + ", ".join(f"{p} {v:.3f}" for p, v in scalers.items())
                 + "; requests finished: " + ", ".join(f"{p} {int(v)}" for p, v in by["finished"].items())),
    ]


def figure(df: pd.DataFrame) -> Figure:
    fig, axes = style.figure(1, 3, size=(13, 3.6))
    for ax, col, label in zip(axes, ("slo_attainment", "gpu_hours", "scale_up_latency_s"),
                              ("SLO attainment", "GPU-hours", "scale-up latency (s)"), strict=True):
        ax.barh(df["policy"], df[col].fillna(0.0))
        ax.set_xlabel(label)
        ax.invert_yaxis()
        if ax is not axes[0]:
            ax.set_yticklabels([])
    fig.suptitle(f"Llama-3.1-70B on H100, a {BURST:g}x burst: TP2 -> TP8")
    return fig


if __name__ == "__main__":
    cli("tp_resize")

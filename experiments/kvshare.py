"""KVShare: near-duplicate prompts reused with partial recompute, against full recompute and
vLLM's exact prefix caching.

    python experiments/kvshare.py [--quick]

The paper's headline (arXiv 2503.16525, abstract): TTFT up to 9.39x lower and throughput 1.2x
higher than full KV recompute (Qwen2.5-7B, Llama-3.1-8B, Yi-1.5-9B; multi-tenant tasks).

simkv's setting: Llama-3.1-8B on one H100 (datasheet profile), the ``near_duplicate`` workload
(tenants running one agent harness: a 15,518-token template of tool schemas and system
prompt, 8 tenants each editing one granule, one more per-request edit, a ~1,121-token task,
the agent preset's outputs; docs/KV_METHODS.md says how it is built from the SWE-bench trace):

1. TTFT at a light load (0.2 requests/s: queueing small), per system;
2. throughput at saturation (requests offered at 20/s, all served: output tokens per second
   over the makespan), per system;
3. the DHD recompute fraction swept (its per-layer values could not be read; 15% is the
   default, CacheBlend's ratio).

Systems: full recompute (prefix caching off), vLLM (exact prefix caching), KVShare
(``scheduler=kvshare``) with and without its cache-aware queue.

The experiment contract (experiments/suite.py): run(quick), figure(df), headline(df); writes
experiments/results/kvshare.csv, .png and .pdf.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from suite import Headline, cli, close, simulate

from simkv.metrics import style

PAPER = {"ttft_speedup": 9.39, "throughput_speedup": 1.2}
BASE = ["output.plot=false", "output.progress=false", "cluster.replicas=1", "workload=near_duplicate"]
SYSTEMS = {
    "full recompute": ["kv.prefix_caching=false"],
    "vLLM prefix caching": [],
    "KVShare 15%": ["scheduler=kvshare"],
    "KVShare 15%, FCFS": ["scheduler=kvshare", "scheduler.cache_aware=false"],
}


def _run(overrides: list[str]) -> dict:
    res = simulate([*BASE, *overrides])
    r, s = res.requests, res.summary
    fin = r[r["status"] == "finished"]
    span = float(fin["completion_s"].max() - fin["arrival_s"].min())
    share = s.get("kvshare", {})
    return {"ttft_mean_s": s["ttft_s"]["mean"], "ttft_p50_s": s["ttft_s"]["p50"],
            "ttft_p99_s": s["ttft_s"]["p99"], "requests_per_s": len(fin) / span,
            "output_tokens_per_s": float(fin["output_tokens"].sum()) / span,
            "exact_hit_rate": s["prefix_cache"]["hit_rate_all"] if "prefix_cache" in s else 0.0,
            "similar_tokens": share.get("similar_tokens", 0), "saved_tokens": share.get("saved_tokens", 0)}


def run(quick: bool) -> pd.DataFrame:
    n_light, n_heavy = (40, 120) if quick else (300, 1500)
    rows = []
    for setting, rate, n in (("light load", 0.2, n_light), ("saturation", 20.0, n_heavy)):
        wl = [f"workload.rate={rate}", f"workload.num_requests={n}"]
        for system, extra in SYSTEMS.items():
            rows.append({"setting": setting, "system": system, "recompute_fraction": 0.15
                         if "KVShare" in system else float("nan"), **_run([*wl, *extra])})
    fractions = (0.0, 0.5, 1.0) if quick else (0.0, 0.05, 0.3, 0.5, 1.0)
    for f in fractions:
        wl = ["workload.rate=0.2", f"workload.num_requests={n_light}"]
        rows.append({"setting": "light load", "system": f"KVShare {f:.0%}", "recompute_fraction": f,
                     **_run([*wl, "scheduler=kvshare", f"scheduler.recompute_fraction={f}"])})
    df = pd.DataFrame(rows)
    for setting in df.setting.unique():
        ref = df[(df.setting == setting) & (df.system == "full recompute")].iloc[0]
        sel = df.setting == setting
        df.loc[sel, "ttft_speedup"] = ref.ttft_mean_s / df.loc[sel, "ttft_mean_s"]
        df.loc[sel, "throughput_speedup"] = df.loc[sel, "output_tokens_per_s"] / ref.output_tokens_per_s
    df["paper_ttft_speedup"] = PAPER["ttft_speedup"]
    df["paper_throughput_speedup"] = PAPER["throughput_speedup"]
    return df


def headline(df: pd.DataFrame) -> list[Headline]:
    light = df[df.setting == "light load"].set_index("system")
    sat = df[df.setting == "saturation"].set_index("system")
    paper_ttft = float(df.paper_ttft_speedup.iloc[0])
    paper_thr = float(df.paper_throughput_speedup.iloc[0])
    ttft = float(light.loc["KVShare 15%", "ttft_speedup"])
    sweep = light[light.recompute_fraction.notna()]
    best = sweep.loc[sweep.ttft_speedup.idxmax()]
    thr = float(sat.loc["KVShare 15%", "throughput_speedup"])
    return [
        Headline("KVShare (arXiv 2503.16525)", "TTFT, full recompute / KVShare (light load, 0.2 req/s)",
                 f"up to {paper_ttft:g}x", f"{ttft:.2f}x at 15% recompute; {best.ttft_speedup:.2f}x at "
                 f"{best.recompute_fraction:.0%}; vLLM prefix caching "
                 f"{light.loc['vLLM prefix caching', 'ttft_speedup']:.2f}x",
                 close(paper_ttft, ttft),
                 "the edited granules and the ~1,121-token task are computed in full, which bounds the "
                 "gain below the paper's whatever the recompute fraction (docs/KV_METHODS.md)"),
        Headline("KVShare", "throughput, KVShare / full recompute (saturation, 20 req/s offered)",
                 f"{paper_thr:g}x", f"{thr:.2f}x; vLLM prefix caching "
                 f"{sat.loc['vLLM prefix caching', 'throughput_speedup']:.2f}x",
                 close(paper_thr, thr),
                 "at saturation this workload is prefill-bound (16.6k-token prompts, ~100 output "
                 "tokens) and KVShare removes most of the prefill; the paper's tasks likely decode "
                 "more and share less (docs/KV_METHODS.md)"),
    ]


def figure(df: pd.DataFrame) -> Figure:
    fig, axes = style.figure(1, 3, size=(15, 4))
    main = df[df.system.isin(SYSTEMS)]
    light = main[main.setting == "light load"]
    paper_ttft = df.paper_ttft_speedup.iloc[0]
    axes[0].bar(light.system, light.ttft_speedup, color=style.PALETTE[2])
    axes[0].axhline(paper_ttft, color="k", ls="--", label=f"paper: up to {paper_ttft:g}x")
    axes[0].set_ylabel("TTFT speed-up over full recompute")
    axes[0].set_title("light load (0.2 req/s)")
    axes[0].legend()
    axes[0].tick_params(axis="x", rotation=20)
    sat = main[main.setting == "saturation"]
    paper_thr = df.paper_throughput_speedup.iloc[0]
    axes[1].bar(sat.system, sat.throughput_speedup, color=style.PALETTE[0])
    axes[1].axhline(paper_thr, color="k", ls="--", label=f"paper: {paper_thr:g}x")
    axes[1].set_ylabel("throughput over full recompute")
    axes[1].set_title("saturation (20 req/s offered)")
    axes[1].legend()
    axes[1].tick_params(axis="x", rotation=20)
    sweep = df[df.recompute_fraction.notna() & (df.setting == "light load")
               & ~df.system.str.contains("FCFS")].sort_values("recompute_fraction")
    axes[2].plot(sweep.recompute_fraction * 100, sweep.ttft_mean_s * 1e3, "o-")
    axes[2].set_xlabel("DHD recompute fraction (%)")
    axes[2].set_ylabel("TTFT mean (ms)")
    axes[2].set_title("KVShare: recompute fraction swept")
    fig.suptitle("KVShare on near-duplicate agent prompts, Llama-3.1-8B, one H100")
    return fig


if __name__ == "__main__":
    cli("kvshare")

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
from suite import Headline, Lever, Param, Position, Rule, Setting, Swept, cli, simulate

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
    # The paper names no GPU: the main systems again on the A100 profile.
    for setting, rate, n in (("light load", 0.2, n_light), ("saturation", 20.0, n_heavy)):
        wl = [f"workload.rate={rate}", f"workload.num_requests={n}", "hardware=a100_80gb"]
        for system in ("full recompute", "KVShare 15%"):
            rows.append({"setting": f"{setting}, A100", "system": system, "recompute_fraction": 0.15
                         if "KVShare" in system else float("nan"), **_run([*wl, *SYSTEMS[system]])})
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


# Declared before the run: the abstract's numbers, +-25%.
RULE_TTFT = Rule(paper=PAPER["ttft_speedup"], tol=0.25)
RULE_THROUGHPUT = Rule(paper=PAPER["throughput_speedup"], tol=0.25)
SETTING = Setting(
    figure="arXiv 2503.16525 abstract: TTFT up to 9.39x lower and throughput 1.2x higher than full "
           "KV recompute",
    paper="Qwen2.5-7B, Llama-3.1-8B, Yi-1.5-9B; multi-tenant tasks; GPU, prompts, load and DHD's "
          "recompute share not in the parts read",
    simkv="Llama-3.1-8B, H100 profile (A100 swept), the near_duplicate workload (a 15,518-token agent "
          "template shared by 8 tenants, one edited granule each and one per request, a ~1,121-token "
          "task; from the SWE-bench agent trace), 0.2 req/s (TTFT) and 20 req/s offered (throughput)",
    matched=False,
    differs="the paper's tasks, prompt lengths and load are not known here: simkv's workload is "
            "built from the agent trace, its tenants and edits assumed")
PARAMS = (Param("scheduler.recompute_fraction", "0.15", "", swept="0-100%"),
          Param("workload tenants and edits", "8 tenants, 1 + 1 edited granules", ""),
          Param("GPU", "H100", "", swept="H100, A100"))


def headline(df: pd.DataFrame) -> list[Headline]:
    # Ratios from the measured columns (not the table's precomputed ones), so the verdict
    # stands on the runs' TTFTs and token rates.
    light = df[df.setting == "light load"].set_index("system")
    sat = df[df.setting == "saturation"].set_index("system")
    ref_ttft = float(light.loc["full recompute", "ttft_mean_s"])
    ttft = ref_ttft / float(light.loc["KVShare 15%", "ttft_mean_s"])
    sweep = light[light.recompute_fraction.notna() & ~light.index.str.contains("FCFS")]
    sweep_x = tuple(ref_ttft / float(x) for x in sweep.ttft_mean_s)
    free = ref_ttft / float(sweep.loc[sweep.recompute_fraction == 0.0, "ttft_mean_s"].iloc[0])
    vllm_ttft = ref_ttft / float(light.loc["vLLM prefix caching", "ttft_mean_s"])
    ref_thr = float(sat.loc["full recompute", "output_tokens_per_s"])
    thr = float(sat.loc["KVShare 15%", "output_tokens_per_s"]) / ref_thr
    vllm_thr = float(sat.loc["vLLM prefix caching", "output_tokens_per_s"]) / ref_thr

    def on_a100(setting: str, col: str) -> tuple[float, ...]:
        g = df[df.setting == f"{setting}, A100"].set_index("system")
        if g.empty:
            return ()
        ref = g.loc["full recompute"]
        kv = g.loc["KVShare 15%"]
        return ((ref.ttft_mean_s / kv.ttft_mean_s) if col == "ttft"
                else (kv.output_tokens_per_s / ref.output_tokens_per_s),)

    return [
        Headline("KVShare (arXiv 2503.16525)", "TTFT, full recompute / KVShare (light load, 0.2 req/s)",
                 f"up to {RULE_TTFT.paper:g}x", f"{ttft:.2f}x at 15% recompute; {free:.2f}x at 0%; "
                 f"vLLM prefix caching {vllm_ttft:.2f}x", RULE_TTFT, ttft, SETTING, PARAMS,
                 why={Position.BELOW: "the edited granules and the task are computed in full whatever "
                      "the recompute fraction, which bounds the gain on this workload "
                      "(docs/KV_METHODS.md)",
                      Position.WITHIN: "most of each prompt is reused at a fraction of its cost"},
                 sweep=(Swept("scheduler.recompute_fraction", sweep_x, "0-100%"),
                        Swept("GPU", on_a100("light load", "ttft"), "A100")),
                 lever=Lever("ttft_mean_s", "setting == 'light load' and system == 'KVShare 15%'", -1.0),
                 seed="KVShare",
                 decomposition=f"with reuse free (0% recompute) simkv gives {free:.2f}x: the part "
                 f"of the prompt not reusable here caps it; exact prefix caching alone gives "
                 f"{vllm_ttft:.2f}x"),
        Headline("KVShare", "throughput, KVShare / full recompute (saturation, 20 req/s offered)",
                 f"{RULE_THROUGHPUT.paper:g}x", f"{thr:.2f}x; vLLM prefix caching {vllm_thr:.2f}x",
                 RULE_THROUGHPUT, thr, SETTING, PARAMS,
                 why={Position.ABOVE: "at saturation this workload is prefill-bound (16.6k-token "
                      "prompts, ~100 output tokens) and KVShare removes most of the prefill; the "
                      "paper's tasks likely decode more and share less (docs/KV_METHODS.md)",
                      Position.WITHIN: "KVShare's saved prefill is a small share of the work"},
                 sweep=(Swept("GPU", on_a100("saturation", "throughput"), "A100"),),
                 lever=Lever("output_tokens_per_s", "setting == 'saturation' and system == 'KVShare 15%'"),
                 seed="KVShare",
                 decomposition=f"exact prefix caching alone gives {vllm_thr:.2f}x over full "
                 f"recompute: the gain is the prefill removed from a prefill-bound load"),
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

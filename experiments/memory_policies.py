"""KV placement, eviction and tool-call policies side by side on one 8-GPU node.

    python experiments/memory_policies.py [--quick] [--markdown]

Eight Llama-3.1-8B replicas (one H100 each, the DGX-H100 node profile), session-affinity
routing, three workloads: SWE-bench-shaped agent programs with the preset's tool times, the
same with short tool calls, and ShareGPT-shaped conversations (part ``policies``); and
InstInfer's offline long-context setting on one GPU (part ``long context``). The experiment
contract (experiments/suite.py): run(quick), figure(df), headline(df); writes
experiments/results/memory_policies.csv (one row per run), .png and .pdf; ``--markdown``
prints the tables docs/MEMORY.md shows from the CSV. Quick: a tenth of the sessions.
"""

from __future__ import annotations

import sys
import tempfile
import time

import pandas as pd
from matplotlib.figure import Figure
from suite import RESULTS, Headline, cli

import simkv
from simkv.metrics import style

NODE = ["cluster.replicas=8", "router=session_affinity", "output.plot=false", "output.progress=false"]

WORKLOADS = {
    "agents (SWE-bench tools)": ["workload=swebench", "workload.num_programs=300",
                                 "workload.program_rate=1.0"],
    "agents (short tools, 2 s)": ["workload=swebench", "workload.num_programs=300",
                                  "workload.program_rate=1.0", "workload.tool_weibull_scale=2"],
    "conversations (ShareGPT)": ["workload=sharegpt", "workload.num_conversations=6000",
                                 "workload.conversation_rate=12"],
}

POLICIES = {
    "drop (vLLM default)": [],
    "drop + DRAM demotion": ["offload=dram"],
    "drop + DRAM/SSD demotion": ["offload=ssd"],
    "drop + DRAM/CSD demotion": ["offload=csd"],
    "write-through DRAM+SSD (LMCache)": ["offload=write_through"],
    "TTL pin, FCFS": ["tool_kv=ttl_pin"],
    "TTL pin + program FCFS (Continuum)": ["tool_kv=ttl_pin", "scheduler=continuum"],
    "Continuum + DRAM demotion": ["tool_kv=ttl_pin", "scheduler=continuum", "offload=dram"],
    "offload to DRAM during tool": ["tool_kv=offload", "offload=dram"],
    "offload to SSD during tool": ["tool_kv=offload", "tool_kv.tier=ssd", "offload=ssd"],
}


def row(workload: str, policy: str, s: dict) -> dict:
    mem = s["memory"]
    c = mem["counters"]
    block_bytes = mem["granule_bytes"] / (512 // 16)
    links = mem["links"]
    tiers = mem["tiers"]
    disk_written = sum(tiers.get(t, {}).get("bytes_written", 0.0) for t in ("ssd", "csd"))
    return {
        "workload": workload, "policy": policy,
        "requests": s["requests"]["finished"],
        "jct_mean_s": s["sessions"]["jct_s"]["mean"], "jct_p90_s": s["sessions"]["jct_s"]["p90"],
        "ttft_p50_s": s["ttft_s"]["p50"], "ttft_p99_s": s["ttft_s"]["p99"],
        "hit_rate": s["prefix_cache"]["hit_rate_all"], "hit_rate_hbm": s["prefix_cache"]["hit_rate_hbm"],
        "recompute_saved_mtok": s["prefix_cache"]["cached_tokens_all"] / 1e6,
        "pinned_hbm_gb_mean": c["pin_block_s"] * block_bytes / s["makespan_s"] / 1e9,
        "pcie_tb": links.get("pcie", {}).get("bytes", 0.0) / 1e12,
        "disk_written_tb": disk_written / 1e12,
        "preemptions": s["requests"]["preemptions"],
        "makespan_s": s["makespan_s"],
    }


def run(quick: bool) -> pd.DataFrame:
    rows = []
    for wname, wl in WORKLOADS.items():
        if quick:
            wl = [o.replace("=300", "=30").replace("=6000", "=600") for o in wl]
        for pname, pol in POLICIES.items():
            cfg = simkv.compose(NODE + wl + pol)
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory() as d:
                s = simkv.simulate(cfg, d).summary
            r = row(wname, pname, s)
            rows.append({"part": "policies", **r})
            print(f"{wname:<26} {pname:<36} JCT {r['jct_mean_s']:7.1f} s  TTFT p99 {r['ttft_p99_s']:7.2f} s"
                  f"  hit {r['hit_rate']:.3f}  ({time.perf_counter() - t0:.1f} s wall)", flush=True)
    long = long_context(quick)
    return pd.concat([pd.DataFrame(rows), long.assign(part="long context")], ignore_index=True)


def headline(df: pd.DataFrame) -> list[Headline]:
    pol = df[(df.part == "policies") & (df.workload == "agents (SWE-bench tools)")].set_index("policy")
    drop = pol.loc["drop (vLLM default)", "jct_mean_s"]
    cont = pol.loc["TTL pin + program FCFS (Continuum)", "jct_mean_s"]
    dram = pol.loc["drop + DRAM demotion", "jct_mean_s"]
    cdram = pol.loc["Continuum + DRAM demotion", "jct_mean_s"]
    long = df[df.part == "long context"].set_index("placement")["output_tokens_per_s"]
    ii = long["KV and decode attention on CSDs (InstInfer)"]
    ssd = long["KV on SSD, streamed each step (FlexGen-like)"]
    return [
        Headline("Continuum", "TTL pins + program-level FCFS cut agents' job completion time "
                 "against vLLM dropping the KV (HBM only)", "lower JCT (direction)",
                 f"{drop:.0f} -> {cont:.0f} s mean ({1 - cont / drop:.0%} lower)",
                 None if cont < drop else False,
                 "holds when HBM is under pressure and a pinned context is a small share of a "
                 "replica's KV; reverses with small HBM (docs/MEMORY.md, the small-scale reversal)"),
        Headline("Continuum", "the gain holds across DRAM offloading schemes", "gains with DRAM offload",
                 f"Continuum + DRAM {cdram:.0f} s vs DRAM demotion alone {dram:.0f} s",
                 None if cdram < dram else False,
                 "a reload over PCIe (64 GB/s) costs less than holding the pinned HBM for the TTL, "
                 "which shrinks batches (docs/MEMORY.md)"),
        Headline("InstInfer", "decode attention on CSDs beats streaming the KV "
                 "from SSDs (FlexGen)", "11.1x throughput", f"{ii / ssd:.2f}x", ii / ssd > 11.1 * 0.75,
                 "the ratio follows the assumed internal-to-host bandwidth (96 vs 56 GB/s here); the "
                 "paper's 11.1x is one drive behind a narrower link on an A6000"),
    ]


def figure(df: pd.DataFrame) -> Figure:
    return plot(df[df.part == "policies"])


def markdown_tables(df: pd.DataFrame) -> str:
    long = df[df.part == "long context"].dropna(axis=1, how="all").drop(columns="part")
    return markdown(df[df.part == "policies"]) + "\n" + long.to_string(index=False)


LONG_CONTEXT = ["cluster.replicas=1", "output.plot=false", "output.progress=false", "workload=poisson",
                "workload.num_requests=256", "workload.rate=10000", "workload.prompt_median=32000",
                "workload.prompt_sigma=0", "workload.prompt_max=32768", "workload.output_median=512",
                "workload.output_sigma=0", "scheduler.max_num_seqs=256"]


def long_context(quick: bool) -> pd.DataFrame:
    """InstInfer's setting: offline long-context decoding on one GPU, KV in HBM or on CSDs."""
    rows = []
    placements = {"KV in HBM (vLLM)": [],
                  "KV on SSD, streamed each step (FlexGen-like)": ["offload=ssd_stream"],
                  "KV and decode attention on CSDs (InstInfer)": ["offload=instinfer"]}
    size = ["workload.num_requests=16", "workload.output_median=64"] if quick else []
    for name, extra in placements.items():
        with tempfile.TemporaryDirectory() as d:
            s = simkv.simulate(simkv.compose(LONG_CONTEXT + size + extra), d).summary
        rows.append({"placement": name, "makespan_s": s["makespan_s"],
                     "output_tokens_per_s": s["throughput"]["output_tokens_per_s"],
                     "tpot_p50_s": s["tpot_s"]["p50"], "ttft_p50_s": s["ttft_s"]["p50"],
                     "kv_tokens_per_replica": s["engine"]["kv_tokens_per_replica"],
                     "preemptions": s["requests"]["preemptions"]})
        print(f"{name:<44} makespan {s['makespan_s']:8.1f} s, "
              f"{s['throughput']['output_tokens_per_s']:7.1f} output tok/s", flush=True)
    return pd.DataFrame(rows)


def markdown(df: pd.DataFrame) -> str:
    lines = []
    for wname, g in df.groupby("workload", sort=False):
        lines += [f"**{wname}**", "",
                  "| policy | JCT mean / p90 (s) | TTFT p50 / p99 (s) | hit rate (HBM) | pinned HBM (GB) "
                  "| PCIe (TB) | to SSD/CSD (TB) | preemptions |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in g.itertuples():
            lines.append(
                f"| {r.policy} | {r.jct_mean_s:.0f} / {r.jct_p90_s:.0f} | {r.ttft_p50_s:.3f} / "
                f"{r.ttft_p99_s:.2f} | {r.hit_rate:.3f} ({r.hit_rate_hbm:.3f}) | "
                f"{r.pinned_hbm_gb_mean:.0f} | {r.pcie_tb:.1f} | {r.disk_written_tb:.2f} | {r.preemptions} |")
        lines.append("")
    return "\n".join(lines)


def plot(df: pd.DataFrame) -> Figure:
    groups = list(dict.fromkeys(df["workload"]))
    fig, axes = style.figure(2, len(groups), size=(6 * len(groups), 8), squeeze=False)
    for j, wname in enumerate(groups):
        g = df[df["workload"] == wname]
        y = range(len(g))
        for i, (col, label) in enumerate((("jct_mean_s", "job completion time, mean (s)"),
                                          ("ttft_p99_s", "TTFT p99 (s)"))):
            ax = axes[i][j]
            colors = [style.BASELINE if p.startswith("drop (") else style.PALETTE[2] for p in g["policy"]]
            if col == "ttft_p99_s":
                # Dots, not bars: TTFT spans decades, and a bar on a log axis has no zero to
                # start from (its length would depend on where the axis happens to begin).
                ax.scatter(g[col], list(y), color=colors, zorder=3)
                ax.set_xscale("log")
            else:
                ax.barh(list(y), g[col], color=colors)
            ax.set_yticks(list(y), g["policy"] if j == 0 else [""] * len(g))
            ax.invert_yaxis()
            ax.set_xlabel(label)
            if i == 0:
                ax.set_title(wname)
    fig.suptitle("KV policies on one 8 x H100 node, Llama-3.1-8B (simkv)")
    return fig


if __name__ == "__main__":
    if "--markdown" in sys.argv:
        print(markdown_tables(pd.read_csv(RESULTS / "memory_policies.csv")))
    else:
        cli("memory_policies")

"""H2O (heavy hitters + recent window, 20% KV budget) against full KV and KV offloading.

    python experiments/h2o.py [--quick]

The paper's headline (arXiv 2306.14048, abstract): with 20% heavy hitters, throughput up to 29x
over DeepSpeed ZeRO-Inference and Hugging Face Accelerate and 3x over FlexGen (OPT-6.7B and
OPT-30B), and up to 1.9x lower latency at the same batch size. The repo's own logs give the
same-batch setting (github FMInference/H2O, h2o_flexgen/benchmark/h2o/a100_80): OPT-6.7B on
one A100-80GB, batch 24, prompt 2048 + 2048 generated tokens: full KV 99.48 s (494.1 token/s),
H2O 53.49 s (918.9 token/s), so 1.86x; H2O at batch 64 (full KV, 128 GB, does not fit):
1160.9 token/s.

simkv runs (model opt_6_7b, hardware a100_80gb, vLLM-style scheduler, all requests at once):

1. same batch: 24 x (2048 + 2048) with full KV and with H2O's cache fixed at 20% of the
   prompt (``budget_tokens`` 410, as H2O's code sizes it), plus H2O at batch 64;
2. throughput against offloading baselines at their best batch (256 offered, up to 256
   running): full KV in HBM, full KV in CPU DRAM streamed over PCIe every step
   (``offload=dram_stream``, FlexGen's KV placement), full KV on the node's NVMe drives
   (``offload=ssd_stream``), and H2O 20% in HBM; prompt 512 + 512 (H2O's T4 suite).

FlexGen's weight offloading and its compute/IO overlap, and the T4 GPU, are not in simkv, so
the paper's 29x and 3x are not regenerated as numbers, only their direction.

The experiment contract (experiments/suite.py): run(quick), figure(df), headline(df); writes
experiments/results/h2o.csv, .png and .pdf.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
from kv_common import profile_with, run_batch
from matplotlib.figure import Figure
from suite import Headline, Lever, Param, Position, Rule, Setting, Swept, cli

from simkv.metrics import style

BASE = ["model=opt_6_7b", "model.max_model_len=8192", "hardware=a100_80gb"]
H2O_20 = ["kv_policy=h2o", "kv_policy.budget_fraction=0.2"]
PAPER = {  # token/s and seconds from the repo's logs (see the module doc)
    ("same batch", "full KV", 24): (494.103, 99.477),
    ("same batch", "H2O 20%", 24): (918.893, 53.490),
    ("same batch", "H2O 20%", 64): (1160.902, 112.905),
}
# Decode step times in the same logs (decode latency over its 2,047 steps), as
# docs/KV_METHODS.md reads them: what FlexGen's implementation spends per step.
PAPER_STEP_MS = {"full KV": 46.4, "H2O 20%": 24.1}
# The A100 profile's decode-attention efficiency is assumed (hardware_profiles/a100_80gb.yaml):
# swept over this range for the same-batch ratio.
ATTN_EFF = (0.6, 1.0)

# Declared before the run: the paper's numbers on simkv's scale, and the tolerances.
RULE_SAME_BATCH = Rule(paper=1.86, tol=0.25)
RULE_OFFLOAD = Rule(paper=29.0, tol=0.25)
SETTING_SAME_BATCH = Setting(
    figure="arXiv 2306.14048 abstract (same-batch latency up to 1.9x); the repo's logs "
           "(github FMInference/H2O, h2o_flexgen/benchmark/h2o/a100_80): full KV 99.48 s, H2O 20% "
           "53.49 s = 1.86x",
    paper="OPT-6.7B, one A100-80GB, batch 24, prompt 2048 + 2048 generated, FlexGen-based "
          "engine, full KV vs H2O with 20% of the prompt kept (heavy 10% + recent 10%)",
    simkv="OPT-6.7B, A100-80GB profile, batch 24, 2048 + 2048, vLLM-style engine, full KV vs "
          "kv_policy=h2o with a 410-token cache (20% of the prompt, as its code sizes it)",
    matched=True)
SETTING_OFFLOAD = Setting(
    figure="arXiv 2306.14048 abstract: throughput up to 29x over DeepSpeed ZeRO-Inference and "
           "Hugging Face Accelerate, 3x over FlexGen (OPT-6.7B, OPT-30B)",
    paper="T4 GPU with weights and KV offloaded (FlexGen's benchmark suite), each system at its "
          "best batch",
    simkv="A100-80GB, weights resident; full KV streamed from DRAM every step (dram_stream, no "
          "overlap: the closest to DeepSpeed/Accelerate's offloading) vs H2O 20% in HBM; "
          "256 requests of 512 + 512",
    matched=False,
    differs="simkv's engine does not offload weights to a T4, so the 29x is compared with "
            "KV offloading only")
PARAMS = (Param("kv_policy.budget_fraction", "0.2", "the paper's 20% (heavy_ratio 0.1 + recent_ratio 0.1 "
                "in its code)"),
          Param("kv_policy.score_bytes", "8", "its algorithm: an fp32 score read and written per "
                "query head and kept token"),
          Param("A100 attention_memory efficiency", "0.8", "", swept=f"{ATTN_EFF[0]}-{ATTN_EFF[1]}"))


def run(quick: bool) -> pd.DataFrame:
    prompt, output = (512, 256) if quick else (2048, 2048)
    batches = (8, 16) if quick else (24, 64)
    rows = []

    def add(setting: str, system: str, batch: int, overrides: list[str], n: int, p: int, o: int,
            max_seqs: int, attn: float = float("nan")) -> None:
        sched = [f"scheduler.max_num_seqs={max_seqs}"]
        r = run_batch(n, p, o, [*BASE, *sched, *overrides])
        paper = PAPER.get((setting, system, batch)) if not quick else None
        rows.append({
            "setting": setting, "system": system, "batch": batch, "prompt": p, "output": o,
            "attention_efficiency": attn,
            "makespan_s": r.makespan_s, "tokens_per_s": r.tokens_per_s,
            "tpot_p50_s": r.summary["tpot_s"]["p50"],
            "preemptions": r.summary["requests"]["preemptions"],
            "kv_blocks": r.summary["engine"]["kv_blocks_per_replica"],
            "paper_tokens_per_s": paper[0] if paper else float("nan"),
            "paper_latency_s": paper[1] if paper else float("nan"),
        })

    # 1. Same batch, the paper's A100 setting; H2O's cache fixed at 20% of the prompt.
    fixed = [*H2O_20[:1], "kv_policy.budget_fraction=1.0", f"kv_policy.budget_tokens={prompt // 5}"]
    for b in batches:
        add("same batch", "full KV", b, [], b, prompt, output, b)
        add("same batch", "H2O 20%", b, fixed, b, prompt, output, b)
    # The same at the ends of the assumed attention efficiency (the smallest batch).
    with tempfile.TemporaryDirectory() as d:
        for eff in ATTN_EFF:
            hw = [f"hardware.path={profile_with('a100_80gb', Path(d), attention_memory=eff)}"]
            b = batches[0]
            add("efficiency swept", "full KV", b, hw, b, prompt, output, b, eff)
            add("efficiency swept", "H2O 20%", b, [*fixed, *hw], b, prompt, output, b, eff)
    # 2. Throughput against offloading, each system at its best batch (up to 256 running).
    n, p, o = (64, 256, 128) if quick else (256, 512, 512)
    for system, extra in {"full KV (HBM)": [], "full KV in DRAM (dram_stream)": ["offload=dram_stream"],
                          "full KV on SSD (ssd_stream)": ["offload=ssd_stream"],
                          "H2O 20% (HBM)": H2O_20}.items():
        add("offloading", system, n, extra, n, p, o, n)
    return pd.DataFrame(rows)


def headline(df: pd.DataFrame) -> list[Headline]:
    sb = df[df.setting == "same batch"]
    b = int(sb.batch.min())
    same = sb.set_index(["system", "batch"])
    lat = same.loc[("full KV", b), "makespan_s"] / same.loc[("H2O 20%", b), "makespan_s"]
    sw = df[df.setting == "efficiency swept"]
    swept = tuple(float(g.loc[g.system == "full KV", "makespan_s"].iloc[0]
                        / g.loc[g.system == "H2O 20%", "makespan_s"].iloc[0])
                  for _, g in sw.groupby("attention_efficiency"))
    # Decomposition: FlexGen's per-step cost beyond simkv's roofline, measured on the full-KV
    # log, added to both of simkv's steps (one constant cost, not fitted to the H2O log).
    s_full = 1e3 * float(same.loc[("full KV", b), "tpot_p50_s"])
    s_h2o = 1e3 * float(same.loc[("H2O 20%", b), "tpot_p50_s"])
    extra = PAPER_STEP_MS["full KV"] - s_full
    decomp = (f"simkv's decode steps {s_full:.1f} / {s_h2o:.1f} ms (full / H2O) against the logs' "
              f"{PAPER_STEP_MS['full KV']} / {PAPER_STEP_MS['H2O 20%']} ms; the full-KV log's "
              f"{extra:.1f} ms per step beyond simkv's roofline (FlexGen's unfused attention and "
              f"framework time), added to both steps, gives {(s_full + extra) / (s_h2o + extra):.2f}x "
              f"per step against the logs' {PAPER_STEP_MS['full KV'] / PAPER_STEP_MS['H2O 20%']:.2f}x"
              ) if b == 24 else ""
    off = df[df.setting == "offloading"].set_index("system")["tokens_per_s"]
    h2o = off["H2O 20% (HBM)"]
    dram = h2o / off["full KV in DRAM (dram_stream)"]
    return [
        Headline("H2O (arXiv 2306.14048)", f"same-batch latency, full KV / H2O 20% (OPT-6.7B, A100, "
                 f"batch {b})", "1.86x (repo logs; abstract: up to 1.9x)", f"{lat:.2f}x",
                 RULE_SAME_BATCH, float(lat), SETTING_SAME_BATCH, PARAMS,
                 why={Position.ABOVE: "simkv's roofline steps omit FlexGen's per-step implementation "
                      "cost, which dilutes the paper's gain (docs/KV_METHODS.md)",
                      Position.BELOW: "simkv's H2O step keeps more cost than FlexGen's measured one"},
                 sweep=(Swept("attention_memory efficiency", swept, f"{ATTN_EFF[0]}-{ATTN_EFF[1]}"),),
                 lever=Lever("makespan_s", "system == 'H2O 20%' and setting == 'same batch'", -1.0),
                 seed="H2O", decomposition=decomp),
        Headline("H2O", "throughput over offloading the full KV without overlap (the paper: over "
                 "DeepSpeed ZeRO-Inference / Accelerate)",
                 "up to 29x (T4, weights offloaded too; 3x over FlexGen)",
                 f"{dram:.0f}x over full KV streamed from DRAM, {h2o / off['full KV (HBM)']:.1f}x over "
                 "full KV in HBM", RULE_OFFLOAD, float(dram), SETTING_OFFLOAD, PARAMS[:2],
                 why={Position.ABOVE: "simkv's baseline streams the whole KV every step over PCIe "
                      "Gen4 without FlexGen's I/O overlap or 4-bit KV, and the A100 computes far "
                      "faster than the T4, so the stream dominates more",
                      Position.BELOW: "the offloading baseline loses less to PCIe here than the "
                      "paper's baselines did"},
                 lever=Lever("tokens_per_s", "system == 'H2O 20% (HBM)' and setting == 'offloading'"),
                 seed="H2O",
                 decomposition=f"H2O over full KV in HBM {h2o / off['full KV (HBM)']:.1f}x (the smaller "
                 f"KV reads); full KV in HBM over the same KV streamed from DRAM "
                 f"{off['full KV (HBM)'] / off['full KV in DRAM (dram_stream)']:.0f}x (PCIe every step)"),
    ]


def figure(df: pd.DataFrame) -> Figure:
    fig, axes = style.figure(1, 2, size=(12, 3.8))
    same = df[df.setting == "same batch"]
    labels = [f"{s}\nbatch {b}" for s, b in zip(same.system, same.batch, strict=True)]
    axes[0].bar(labels, same.tokens_per_s, label="simkv")
    if same.paper_tokens_per_s.notna().any():
        axes[0].scatter(labels, same.paper_tokens_per_s, color="k", zorder=3, label="paper (repo logs)")
    axes[0].set_ylabel("generated tokens / s")
    axes[0].set_title("OPT-6.7B, A100-80GB, same batch")
    axes[0].legend()
    off = df[df.setting == "offloading"]
    # Dots on the log axis: a bar there would start wherever the axis begins.
    axes[1].scatter(off.tokens_per_s, off.system, color=[style.BASELINE, *style.PALETTE[1:4]], zorder=3)
    axes[1].set_xscale("log")
    axes[1].set_xlabel("generated tokens / s (log)")
    axes[1].set_title(f"best batch of {int(off.batch.iloc[0])}: H2O vs offloading full KV")
    axes[1].invert_yaxis()
    return fig


if __name__ == "__main__":
    cli("h2o")

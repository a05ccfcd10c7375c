"""Live migration against load-aware dispatch alone, Llumnix's serving setting.

    python experiments/llumnix.py [--quick]

Llumnix (Sun et al., OSDI 2024, arXiv 2406.03243, section 6.3, Figure 11; the numbers from its
artifact's figure11_paper.claim, github AlibabaPAI/llumnix artifact/63_serving_performance):
16 LLaMA-7B instances, one A10 (24 GB) each; 10,000 requests, Poisson arrivals; "generated
distributions": input and output lengths power-law (Zipf) with a mean of 256 tokens each and
a range up to 6,144 (config/serving_exp: idist/odist zipf, irange/orange 6144); the 256-256
trace at 7.4-8.0 req/s (run.sh). Against INFaaS++ (load-aware dispatch, no migration) it
reports, on generated distributions, up to 14.8x lower P99 prefill latency (7.7x mean), up to
2x lower P99 decode latency, and preemption loss reduced by 70.4% on average.

simkv: 16 x llama2_7b on the a10_24gb profile (datasheet, unchecked), the same arrivals and
lengths (a power law on [1, 6,144] with exponent 1.222, which gives the mean of 256: assumed,
the artifact names the family and mean, not the exponent), router=least_outstanding for both
(INFaaS++'s load-aware dispatch; Llumnix's own dispatch by freeness is not modelled), and
migration=llumnix with ``migrate=false`` (the baseline, same sampling) or true. Prefill
latency = TTFT, decode latency = TPOT; preemption loss = recompute preemptions (the artifact
measures time lost; simkv counts them). Fragmentation (Llumnix's Figure 3 motivation):
the share of instance-passes whose queue head waits for memory the cluster as a whole has.
Quick: 4 instances, the rates scaled by 4/16, 1,000 requests.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from suite import Headline, Lever, Rule, cli, simulate

from simkv.metrics import style

RANGE, MEAN, THETA = 6144, 256, 1.222  # power law on [1, 6144] with mean 256
# The artifact's max_batch_total_tokens (12,800: the KV an instance holds) in 16-token blocks.
KV_BLOCKS = 800
# Declared before the run (figure11_paper.claim, generated distributions, vs INFaaS++).
RULE_P99_PREFILL = Rule(paper=14.8, tol=0.25)
RULE_MEAN_PREFILL = Rule(paper=7.7, tol=0.25)
RULE_P99_DECODE = Rule(paper=2.0, tol=0.25)
RULE_PREEMPT = Rule(paper=1 / (1 - 0.704), tol=0.25)  # 70.4% less = 3.38x fewer
RULE_FRAG = Rule(paper=None, higher=True)  # baseline / llumnix fragmented share


def _zipf(rng: np.random.Generator, n: int) -> np.ndarray:
    k = np.arange(1, RANGE + 1, dtype=np.float64)
    p = k ** -THETA
    return rng.choice(k, size=n, p=p / p.sum()).astype(np.int64)


def _trace(path: Path, rate: float, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(1.0 / rate, n))
    pd.DataFrame({"arrival_s": t, "prompt_tokens": _zipf(rng, n),
                  "output_tokens": _zipf(rng, n)}).to_parquet(path, index=False)
    return path


def run(quick: bool) -> pd.DataFrame:
    instances = 4 if quick else 16
    n = 1000 if quick else 10000
    rates = [7.4, 8.0] if quick else [7.4, 7.7, 8.0]
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for rate in rates:
            r = rate * instances / 16
            trace = _trace(Path(d) / f"t{rate}.parquet", r, n, seed=int(rate * 10))
            for name, mig in (("infaas++", "false"), ("llumnix", "true")):
                res = simulate(["model=llama2_7b", "hardware=a10_24gb", "model.max_model_len=12288",
                                f"kv.num_gpu_blocks_override={KV_BLOCKS}",
                                f"cluster.replicas={instances}", "router=least_outstanding",
                                "workload=trace", f"workload.path={trace}",
                                "kv.prefix_caching=false", "migration=llumnix",
                                f"migration.migrate={mig}"])
                df, s = res.requests, res.summary
                done = df[df["status"] == "finished"]
                m = s["migration"]
                rows.append({"rate_16": rate, "rate": r, "system": name,
                             "ttft_p99_s": float(done["ttft_s"].quantile(0.99)),
                             "ttft_mean_s": float(done["ttft_s"].mean()),
                             "tpot_p99_s": float(done["tpot_s"].quantile(0.99)),
                             "e2e_p99_s": float(done["e2e_s"].quantile(0.99)),
                             "preemptions": int(df["preemptions"].sum()),
                             "rejected": int((df["status"] == "rejected").sum()),
                             "fragmented_share": m["fragmented_share"],
                             "hol_blocked_share": m["hol_blocked_share"],
                             "moves": m["moved"], "aborted": m["aborted"],
                             "mean_pause_s": m["mean_pause_s"],
                             "kv_blocks": s["engine"]["kv_blocks_per_replica"]})
    return pd.DataFrame(rows)


def _ratios(df: pd.DataFrame, col: str) -> pd.Series:
    p = df.pivot(index="rate_16", columns="system", values=col)
    return p["infaas++"] / p["llumnix"]


def headline(df: pd.DataFrame) -> list[Headline]:
    out = []
    rows = [("P99 prefill latency", "ttft_p99_s", RULE_P99_PREFILL, "up to 14.8x"),
            ("mean prefill latency", "ttft_mean_s", RULE_MEAN_PREFILL, "up to 7.7x"),
            ("P99 decode latency", "tpot_p99_s", RULE_P99_DECODE, "up to 2x")]
    moves = df[df["system"] == "llumnix"].set_index("rate_16")
    why_moves = ", ".join(f"{r:g} req/s: {int(x.moves)} moves, {x.aborted} aborted, pause "
                          f"{x.mean_pause_s * 1e3:.1f} ms" for r, x in moves.iterrows())
    for what, col, rule, paper in rows:
        ratio = _ratios(df, col)
        best = float(ratio.max())
        out.append(Headline("Llumnix", f"{what}, INFaaS++ / Llumnix, generated 256-256 trace "
                            f"[{rule.text()}]", paper, f"{best:.2f}x (at {ratio.idxmax():g} req/s "
                            f"on 16)", rule, best,
                            lever=Lever(col, "system == 'llumnix'", -1.0),
                            why="by rate: " + ", ".join(f"{k:g}: {v:.2f}x" for k, v in ratio.items())
                            + "; " + why_moves))
    pre = df.pivot(index="rate_16", columns="system", values="preemptions")
    base_pre, mig_pre = float(pre["infaas++"].sum()), float(pre["llumnix"].sum())
    # Where Llumnix preempts none the ratio is unbounded: it is then reported as its lower
    # bound, INFaaS++'s count over one (fewer than one preemption), which the rule judges as it
    # would the unbounded ratio (above the band: direction only) and which stays proportional
    # to INFaaS++'s count, the lever.
    pr = base_pre / max(mig_pre, 1.0) if base_pre else float("nan")
    less = f"{(1 - mig_pre / base_pre) * 100:.0f}% fewer" if base_pre else "no preemption either way:"
    shown = f"{pr:.2f}x" if mig_pre else f"at least {pr:.0f}x: Llumnix preempted none"
    out.append(Headline("Llumnix", f"preemption loss reduced by 70.4% on average (= {1 / 0.296:.2f}x) "
                        f"[{RULE_PREEMPT.text()}]", "70.4% less", f"{less} preemptions ({shown})",
                        RULE_PREEMPT, pr, lever=Lever("preemptions", "system == 'infaas++'", 1.0),
                        why="simkv counts preemptions; Llumnix measures the time they cost"
                        + ("" if mig_pre else "; Llumnix preempted none, so the number is the "
                           "ratio's lower bound (INFaaS++'s count over one), judged as a value: "
                           "it would read as agreeing were INFaaS++'s count within the band "
                           "itself (2.53-4.22), not the case here")))
    frag = _ratios(df, "fragmented_share")
    fb = df.pivot(index="rate_16", columns="system", values="fragmented_share")
    f = float(frag.replace([np.inf], np.nan).mean())
    out.append(Headline("Llumnix (motivation, Figure 3)", "migration reduces memory fragmentation "
                        f"(queue heads waiting for memory the cluster has) [{RULE_FRAG.text()}]",
                        "less with migration", f"{f:.2f}x ("
                        + ", ".join(f"{r:g}: {fb.loc[r, 'infaas++']:.2f} -> {fb.loc[r, 'llumnix']:.2f}"
                                    for r in fb.index) + ")",
                        RULE_FRAG, f, lever=Lever("fragmented_share", "system == 'llumnix'", -1.0),
                        why="share of instance-passes (every 50 ms)"))
    return out


def figure(df: pd.DataFrame) -> Figure:
    fig, axes = style.figure(1, 3, size=(12.0, 3.6))
    for ax, col, label in zip(axes, ("ttft_p99_s", "tpot_p99_s", "fragmented_share"),
                              ("P99 prefill latency (s)", "P99 decode latency (s)",
                               "fragmented share"), strict=True):
        for name, g in df.groupby("system"):
            ax.plot(g["rate_16"], g[col], marker="o", label=str(name))
        ax.set_xlabel("request rate on 16 instances (req/s)")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    axes[0].set_title("16 x LLaMA-7B on A10, 256-256 power-law")
    return fig


if __name__ == "__main__":
    cli("llumnix")

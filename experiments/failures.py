"""What one GPU failure costs a serving cluster, and what spare GPUs and DRAM/SSD KV copies
buy back; extrapolated to the Llama 3 fleet's failure rates.

    python experiments/failures.py [--quick]

Setting: Llama-3.1-8B on 4 x H100 (one GPU each, one DGX node: 4 GPUs spare), ShareGPT-shaped
conversations (the `sharegpt` preset: rounds, prompt and answer lengths from ShareGPT, think
times from Mooncake) arriving at 45 conversations/s for 300 s (about 75% of the 4 instances'
SLO-bound capacity, measured: 40/s keeps 99.3% of requests within TTFT 2 s / TPOT 100 ms, 60/s
80%). GPU 0 fails at 150 s. Variants: the failed instance's requests resumed elsewhere
(default), restarted from scratch, or failed; the replacement on a spare GPU at detection
(default) or only on the repaired GPU (no spare: one hour away, so the rest of the run on 3
instances); with `offload=write_through` (conversation contexts written to the node's DRAM
and SSD, which a GPU failure does not take); detection after 1, 10 (default) and 60 s.

No seed paper reports a serving failure's cost in this setting, so the headlines are simkv's
own what-ifs (agrees = None), computed from the table: the value of a spare, of KV copies,
and the goodput a fleet loses at Llama 3's failure rates (arXiv 2407.21783, Table 5;
faults=llama3), from the measured cost of one failure.

The experiment contract (experiments/suite.py): run(quick), figure(df), headline(df).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from suite import Headline, Lever, Rule, cli, simulate

from simkv.metrics import style

FAIL_S = 150.0
WINDOW_S = 120.0  # requests arriving in [failure, failure + window] are "during the failure"
# faults=llama3: per-GPU MTBF of the GPU-caused interruptions, and of all causes per GPU
# (GPU + process per GPU, node + link per node of 8 GPUs), hours.
GPU_MTBF_H = 79230.1
ALL_PER_GPU_H = 1.0 / (1 / 79230.1 + 1 / 337042.0 + (1 / 57700.2 + 1 / 63195.4) / 8)

VARIANTS: dict[str, list[str]] = {
    "no failure": [],
    "no failure, KV copies": ["offload=write_through"],
    "resume, spare": ["@fail"],
    "resume, no spare": ["@fail", "faults.replace=repair"],
    "resume, spare, KV copies": ["@fail", "offload=write_through"],
    "restart, spare": ["@fail", "faults.on_loss=restart"],
    "fail, spare": ["@fail", "faults.on_loss=fail"],
    "resume, spare, detect 1 s": ["@fail", "faults.detect_s=1"],
    "resume, spare, detect 60 s": ["@fail", "faults.detect_s=60"],
}


def run(quick: bool) -> pd.DataFrame:
    rate, arrive_s, fail_s = (4.0, 40.0, 20.0) if quick else (45.0, 300.0, FAIL_S)
    replicas = 2 if quick else 4
    base = ["workload=sharegpt", f"workload.conversation_rate={rate}",
            f"workload.num_conversations={int(rate * arrive_s)}", f"cluster.replicas={replicas}"]
    rows = []
    refs: dict[bool, pd.Series] = {}
    for name, extra in VARIANTS.items():
        if quick and name in ("restart, spare", "fail, spare"):
            continue  # not in a headline: full size only
        ov = [*base, *(f"faults.events=[{{time_s:{fail_s},kind:gpu,target:0}}]" if o == "@fail"
                       else o for o in extra)]
        r = simulate(ov)
        s, req = r.summary, r.requests
        served = req[req["reject_reason"] != "failed_in_trace"]
        met = served["slo_met"].to_numpy(dtype=bool)
        win = ((served["arrival_s"] >= fail_s) & (served["arrival_s"] < fail_s + WINDOW_S)).to_numpy()
        ttft = served["ttft_s"].to_numpy()
        f = s["cluster"].get("faults", {})
        pc = s["prefix_cache"]
        # What an interruption adds to a request: its E2E against the same call (session,
        # turn) in the run without a failure and with the same KV placement.
        copies = "offload=write_through" in extra
        e2e = served.set_index(["session", "turn"])["e2e_s"]
        if "@fail" not in extra:
            refs[copies] = e2e
        hit = served[(served["preemptions"] > 0) & (served["status"] == "finished")]
        keys = list(zip(hit["session"], hit["turn"], strict=True))
        ref = refs.get(copies)
        delay = (float(np.nanmean(e2e.loc[keys].to_numpy() - ref.reindex(keys).to_numpy()))
                 if keys and ref is not None else np.nan)
        rows.append({
            "variant": name, "instances": replicas, "fail_s": fail_s, "requests": len(served),
            "finished": int((served["status"] == "finished").sum()),
            "failed": int((served["status"] == "failed").sum()),
            "slo_attainment": float(met.mean()),
            "slo_met": int(met.sum()),
            "attainment_in_window": float(met[win].mean()) if win.any() else np.nan,
            "ttft_p99_in_window_s": float(np.nanpercentile(ttft[win], 99)) if win.any() else np.nan,
            "interrupted": f.get("requests_interrupted", 0),
            "tokens_to_recompute": f.get("tokens_to_recompute", 0),
            "cached_dram_tokens": pc.get("cached_tokens_dram", 0),
            "cached_disk_tokens": pc.get("cached_tokens_disk", 0),
            "interrupted_extra_e2e_s": delay,
            "recovery_s": f.get("recovery_s_mean"),
            "gpu_hours": s["cluster"]["gpu_hours"],
            "makespan_s": s["makespan_s"],
        })
    return pd.DataFrame(rows)


# Declared before the run (what-ifs of simkv's own, no paper's number): a spare, KV copies below
# HBM and a fast detection each help (direction); at the Llama 3 fleet's interruption rates a
# serving fleet loses under 1% of its goodput.
RULE_SPARE = Rule(paper=None, higher=True)
RULE_COPIES = Rule(paper=None, higher=True)
RULE_DETECT = Rule(paper=None, higher=True)
RULE_FLEET = Rule(paper=None, higher=False, null=0.01)


def _lost(df: pd.DataFrame, variant: str, reference: str) -> float:
    by = df.set_index("variant")
    return float(by.loc[reference, "slo_met"] - by.loc[variant, "slo_met"])


def headline(df: pd.DataFrame) -> list[Headline]:
    by = df.set_index("variant")
    out = []
    spare, nospare = by.loc["resume, spare"], by.loc["resume, no spare"]
    out.append(Headline(
        "(no seed paper: a what-if)", "a spare GPU turns a failure into a start-up",
        "-", f"recovery {spare.recovery_s:.0f} s with a spare (detection, provisioning, "
        f"weights, warm-up) against the repair without; SLO attainment in the {WINDOW_S:.0f} s "
        f"after the failure {spare.attainment_in_window:.3f} vs {nospare.attainment_in_window:.3f}; "
        f"requests meeting the SLO lost: {_lost(df, 'resume, spare', 'no failure'):.0f} vs "
        f"{_lost(df, 'resume, no spare', 'no failure'):.0f}",
        RULE_SPARE, float(spare.attainment_in_window / nospare.attainment_in_window),
        lever=Lever("attainment_in_window", "variant == 'resume, spare'"),
        why="without a spare the cluster runs on one instance fewer until the GPU is repaired "
        "(faults.gpu_repair_s, assumed 1 h)"))
    copies, plain = by.loc["resume, spare, KV copies"], spare
    out.append(Headline(
        "(no seed paper: a what-if)", "DRAM/SSD KV copies shorten what an interruption costs "
        "a conversation's call", "-",
        f"an interrupted call finishes {copies.interrupted_extra_e2e_s:.1f} s later than without "
        f"the failure with copies, {plain.interrupted_extra_e2e_s:.1f} s without; TTFT p99 after "
        f"the failure {copies.ttft_p99_in_window_s:.2f} s vs {plain.ttft_p99_in_window_s:.2f} s; "
        f"attainment {copies.slo_attainment:.4f} vs {plain.slo_attainment:.4f}",
        RULE_COPIES, float(plain.interrupted_extra_e2e_s / copies.interrupted_extra_e2e_s),
        lever=Lever("interrupted_extra_e2e_s", "variant == 'resume, spare, KV copies'", -1.0),
        why="a GPU failure loses HBM only: the node's DRAM and SSD keep the contexts write-through "
        "put there, so the retried call loads its context instead of prefilling it"
        if copies.interrupted_extra_e2e_s < 0.9 * plain.interrupted_extra_e2e_s else
        f"the copies barely change it: the interrupted calls' contexts are short "
        f"({plain.tokens_to_recompute / max(plain.interrupted, 1):.0f} tokens on average, a "
        f"fraction of a second to prefill), their delay is detection and queueing"))
    d1, d10, d60 = (by.loc[v] for v in ("resume, spare, detect 1 s", "resume, spare",
                                        "resume, spare, detect 60 s"))
    out.append(Headline(
        "(no seed paper: a what-if)", "detection time (faults.detect_s, assumed, swept) decides "
        "what a failure costs", "-",
        f"SLO attainment in the {WINDOW_S:.0f} s after the failure {d1.attainment_in_window:.3f} / "
        f"{d10.attainment_in_window:.3f} / {d60.attainment_in_window:.3f} with detection after "
        f"1 / 10 / 60 s; an interrupted call finishes {d1.interrupted_extra_e2e_s:.1f} / "
        f"{d10.interrupted_extra_e2e_s:.1f} / {d60.interrupted_extra_e2e_s:.1f} s late",
        RULE_DETECT, float(d1.attainment_in_window / d60.attainment_in_window),
        lever=Lever("attainment_in_window", "variant == 'resume, spare, detect 1 s'"),
        why="until the failure is noticed the router keeps sending the dead instance its share of "
        "the requests, which wait with the ones it had"))
    lost = _lost(df, "resume, spare", "no failure")
    per_gpu_h = by.loc["no failure", "slo_met"] / (by.loc["no failure", "gpu_hours"] or np.nan)
    frac = lost / ALL_PER_GPU_H / per_gpu_h if per_gpu_h else np.nan
    out.append(Headline(
        "Llama 3 (arXiv 2407.21783, Table 5): 419 interruptions in 54 days on 16,384 GPUs",
        "goodput a fleet loses at those rates (one failure's measured cost x the rate)",
        f"one interruption per {ALL_PER_GPU_H:,.0f} GPU-hours",
        f"{frac:.2e} of goodput ({lost:.0f} SLO-meeting requests lost per failure, "
        f"{per_gpu_h:,.0f} per GPU-hour)", RULE_FLEET, float(frac),
        lever=Lever("gpu_hours", "variant == 'no failure'"), unit="",
        why="every cause as costly as a GPU failure with a spare; a training job loses far more "
        "because one failure stops all 16,384 GPUs, a serving cluster only one instance"))
    return out


def figure(df: pd.DataFrame) -> Figure:
    fig, axes = style.figure(1, 3, size=(14, 3.8))
    cols = ("slo_attainment", "attainment_in_window", "ttft_p99_in_window_s")
    labels = ("SLO attainment (all requests)", f"SLO attainment, {WINDOW_S:.0f} s after the failure",
              "TTFT p99 after the failure (s)")
    for ax, col, label in zip(axes, cols, labels, strict=True):
        ax.barh(df["variant"], df[col])
        ax.set_xlabel(label)
        ax.invert_yaxis()
        if ax is not axes[0]:
            ax.set_yticklabels([])
    fig.suptitle(f"Llama-3.1-8B on {int(df['instances'].iloc[0])} x H100, ShareGPT conversations; "
                 f"GPU 0 fails at {df['fail_s'].iloc[0]:.0f} s")
    return fig


if __name__ == "__main__":
    cli("failures")

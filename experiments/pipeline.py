"""Pipeline-parallel micro-batches: the bubble against GPipe's formula, and what splitting costs.

    python experiments/pipeline.py [--quick]

Part "bubble" (perf/pipeline.py priced on one step, no simulation): Llama-3.1-70B in four
pipeline stages on H100s, a step of 256 sequences (2,000 tokens of context each) or of 64
prefill chunks of 128 tokens; micro-batches m = 1, 2, 4, 8, 16 under GPipe's per-iteration
schedule and the continuous one (vLLM's virtual engines, Vidur's stage scheduler), with equal
layers per stage and with the first stage holding 11 layers more (26/18/18/18). The bubble is
the idle share of stage-time. GPipe (Huang et al., 2019) gives (p - 1)/(m + p - 1) for equal
stages: 0.43 at p = m = 4.

Part "serving" (simulated): the same model and stages under a Poisson load of chat-length
requests (prompt median 512, output median 160) at a low and a high rate; TPOT and output
throughput against m. TensorRT-LLM's maintainers (NVIDIA/TensorRT-LLM issue 1144): "in small
batch size, PP cannot bring too many benefit even for throughput because it will split the full
batch into several micro batches" - the gain of micro-batches should grow with the batch.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from suite import Headline, Lever, Rule, cli, simulate

from simkv.config.parallel import PipelineConfig
from simkv.engine.pool import load_model
from simkv.entities.hardware import load_profile
from simkv.metrics import style
from simkv.perf.pipeline import PipelinedCost, gpipe_bubble
from simkv.perf.roofline import CostModel
from simkv.policies.scheduler.interface import SchedulerOutput

# Declared before the run. GPipe's bubble at p = 4, m = 4 with equal stages, on a compute-bound
# step (prefill chunks: time proportional to tokens, GPipe's premise).
RULE_GPIPE = Rule(paper=gpipe_bubble(4, 4), tol=0.25, null=0.0)
# TensorRT-LLM's maintainers: micro-batches gain more at large batches (ratio of gains > 1).
RULE_SMALL_BATCH = Rule(paper=None, null=1.0, higher=True)

MICRO = (1, 2, 4, 8, 16)
PARTITIONS = {"equal": [], "26/18/18/18": [26, 18, 18, 18]}


def _steps() -> dict[str, SchedulerOutput]:
    decode = SchedulerOutput(num_decodes=256, decode_context=(256 * 2000,), num_sampled=256)
    # 64 prompts of 128 tokens: a compute-bound step whose time scales with its tokens.
    prefill = SchedulerOutput(prefill_tokens=64 * 128, prefill_attn_pairs=64 * 128 * 129 / 2,
                              prefill_kv_tokens=64 * 128, prefills=[(None, 128)] * 64,  # type: ignore[list-item]
                              num_sampled=64)
    return {"decode 256 x 2000": decode, "prefill 64 x 128": prefill}


def bubbles() -> list[dict]:
    inner = CostModel(load_model("llama3_70b"), load_profile("h100_sxm_80gb"), 1, 4)
    rows = []
    for step_name, out in _steps().items():
        base = float(inner.iteration_time(out))
        for part, layers in PARTITIONS.items():
            for schedule in ("per_iteration", "continuous"):
                for m in MICRO:
                    c = PipelinedCost(inner, PipelineConfig(micro_batches=m, schedule=schedule,
                                                            layer_partition=layers))
                    t = float(c.run_times(out))
                    rows.append({"part": "bubble", "step": step_name, "partition": part,
                                 "schedule": schedule, "micro_batches": m, "step_s": t,
                                 "speedup_vs_m1": base / t, "bubble": c.bubble_fraction(out),
                                 "gpipe_bubble": gpipe_bubble(4, m)})
    return rows


def serving(quick: bool) -> list[dict]:
    n = 300 if quick else 3000
    rates = (2.0, 12.0) if not quick else (2.0, 10.0)
    micro = (1, 4) if quick else (1, 2, 4, 8)
    rows = []
    for rate in rates:
        for m in micro:
            run = simulate(["model=llama3_70b", "cluster.replicas=1", "cluster.pipeline_parallel=4",
                            f"pipeline.micro_batches={m}", "workload=poisson",
                            f"workload.num_requests={n}", f"workload.rate={rate}"])
            s = run.summary
            rows.append({"part": "serving", "rate": rate, "micro_batches": m,
                         "schedule": "continuous", "partition": "equal",
                         "tpot_p50_s": s["tpot_s"]["p50"], "ttft_p50_s": s["ttft_s"]["p50"],
                         "output_tokens_per_s": s["throughput"]["output_tokens_per_s"],
                         "finished": s["requests"]["finished"]})
    return rows


def run(quick: bool) -> pd.DataFrame:
    return pd.DataFrame(bubbles() + serving(quick))


def headline(df: pd.DataFrame) -> list[Headline]:
    b = df[df["part"] == "bubble"]
    pick = b[(b["step"] == "prefill 64 x 128") & (b["partition"] == "equal")
             & (b["schedule"] == "per_iteration") & (b["micro_batches"] == 4)].iloc[0]
    dec = b[(b["step"] == "decode 256 x 2000") & (b["partition"] == "equal")
            & (b["schedule"] == "continuous")].set_index("micro_batches")
    skew = b[(b["step"] == "decode 256 x 2000") & (b["partition"] == "26/18/18/18")
             & (b["schedule"] == "continuous")].set_index("micro_batches")
    s = df[df["part"] == "serving"]
    tpot = s.pivot_table(index="rate", columns="micro_batches", values="tpot_p50_s")
    low, high = tpot.index.min(), tpot.index.max()
    gain_low = tpot.loc[low, 1] / tpot.loc[low, 4]
    gain_high = tpot.loc[high, 1] / tpot.loc[high, 4]
    ratio = gain_high / gain_low
    return [
        Headline("GPipe (Huang et al. 2019)", "bubble (p - 1)/(m + p - 1) of equal stages, "
                 f"p = m = 4, per-iteration schedule [{RULE_GPIPE.text('')}]",
                 f"{RULE_GPIPE.paper:.3f}", f"{pick.bubble:.3f}", RULE_GPIPE, float(pick.bubble),
                 why="on a compute-bound step (64 prefills of 128 tokens); the last stage's LM head "
                 "and host time make the stages unequal",
                 lever=Lever("bubble", "part == 'bubble' and step == 'prefill 64 x 128' and "
                             "partition == 'equal' and schedule == 'per_iteration' and "
                             "micro_batches == 4"), unit=""),
        Headline("NVIDIA/TensorRT-LLM issue 1144", "micro-batches help little at small batches: "
                 f"TPOT gain of m = 4 at {high:g} req/s over that at {low:g} req/s "
                 f"[{RULE_SMALL_BATCH.text()}]", "direction",
                 f"{gain_low:.2f}x at {low:g} req/s, {gain_high:.2f}x at {high:g} req/s",
                 RULE_SMALL_BATCH, float(ratio),
                 lever=Lever("tpot_p50_s", "part == 'serving' and micro_batches == 4 and "
                             f"rate == {float(high)!r}", -1.0),
                 why=f"decode step of 256 x 2000 tokens: {dec.loc[1, 'step_s'] * 1e3:.0f} ms back to "
                 f"back, {dec.loc[4, 'step_s'] * 1e3:.0f} ms at m = 4, {dec.loc[16, 'step_s'] * 1e3:.0f} "
                 f"ms at m = 16 (each micro-batch re-reads its stage's weights); 26/18/18/18 "
                 f"layers: {skew.loc[4, 'step_s'] * 1e3:.0f} ms at m = 4"),
    ]


def figure(df: pd.DataFrame) -> Figure:
    fig, (a, b) = style.figure(1, 2, size=(11, 3.8))
    bub = df[df["part"] == "bubble"]
    for (step, part, sched), g in bub.groupby(["step", "partition", "schedule"]):
        if step != "decode 256 x 2000":
            continue
        a.plot(g["micro_batches"], g["step_s"] * 1e3, marker="o", label=f"{sched}, {part}")
    a.set_xscale("log", base=2)
    a.set_xlabel("micro-batches")
    a.set_ylabel("decode step (ms)")
    a.set_title("Llama-3.1-70B PP4, 256 x 2000-token decode")
    a.legend(fontsize=7)
    g = bub[(bub["step"] == "prefill 64 x 128") & (bub["partition"] == "equal")
            & (bub["schedule"] == "per_iteration")]
    b.plot(g["micro_batches"], g["bubble"], marker="o", label="simkv, per iteration")
    b.plot(g["micro_batches"], g["gpipe_bubble"], ls="--", label="GPipe (p-1)/(m+p-1)")
    b.set_xscale("log", base=2)
    b.set_xlabel("micro-batches")
    b.set_ylabel("bubble (idle share)")
    b.set_title("compute-bound step, equal stages")
    b.legend(fontsize=7)
    return fig


if __name__ == "__main__":
    cli("pipeline")

"""Attention-FFN disaggregation against colocated MoE serving, MegaScale-Infer's setting.

    python experiments/afd.py [--quick]

MegaScale-Infer (arXiv 2504.02263, section 7.1, Figure 8a): decoding throughput per GPU of
Mixtral-8x22B (141B, 8 experts, top-2), DBRX and a 317B "Scaled-MoE" on 80 GB Ampere GPUs
(8 nodes of 8, NVLink 400 GB/s, 8 x 200 Gb/s NICs per node), under a time-between-tokens SLO
of 150 ms, on production traces (median input 571, output 159 tokens); baselines vLLM
(tensor/pipeline parallelism) and TensorRT-LLM (tensor + expert parallelism). Its headline:
up to 1.90x the per-GPU throughput of colocated serving (Scaled-MoE against TensorRT-LLM;
Mixtral-8x22B and DBRX: up to 1.28x against TensorRT-LLM and 2.56x against vLLM).

simkv's version, Mixtral-8x22B (the model of the three whose architecture is public; the
Scaled-MoE's is not): every deployment plan's largest decode batch whose step meets 150 ms and
whose KV (sequences of 571 + 159 tokens) fits, priced by simkv's cost models
(perf/roofline.py colocated, perf/afd.py disaggregated), throughput per GPU = batch / step /
GPUs. Plans searched as MegaScale-Infer's Algorithm 1 does (exhaustively): colocated TP8 (vLLM:
experts TP-split), TP8 + EP8 (TensorRT-LLM), data-parallel attention DP8 + EP8, TP8 x PP2 with 2
micro-batches on 16 GPUs; AFD: attention TP in {1, 2, 4, 8} x ranks in {1, .., 8} (at most 32
GPUs), 8 or 16 expert GPUs, 1 to 4 micro-batches. The GPU is simkv's A100-80GB with NVLink at
200 GB/s per direction (the paper's 400 GB/s) and 25 GB/s per GPU of RDMA (8 x 200 Gb/s per
node). One simulated run per best plan checks the steady-state estimate (quick: skipped).
"""

from __future__ import annotations

import dataclasses
import itertools

import pandas as pd
from matplotlib.figure import Figure
from suite import Headline, Lever, Rule, cli

from simkv.config.parallel import PipelineConfig
from simkv.config.schema import EngineConfig, KVConfig, MoEConfig
from simkv.engine.capacity import kv_capacity
from simkv.engine.pool import load_model
from simkv.entities.hardware import load_profile
from simkv.metrics import style
from simkv.perf.afd import AFDCost
from simkv.perf.expert_parallel import AllToAllLinks
from simkv.perf.pipeline import PipelinedCost
from simkv.perf.roofline import CostModel
from simkv.policies.scheduler.interface import SchedulerOutput

PROMPT, OUTPUT, TBT_S = 571, 159, 0.150  # MegaScale-Infer section 7.1
NIC = 25e9  # 8 x 200 Gb/s per node of 8 GPUs
NVLINK = 200e9  # 400 GB/s NVLink, per direction
# Declared before the run: MegaScale-Infer's ratios against each colocated baseline (Fig. 8a).
RULE_TRT = Rule(paper=1.28, tol=0.25)  # Mixtral-8x22B / DBRX vs TensorRT-LLM
RULE_VLLM = Rule(paper=2.56, tol=0.25)  # vs vLLM
RULE_HEADLINE = Rule(paper=1.90, tol=0.25)  # "up to 1.90x" (Scaled-MoE vs TensorRT-LLM)
# A what-if: does AFD's gain survive data-parallel attention + EP on the same GPUs (AFD ahead)?
RULE_DPEP = Rule(paper=None, null=1.0, higher=True)
LEVER = Lever("tokens_per_s_per_gpu", "kind == 'afd'")  # AFD's plans: every number stands on them


def _hw():
    return dataclasses.replace(load_profile("a100_80gb"), nvlink_bandwidth=NVLINK)


def best_batch(cost, gpus: int, kv_tokens: int) -> dict:
    """Largest decode batch within the TBT SLO and the KV, and its throughput per GPU."""
    ctx = PROMPT + OUTPUT / 2.0

    def step(b: int) -> float:
        return float(cost.iteration_time(SchedulerOutput(num_decodes=b, decode_context=(b * ctx,),
                                                         num_sampled=b)))

    most = kv_tokens // (PROMPT + OUTPUT)
    if most < 1 or step(1) > TBT_S:
        return {"batch": 0, "step_s": float("nan"), "tokens_per_s_per_gpu": 0.0}
    lo, hi = 1, int(most)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if step(mid) <= TBT_S:
            lo = mid
        else:
            hi = mid - 1
    t = step(lo)
    return {"batch": lo, "step_s": t, "tokens_per_s_per_gpu": lo / t / gpus}


def plans(quick: bool) -> list[dict]:
    m = load_model("mixtral_8x22b")
    hw = _hw()
    kv = KVConfig()
    eng = EngineConfig()
    links = AllToAllLinks(hw.nvlink_bandwidth * hw.eff("nvlink").values[-1], hw.nvlink_latency_s,
                          NIC, 5e-6, 8)
    rows = []

    def add(kind: str, name: str, cost, gpus: int, seats: int = 8192) -> None:
        try:
            cap = kv_capacity(cost, hw, kv, 8192, seats)
        except ValueError:
            return
        rows.append({"kind": kind, "plan": name, "gpus": gpus, **best_batch(cost, gpus, cap.tokens)})

    add("vllm", "TP8", CostModel(m, hw, 8, 1, eng, links=links), 8)
    add("trtllm", "TP8-EP8", CostModel(m, hw, 8, 1, eng, expert_parallel=8, links=links), 8)
    # Data-parallel attention + EP (DeepSeek's and SGLang's colocated layout): a stronger
    # colocated baseline than the paper's, reported apart.
    add("dp_ep", "DP8-EP8", CostModel(m, hw, 1, 1, eng, data_parallel=8, expert_parallel=8,
                                      links=links), 8)
    add("vllm", "TP8-PP2 (2 micro-batches)", PipelinedCost(CostModel(m, hw, 8, 2, eng, links=links),
                                                               PipelineConfig(micro_batches=2)), 16)
    tps = (2,) if quick else (1, 2, 4, 8)
    ranks = (4,) if quick else range(1, 9)
    experts = (8,) if quick else (8, 16)
    micro = (1, 3) if quick else (1, 2, 3, 4)
    for tp, n_a, n_e, mb in itertools.product(tps, ranks, experts, micro):
        if tp * n_a > 32:
            continue
        try:
            cost = AFDCost(m, hw, tp, eng, data_parallel=n_a, expert_gpus=n_e, micro_batches=mb,
                           moe=MoEConfig(), network_bandwidth=NIC, network_latency_s=5e-6)
        except ValueError:
            continue
        add("afd", f"attn TP{tp} x {n_a}, {n_e} expert GPUs, m={mb}", cost, tp * n_a + n_e)
    return rows


def run(quick: bool) -> pd.DataFrame:
    return pd.DataFrame(plans(quick))


def _best(df: pd.DataFrame, kind: str) -> pd.Series:
    sub = df[df["kind"] == kind]
    return sub.loc[sub["tokens_per_s_per_gpu"].idxmax()]


def headline(df: pd.DataFrame) -> list[Headline]:
    afd, trt, vllm = _best(df, "afd"), _best(df, "trtllm"), _best(df, "vllm")
    dpep = _best(df, "dp_ep")
    r_trt = afd.tokens_per_s_per_gpu / trt.tokens_per_s_per_gpu
    r_vllm = afd.tokens_per_s_per_gpu / vllm.tokens_per_s_per_gpu
    r_dpep = afd.tokens_per_s_per_gpu / dpep.tokens_per_s_per_gpu
    why = (f"best AFD plan {afd.plan} ({afd.gpus} GPUs, batch {afd.batch}, step "
           f"{afd.step_s * 1e3:.0f} ms, {afd.tokens_per_s_per_gpu:.0f} tok/s/GPU); TP8-EP8 "
           f"{trt.tokens_per_s_per_gpu:.0f}, TP8 {vllm.tokens_per_s_per_gpu:.0f} tok/s/GPU; "
           f"decode under TBT <= 150 ms, KV for 571 + 159 tokens")
    return [
        Headline("MegaScale-Infer", "decode throughput per GPU, AFD vs colocated TP+EP "
                 f"(TensorRT-LLM's layout), Mixtral-8x22B [{RULE_TRT.text()}]", "up to 1.28x",
                 f"{r_trt:.2f}x", RULE_TRT, float(r_trt), why=why, lever=LEVER),
        Headline("MegaScale-Infer", "the same against TP only (vLLM's layout) "
                 f"[{RULE_VLLM.text()}]", "up to 2.56x", f"{r_vllm:.2f}x",
                 RULE_VLLM, float(r_vllm), lever=LEVER,
                 why="simkv prices vLLM's and TensorRT-LLM's layouts with the same kernels: the "
                 "paper's extra gap over vLLM is implementation, which simkv does not model"),
        Headline("MegaScale-Infer", "headline: up to 1.90x per GPU against colocated MoE serving "
                 f"(Scaled-MoE, 317B, architecture unpublished) [{RULE_HEADLINE.text()}]",
                 "1.90x", f"{r_trt:.2f}x (Mixtral-8x22B, the public model)",
                 RULE_HEADLINE, float(r_trt), lever=LEVER,
                 why="simkv's Mixtral-8x22B number against the Scaled-MoE claim: a different model"),
        Headline("(no paper: a stronger colocated baseline)", "AFD vs data-parallel attention + "
                 "EP8 on the same 80 GB GPUs (DeepSeek/SGLang's layout)", "-",
                 f"{r_dpep:.2f}x (DP8-EP8: {dpep.tokens_per_s_per_gpu:.0f} tok/s/GPU, batch "
                 f"{dpep.batch})", RULE_DPEP, float(r_dpep), lever=LEVER,
                 why="both batch every rank's tokens into the experts; AFD's expert GPUs hold 34 GB "
                 "of experts and no KV, so per GPU it holds less KV than DP8-EP8 (docs/PARALLELISM.md)"),
    ]


def figure(df: pd.DataFrame) -> Figure:
    fig, ax = style.figure(1, 1, size=(7.5, 4.0))
    for kind, g in df.groupby("kind"):
        ax.scatter(g["gpus"], g["tokens_per_s_per_gpu"], label=str(kind), s=16)
    ax.set_xlabel("GPUs per instance")
    ax.set_ylabel("decode tokens/s per GPU (TBT <= 150 ms)")
    ax.set_title("Mixtral-8x22B on 80 GB Ampere: AFD plans vs colocated")
    ax.legend(fontsize=8)
    return fig


if __name__ == "__main__":
    cli("afd")

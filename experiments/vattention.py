"""vAttention vs PagedAttention: the KV allocator as a cost (``kv.allocator``).

    python experiments/vattention.py [--quick]

The paper's headlines (arXiv 2405.04437, abstract): vAttention generates tokens up to 1.97x
faster than vLLM, and processes prompts up to 3.92x and 1.45x faster than the
PagedAttention variants of FlashAttention and FlashInfer. Its section 7.2 (decode, 16K
context per request, vLLM v0.2.7 as the baseline): FlashAttention's contiguous kernel is up
to 2.85x faster than the best of vLLM's paged kernels (Yi-6B, batch 16 x 16K); section
3.3.1: vLLM's PagedAttention kernel was 20-26% slower than FasterTransformer's. Its
artifact runs on A100s (github microsoft/vattention, scripts/artifact_asplos25).

simkv's setting: Llama-3.1-8B on one A100-80GB (datasheet profile), its attention
efficiencies taken as the contiguous kernel's (vAttention runs FlashAttention-2 unmodified):

1. decode: a decode iteration of 1-32 sequences at 16K context each; vAttention against a
   paged kernel whose decode attention is 2.85x slower (vLLM v0.2.7's, the paper's maximum)
   and 1.25x slower (a good paged kernel: FlashInfer-class, assumed); tokens per second of
   the iteration (batch / its time, page mapping included);
2. prefill: one prompt of 4K-128K tokens; paged FlashAttention-2 (attention 3.92x slower),
   paged FlashInfer (1.45x) and vAttention;
3. allocation: vAttention's driver calls to map pages (46 us per page, measured on the lent
   H200: validation/vattention/), 2 MiB against 64 KiB pages, synchronous or overlapped with
   the iteration: the TTFT of a 16K prompt.

The experiment contract (experiments/suite.py): run(quick), figure(df), headline(df); writes
experiments/results/vattention.csv, .png and .pdf.
"""

from __future__ import annotations

import pandas as pd
from kv_common import pool_of, run_batch
from matplotlib.figure import Figure
from suite import Headline, Lever, Param, Position, Rule, Setting, Swept, cli

from simkv.metrics import style
from simkv.policies.scheduler.interface import SchedulerOutput

PAPER = {"decode": 1.97, "prefill_fa": 3.92, "prefill_fi": 1.45, "decode_kernel": 2.85}
BASE = ["model=llama3_8b", "hardware=a100_80gb", "model.max_model_len=140000",
        "scheduler.max_num_batched_tokens=140000"]
# The paged kernels' attention time relative to the contiguous one: not measured here (a
# paged-vs-contiguous kernel timing on the device would source it), so assumed and swept over
# the plausible range: about equal (a good paged kernel) to the paper's worst cases. The
# paper's own slowdowns are not used as inputs (they are what it reports).
DECODE_K = (1.25, 2.0, 3.0)
PREFILL_K = (1.25, 2.0, 4.0)
MID = 2.0
VATTN = ["kv.allocator.kind=vattention", "kv.allocator.prefill_attention_time=1.0",
         "kv.allocator.decode_attention_time=1.0"]


def paged(prefill: float = 1.0, decode: float = 1.0) -> list[str]:
    return [f"kv.allocator.prefill_attention_time={prefill}",
            f"kv.allocator.decode_attention_time={decode}"]


def run(quick: bool) -> pd.DataFrame:
    rows = []
    ctx = 16384
    for b in ((1, 8) if quick else (1, 2, 4, 8, 16, 32)):
        systems = {f"paged, decode attention {k:g}x (assumed)": paged(decode=k) for k in DECODE_K}
        for system, extra in {**systems, "vAttention": VATTN}.items():
            # A decode step of b sequences at 16K each, priced by the pool's cost model (the
            # paper times decode iterations; a run's TPOT would mix in the prompts' prefills).
            cost = pool_of([*BASE, f"scheduler.max_num_seqs={b}", *extra]).cost(1)
            step = SchedulerOutput(num_decodes=b, decode_context=(b * (ctx + 1),), num_sampled=b)
            rows.append({"study": "decode", "system": system, "batch": b, "tokens": ctx,
                         "value": b / float(cost.run_times(step)), "metric": "decode tokens/s"})
    for n in ((4096, 32768) if quick else (4096, 16384, 65536, 131072)):
        systems = {f"paged, prefill attention {k:g}x (assumed)": paged(prefill=k) for k in PREFILL_K}
        for system, extra in {**systems, "vAttention": VATTN}.items():
            r = run_batch(1, n, 1, [*BASE, "scheduler.max_num_seqs=1", *extra])
            rows.append({"study": "prefill", "system": system, "batch": 1, "tokens": n,
                         "value": n / r.summary["ttft_s"]["mean"], "metric": "prefill tokens/s"})
    n = 4096 if quick else 16384
    for page in (64, 2048):
        for overlap in (False, True):
            system = f"vAttention {page} KiB pages, {'overlapped' if overlap else 'synchronous'}"
            extra = [*VATTN, f"kv.allocator.page_kib={page}", f"kv.allocator.overlap={overlap}"]
            r = run_batch(1, n, 1, [*BASE, "scheduler.max_num_seqs=1", *extra])
            rows.append({"study": "allocation", "system": system, "batch": 1, "tokens": n,
                         "value": r.summary["ttft_s"]["mean"], "metric": "TTFT s"})
    r = run_batch(1, n, 1, [*BASE, "scheduler.max_num_seqs=1", *VATTN, "kv.allocator.map_latency_us=0"])
    rows.append({"study": "allocation", "system": "vAttention, no allocation cost", "batch": 1,
                 "tokens": n, "value": r.summary["ttft_s"]["mean"], "metric": "TTFT s"})
    df = pd.DataFrame(rows)
    # Speed-up of vAttention over each baseline, per setting.
    for study in ("decode", "prefill"):
        sel = df.study == study
        v = df[sel & (df.system == "vAttention")].set_index(["batch", "tokens"])["value"]
        df.loc[sel, "vattention_speedup"] = [
            v.loc[(b, t)] / x for b, t, x in zip(df[sel].batch, df[sel].tokens, df[sel].value, strict=True)]
    df["paper_decode_speedup"] = PAPER["decode"]
    df["paper_prefill_speedup_fa"] = PAPER["prefill_fa"]
    df["paper_prefill_speedup_fi"] = PAPER["prefill_fi"]
    return df


# Declared before the run: the abstract's numbers, +-25%; allocation hidden: within 5%.
RULE_DECODE = Rule(paper=PAPER["decode"], tol=0.25)
RULE_FA = Rule(paper=PAPER["prefill_fa"], tol=0.25)
RULE_FI = Rule(paper=PAPER["prefill_fi"], tol=0.25)
RULE_HIDDEN = Rule(paper=1.0, tol=0.05, null=None)
SETTING = Setting(
    figure="arXiv 2405.04437 abstract: tokens generated up to 1.97x faster than vLLM, prompts "
           "processed up to 3.92x / 1.45x faster than the paged FlashAttention-2 / FlashInfer "
           "kernels; its section 7.2 (decode at 16K context per request, vLLM v0.2.7)",
    paper="Yi-6B / Llama-3-8B / Yi-34B class models on A100s (its artifact, github "
          "microsoft/vattention scripts/artifact_asplos25); decode at 16K context per request",
    simkv="Llama-3.1-8B on the A100-80GB profile (its attention efficiencies taken as the "
          "contiguous kernel's); decode iterations of 1-32 sequences at 16K; one prompt of "
          "4K-128K; the paged kernels' attention time a swept assumption",
    matched=False, differs="the paged kernels' slowdown is the result's main input and is not "
                           "measured here (assumed, swept)")
SETTING_ALLOC = Setting(
    figure="arXiv 2405.04437: vAttention's background page mapping (github microsoft/vattention: the _sync "
           "backends turn it off); the mapping cost measured on the lent H200 (validation/vattention/)",
    paper="pages mapped in the background while the iteration computes",
    simkv="one 16K prompt (4K quick), 2 MiB pages, 46 us per mapped page, mapping overlapped "
          "with the iteration, against no allocation cost",
    matched=True)
PARAMS = (Param("paged decode attention time", f"{MID:g}x", "", swept=f"{DECODE_K[0]:g}-{DECODE_K[-1]:g}x"),
          Param("paged prefill attention time", f"{MID:g}x", "",
                swept=f"{PREFILL_K[0]:g}-{PREFILL_K[-1]:g}x"))
PARAMS_ALLOC = (Param("kv.allocator.map_latency_us", "46", "measured on the lent H200 "
                      "(validation/vattention/vmm_latency_h200_2026.csv)"),
                Param("kv.allocator.page_kib", "2048", "vAttention's default page (its README)"))


def headline(df: pd.DataFrame) -> list[Headline]:
    def gains(study: str, at: int) -> dict[float, float]:
        d = df[df.study == study]
        key = "batch" if study == "decode" else "tokens"
        d = d[d[key] == at].set_index("system")["value"]
        v = float(d["vAttention"])
        word = "decode" if study == "decode" else "prefill"
        ks = DECODE_K if study == "decode" else PREFILL_K
        return {k: v / float(d[f"paged, {word} attention {k:g}x (assumed)"]) for k in ks}

    b = int(df[df.study == "decode"].batch.max())
    n = int(df[df.study == "prefill"].tokens.max())
    dec, pre = gains("decode", b), gains("prefill", n)
    alloc = df[df.study == "allocation"].set_index("system")["value"]
    free = float(alloc["vAttention, no allocation cost"])
    over = float(alloc["vAttention 2048 KiB pages, overlapped"]) / free
    sync = float(alloc["vAttention 2048 KiB pages, synchronous"]) / free
    small = float(alloc["vAttention 64 KiB pages, overlapped"]) / free
    why = {Position.BELOW: "at the middle of the assumed range; the gain approaches the kernel's "
           "slowdown only where attention dominates the iteration (docs/MEMORY.md)",
           Position.ABOVE: "at the middle of the assumed range, attention dominates the iteration",
           Position.WITHIN: "at the middle of the assumed kernel slowdown"}

    def sweep(g: dict[float, float], ks: tuple[float, ...]) -> tuple[Swept, ...]:
        return (Swept("paged attention time", tuple(g[k] for k in ks if k != MID),
                      f"{ks[0]:g}-{ks[-1]:g}x"),)

    def share(g: dict[float, float]) -> float:
        """Attention's share of the paged iteration implied by the gain g at the middle slowdown
        K: the contiguous iteration's attention share is a = (g - 1) / (K - 1) (g = 1 + (K - 1)
        a), so the paged one's is K a / g."""
        x = g[MID]
        return MID * (x - 1) / ((MID - 1) * x) if x > 1 else 0.0

    dec_why = (f"attention is {share(dec):.0%} of the paged decode iteration at batch {b} x 16K and "
               f"{share(pre):.0%} of the paged prefill of {n:,} tokens (at a {MID:g}x slowdown): the gain "
               "is the slowdown diluted by the rest of the iteration")
    lever_dec = Lever("value", f"study == 'decode' and system == 'vAttention' and batch == {b}")
    lever_pre = Lever("value", f"study == 'prefill' and system == 'vAttention' and tokens == {n}")
    return [
        Headline("vAttention (arXiv 2405.04437)", f"decode throughput over paged kernels (batch {b} x "
                 "16K context)", f"up to {RULE_DECODE.paper:g}x (over vLLM)",
                 ", ".join(f"{g:.2f}x at {k:g}x" for k, g in dec.items()), RULE_DECODE, dec[MID],
                 SETTING, PARAMS, why=why, sweep=sweep(dec, DECODE_K), lever=lever_dec,
                 seed="vAttention", decomposition=dec_why),
        Headline("vAttention", f"prefill throughput over paged FlashAttention-2 ({n:,}-token prompt)",
                 f"up to {RULE_FA.paper:g}x", ", ".join(f"{g:.2f}x at {k:g}x" for k, g in pre.items()),
                 RULE_FA, pre[MID], SETTING, PARAMS, why=why, sweep=sweep(pre, PREFILL_K),
                 lever=lever_pre, seed="vAttention", decomposition=dec_why),
        Headline("vAttention", f"prefill throughput over paged FlashInfer ({n:,}-token prompt)",
                 f"up to {RULE_FI.paper:g}x", ", ".join(f"{g:.2f}x at {k:g}x" for k, g in pre.items()),
                 RULE_FI, pre[MID], SETTING, PARAMS, why=why, sweep=sweep(pre, PREFILL_K),
                 lever=lever_pre, seed="vAttention", decomposition=dec_why),
        Headline("vAttention", "page mapping hidden behind compute: TTFT with overlapped mapping / "
                 "with no allocation cost", "hidden (read as 1.0x +- 5%)",
                 f"{over:.3f}x (synchronous {sync:.3f}x; 64 KiB pages {small:.3f}x)", RULE_HIDDEN, over,
                 SETTING_ALLOC, PARAMS_ALLOC,
                 why={Position.WITHIN: "a 2 MiB page holds 1,024 tokens of one layer's keys: a few "
                      "pages per iteration, mapped while it computes",
                      Position.REVERSED: "the mapping outlasts the iteration it overlaps"},
                 lever=Lever("value", "study == 'allocation' and system == "
                             "'vAttention 2048 KiB pages, overlapped'"),
                 seed="vAttention"),
    ]


def figure(df: pd.DataFrame) -> Figure:
    fig, axes = style.figure(1, 3, size=(16, 4.2))
    for ax, study, x, title in ((axes[0], "decode", "batch", "decode, 16K context"),
                                (axes[1], "prefill", "tokens", "prefill, one prompt")):
        d = df[(df.study == study) & (df.system != "vAttention")]
        for system, g in d.groupby("system", sort=False):
            ax.plot(g[x], g.vattention_speedup, "o-", label=f"over {system}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel(x)
        ax.set_ylabel("vAttention speed-up")
        ax.set_title(title)
    dec, fa, fi = (df[c].iloc[0] for c in
                   ("paper_decode_speedup", "paper_prefill_speedup_fa", "paper_prefill_speedup_fi"))
    axes[0].axhline(dec, color="k", ls="--", label=f"paper: up to {dec:g}x")
    axes[1].axhline(fa, color="k", ls="--", label=f"paper: up to {fa:g}x (FA2)")
    axes[1].axhline(fi, color="k", ls=":", label=f"paper: up to {fi:g}x (FlashInfer)")
    axes[0].legend()
    axes[1].legend(loc="center left")
    a = df[df.study == "allocation"]
    axes[2].barh(a.system, a.value * 1e3, color=style.PALETTE[0])
    axes[2].set_xlabel("TTFT (ms)")
    axes[2].set_title(f"page mapping, {int(a.tokens.iloc[0])}-token prompt")
    axes[2].invert_yaxis()
    fig.suptitle("vAttention vs PagedAttention, Llama-3.1-8B, A100-80GB")
    return fig


if __name__ == "__main__":
    cli("vattention")

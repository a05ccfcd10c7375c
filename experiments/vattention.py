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

Writes experiments/results/vattention.csv and vattention.png.
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from kv_common import OUT, pool_of, run_batch, save, show

from simkv.policies.scheduler.interface import SchedulerOutput

PAPER = {"decode": 1.97, "prefill_fa": 3.92, "prefill_fi": 1.45, "decode_kernel": 2.85}
BASE = ["model=llama3_8b", "hardware=a100_80gb", "model.max_model_len=140000",
        "scheduler.max_num_batched_tokens=140000"]
VATTN = ["kv.allocator.kind=vattention", "kv.allocator.prefill_attention_time=1.0",
         "kv.allocator.decode_attention_time=1.0"]


def paged(prefill: float = 1.0, decode: float = 1.0) -> list[str]:
    return [f"kv.allocator.prefill_attention_time={prefill}",
            f"kv.allocator.decode_attention_time={decode}"]


def run(quick: bool = False) -> pd.DataFrame:
    rows = []
    ctx = 16384
    for b in ((1, 8) if quick else (1, 2, 4, 8, 16, 32)):
        for system, extra in {"vLLM paged (decode attention 2.85x)": paged(decode=2.85),
                              "good paged kernel (1.25x)": paged(decode=1.25),
                              "vAttention": VATTN}.items():
            # A decode step of b sequences at 16K each, priced by the pool's cost model (the
            # paper times decode iterations; a run's TPOT would mix in the prompts' prefills).
            cost = pool_of([*BASE, f"scheduler.max_num_seqs={b}", *extra]).cost(1)
            step = SchedulerOutput(num_decodes=b, decode_context=(b * (ctx + 1),), num_sampled=b)
            rows.append({"study": "decode", "system": system, "batch": b, "tokens": ctx,
                         "value": b / float(cost.run_times(step)), "metric": "decode tokens/s"})
    for n in ((4096, 32768) if quick else (4096, 16384, 65536, 131072)):
        for system, extra in {"paged FlashAttention-2 (3.92x)": paged(prefill=3.92),
                              "paged FlashInfer (1.45x)": paged(prefill=1.45),
                              "vAttention": VATTN}.items():
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


def plot(df: pd.DataFrame, quick: bool) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    for ax, study, x, title in ((axes[0], "decode", "batch", "decode, 16K context"),
                                (axes[1], "prefill", "tokens", "prefill, one prompt")):
        d = df[(df.study == study) & (df.system != "vAttention")]
        for system, g in d.groupby("system", sort=False):
            ax.plot(g[x], g.vattention_speedup, "o-", label=f"over {system}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel(x)
        ax.set_ylabel("vAttention speed-up")
        ax.set_title(title)
    axes[0].axhline(PAPER["decode"], color="k", ls="--", label="paper: up to 1.97x")
    axes[1].axhline(PAPER["prefill_fa"], color="k", ls="--", label="paper: up to 3.92x (FA2)")
    axes[1].axhline(PAPER["prefill_fi"], color="k", ls=":", label="paper: up to 1.45x (FlashInfer)")
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8)
    a = df[df.study == "allocation"]
    axes[2].barh(a.system, a.value * 1e3, color="#37a")
    axes[2].set_xlabel("TTFT (ms)")
    axes[2].set_title(f"page mapping, {int(a.tokens.iloc[0])}-token prompt")
    axes[2].invert_yaxis()
    fig.suptitle("vAttention vs PagedAttention, Llama-3.1-8B, A100-80GB")
    fig.tight_layout()
    OUT.mkdir(exist_ok=True)
    fig.savefig(OUT / f"vattention{'_quick' if quick else ''}.png", dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes (seconds), for CI")
    quick = ap.parse_args().quick
    df = run(quick)
    path = save(df, "vattention", quick)
    show(df[["study", "system", "batch", "tokens", "metric", "value", "vattention_speedup"]])
    plot(df, quick)
    print(f"paper: decode up to {PAPER['decode']}x over vLLM, prefill up to {PAPER['prefill_fa']}x "
          f"(FA2 paged) and {PAPER['prefill_fi']}x (FlashInfer paged); wrote {path}")


if __name__ == "__main__":
    main()

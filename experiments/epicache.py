"""EpiCache on long-conversation question answering: peak memory and latency per question.

    python experiments/epicache.py [--quick]

The paper's headline (arXiv 2509.17396, abstract): block-wise prefill bounds peak KV memory,
episodic compression keeps near-full accuracy at 4-6x compression, and latency and memory
drop by up to 2.4x and 3.5x. Its efficiency figure uses LLaMA-3.2-3B on an A100 (figure 1's
caption); its code's defaults (github apple/ml-epicache): budget M = 8192 per layer, prefill
blocks of 2048 tokens, 4 episodes.

simkv: Llama-3.2-3B on one A100-80GB. Each question is a request whose prompt is the
conversation so far plus the question (~30 tokens) and whose answer is 32 tokens; the history
lengths are LoCoMo's and REALTALK's mean conversation (13,377 and 17,110 words, from
shared/data/conversations; x1.3 tokens per word) and LongMemEval-style longer histories up to
100K tokens. Systems: full KV with the whole history prefilled in one pass (as a Hugging Face
``generate`` does; the paper's baseline) and chunked in 2048-token chunks (vLLM-style), and
EpiCache with M = 2048, 4096 and 8192 (block 2048). Peak GPU memory = weights + the KV the
scheduler holds at its peak + activations of the largest forward pass; latency per question
= its end-to-end time (history prefill + answer). The experiment contract
(experiments/suite.py): run(quick), figure(df), headline(df); experiments/results/epicache.csv,
.png, .pdf. The LoCoMo/REALTALK history lengths come from the shared data's statistics when
found (suite.data_dir()), else from the copy below.
"""

from __future__ import annotations

import contextlib
import json

import pandas as pd
from kv_common import pool_of, run_batch
from matplotlib.figure import Figure
from suite import Headline, cli, close, data_dir

from simkv.metrics import style

TOKENS_PER_WORD = 1.3  # assumed for English chat text (BPE tokenisers: ~1.3 tokens per word)
BASE = ["model=llama3_2_3b", "hardware=a100_80gb", "scheduler.max_num_seqs=8"]
QUESTION, ANSWER, BLOCK = 30, 32, 2048


def histories(quick: bool) -> dict[str, int]:
    words = {"LoCoMo": 13377.0, "REALTALK": 17110.0}  # mean words per conversation
    data = data_dir()
    stats = data / "conversations" / "conversation_stats.json" if data else None
    if stats is not None and stats.exists():  # the shared statistics override the copy above
        doc = json.loads(stats.read_text()).get("longconv", {})
        for name in words:
            with contextlib.suppress(KeyError, TypeError):
                words[name] = float(doc[name]["words_per_conversation"]["mean"])
    out = {name: int(w * TOKENS_PER_WORD) for name, w in words.items()}
    if not quick:
        out.update({"long 50K": 50_000, "long 100K": 100_000})
    return out


def systems(quick: bool) -> dict[str, list[str]]:
    budgets = (2048,) if quick else (2048, 4096, 8192)
    out = {"full KV, one-pass prefill": ["scheduler.chunked_prefill=false",
                                         "scheduler.max_num_batched_tokens=131072"],
           "full KV, 2048-token chunks": [f"scheduler.max_num_batched_tokens={BLOCK}"]}
    for m in budgets:
        out[f"EpiCache M={m}"] = ["kv_policy=epicache", f"kv_policy.kv_budget={m}",
                                  f"scheduler.max_num_batched_tokens={BLOCK}"]
    return out


def peak_gib(overrides: list[str], prompt: int) -> tuple[float, float]:
    """(peak KV, peak total) GiB of one question: the scheduler's own peak-KV rule."""
    pool = pool_of([*BASE, *overrides])
    cost = pool.cost(pool.base.dp)
    sched = pool.sim.scheduler
    chunk = sched.max_num_batched_tokens if sched.chunked_prefill else prompt
    kv_tokens = pool.kv_policy.peak_tokens(prompt, ANSWER, chunk)
    kv = kv_tokens * cost.kv_bytes_per_token_per_gpu()
    acts = cost.activation_bytes_per_gpu(min(chunk, prompt), 1)
    return kv / 2**30, (kv + acts + cost.weight_bytes_per_gpu()) / 2**30


def run(quick: bool) -> pd.DataFrame:
    rows = []
    for hist_name, hist in histories(quick).items():
        prompt = hist + QUESTION
        for system, extra in systems(quick).items():
            r = run_batch(2, prompt, ANSWER, [*BASE, *extra], gap_s=1e3)  # one question at a time
            kv, total = peak_gib(extra, prompt)
            req = r.requests
            rows.append({"history": hist_name, "history_tokens": hist, "system": system,
                         "latency_s": float(req["e2e_s"].median()),
                         "ttft_s": float(req["ttft_s"].median()),
                         "tpot_ms": 1e3 * float(req["tpot_s"].median()),
                         "peak_kv_gib": kv, "peak_gpu_gib": total})
    return pd.DataFrame(rows)


def headline(df: pd.DataFrame) -> list[Headline]:
    """Against full KV with a one-pass prefill (the paper's baseline), at the longest history."""
    longest = df[df.history_tokens == df.history_tokens.max()].set_index("system")
    ref = longest.loc["full KV, one-pass prefill"]
    epi = longest.loc[[s for s in longest.index if s.startswith("EpiCache")]]
    mem = float((ref.peak_gpu_gib / epi.peak_gpu_gib).max())
    lat = float((ref.latency_s / epi.latency_s).max())
    n = int(longest.history_tokens.iloc[0])
    short = df[df.history_tokens == df.history_tokens.min()].set_index("system")
    short_lat = float((short.loc["full KV, one-pass prefill"].latency_s
                       / short.loc[[s for s in short.index if s.startswith("EpiCache")]].latency_s).max())
    return [
        Headline("EpiCache (arXiv 2509.17396)", f"peak GPU memory, full KV / EpiCache ({n:,}-token history)",
                 "up to 3.5x lower", f"{mem:.2f}x lower", close(3.5, mem), "nothing fitted: budget, "
                 "block and model from the paper's code and figure 1"),
        Headline("EpiCache", f"latency per question, full KV / EpiCache ({n:,}-token history)",
                 "up to 2.4x lower", f"{lat:.2f}x lower", close(2.4, lat),
                 f"on LoCoMo-sized histories latency is not lower ({short_lat:.2f}x): each question "
                 "re-prefills the history and EpiCache adds its patched prompt (docs/KV_METHODS.md)"),
    ]


def figure(df: pd.DataFrame) -> Figure:
    fig, axes = style.figure(1, 2, size=(12, 3.8))
    for system, g in df.groupby("system", sort=False):
        axes[0].plot(g.history_tokens, g.peak_gpu_gib, marker="o", label=system)
        axes[1].plot(g.history_tokens, g.latency_s, marker="o", label=system)
    axes[0].set_ylabel("peak GPU memory (GiB)")
    axes[1].set_ylabel("latency per question (s)")
    for ax in axes:
        ax.set_xlabel("conversation history (tokens)")
        ax.set_xscale("log")
    axes[0].legend()
    fig.suptitle("Llama-3.2-3B on one A100-80GB: EpiCache (block 2048) vs full KV")
    return fig


if __name__ == "__main__":
    cli("epicache")

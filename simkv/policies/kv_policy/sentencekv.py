"""``sentencekv``: sentence-level semantic KV caching (Zhu et al., COLM 2025, arXiv 2504.00970).

SentenceKV splits the context into sentences; per sentence it keeps a semantic vector on the
GPU (the mean key of the sentence's tokens), and moves the tokens' KV to CPU DRAM. Each decode
step it scores the sentences against the (running mean) query and attends to the tokens of the
best ones, up to a token budget, plus a few always-resident start and recent tokens. Parameter
names follow its code (github zzbright1998/SentenceKV, custom_llama_sentencekv.py):
``max_capacity_prompts`` (the budget; 1024 in its README example), ``start_budget`` and
``recent_budget`` (32 each), ``semantic_factor`` (the prefill keeps budget x factor tokens of
the prompt, SnapKV-style, before the sentences are built; 3 in the README).

What simkv models, per sequence whose context exceeds the budget:

* **HBM**: the selected tokens (``budget_tokens``) plus the semantic vectors: one mean key per
  query head per sentence, as the code keeps them (after ``repeat_kv``), so a sentence costs
  ``heads x head_dim x 2`` bytes: (heads / KV heads) / 2 of a token's KV (2 tokens' worth for
  Llama-3.1-8B); sentences are ``context / tokens_per_sentence``;
* **decode attention** reads those: the similarity over the vectors is one more QK pass;
* **PCIe**: each step the selected tokens that are not always resident are fetched from DRAM
  (``fetch_fraction`` of them: 1 = nothing is reused between steps, the upper bound), serialised
  with the step, plus one PCIe latency per layer; the prefill's compressed KV (budget x
  ``semantic_factor`` tokens) is written to DRAM once when the prefill ends;
* the prefill attends to and holds the whole prompt (SentenceKV compresses after it).

At a budget that keeps the whole context nothing is offloaded, selected or fetched: ``full``.
Left out: contention of the fetches with other PCIe traffic (they do not go through the
fabric of kv/links.py), the CPU DRAM it uses (budget x factor tokens per sequence, bounded by
the node's DRAM), and any overlap of fetches with compute (``overlap`` would hide them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from simkv.config.bounds import bounded, check
from simkv.policies.kv_policy.interface import AccuracyTable, KVPolicyBase, ceil_tokens
from simkv.registry import register

# Not transcribed yet (the paper's LongBench/RULER tables could not be read here).
ACCURACY: tuple[AccuracyTable, ...] = ()


@dataclass(slots=True)
class SentenceKVConfig:
    """SentenceKV's token budget and what the selection moves."""

    # Tokens selected and attended per step (max_capacity_prompts); 0: no absolute budget.
    budget_tokens: int = bounded(1024, ge=0)
    # Alternatively a fraction of the context (the smaller of the two applies).
    budget_fraction: float = bounded(1.0, gt=0, le=1)
    # Average tokens per sentence (assumed: English prose runs ~20-25 words per sentence).
    tokens_per_sentence: float = bounded(25.0, gt=0)
    # Always-resident start + recent tokens (start_budget 32 + recent_budget 32), never fetched.
    local_tokens: int = bounded(64, ge=0)
    # Share of the selected non-local tokens fetched over PCIe each step.
    fetch_fraction: float = bounded(0.04, ge=0, le=1)
    # The prefill keeps budget x semantic_factor tokens (written to DRAM once).
    semantic_factor: float = bounded(3.0, ge=1)

    def __post_init__(self) -> None:
        check(self, "kv_policy.")


@register("kv_policy", "sentencekv", SentenceKVConfig)
class SentenceKV(KVPolicyBase):
    def __init__(self, cfg: SentenceKVConfig, **_: object) -> None:
        super().__init__(cfg)
        self.cap = float(cfg.budget_tokens) if cfg.budget_tokens else np.inf
        self._vector = 0.0  # token-equivalents of one sentence's vectors
        self._fetch_s = 0.0  # seconds to fetch one token's KV (all layers)

    def bind(self, cost: Any) -> None:
        super().bind(cost)
        b = self.bound
        assert b is not None
        m = cost.model
        # One mean key per query head per sentence, at the KV's element size.
        self._vector = b.heads_per_gpu * m.head_dim * m.kv_bytes_per_element / b.kv_bytes_token_layer
        self._fetch_s = b.kv_bytes_per_token / b.pcie_bandwidth
        self.fetch_latency_s = b.layers * b.pcie_latency_s

    def _selected(self, ctx: np.ndarray) -> np.ndarray:
        return np.minimum(ceil_tokens(self.cfg.budget_fraction * ctx), self.cap)

    def kept(self, ctx: np.ndarray) -> np.ndarray:
        sel = self._selected(ctx)
        vectors = np.ceil(ctx / self.cfg.tokens_per_sentence) * self._vector
        return np.where(sel < ctx, np.minimum(ctx, ceil_tokens(sel + vectors)), ctx)

    def extra_s(self, ctx: np.ndarray, kept: np.ndarray) -> np.ndarray | None:
        sel = self._selected(ctx)
        fetched = np.maximum(sel - self.cfg.local_tokens, 0.0) * self.cfg.fetch_fraction
        return np.where(kept < ctx, fetched * self._fetch_s, 0.0)

    def join_s(self, ctx: int, kept: float) -> float:
        if kept >= ctx:
            return 0.0
        sel = float(self._selected(np.asarray([float(ctx)]))[0])
        return min(ctx, math.ceil(sel * self.cfg.semantic_factor)) * self._fetch_s

"""``h2o``: Heavy-Hitter Oracle (Zhang et al., NeurIPS 2023, arXiv 2306.14048).

H2O keeps a budget of tokens per layer and head: the most recent ones and the "heavy
hitters", the tokens with the largest attention scores accumulated over the steps so far;
each step evicts the lowest-scoring token outside the recent window. The paper's systems
results use a budget of 20% (heavy_ratio 0.1 + recent_ratio 0.1; github FMInference/H2O).

What simkv models:

* **memory**: a sequence keeps ``min(context, budget_fraction x context, budget_tokens)``
  tokens once its prefill is done (the prefill itself attends to, and holds, the whole
  prompt: H2O evicts after it), so its blocks, and the batch that fits, follow the budget;
* **decode attention** reads the kept tokens only;
* **the method's own cost**: the accumulated score of every kept token is read and written
  each step by every query head (fp32: ``score_bytes`` = 8 per head and token), priced as
  extra HBM bytes of the decode attention (1.6% of a token's KV for OPT-6.7B's 32 MHA heads,
  6% for Llama-3.1-8B's 32 query heads over 8 KV heads). Nothing is scored when nothing can be
  evicted, so a budget of 100% is ``full``.

Left out: the scores' own memory (4 bytes per head and kept token: 0.8% of OPT-6.7B's KV);
H2O's reference code sizes its cache once from the prompt and keeps it fixed, where
``budget_fraction`` follows the growing context: set ``budget_tokens`` to a fraction of a
known prompt to reproduce the fixed cache (experiments/h2o.py does).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simkv.config.bounds import bounded, check
from simkv.policies.kv_policy.interface import AccuracyTable, KVPolicyBase, ceil_tokens
from simkv.registry import register

# No budget -> accuracy table is transcribed yet: the paper's accuracy tables (its Figures 4-5,
# Table 2) could not be read here; add rows with their source rather than inventing them.
ACCURACY: tuple[AccuracyTable, ...] = ()


@dataclass(slots=True)
class H2OConfig:
    """H2O's KV budget: a fraction of the context, optionally capped in tokens."""

    # Tokens kept (heavy hitters + recent window) as a fraction of the context; the paper: 0.2.
    budget_fraction: float = bounded(0.2, gt=0, le=1)
    # An absolute cap on the tokens kept; 0: none.
    budget_tokens: int = bounded(0, ge=0)
    # Bytes of accumulated score read and written per query head and kept token each step.
    score_bytes: float = bounded(8.0, ge=0)

    def __post_init__(self) -> None:
        check(self, "kv_policy.")


@register("kv_policy", "h2o", H2OConfig)
class H2O(KVPolicyBase):
    def __init__(self, cfg: H2OConfig, **_: object) -> None:
        super().__init__(cfg)
        self.fraction = cfg.budget_fraction
        self.cap = float(cfg.budget_tokens) if cfg.budget_tokens else np.inf
        self._score = 0.0

    def bind(self, cost: object) -> None:
        super().bind(cost)
        b = self.bound
        assert b is not None
        # Score bytes per kept token and layer, as a share of one token's KV in that layer.
        self._score = self.cfg.score_bytes * b.heads_per_gpu / b.kv_bytes_token_layer

    def kept(self, ctx: np.ndarray) -> np.ndarray:
        return np.minimum(ctx, np.minimum(ceil_tokens(self.fraction * ctx), self.cap))

    def read(self, ctx: np.ndarray, kept: np.ndarray) -> np.ndarray:
        return np.where(kept < ctx, kept * (1.0 + self._score), kept)

"""``epicache``: episodic KV cache management (Kim et al., arXiv 2509.17396; github apple/ml-epicache).

EpiCache answers questions over a long conversation under a fixed KV budget ``M`` (per layer,
on average). It prefills the history in blocks (``--prefill_chunk_size``, 2048 by default)
and evicts down to the budget after each block, so the peak is ``M`` plus one block instead of
the whole history; each block is scored by the attention of a *patched prompt* (the medoid
segments of a topical episode, found by clustering utterance windows with a small sentence
encoder, Qwen3-0.6B in its scripts); and the budget is spread over layers by their measured
sensitivity (``b_l`` proportional to ``s_l^power``, power 1.1 in its scripts).

What simkv models:

* **memory**: a sequence keeps ``mean_l min(context, b_l)`` tokens (so the layer-wise split
  matters only while the context is below the largest ``b_l``); a prefill chunk of ``n``
  tokens holds the kept tokens plus the chunk and attends to those (block-wise prefill: the
  chunk is the scheduler's, so set ``scheduler.max_num_batched_tokens`` to EpiCache's block);
* **decode attention** reads the kept tokens;
* **the method's own cost**, on chunks of sequences that exceed the budget: the patched prompt
  (``patch_tokens`` query tokens through every layer, attending to the chunk's KV) and the
  sentence encoder over the chunk (2 x ``embed_params`` FLOPs per token at the GPU's GEMM
  rate); clustering (K-means over a few hundred embeddings) is negligible.

Left out: the offline passes that build the other episodes' caches (one block-wise prefill of
the history per episode, ``episodes`` - 1 more per conversation, amortised over its
questions), and loading a matched episode's cache from host memory (M x KV bytes: 0.94 GB for
Llama-3.2-3B at M = 8192, 15 ms over PCIe Gen5). No sensitivity profile ships (the repo
measures it on BookSum per model): ``layer_weights`` empty means uniform.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simkv.config.bounds import bounded, check, meta
from simkv.policies.kv_policy.interface import AccuracyTable, KVPolicyBase, ceil_tokens
from simkv.registry import register

# Not transcribed yet (the paper's accuracy-vs-budget figures could not be read here).
ACCURACY: tuple[AccuracyTable, ...] = ()


@dataclass(slots=True)
class EpiCacheConfig:
    """EpiCache's budget, its layer-wise split and the work of its block-wise prefill."""

    # KV budget M: tokens per layer on average (--kv_budget, 8192 by default); 0: no budget.
    kv_budget: int = bounded(8192, ge=0)
    # Relative sensitivity per layer (one number per layer); empty: uniform.
    layer_weights: list[float] = field(default_factory=list, metadata=meta(gt=0))
    # Sharpness of the allocation, b_l ~ weight^power (POWER=1.1 in the run scripts).
    power: float = bounded(1.1, ge=0)
    # Query tokens of the patched prompt scored against every block. Assumed: 8 medoid
    # segments (N_MEDOID) of 4 utterances (CONV_WINDOW) of ~30 tokens (LoCoMo: 22.7 words
    # per message, ~1.3 tokens per word).
    patch_tokens: int = bounded(960, ge=0)
    # Parameters of the sentence encoder run over the history (Qwen3-0.6B).
    embed_params: float = bounded(0.6e9, ge=0)
    # Topical episodes (N_CLUSTER=4); only the matched one is built per request here.
    episodes: int = bounded(4, ge=1)

    def __post_init__(self) -> None:
        check(self, "kv_policy.")


@register("kv_policy", "epicache", EpiCacheConfig)
class EpiCache(KVPolicyBase):
    def __init__(self, cfg: EpiCacheConfig, **_: object) -> None:
        super().__init__(cfg)
        self.budgets = np.zeros(0)
        self._embed_s = 0.0

    def bind(self, cost: Any) -> None:
        super().bind(cost)
        b = self.bound
        assert b is not None
        cfg = self.cfg
        layers = cost.model.num_layers
        if cfg.layer_weights and len(cfg.layer_weights) != layers:
            raise ValueError(f"kv_policy.layer_weights: {len(cfg.layer_weights)} weights for "
                             f"{layers} layers of {cost.model.name}")
        if cfg.kv_budget:
            w = np.asarray(cfg.layer_weights or [1.0] * layers, dtype=np.float64) ** cfg.power
            self.budgets = np.maximum(1.0, np.round(cfg.kv_budget * layers * w / w.sum()))
        self._embed_s = 2.0 * cfg.embed_params / b.gemm_flops

    def kept(self, ctx: np.ndarray) -> np.ndarray:
        if not self.budgets.size:
            return ctx
        per_layer = np.minimum(np.asarray(ctx, dtype=np.float64)[..., None], self.budgets)
        return ceil_tokens(per_layer.mean(axis=-1))

    def _kept1(self, c: int) -> int:
        return int(self.kept(np.asarray([float(c)]))[0]) if self.budgets.size else c

    def prefill_context(self, computed: int) -> int:
        return self._kept1(computed)

    def prefill_held(self, computed: int, n: int) -> int:
        return self._kept1(computed) + n

    def prefill_extra(self, computed: int, n: int) -> tuple[float, float, float]:
        if not self.budgets.size or self._kept1(computed + n) >= computed + n:
            return 0.0, 0.0, 0.0  # nothing is evicted from this chunk: nothing to score
        p = float(self.cfg.patch_tokens)
        kv = self._kept1(computed) + n
        return p, p * kv + p * (p + 1) / 2, n * self._embed_s

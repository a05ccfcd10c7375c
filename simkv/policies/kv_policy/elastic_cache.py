"""``elastic_cache``: adaptive KV refresh for diffusion LLMs (Nguyen-Tri et al., arXiv 2510.14973;
github VILA-Lab/Elastic-Cache).

A diffusion LLM (``model.kind: diffusion``, LLaDA/Dream) denoises a block of masked positions
over several steps; without a cache every step recomputes the whole sequence (``full``).
Elastic-Cache caches the KV of the prompt, of finished blocks and of the distant masks, runs
each step's forward only on a sliding window of active positions, and refreshes the cache when
an attention-aware drift test on the most-attended token fires, recomputing only the layers
from a chosen depth on (the KV of shallow layers drifts least).

What simkv models (engine/steps.py builds the steps, perf/steps.py prices them):

* a step queries ``window`` positions (default: the model's block) against the cached
  sequence; the first step after the prompt computes the canvas of masks once;
* a refresh recomputes the cached positions in ``refresh_depth`` of the layers; a fraction
  ``refresh_fraction`` of steps refresh, priced as the expected cost per step (simkv does not
  run the drift test: it needs the attention values). Neither fraction is published as a
  number; both are assumptions, swept by experiments/elastic_cache.py;
* the cache is the sequence's KV in the pool (prompt + canvas), so it bounds the batch.

The speed-ups the paper reports also contain confidence-aware parallel decoding (several
tokens unmasked per step): that is ``model.diffusion_steps`` (steps per block), not this
policy. Left out: the drift test's own cost (one attention row per layer: negligible).
"""

from __future__ import annotations

from dataclasses import dataclass

from simkv.config.bounds import bounded, check
from simkv.policies.kv_policy.interface import AccuracyTable, KVPolicyBase
from simkv.registry import register

_PAGE = "https://vila-lab.github.io/elastic-cache-webpage (results table)"
# Accuracy with and without the cache, as the paper's project page reports them ("none": the
# uncached baseline; "elastic": Elastic-Cache, with its speed-up beside it in the source).
ACCURACY: tuple[AccuracyTable, ...] = (
    AccuracyTable("GSM8K (256 tokens)", "accuracy %", "LLaDA-Instruct", _PAGE,
                  (("none", 78.01), ("elastic", 78.24))),
    AccuracyTable("GSM8K (512 tokens)", "accuracy %", "LLaDA-Instruct", _PAGE,
                  (("none", 77.10), ("elastic", 77.71))),
    AccuracyTable("GSM8K (512 tokens)", "accuracy %", "LLaDA-1.5", _PAGE,
                  (("none", 81.35), ("elastic", 81.35))),
    AccuracyTable("HumanEval (512 tokens)", "accuracy %", "LLaDA-Instruct", _PAGE,
                  (("none", 43.90), ("elastic", 46.34))),
    AccuracyTable("MBPP (512 tokens)", "accuracy %", "LLaDA-1.5", _PAGE,
                  (("none", 38.20), ("elastic", 39.00))),
)


@dataclass(slots=True)
class ElasticCacheConfig:
    """Elastic-Cache's window and refresh schedule."""

    # Positions queried per denoising step; 0: the model's diffusion_block.
    window: int = bounded(0, ge=0)
    # Fraction of steps whose drift test triggers a refresh (assumed; see the module doc).
    refresh_fraction: float = bounded(0.1, ge=0, le=1)
    # Fraction of the layers a refresh recomputes, the deepest ones (assumed).
    refresh_depth: float = bounded(0.5, ge=0, le=1)

    def __post_init__(self) -> None:
        check(self, "kv_policy.")


@register("kv_policy", "elastic_cache", ElasticCacheConfig)
class ElasticCache(KVPolicyBase):
    kinds = ("diffusion",)
    diffusion_cached = True

    def diffusion_window(self, block: int) -> int:
        return self.cfg.window or block

    def diffusion_refresh(self) -> tuple[float, float]:
        return self.cfg.refresh_fraction, self.cfg.refresh_depth

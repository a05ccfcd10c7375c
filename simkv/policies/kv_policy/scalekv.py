"""``scalekv``: scale-aware KV compression for visual autoregressive models (Li et al., NeurIPS
2025; github StargazerX0/ScaleKV).

A visual autoregressive model (``model.kind: var``: VAR, Infinity) generates an image as a
sequence of token maps of growing side (1x1 ... 64x64 for Infinity at 1024 px), each step
attending to every earlier map, so the cache grows with the sum of the maps' areas. ScaleKV
classifies, per scale, a few layers as *drafters* (attention spread over many scales: they
keep most of the cache) and the rest as *refiners* (attention on the current map: they keep
little), and compresses the cache of earlier scales to those budgets from a given scale on.

What simkv models: when scale ``k >= first_scale`` (0-based) is generated, the earlier scales'
KV is kept at the layer average of the budgets, the current map's KV in full; the cache, the
attention reads and so the batch follow. Two ways to give the budgets:

* ``budget_fraction`` f: the layer average is f x the earlier scales (how drafters and
  refiners split it does not change the average, only which layers read more);
* ``drafter_tokens`` / ``refiner_tokens``: tokens per drafter / refiner layer for each
  compressed scale, with ``drafter_layers`` drafters. The repo's budget for Infinity-8B at
  "10%" (budgets/8b_10%_budget.json): 3 drafters of 40 layers, scales 9-13 (1-based),
  drafters 909 / 1464 / 2463 / 4054 / 6200 tokens, refiners 629 / 584 / 503 / 374 / 200.

Left out: the selection itself (scoring the cache by attention at each scale; one pass over
the cache, as the decode attention) and which tokens are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from simkv.config.bounds import bounded, check, meta, require
from simkv.policies.kv_policy.interface import AccuracyTable, KVPolicyBase
from simkv.registry import register

_README = "ScaleKV README (github StargazerX0/ScaleKV): GenEval and DPG of Infinity-8B"
_FIG7 = "ScaleKV Figure 7(a) (repo assets/mem.png), Infinity-8B, read off the plot (+-0.2)"
ACCURACY: tuple[AccuracyTable, ...] = (
    AccuracyTable("GenEval", "score", "Infinity-8B", _README, (("full", 0.79), (0.10, 0.79))),
    AccuracyTable("DPG", "score", "Infinity-8B", _README, (("full", 86.61), (0.10, 86.49))),
    AccuracyTable("FID against full-cache images", "FID (lower is better)", "Infinity-8B", _FIG7,
                  ((0.01, 7.0), (0.04, 3.3), (0.10, 2.1), (0.16, 1.6), (0.20, 1.4))),
)

# The repo's Infinity-8B "10%" budgets (budgets/8b_10%_budget.json), scales 9-13 (1-based).
PAPER_8B_DRAFTER = [909, 1464, 2463, 4054, 6200]
PAPER_8B_REFINER = [629, 584, 503, 374, 200]


@dataclass(slots=True)
class ScaleKVConfig:
    """ScaleKV's budgets: a fraction of the earlier scales, or tokens per layer role."""

    budget_fraction: float = bounded(0.1, gt=0, le=1)
    # Scales before this one (0-based) keep their whole cache (8: the budgets file's scale 9).
    first_scale: int = bounded(8, ge=0)
    drafter_layers: int = bounded(3, ge=0)
    # Per compressed scale, from first_scale on; both empty: use budget_fraction.
    drafter_tokens: list[int] = field(default_factory=list, metadata=meta(ge=0))
    refiner_tokens: list[int] = field(default_factory=list, metadata=meta(ge=0))

    def __post_init__(self) -> None:
        check(self, "kv_policy.")

    def validate(self, prefix: str = "kv_policy.") -> None:
        require(len(self.drafter_tokens) == len(self.refiner_tokens),
                f"{prefix}refiner_tokens: one entry per compressed scale, as drafter_tokens "
                f"({len(self.drafter_tokens)}), got {len(self.refiner_tokens)}")


@register("kv_policy", "scalekv", ScaleKVConfig)
class ScaleKV(KVPolicyBase):
    kinds = ("var",)

    def __init__(self, cfg: ScaleKVConfig, **_: object) -> None:
        super().__init__(cfg)
        self.layers = 0

    def check_model(self, model: object) -> None:
        super().check_model(model)  # type: ignore[arg-type]
        self.layers = model.num_layers  # type: ignore[attr-defined]
        if self.cfg.drafter_layers > self.layers:
            raise ValueError(f"kv_policy.drafter_layers ({self.cfg.drafter_layers}) exceeds the "
                             f"model's {self.layers} layers")

    def var_prefix(self, prefix: int, scale: int) -> float:
        cfg = self.cfg
        k = scale - cfg.first_scale
        if k < 0:
            return float(prefix)
        if not cfg.drafter_tokens:
            return min(float(prefix), cfg.budget_fraction * prefix)
        k = min(k, len(cfg.drafter_tokens) - 1)
        d, n = cfg.drafter_layers, self.layers
        return (d * min(prefix, cfg.drafter_tokens[k])
                + (n - d) * min(prefix, cfg.refiner_tokens[k])) / n

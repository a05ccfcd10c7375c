"""The GEMM and small-operator shapes a calibration run measures: those of every model spec.

Why by shape (issue 14): a GEMM's achieved rate depends on M (tokens), N and K, not on M
alone. Output tiles are spread over the GPU's multiprocessors, so the time jumps in steps
as a wave of tiles fills up (tile and wave quantisation), and a one-token GEMM pays a fixed
per-kernel cost on top of reading its weights. Tensor parallelism divides N (column-parallel
projections) or K (row-parallel ones), and with it the tiles per wave. So the calibration
times each projection of each shipped model spec (``simkv/conf/model``) at TP 1, 2, 4 and 8,
at token counts from 1 to 16k, as the engines run them (``torch.nn.functional.linear``, the
weight stored N x K), unfused (q, k, v; gate, up: transformers) and fused (QKV; gate+up:
vLLM), and the leave-one-model-out fit (``simkv.perf.gemm``) scores shapes it did not see.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import yaml

from simkv.entities.model import ModelSpec

TP_DEGREES = (1, 2, 4, 8)
TOKENS = (1, 8, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
QUICK_TOKENS = (1, 64, 512, 4096)


@dataclass(frozen=True, slots=True)
class GemmShape:
    """One projection of a model at one TP degree: ``tokens x k`` times ``k x n``."""

    model: str
    tp: int
    op: str
    n: int
    k: int


def shipped_models() -> list[ModelSpec]:
    root = resources.files("simkv.conf").joinpath("model")
    names = sorted(p.name for p in root.iterdir() if p.name.endswith(".yaml"))
    return [ModelSpec(**yaml.safe_load(root.joinpath(n).read_text())) for n in names]


def model_gemms(m: ModelSpec, tp: int) -> list[GemmShape]:
    """The projections of one layer (and the LM head) on one GPU of a TP group, or [] when
    TP does not divide the model's heads (the cost model refuses it too)."""
    if m.num_heads % tp:
        return []
    h, f = m.hidden_size, m.ffn_size // tp
    kv = max(1, m.num_kv_heads // tp) * m.head_dim  # KV heads replicated past their number
    ops = [("q", m.q_dim // tp, h), ("kv", kv, h), ("qkv", m.q_dim // tp + 2 * kv, h),
           ("o", h, m.q_dim // tp), ("gate_up", 2 * f, h), ("up", f, h), ("down", h, f),
           ("lm_head", -(-m.vocab_size // tp), h)]
    return [GemmShape(m.name, tp, op, n, k) for op, n, k in ops]


def all_gemms(models: list[ModelSpec] | None = None,
              tps: tuple[int, ...] = TP_DEGREES) -> list[GemmShape]:
    """Every projection of the models (default: the shipped specs) at every TP degree.
    Multi-head latent attention models are left out: their projections are low-rank factors
    this list does not describe."""
    out = []
    for m in models or shipped_models():
        if m.is_mla:
            continue
        for tp in tps:
            out += model_gemms(m, tp)
    return out


def unique_nk(shapes: list[GemmShape]) -> list[tuple[int, int]]:
    """The distinct (N, K) pairs, each timed once whatever model and op it belongs to."""
    return sorted({(s.n, s.k) for s in shapes})


def hidden_sizes(models: list[ModelSpec] | None = None) -> list[int]:
    return sorted({m.hidden_size for m in models or shipped_models()})

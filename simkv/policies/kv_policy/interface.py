"""How much KV a sequence keeps, where it lives, and what keeping less costs (``kv_policy``).

A KV policy answers, for a sequence whose context is ``c`` tokens, how many tokens of KV stay
resident in HBM (``kept``, averaged over layers where a method budgets per layer), how many the
next step's attention reads (``read``: the kept ones plus whatever the method scores), and
what the method itself costs per step outside the roofline (``extra_s``: a fetch over PCIe).
Those numbers set the sequence's blocks in the KV pool, the decode attention's bytes, and so
the batch that fits (engine/steps.py turns them into per-step arrays; perf/steps.py prices
them). Prefill has its own hooks: the KV a chunk holds while it runs and attends to, and any
extra work per chunk (EpiCache's episodic scoring).

The same hooks describe the model kinds that do not decode one token per step: what a
diffusion LLM caches between denoising steps (nothing without a cache; Elastic-Cache's
adaptive refresh), and what a visual autoregressive model keeps of earlier scales (all of it,
or ScaleKV's drafter and refiner budgets).

``full`` is the identity and, for autoregressive models, is never asked: the scheduler keeps
its closed-form decode batch (engine/decode_batch.py), so the default costs nothing extra.
Every other policy must reduce to ``full`` exactly at a budget of 100% (a test says so): a
method evicts nothing then, so it scores nothing and moves nothing.

Accuracy is never simulated: a policy may carry ``ACCURACY``, tables of (setting, score) on a
named benchmark transcribed from its paper with the source, for experiments to plot beside
the systems figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from simkv.entities.model import ModelSpec


@dataclass(frozen=True, slots=True)
class AccuracyTable:
    """Scores a paper reports for settings of a method: input data, never simulated."""

    benchmark: str
    metric: str
    model: str
    source: str
    # (setting, score): the setting is a budget fraction, or a label such as "full".
    points: tuple[tuple[float | str, float], ...]


@dataclass(frozen=True, slots=True)
class Bound:
    """What a policy needs from the instance's cost model, read once when it is bound."""

    layers: int
    kv_bytes_per_token: float  # all layers, per GPU
    kv_bytes_token_layer: float  # one layer, per GPU
    heads_per_gpu: float
    pcie_bandwidth: float  # bytes/s of one GPU's host link
    pcie_latency_s: float
    gemm_flops: float  # achieved dense FLOP/s of a large GEMM


class KVPolicy(Protocol):
    """The contract the scheduler and the step batch rely on (``KVPolicyBase`` implements it)."""

    is_full: bool

    def check_model(self, model: ModelSpec) -> None: ...
    def bind(self, cost: Any) -> None: ...
    def kept(self, ctx: np.ndarray) -> np.ndarray: ...
    def read(self, ctx: np.ndarray, kept: np.ndarray) -> np.ndarray: ...
    def extra_s(self, ctx: np.ndarray, kept: np.ndarray) -> np.ndarray | None: ...
    def prefill_context(self, computed: int) -> int: ...
    def prefill_held(self, computed: int, n: int) -> int: ...
    def prefill_extra(self, computed: int, n: int) -> tuple[float, float, float]: ...


class KVPolicyBase:
    """Full KV for every kind; subclasses override the hooks of the kinds they apply to.

    Hooks take numpy arrays of contexts (one entry per future step of one sequence), so a
    sequence's whole life is computed once when it joins the decode batch.
    """

    #: For autoregressive models, ``full`` keeps the scheduler's closed-form path.
    is_full = False
    #: Model kinds the policy applies to.
    kinds: tuple[str, ...] = ("autoregressive",)
    #: A diffusion model's KV is reused between denoising steps (Elastic-Cache) or not.
    diffusion_cached = False
    #: Seconds added once to a step in which some sequence fetches (per-layer copy latency).
    fetch_latency_s = 0.0
    #: The extra seconds (loads) overlap the step's compute: a step takes the longer of the
    #: two (a pipeline of loads and layers) instead of their sum.
    overlap_extra = False

    def __init__(self, cfg: Any = None, **_: object) -> None:
        self.cfg = cfg
        self.bound: Bound | None = None

    # --- setup ----------------------------------------------------------------------------
    def check_model(self, model: ModelSpec) -> None:
        if model.kind not in self.kinds:
            raise ValueError(f"kv_policy={self.name} applies to {' and '.join(self.kinds)} models; "
                             f"{model.name} is {model.kind}")

    @property
    def name(self) -> str:
        from simkv.registry import name_of

        return name_of(self.cfg)

    def bind(self, cost: Any) -> None:
        """Read the instance's sizes and links (per GPU, as the rest of the cost model)."""
        hw = cost.hw
        self.bound = Bound(
            layers=cost.layers, kv_bytes_per_token=cost.kv_bytes_per_token_per_gpu(),
            kv_bytes_token_layer=cost.kv_bytes_token_layer, heads_per_gpu=cost.heads,
            # The same figure as the instance's PCIe link in kv/links.py (per GPU).
            pcie_bandwidth=hw.pcie_bandwidth,
            pcie_latency_s=hw.pcie_latency_s,
            gemm_flops=hw.bf16_flops * hw.eff("gemm_compute").values[-1])

    # --- autoregressive decode ---------------------------------------------------------
    def kept(self, ctx: np.ndarray) -> np.ndarray:
        """KV tokens resident in HBM for contexts ``ctx`` (layer-averaged, <= ctx)."""
        return ctx

    def read(self, ctx: np.ndarray, kept: np.ndarray) -> np.ndarray:
        """Token-equivalents of KV the step's attention reads (HBM bytes / one token's KV)."""
        return kept

    def extra_s(self, ctx: np.ndarray, kept: np.ndarray) -> np.ndarray | None:
        """Seconds per step outside the roofline (None: none)."""
        return None

    def join_s(self, ctx: int, kept: float) -> float:
        """Seconds once, when the sequence's prefill ends (an offload of what it evicts)."""
        return 0.0

    # --- prefill ------------------------------------------------------------------------
    def prefill_context(self, computed: int) -> int:
        """KV tokens a prefill chunk attends to besides its own, after ``computed`` tokens."""
        return computed

    def prefill_held(self, computed: int, n: int) -> int:
        """KV tokens held while a chunk of ``n`` tokens runs after ``computed`` tokens."""
        return computed + n

    def prefill_extra(self, computed: int, n: int) -> tuple[float, float, float]:
        """Extra work of a chunk: (query tokens, attention pairs, seconds)."""
        return 0.0, 0.0, 0.0

    def peak_tokens(self, prompt: int, output: int, chunk: int) -> int:
        """The most KV tokens a request holds at once (admission: must fit the pool alone),
        its prompt prefilled in chunks of at most ``chunk`` tokens."""
        longest = prompt + output - 1
        kept = self.kept(np.asarray([float(prompt), float(longest)]))
        n = min(chunk, prompt)
        return max(self.prefill_held(prompt - n, n), math.ceil(float(kept.max())))

    # --- visual autoregressive ----------------------------------------------------------
    def var_prefix(self, prefix: int, scale: int) -> float:
        """Layer-averaged tokens kept of the ``prefix`` tokens of earlier scales when scale
        ``scale`` (0-based) is generated."""
        return float(prefix)

    # --- diffusion ----------------------------------------------------------------------
    def diffusion_window(self, block: int) -> int:
        """Positions queried per denoising step when the KV is cached."""
        return block

    def diffusion_refresh(self) -> tuple[float, float]:
        """(fraction of steps that refresh the cache, fraction of layers recomputed)."""
        return 0.0, 0.0


def ceil_tokens(x: np.ndarray) -> np.ndarray:
    """Whole tokens (a budget keeps whole tokens; ceil so the budget is never undercounted)."""
    return np.ceil(x - 1e-9)

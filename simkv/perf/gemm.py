"""GEMM time by shape: output tiles spread over the GPU's multiprocessors in waves, plus a fixed
cost per kernel.

Why not an efficiency curve of the token count alone (the roofline's ``gemm_*`` curves): a
GEMM's achieved rate depends on M, N and K. Its ``ceil(M/tm) * ceil(N/tn)`` output tiles run
in waves of one tile per multiprocessor, so time rises in steps as a wave fills (tile and wave
quantisation), and tensor parallelism, which divides N or K, changes how full the last wave
is. A one-token GEMM is bound by reading its weights, and pays a fixed cost per kernel on top
(measured on the lent H200: about 10 us whatever the shape, hardware_profiles/calibration/
h200_2026-11-30/gemm_shapes.csv). Libraries pick among tile shapes and split the K loop for
short, wide problems; the model takes the fastest of a few such configurations, as their
heuristics try to:

    t(M, N, K) = fixed + max(bytes / (HBM peak x memory_eff),
                             min over (tm, tn, split) of
                                 waves x 2 tm tn K/split / (peak per SM x compute_eff))

``waves = ceil(ceil(M/tm) ceil(N/tn) split / SMs)``. Three fitted numbers (``fixed_s``,
``compute_eff``, ``memory_eff``), least squares on log time with bounds
(``scipy.optimize.least_squares``); ``simkv.calibration.gemm_fit`` fits them from a
calibration run and scores the fit on the shapes of a model it did not see.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from simkv.entities.hardware import HardwareProfile
    from simkv.entities.model import ModelSpec

# (tm, tn, split-K) candidates: CUTLASS/cuBLAS-typical Hopper tiles, and split-K for short M.
TILES: tuple[tuple[int, int, int], ...] = (
    (64, 64, 1), (64, 128, 1), (128, 128, 1), (128, 256, 1), (256, 128, 1),
    (64, 128, 2), (64, 128, 4), (64, 64, 4), (64, 64, 8),
)


@dataclass(frozen=True, slots=True)
class GemmModel:
    """Fitted GEMM timing of one GPU (peaks from its hardware profile)."""

    flops_peak: float
    bw_peak: float
    sms: int
    fixed_s: float
    compute_eff: float
    memory_eff: float
    tiles: tuple[tuple[int, int, int], ...] = TILES

    def times(self, m: np.ndarray, n: np.ndarray, k: np.ndarray,
              weight_bytes: float = 2.0, act_bytes: float = 2.0) -> np.ndarray:
        """Seconds of each GEMM ``m x k`` times ``k x n`` (arrays broadcast)."""
        m, n, k = (np.asarray(x, dtype=np.float64) for x in (m, n, k))
        nbytes = k * n * weight_bytes + (m * k + m * n) * act_bytes
        t_mem = nbytes / (self.bw_peak * self.memory_eff)
        per_sm = self.flops_peak * self.compute_eff / self.sms
        t_comp = np.full(np.broadcast(m, n, k).shape, np.inf)
        for tm, tn, split in self.tiles:
            units = np.ceil(m / tm) * np.ceil(n / tn) * split
            waves = np.ceil(units / self.sms)
            t_comp = np.minimum(t_comp, waves * 2.0 * tm * tn * np.ceil(k / split) / per_sm)
        return self.fixed_s + np.maximum(t_mem, t_comp)

    def time(self, m: float, n: float, k: float, weight_bytes: float = 2.0) -> float:
        return float(self.times(np.array(m), np.array(n), np.array(k), weight_bytes))

    def grouped_time(self, tokens: float, experts: int, top_k: int, n: float, k: float,
                     weight_bytes: float = 2.0, padding: float = 0.0) -> float:
        """One grouped GEMM over the experts (MoE): ``tokens`` tokens each routed to
        ``top_k`` of ``experts`` uniformly, every expert a ``n_e x k`` times ``k x n`` problem.
        Each expert's rows fill whole output tiles (``ceil(n_e / tm)``, n_e binomial), so few
        tokens per expert cost tiles a dense GEMM of all routed rows would share; the
        weights of the experts hit are read once. ``padding`` rows (an engine that pads its
        query tokens for CUDA graphs) are identical, so they all go to the same ``top_k``
        experts."""
        routed = (tokens + padding) * top_k
        p = min(1.0, top_k / experts)
        spread = 1.0 - (1.0 - p) ** tokens
        hit = top_k + (experts - top_k) * spread if padding else experts * spread
        nbytes = hit * k * n * weight_bytes + routed * (k + n) * 2.0
        t_mem = nbytes / (self.bw_peak * self.memory_eff)
        per_sm = self.flops_peak * self.compute_eff / self.sms
        t_comp = np.inf
        for tm, tn, split in self.tiles:
            rows = (experts * expected_ceil(tokens, p, tm) if not padding else
                    (experts - top_k) * expected_ceil(tokens, p, tm)
                    + top_k * expected_ceil(tokens, p, tm, padding))
            waves = np.ceil(rows * np.ceil(n / tn) * split / self.sms)
            t_comp = min(t_comp, waves * 2.0 * tm * tn * np.ceil(k / split) / per_sm)
        return self.fixed_s + max(t_mem, float(t_comp))


def expected_ceil(tokens: float, p: float, tile: int, shift: float = 0.0) -> float:
    """E[ceil((n + shift) / tile)] for n ~ Binomial(tokens, p): the row tiles of one expert."""
    t = round(tokens)
    if t <= 0:
        return float(np.ceil(shift / tile))
    from scipy.stats import binom

    n = np.arange(t + 1)
    return float(np.dot(binom.pmf(n, t, p), np.ceil((n + shift) / tile)))


def fit_gemm_model(m: Sequence[float], n: Sequence[float], k: Sequence[float],
                   seconds: Sequence[float], flops_peak: float, bw_peak: float, sms: int
                   ) -> GemmModel:
    """Least squares on log time, the three numbers bounded to physical ranges."""
    from scipy.optimize import least_squares

    m_, n_, k_, t_ = (np.asarray(x, dtype=np.float64) for x in (m, n, k, seconds))

    def model(p: np.ndarray) -> GemmModel:
        return GemmModel(flops_peak, bw_peak, sms, fixed_s=float(p[0]) * 1e-6,
                         compute_eff=float(p[1]), memory_eff=float(p[2]))

    def residual(p: np.ndarray) -> np.ndarray:
        return np.log(model(p).times(m_, n_, k_) / t_)

    best = None
    for start in ((5.0, 0.7, 0.8), (10.0, 0.8, 0.9), (2.0, 0.6, 0.6)):
        sol = least_squares(residual, np.array(start), bounds=([0.0, 0.05, 0.05], [100.0, 1.0, 1.0]),
                            diff_step=1e-3)
        if best is None or sol.cost < best.cost:
            best = sol
    assert best is not None
    return model(best.x)


def fit_gemm_model_graphs(eager: pd.DataFrame, graph: pd.DataFrame, flops_peak: float,
                          bw_peak: float, sms: int, min_compute_tokens: int = 256
                          ) -> tuple[GemmModel, float]:
    """The shape model from launch-free timings, in two stages.

    1. ``fixed_s`` and ``memory_eff`` from ``graph`` (``m, n, k, ms_graph``: each GEMM one of
       many back-to-back calls replayed from one CUDA graph, their weights read from HBM):
       few tokens, memory-bound, and no launch gap in them;
    2. the launch gap: the median of ``ms_eager - ms_graph`` at the fewest tokens (the same
       calls launched one by one), 0 without that column;
    3. ``compute_eff`` from ``eager`` (``m, n, k, ms``; optional ``machine``: each machine
       weighs alike) at ``min_compute_tokens`` tokens or more, each timing its kernel plus
       the launch gap.

    Returns the model and the launch gap."""
    import pandas as pd
    from scipy.optimize import least_squares

    g = graph[np.isfinite(graph["ms_graph"]) & (graph["ms_graph"] > 0)]
    gm, gn, gk = (g[c].to_numpy(np.float64) for c in ("m", "n", "k"))
    gt = g["ms_graph"].to_numpy(np.float64) / 1e3

    def small(p: np.ndarray) -> np.ndarray:
        model = GemmModel(flops_peak, bw_peak, sms, float(p[0]) * 1e-6, 0.75, float(p[1]))
        return np.log(model.times(gm, gn, gk) / gt)

    s1 = least_squares(small, np.array([4.0, 0.8]), bounds=([0.0, 0.05], [100.0, 1.0]),
                       diff_step=1e-3)
    fixed, mem = float(s1.x[0]) * 1e-6, float(s1.x[1])
    launch = 0.0
    if "ms_eager" in g:
        one = g[g["m"] == g["m"].min()]
        launch = max(0.0, float(np.median(one["ms_eager"] - one["ms_graph"])) / 1e3)
    big = eager[eager["m"] >= min_compute_tokens]
    machines = big["machine"] if "machine" in big else pd.Series("one", index=big.index)
    w = 1.0 / machines.map(machines.value_counts()).to_numpy(np.float64)
    bm, bn, bk = (big[c].to_numpy(np.float64) for c in ("m", "n", "k"))
    bt = big["ms"].to_numpy(np.float64) / 1e3

    def large(p: np.ndarray) -> np.ndarray:
        model = GemmModel(flops_peak, bw_peak, sms, fixed, float(p[0]), mem)
        return np.sqrt(w) * np.log((model.times(bm, bn, bk) + launch) / bt)

    compute = 0.75
    if len(big):
        compute = float(least_squares(large, np.array([0.7]), bounds=([0.05], [1.0]),
                                      diff_step=1e-3).x[0])
    return GemmModel(flops_peak, bw_peak, sms, fixed, compute, mem), launch


def from_profile(hw: HardwareProfile) -> GemmModel | None:
    """The profile's fitted GEMM model (calibrated profiles), or None."""
    g = hw.gemm
    if g is None:
        return None
    return GemmModel(hw.bf16_flops, hw.hbm_bandwidth, g.multiprocessors, g.fixed_s,
                     g.compute_eff, g.memory_eff)


# How many times each small operator runs per layer (two norms, two residual adds).
SMALL_OP_COUNT = {"rms_norm": 2, "rope": 1, "silu_mul": 1, "residual_add": 2}


def small_op_bytes(tokens: float, hidden: float, heads: float, kv_heads: float, head_dim: float,
                   ffn: float, act_bytes: float = 2.0, per_layer: bool = True) -> dict[str, float]:
    """Bytes each small operator must read and write once (its HBM floor), per layer
    (``per_layer``: times its count in a layer) or for one call: RMSNorm reads and writes the
    hidden state; the rotary embedding q and k; SiLU x up reads gate and up and writes one;
    a residual add reads two and writes one."""
    one = {"rms_norm": 2 * tokens * hidden * act_bytes,
           "rope": 2 * tokens * (heads + kv_heads) * head_dim * act_bytes,
           "silu_mul": 3 * tokens * ffn * act_bytes,
           "residual_add": 3 * tokens * hidden * act_bytes}
    if not per_layer:
        return one
    return {op: b * SMALL_OP_COUNT[op] for op, b in one.items()}


def dense_flops_per_token(m: ModelSpec, tensor_parallel: int = 1) -> float:
    """GEMM FLOPs of one token through a model's dense weights on one GPU, every layer: the
    attention projections, the MLP of dense layers (a dense model's every layer) and MoE
    layers' shared experts, 2 per multiply-add (routed experts are priced apart)."""
    mlp = (m.moe_layers * m.shared_experts * m.expert_params + m.num_dense_layers
           * m.dense_mlp_params) if m.is_moe else m.num_layers * m.expert_params
    return 2.0 * (m.num_layers * m.attention_params_per_layer + mlp) / tensor_parallel

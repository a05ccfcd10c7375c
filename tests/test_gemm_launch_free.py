"""The shape GEMM model fitted on launch-free (graph-replayed) timings beside launched ones:
its fixed cost is the kernel's own, the launch gap apart (issue 19, item 6)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from simkv.perf.gemm import GemmModel, fit_gemm_model, fit_gemm_model_graphs

PEAK, BW, SMS = 989e12, 3.35e12, 132


def timings(fixed: float, launch: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Launched timings of a GEMM model (1-4,096 tokens) and launch-free ones (1-64)."""
    truth = GemmModel(PEAK, BW, SMS, fixed, 0.65, 0.8)
    shapes = ((6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336), (1024, 8192))
    rows = [(m, n, k) for m in (1, 4, 16, 64, 256, 1024, 4096) for n, k in shapes]
    m, n, k = (np.array(c, float) for c in zip(*rows, strict=True))
    t = truth.times(m, n, k)
    eager = pd.DataFrame({"m": m, "n": n, "k": k, "ms": (t + launch) * 1e3})
    few = m <= 64
    graph = pd.DataFrame({"kernel": "cublas_linear", "m": m[few], "n": n[few], "k": k[few],
                          "ms_graph": t[few] * 1e3, "ms_eager": (t[few] + launch) * 1e3})
    return eager, graph


def test_fixed_cost_is_the_kernels_own_and_launch_apart() -> None:
    eager, graph = timings(3e-6, 6e-6)
    g, launch = fit_gemm_model_graphs(eager, graph, PEAK, BW, SMS)
    assert g.fixed_s == pytest.approx(3e-6, rel=0.05)
    assert launch == pytest.approx(6e-6, rel=0.01)
    assert g.memory_eff == pytest.approx(0.8, rel=0.02)
    assert g.compute_eff == pytest.approx(0.65, rel=0.03)
    # fitted on the launched timings alone, the fixed cost takes the launch gap as well
    old = fit_gemm_model(eager["m"], eager["n"], eager["k"], eager["ms"] / 1e3, PEAK, BW, SMS)
    assert old.fixed_s > 7e-6


def test_machines_weigh_alike() -> None:
    """Compute efficiency from two calibration runs: each run counts once, however many
    timings it has."""
    eager, graph = timings(3e-6, 6e-6)
    slow = eager.assign(ms=eager["ms"] * 1.3, machine="b")
    both = pd.concat([eager.assign(machine="a"), *[slow] * 5], ignore_index=True)
    g, _ = fit_gemm_model_graphs(both, graph, PEAK, BW, SMS)
    only_a, _ = fit_gemm_model_graphs(eager, graph, PEAK, BW, SMS)
    only_b, _ = fit_gemm_model_graphs(slow, graph, PEAK, BW, SMS)
    assert only_b.compute_eff < g.compute_eff < only_a.compute_eff
    assert g.compute_eff == pytest.approx((only_a.compute_eff * only_b.compute_eff) ** 0.5, rel=0.05)


def test_profile_reads_the_launch_gap() -> None:
    from simkv.entities.hardware import _gemm_fit

    fit = _gemm_fit({"multiprocessors": 132, "fixed": {"value": 3.0, "unit": "us"},
                     "launch": {"value": 6.0, "unit": "us"}, "compute_eff": 0.75,
                     "memory_eff": 0.8}, "test")
    assert fit.fixed_s == pytest.approx(3e-6)
    assert fit.launch_s == pytest.approx(6e-6)

"""The shape GEMM model fitted on launch-free (graph-replayed) timings beside launched ones:
its fixed cost is the kernel's own, the launch gap apart (issue 19, item 6)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from simkv.perf.gemm import GemmModel, fit_gemm_model, fit_gemm_model_graphs

PEAK, BW, SMS = 989e12, 3.35e12, 132


def timings(fixed: float, launch: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    truth = GemmModel(PEAK, BW, SMS, fixed, 0.75, 0.8)
    rows = [(m, n, k) for m in (1, 4, 16, 64, 256, 1024, 4096)
            for n, k in ((6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336), (1024, 8192))]
    m, n, k = (np.array(c, float) for c in zip(*rows, strict=True))
    t = truth.times(m, n, k)
    graph = pd.DataFrame({"kernel": "cublas_linear", "m": m, "n": n, "k": k, "ms_graph": t * 1e3,
                          "ms_eager": (t + launch) * 1e3})
    return pd.DataFrame({"m": m, "n": n, "k": k, "ms": (t + launch) * 1e3}), graph


def test_fixed_cost_is_the_kernels_own_and_launch_apart() -> None:
    eager, graph = timings(3e-6, 6e-6)
    g, launch = fit_gemm_model_graphs(eager, graph, PEAK, BW, SMS)
    assert g.fixed_s == pytest.approx(3e-6, rel=0.05)
    assert launch == pytest.approx(6e-6, rel=0.05)
    assert g.memory_eff == pytest.approx(0.8, rel=0.02)
    # fitted on the launched timings alone, the fixed cost takes the launch gap as well
    old = fit_gemm_model(eager["m"], eager["n"], eager["k"], eager["ms"] / 1e3, PEAK, BW, SMS)
    assert old.fixed_s > 7e-6


def test_profile_reads_the_launch_gap() -> None:
    from simkv.entities.hardware import _gemm_fit

    fit = _gemm_fit({"multiprocessors": 132, "fixed": {"value": 3.0, "unit": "us"},
                     "launch": {"value": 6.0, "unit": "us"}, "compute_eff": 0.75,
                     "memory_eff": 0.8}, "test")
    assert fit.fixed_s == pytest.approx(3e-6)
    assert fit.launch_s == pytest.approx(6e-6)

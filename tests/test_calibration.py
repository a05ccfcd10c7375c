"""Calibration on the CPU: the Triton kernels through the interpreter, the fit on the
committed measurements of the lent H100."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RAW = ROOT / "hardware_profiles" / "calibration" / "h100_2026-11-25"
PROFILE = ROOT / "hardware_profiles" / "h100_sxm_80gb_calibrated.yaml"


# --- kernels (float32: the interpreter mishandles bf16 tl.dot, docs/CALIBRATION.md) ----------
@pytest.fixture(scope="module")
def k():  # type: ignore[no-untyped-def]
    os.environ.setdefault("TRITON_INTERPRET", "1")
    pytest.importorskip("torch")
    pytest.importorskip("triton")
    from simkv.calibration import kernels

    return kernels


def _rel(a, b) -> float:  # type: ignore[no-untyped-def]
    return float((a.double() - b.double()).norm() / b.double().norm())


def test_gemm_kernel(k) -> None:  # type: ignore[no-untyped-def]
    import torch

    g = torch.Generator().manual_seed(1)
    for m, kk, n in ((1, 40, 33), (37, 70, 130)):
        a, b = torch.randn(m, kk, generator=g), torch.randn(kk, n, generator=g)
        assert _rel(k.matmul(a, b), k.matmul_ref(a, b)) < 1e-5


def test_prefill_attention_kernel_with_and_without_cached_context(k) -> None:  # type: ignore[no-untyped-def]
    import torch

    g = torch.Generator().manual_seed(2)
    for sq, ctx in ((40, 0), (24, 30)):
        q = torch.randn(1, 4, sq, 32, generator=g)
        kv = [torch.randn(1, 2, ctx + sq, 32, generator=g) for _ in range(2)]
        out = k.prefill_attention(q, *kv, block_m=16, block_n=16)
        assert _rel(out, k.prefill_attention_ref(q, *kv)) < 1e-5


def test_paged_decode_kernel_across_splits(k) -> None:  # type: ignore[no-untyped-def]
    import torch

    g = torch.Generator().manual_seed(3)
    kc, vc = (torch.randn(24, 16, 2, 32, generator=g) for _ in range(2))
    table = torch.randperm(24, generator=g).reshape(2, 12).to(torch.int32)
    lengths = torch.tensor([37, 190], dtype=torch.int32)
    q = torch.randn(2, 8, 32, generator=g)
    ref = k.paged_decode_attention_ref(q, kc, vc, table, lengths)
    for splits in (1, 4, 12):  # 12 splits leave some empty for the short sequence
        out = k.paged_decode_attention(q, kc, vc, table, lengths, 192, splits=splits)
        assert _rel(out, ref) < 1e-5


def test_block_copies_and_rms_norm(k) -> None:  # type: ignore[no-untyped-def]
    import torch

    pool = torch.randn(10, 4, 2, 8)
    idx = torch.tensor([7, 2, 9], dtype=torch.int32)
    assert torch.equal(k.gather_blocks(pool, idx), pool[idx.long()])
    src = torch.randn(3, 4, 2, 8)
    k.scatter_blocks(pool, idx, src)
    assert torch.equal(pool[idx.long()], src)
    x, w = torch.randn(5, 300), torch.randn(300)
    assert _rel(k.rms_norm(x, w), k.rms_norm_ref(x, w)) < 1e-6


# --- fit on the committed measurements -----------------------------------------------------------
def test_committed_profile_is_what_the_committed_measurements_give() -> None:
    from simkv.calibration.fit import fit

    # curves from the 2026-11-25 run; its GEMM model also from 2026-12-07's launch-free timings
    doc = fit(RAW, "h100_sxm_80gb", (RAW.parent / "h100_2026-12-07",))
    assert yaml.safe_load(PROFILE.read_text()) == doc
    assert doc["gemm_model"]["fixed"]["value"] < 6.0  # the kernel's own cost, no launch gap


def test_calibrated_curves_say_what_was_measured() -> None:
    from simkv.entities.hardware import load_profile

    hw = load_profile("h100_sxm_80gb_calibrated")
    gemm = pd.read_csv(RAW / "gemm.csv")
    best = gemm[gemm["kernel"] == "cublas"].query("m == 4096 and n == 6144")
    tflops = 2 * 4096 * 6144 * 4096 / (best["ms"].iloc[0] / 1e3) / 1e12
    assert hw.eff("gemm_compute").at(4096) * 989.4 == pytest.approx(tflops, rel=0.05)
    assert hw.pcie_bandwidth == pytest.approx(55.15e9, rel=0.01)
    for key in ("gemm_memory", "attention_memory", "elementwise_memory"):
        assert 0 < hw.eff(key).at(1e9) <= 1.0
    # Small reads are latency-bound: efficiency grows with size.
    assert hw.eff("attention_memory").at(128) < hw.eff("attention_memory").at(1 << 20)


def test_roofline_with_calibrated_curves_reproduces_the_gemm_timings() -> None:
    from simkv.calibration.fit import gemm_curves
    from simkv.entities.hardware import load_profile

    hw = load_profile("h100_sxm_80gb_calibrated")
    _, _, best = gemm_curves(pd.read_csv(RAW / "gemm.csv"), hw.bf16_flops, hw.hbm_bandwidth)
    m, n, kk = (best[c].to_numpy(float) for c in ("m", "n", "k"))
    flops, nbytes = 2 * m * n * kk, 2 * (m * kk + kk * n + m * n)
    pred = np.maximum(flops / (hw.bf16_flops * hw.eff("gemm_compute").at_array(m)),
                      nbytes / (hw.hbm_bandwidth * hw.eff("gemm_memory").at_array(m)))
    err = np.abs(pred / (best["ms"].to_numpy() / 1e3) - 1)
    # One curve per M for three layer shapes: the median error is what the model promises.
    assert np.median(err) < 0.10
    assert np.max(err) < 0.45


def test_simulate_with_the_calibrated_profile(tmp_path) -> None:
    import simkv
    from tests.conftest import small

    fast = simkv.simulate(small(), tmp_path / "a").summary
    slow = simkv.simulate(small(["hardware=h100_sxm_80gb_calibrated"]), tmp_path / "b").summary
    # Measured efficiencies are below the datasheet profile's assumptions: slower decode.
    assert slow["tpot_s"]["p50"] > fast["tpot_s"]["p50"]

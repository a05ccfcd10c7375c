"""GEMM pricing by shape, small operators, the H200 calibration and the H100 -> H200 transfer,
on the committed measurements of the lent H200 (issue 14)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from simkv.calibration.shapes import all_gemms, model_gemms, shipped_models
from simkv.perf.gemm import GemmModel, fit_gemm_model

ROOT = Path(__file__).resolve().parents[1]
RAW = ROOT / "hardware_profiles" / "calibration" / "h200_2026-11-30"
H100_RAW = ROOT / "hardware_profiles" / "calibration" / "h100_2026-11-25"
FP, BW, SMS = 989.4e12, 4.8e12, 132


def gemms() -> pd.DataFrame:
    return pd.read_csv(RAW / "gemm_shapes.csv")


def test_time_rises_in_waves_and_pays_a_fixed_cost() -> None:
    g = GemmModel(FP, BW, SMS, fixed_s=10e-6, compute_eff=0.8, memory_eff=0.8,
                  tiles=((128, 128, 1),))
    k = 8192
    # 132 tiles of 128 x 128 fill one wave; one more tile takes a second wave.
    one = g.time(128 * 12, 128 * 11, k)
    two = g.time(128 * 12 + 1, 128 * 11, k)
    assert two - 10e-6 == pytest.approx(2 * (one - 10e-6), rel=0.05)
    # A one-token GEMM is its weights over bandwidth, plus the fixed cost (split-K tiles keep
    # its compute below that).
    g = GemmModel(FP, BW, SMS, fixed_s=10e-6, compute_eff=0.8, memory_eff=0.8)
    assert g.time(1, 4096, 4096) == pytest.approx(10e-6 + 2 * 4096 * 4097 / (BW * 0.8), rel=0.01)


def test_shapes_cover_every_model_and_tp_degree() -> None:
    llama = next(m for m in shipped_models() if m.name == "llama3_8b")
    ops = {s.op: (s.n, s.k) for s in model_gemms(llama, 2)}
    assert ops["qkv"] == (2048 + 2 * 512, 4096)
    assert ops["down"] == (4096, 7168)
    assert model_gemms(llama, 3) == []  # TP must divide the heads
    timed = set(zip(gemms()["n"], gemms()["k"], strict=True))
    for name in ("llama3_8b", "llama3_70b", "mixtral_8x7b", "qwen2_5_7b", "qwen2_5_14b"):
        shapes = {(s.n, s.k) for s in all_gemms() if s.model == name}
        assert shapes <= timed, name


def test_committed_h200_profile_is_what_its_measurements_give() -> None:
    from simkv.calibration.fit import fit

    doc = fit(RAW, "h200")
    assert yaml.safe_load((ROOT / "hardware_profiles" / "h200_calibrated.yaml").read_text()) == doc


def test_shape_model_predicts_a_model_it_did_not_see() -> None:
    """Leave one model out (measured: median 4.9-6.6% vs 18-29% for token-count curves)."""
    from simkv.calibration.fit import gemm_curves
    from simkv.entities.hardware import EfficiencyCurve

    g = gemms()
    timed = ("llama3_8b", "llama3_70b", "mixtral_8x7b", "qwen2_5_7b", "qwen2_5_14b", "qwen2_5_32b")
    shapes = all_gemms([m for m in shipped_models() if m.name in timed])
    for held in ("llama3_70b", "qwen2_5_7b"):  # their (N, K) appear in no other model
        other = {(s.n, s.k) for s in shapes if s.model != held}
        mine = {(s.n, s.k) for s in shapes if s.model == held}
        assert not mine & other
        train = g[[nk in other for nk in zip(g["n"], g["k"], strict=True)]]
        test = g[[nk in mine for nk in zip(g["n"], g["k"], strict=True)]]
        model = fit_gemm_model(train["m"], train["n"], train["k"], train["ms"] / 1e3, FP, BW, SMS)
        ape = np.abs(model.times(test["m"], test["n"], test["k"]) / (test["ms"] / 1e3) - 1) * 100
        assert np.median(ape) < 8.0, held
        comp, mem, _ = gemm_curves(train, FP, BW)
        cc = EfficiencyCurve(*zip(*comp, strict=True))
        mc = EfficiencyCurve(*zip(*mem, strict=True))
        m, n, k = (test[c].to_numpy(float) for c in ("m", "n", "k"))
        curves = np.maximum(2 * m * n * k / (FP * cc.at_array(m)),
                            2 * (m * k + k * n + m * n) / (BW * mc.at_array(m)))
        assert np.median(np.abs(curves / (test["ms"] / 1e3) - 1) * 100) > 2 * np.median(ape)


def test_cost_model_uses_the_shape_model_only_when_the_profile_has_it() -> None:
    from simkv.config.schema import EngineConfig
    from simkv.entities.hardware import load_profile
    from simkv.entities.model import ModelSpec
    from simkv.perf.roofline import CostModel

    m = ModelSpec()
    plain, shaped = CostModel(m, load_profile("h200")), CostModel(m, load_profile("h200_calibrated"))
    assert plain._gemm_model is None
    assert shaped._gemm_model is not None
    op = shaped._gemm("o_proj", 64, 4096, 4096)
    assert op.seconds == pytest.approx(shaped._gemm_model.time(64, 4096, 4096))
    assert [o.name for o in shaped.layer_operators(256)][-1] == "norms"
    # Engine terms in model dimensions: zero leaves the all-layer terms' floats untouched.
    e = EngineConfig(kv_padding_tokens=16384, padded_kv_token_s=5e-7, padded_kv_query_token_s=2e-9,
                     attention_query_tile=512)
    c = CostModel(m, load_profile("h100_sxm_80gb"), engine=e)
    assert c.dense_attention_s(20000.0, 100) == 32768 * (5e-7 + 512 * 2e-9)
    e2 = EngineConfig(kv_padding_tokens=16384, padded_kv_layer_s=1e-8, padded_kv_element_s=2e-12,
                      padded_query_element_s=1e-14, query_padding_tokens=64, attention_query_tile=1)
    c2 = CostModel(m, load_profile("h100_sxm_80gb"), engine=e2)
    per_token = 32 * (1e-8 + 8 * 128 * 2e-12) + 32 * 32 * 128 * 1e-14 * 128  # 100 -> 128 tokens
    assert c2.dense_attention_s(20000.0, 100) == pytest.approx(32768 * per_token)


def test_h100_curves_on_h200_kernels() -> None:
    """The H100 calibration moved to the H200 by its datasheet peaks: GEMMs and prefill
    attention transfer, latency-bound kernels do not (they are predicted too fast)."""
    from simkv.calibration.transfer import gemm_model_transfer, kernel_predictions, summary
    from simkv.entities.hardware import load_profile

    s = summary(kernel_predictions(RAW, load_profile("h100_sxm_80gb_calibrated"),
                                   load_profile("h200")))
    assert s.loc["gemm", "median_ape"] < 12
    assert s.loc["prefill_attention", "median_ape"] < 5
    assert s.loc["decode_attention", "median_signed"] < -25
    assert s.loc["rms_norm", "median_signed"] < -25
    moved = gemm_model_transfer(H100_RAW, RAW, load_profile("h100_sxm_80gb_calibrated"),
                                load_profile("h200"))
    assert moved["shapes"] == len(gemms())
    assert moved["median_ape"] < 10


@pytest.mark.parametrize(("section", "bad", "message"), [
    ("gemm_model", {"multiprocessors": 132, "fixed": {"value": 9, "unit": "us"},
                    "compute_eff": 1.5, "memory_eff": 0.8}, "compute_eff"),
    ("gemm_model", {"multiprocessors": 132, "compute_eff": 0.8, "memory_eff": 0.8}, "expected the keys"),
    ("small_ops", {"rms_norm": 0.1, "rope": 0.1, "silu_mul": 0.5}, "expected the keys"),
])
def test_profile_sections_are_checked(section: str, bad: dict, message: str) -> None:
    from simkv.entities.hardware import ProfileError, parse_profile

    doc = yaml.safe_load((ROOT / "hardware_profiles" / "h200_calibrated.yaml").read_text())
    doc[section] = bad
    with pytest.raises(ProfileError, match=message):
        parse_profile(doc, "x.yaml")

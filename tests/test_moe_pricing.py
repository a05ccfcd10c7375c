"""MoE layers priced by their grouped GEMMs (issue 19, item 5): each expert's rows in whole
tiles, the weights of the experts hit, and an engine's query padding routed alike."""

from __future__ import annotations

import pytest

from simkv.config.schema import EngineConfig
from simkv.config.store import compose
from simkv.entities.hardware import load_profile
from simkv.perf.gemm import expected_ceil
from simkv.perf.roofline import CostModel, experts_hit


def test_experts_hit() -> None:
    assert experts_hit(8, 2, 0, padding=60) == 2  # only the padding's two experts
    assert experts_hit(8, 2, 1) == pytest.approx(2.0)
    assert experts_hit(8, 2, 4, padding=60) == pytest.approx(2 + 6 * (1 - 0.75 ** 4))
    assert experts_hit(8, 2, 1000) == pytest.approx(8.0)


def test_expected_tiles() -> None:
    assert expected_ceil(0, 0.25, 64) == 0
    assert expected_ceil(0, 0.25, 64, shift=60) == 1
    # 64 tokens, p = 1/4: about 16 rows per expert, one tile of 64 almost surely
    assert expected_ceil(64, 0.25, 64) == pytest.approx(1.0, abs=1e-6)


def mixtral(engine: EngineConfig | None = None) -> CostModel:
    cfg = compose(["model=mixtral_8x7b"])
    return CostModel(cfg.model, load_profile("h200_calibrated"), engine=engine)


def test_grouped_gemm_pays_per_expert_tiles() -> None:
    """2,048 tokens over 8 experts: ~512 rows each, compute-bound; per-expert tiles cost at
    least the dense GEMM of all routed rows."""
    cost = mixtral()
    gm = cost._gemm_model
    assert gm is not None
    m = cost.model
    grouped = gm.grouped_time(2048, 8, 2, 2 * m.ffn_size, m.hidden_size)
    dense = gm.time(4096, 2 * m.ffn_size, m.hidden_size)
    assert grouped >= dense
    # few tokens: memory-bound, the hit experts' weights (4 tokens: ~5.5 of 8 experts)
    few = gm.grouped_time(4, 8, 2, 2 * m.ffn_size, m.hidden_size)
    assert few < gm.grouped_time(64, 8, 2, 2 * m.ffn_size, m.hidden_size)


def test_padding_rows_route_alike() -> None:
    """transformers pads a 4-sequence decode step to 64 query tokens; the 60 identical padding
    rows hit the same two experts, so the step reads fewer expert weights than 64 real
    tokens would (measured on the H200: Mixtral decode steps with 1-8 sequences run faster
    per KV interval than with 9-32, VALIDATION.md)."""
    e = compose(["engine=transformers_cudagraph_h200"]).engine
    cost = mixtral(e)
    full = cost.padded_linear_s(64, 64)
    assert full == cost.linear_s(64)
    assert cost.padded_linear_s(64, 4) < cost.padded_linear_s(64, 32) < full
    dense = CostModel(compose([]).model, load_profile("h200_calibrated"), engine=e)
    assert dense.padded_linear_s(64, 4) == dense.linear_s(64)  # dense layers: no routing


@pytest.mark.slow  # over 1 s of the quick subset's CPU (CONTRIBUTING.md)
def test_moe_terms_from_layers_timed_alone() -> None:
    """transformers' MoE blocks timed alone on the H100 (2026-12-07): the terms fitted on
    them price those layers to within 10% median for both MoE shapes, and a step fit without
    any MoE step takes them."""
    from pathlib import Path

    import numpy as np
    import pandas as pd

    from simkv.perf.roofline import experts_hit
    from simkv.validation.stepfit import moe_kernel_terms

    csv = (Path(__file__).resolve().parents[1] / "hardware_profiles" / "calibration"
           / "h100_2026-12-07" / "moe_block.csv")
    terms = moe_kernel_terms(csv)
    assert 20e-6 < terms["moe_layer_overhead_s"] < 200e-6  # sort, histc, gathers: tens of us
    d = pd.read_csv(csv)
    hw = load_profile("h100_sxm_80gb_calibrated")
    for shape in ("mixtral_8x7b", "qwen3_30b_a3b"):
        m = compose([f"model={shape}"]).model
        cost = CostModel(m, hw)
        rows = d[(d["model"] == shape) & (d["part"] == "block")]
        ape = []
        for t, ms in zip(rows["tokens"], rows["ms"], strict=True):
            base = sum(op.seconds for op in cost._moe(int(t)))
            extra = (terms["moe_layer_overhead_s"]
                     + terms["moe_expert_flop_s"] * 6 * m.experts_per_token * m.hidden_size
                     * m.ffn_size * t
                     + terms["moe_weight_read_factor"] * experts_hit(m.num_experts,
                                                                      m.experts_per_token, t)
                     * 3 * m.hidden_size * m.ffn_size * 2 / hw.hbm_bandwidth)
            ape.append(abs((base + extra) / (ms / 1e3) - 1))
        assert np.median(ape) < 0.10, shape

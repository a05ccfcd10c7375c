"""The validation comparison, run on the committed measurements of transformers' engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simkv.validation.compare import engine_config, errors, load_measured, predict

FOLDER = Path(__file__).resolve().parents[1] / "validation" / "hf_h100_2026-11-25"
# Host costs fitted on the light load by `python -m simkv.validation.compare` (docs/VALIDATION.md).
OVERHEAD_S, PER_SEQ_S = 0.108, 0.0015


def test_measurements_are_complete_and_consistent() -> None:
    measured = load_measured(FOLDER)
    assert sorted(measured, key=float) == ["0.2", "0.5", "1.2", "3"]
    for load, d in measured.items():
        assert len(d) == (60 if load == "3" else 40)
        assert (d["generated"] == d["output_tokens"]).all()  # eos disabled: exact lengths
        assert (d["ttft"] > 0).all()
        assert (d["e2e"] >= d["ttft"]).all()


def test_engine_is_modelled_with_its_own_limits() -> None:
    cfg = engine_config(FOLDER, "h100_sxm_80gb_calibrated", OVERHEAD_S, PER_SEQ_S)
    assert cfg.kv.num_gpu_blocks_override == 1719
    assert cfg.kv.block_size == 256
    assert cfg.scheduler.max_num_batched_tokens == 2048


@pytest.mark.parametrize(("load", "e2e_tpot_bound", "ttft_bound"),
                         [("0.2", 8.0, 15.0), ("0.5", 8.0, 25.0), ("1.2", 8.0, 25.0), ("3", 20.0, 35.0)])
def test_calibrated_predictions_track_the_engine(load: str, e2e_tpot_bound: float,
                                                 ttft_bound: float) -> None:
    m = load_measured(FOLDER)[load]
    e = errors(m, predict(m, engine_config(FOLDER, "h100_sxm_80gb_calibrated", OVERHEAD_S, PER_SEQ_S)))
    # Measured on 2026-11-25 (docs/VALIDATION.md): E2E/TPOT median 2-6% up to 1.2x, 17-18% at
    # saturation; TTFT 11-31%. The bounds guard against regressions, they are not the targets.
    assert e["e2e"]["median_ape"] < e2e_tpot_bound
    assert e["tpot"]["median_ape"] < e2e_tpot_bound
    assert e["ttft"]["median_ape"] < ttft_bound


def test_error_metric() -> None:
    import pandas as pd

    m = pd.DataFrame({"ttft": [1.0, 2.0], "tpot": [0.1, 0.1], "e2e": [10.0, 10.0]})
    p = pd.DataFrame({"ttft": [1.1, 2.0], "tpot": [0.1, 0.12], "e2e": [9.0, 10.0]})
    e = errors(m, p)
    assert e["ttft"]["median_ape"] == pytest.approx(5.0)
    assert e["tpot"]["p90_ape"] == pytest.approx(18.0)
    assert np.isclose(e["e2e"]["median_ape"], 5.0)


STEPS = Path(__file__).resolve().parents[1] / "validation" / "hf_h100_2026-11-25_steps"


def test_profiled_steps_are_complete() -> None:
    from simkv.validation.compare import load_iterations

    d = load_iterations(STEPS)
    assert sorted(d["load"].unique(), key=float) == ["0.2", "0.5", "1.2", "3"]
    assert (d["tokens"] >= d["sequences"]).all()
    assert (d["sequences"] >= 1).all()
    assert (d["tokens"] <= 2048).all()  # the engine's token budget
    assert (d["step_s"] > d["forward_s"]).all()  # a step is its forward pass plus host work


def test_host_costs_fitted_on_profiled_steps() -> None:
    from simkv.validation.compare import fit_from_iterations

    a, b, c = fit_from_iterations(STEPS, "h100_sxm_80gb_calibrated")
    # This engine is host-bound: ~0.11 s a step whatever the batch (docs/VALIDATION.md).
    assert 0.09 < a < 0.13
    assert 0 < b < 0.002
    assert 0 < c < 1e-4


@pytest.mark.parametrize("load", ["0.2", "0.5", "1.2", "3"])
def test_step_fitted_model_predicts_every_load(load: str) -> None:
    from simkv.validation.compare import fit_from_iterations

    cfg = engine_config(STEPS, "h100_sxm_80gb_calibrated",
                        *fit_from_iterations(STEPS, "h100_sxm_80gb_calibrated"))
    m = load_measured(STEPS)[load]
    e = errors(m, predict(m, cfg))
    # Measured (docs/VALIDATION.md): E2E median 5.6-9.1% and TPOT 5.9-8.8% at every load,
    # saturation included; bounds guard regressions, they are not the targets.
    assert e["e2e"]["median_ape"] < 11.0
    assert e["tpot"]["median_ape"] < 11.0
    assert e["ttft"]["median_ape"] < 40.0

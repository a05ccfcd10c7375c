"""The power model's fits (simkv/calibration/power_fit.py): the shipped published parameters
re-derive from their targets, and the device fit recovers known parameters from windows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from simkv.calibration.power_fit import (
    PublishedTargets,
    main,
    phase_work,
    published_fit,
    replay_work,
    run_fit,
)
from simkv.config.schema import EngineConfig
from simkv.energy.accounting import power_model
from simkv.energy.params import PowerParams, load_power
from simkv.entities.hardware import load_profile
from simkv.entities.model import ModelSpec
from simkv.perf.roofline import CostModel

H100_TARGETS = PublishedTargets("h100_sxm_80gb", "llama2_70b", 8, 1500, 700.0, 32, 1500, 380.0,
                                75.0, 60.0, 30.0, cap_w=350.0, cap_slowdown=1.30)


def test_shipped_h100_parameters_are_the_published_fit() -> None:
    shipped = load_power("h100_sxm_published")
    got = published_fit(H100_TARGETS, shipped)
    assert got["compute_w"] == pytest.approx(shipped.compute_w, abs=0.1)
    assert got["memory_w"] == pytest.approx(shipped.memory_w, abs=0.1)
    assert got["freq_exponent"] == pytest.approx(shipped.freq_exponent, abs=1e-3)


def test_the_fit_reproduces_its_targets_and_splitwise_fig9_holds_out() -> None:
    p = load_power("h100_sxm_published")
    hw = load_profile("h100_sxm_80gb")
    m = power_model(p, hw)
    work = phase_work(H100_TARGETS)
    out = {}
    for name, (sec, f, b, lk) in work.items():
        args = (np.array([sec]), np.array([f]), np.array([b]), np.array([lk]))
        out[name] = (m.operate(*args), m.operate(*args, cap_w=350.0), sec)
    assert out["prompt"][0].power_w[0] == pytest.approx(700.0, abs=0.5)
    assert out["token"][0].power_w[0] == pytest.approx(380.0, abs=0.5)
    assert out["prompt"][1].seconds[0] / out["prompt"][2] == pytest.approx(1.30, abs=0.002)
    # Held out (not a target): Splitwise Fig. 9, the token phase capped 700 -> 350 W shows
    # "almost no latency impact".
    assert out["token"][1].seconds[0] / out["token"][2] < 1.03


def test_a100_parameters_are_the_published_fit() -> None:
    shipped = load_power("a100_sxm_published")
    t = PublishedTargets("a100_80gb", "llama2_70b", 8, 1500, 400.0, 32, 1500, 250.0, 63.0, 35.0, 20.0)
    got = published_fit(t, shipped)
    assert got["compute_w"] == pytest.approx(shipped.compute_w, abs=0.1)
    assert got["memory_w"] == pytest.approx(shipped.memory_w, abs=0.1)


# --- the device fit on synthetic windows -------------------------------------------------------

TRUTH = PowerParams("truth", 68.0, 95.0, 900.0, 410.0, 30.0, 700.0, 1980.0, 800.0, 2.464)


def _campaign(root: Path, rng: np.random.Generator) -> Path:
    """A campaign folder as dev19's script writes it: power/ (loops, NVML samples) and one
    engine folder with two streams, its energy drawn from TRUTH with 1% noise."""
    hw = load_profile("h100_sxm_80gb_calibrated")
    power = root / "power"
    power.mkdir(parents=True)
    loops = [("idle_start", "idle", 0.0, 0.0), ("gemm_4096", "gemm_compute", 0.45, 0.02),
             ("gemm_2048", "gemm_compute", 0.35, 0.05), ("copy_1gib", "memory", 0.0, 0.88),
             ("read_sum_1gib", "memory", 0.001, 0.8), ("tiny_kernels", "launch_bound", 1e-6, 1e-5),
             ("linear_m16", "gemm_memory", 0.02, 0.75), ("decode_attn", "attention_memory", 0.01, 0.7),
             ("idle_end", "idle", 0.0, 0.0)]
    rows = []
    for name, kind, uc, um in loops:
        sec = 2.0
        e = (TRUTH.idle_w * sec + (0 if kind == "idle" else TRUTH.active_w * sec)
             + TRUTH.compute_w * uc * sec + TRUTH.memory_w * um * sec) * (1 + rng.normal(0, 0.01))
        rows.append({"name": name, "kind": kind, "seconds": sec,
                     "tflop_per_s": uc * hw.bf16_flops / 1e12, "tbyte_per_s": um * hw.hbm_bandwidth / 1e12,
                     "energy_j": e, "mean_power_w": e / sec})
    pd.DataFrame(rows).to_csv(power / "loops.csv", index=False)
    (power / "nvml_part1.json").write_text(json.dumps({"name": "NVIDIA H100 80GB HBM3",
                                                       "power_limit_w": 700.0}))
    # One engine folder: llama3_8b, streams a and b of decode-heavy steps.
    eng = root / "llama3_8b"
    eng.mkdir()
    spec = {"name": "llama3_8b", "num_layers": 32, "hidden_size": 4096, "num_heads": 32,
            "num_kv_heads": 8, "head_dim": 128, "ffn_size": 14336, "vocab_size": 128256}
    streams, samples, t0_perf = [], [], 1000.0
    engine = EngineConfig(**yaml.safe_load((Path(__file__).parents[1] / "simkv" / "conf" / "engine"
                                            / "transformers_cudagraph_h100.yaml").read_text()))
    cost = CostModel(ModelSpec(**spec), hw, 1, engine=engine)
    for tag, rep, batch in (("s-a", "a", 8), ("s-b", "b", 32)):
        n = 200
        its = pd.DataFrame({"start_s": np.arange(n) * 0.02 + 0.5, "forward_s": np.full(n, 0.015),
                            "step_call_s": np.full(n, 0.016), "tokens": np.full(n, batch),
                            "q_padded": np.full(n, 64), "kv_read": np.full(n, batch * 900),
                            "kv_padded": np.full(n, 16384), "sequences": np.full(n, batch)})
        its.to_csv(eng / f"iterations_{tag}.csv", index=False)
        busy, f, b, lk = replay_work(its, cost)
        ta = t0_perf + its["start_s"].min()
        tb = t0_perf + its["start_s"].iloc[-1] + its["step_call_s"].iloc[-1]
        e = (TRUTH.idle_w * (tb - ta) + TRUTH.active_w * busy + TRUTH.compute_w * f / hw.bf16_flops
             + TRUTH.memory_w * b / hw.hbm_bandwidth + TRUTH.link_w * lk / hw.nvlink_bandwidth)
        samples.append((ta, e * (1 + rng.normal(0, 0.01))))
        streams.append({"tag": tag, "rep": rep, "t0_perf": t0_perf})
        t0_perf += 20.0
    (eng / "engine.json").write_text(json.dumps({"model_spec": spec, "tp": 1, "streams": streams}))
    # NVML samples: the energy counter rising by each stream's energy over its window.
    t, energy, rows = 900.0, 0.0, []
    rows.append((t, 80.0, energy))
    for ta, e in samples:
        rows.append((ta, 80.0, energy))
        energy += e
        rows.append((ta + 0.5 + 199 * 0.02 + 0.016 - 0.5, 300.0, energy))
    rows.append((t0_perf + 100, 80.0, energy))
    pd.DataFrame(rows, columns=["perf_s", "power_w", "energy_j"]).to_csv(power / "nvml_part1.csv", index=False)
    return root


def test_the_device_fit_recovers_parameters_and_reports_held_out_errors(tmp_path) -> None:
    campaign = _campaign(tmp_path / "c", np.random.default_rng(0))
    got, table, info = run_fit(campaign, "h100_sxm_80gb_calibrated", "h100_sxm_published",
                               ("llama3_8b/s-a",))
    assert got["idle"] == pytest.approx(TRUTH.idle_w, rel=0.1)
    assert got["active"] == pytest.approx(TRUTH.active_w, rel=0.25)
    assert got["compute"] == pytest.approx(TRUTH.compute_w, rel=0.1)
    assert got["memory"] == pytest.approx(TRUTH.memory_w, rel=0.1)
    held = table[table["set"] == "held_out"]
    assert set(held["kind"]) == {"gemm_memory", "attention_memory", "replay"}
    assert set(table.loc[table["kind"] == "replay", "set"]) == {"train", "held_out"}
    assert held["error"].abs().max() < 0.05
    assert info["power_limit_w"] == 700.0


def test_power_fit_command_writes_a_fitted_model_simkv_reads(tmp_path) -> None:
    campaign = _campaign(tmp_path / "c", np.random.default_rng(1))
    out = tmp_path / "fitted.yaml"
    main(["--campaign", str(campaign), "--out", str(out), "--errors", str(tmp_path / "e.csv"),
          "--train", "llama3_8b/s-a", "--cap-exponent"])
    p = load_power(path=str(out))
    assert p.kind == "fitted"
    assert p.idle_w == pytest.approx(TRUTH.idle_w, rel=0.1)
    assert p.provenance["windows"]["held_out"] >= 3
    assert p.provenance["held_out_replays"]["windows"] == 1
    assert 1.0 <= p.freq_exponent <= 4.0
    assert (tmp_path / "e.csv").is_file()


CAMPAIGN = Path(__file__).parents[1] / "validation" / "hf_h100_2026-12-07"


def test_shipped_h100_device_model_is_the_fit_of_the_committed_samples() -> None:
    """hardware_profiles/power/h100_sxm_fitted.yaml re-derives from dev19's 2026-12-07 NVML
    samples (validation/hf_h100_2026-12-07/power/): loops and one training stream; its held-out
    errors are the ones docs/ENERGY.md reports."""
    shipped = load_power("h100_sxm_fitted")
    train = tuple(shipped.provenance["train_streams"])
    got, table, info = run_fit(CAMPAIGN, "h100_sxm_80gb_calibrated", "h100_sxm_published", train)
    assert info["gpu"] == "NVIDIA H100 80GB HBM3"
    for key, value in (("idle", shipped.idle_w), ("active", shipped.active_w),
                       ("compute", shipped.compute_w), ("memory", shipped.memory_w)):
        assert got[key] == pytest.approx(value, abs=0.1)
    held = table[(table["set"] == "held_out") & ~table["at_limit"]]
    replays = held[held["kind"] == "replay"]
    assert len(replays) == shipped.provenance["held_out_replays"]["windows"] == 11
    assert float(replays["error"].abs().median()) == pytest.approx(
        shipped.provenance["held_out_replays"]["abs_error_median"], abs=1e-3)


def test_check_predicts_another_machines_streams_with_the_shipped_model(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`power-fit --check` fits nothing: the shipped H100 model against the third machine's
    streams (validation/hf_h100_2026-12-07b: shapes and a machine no fit saw), one row per
    stream whose steps the NVML samples cover; the errors are docs/ENERGY.md's."""
    campaign = CAMPAIGN.parent / "hf_h100_2026-12-07b"
    errors = tmp_path / "check.csv"
    main(["--campaign", str(campaign), "--check", "h100_sxm_fitted", "--errors", str(errors)])
    d = pd.read_csv(errors)
    streams = {f"{e.parent.name}/{s['tag']}" for e in campaign.glob("*/engine.json")
               for s in json.loads(e.read_text()).get("streams", [])
               if (e.parent / f"iterations_{s.get('tag')}.csv").is_file()}
    assert set(d["name"]) <= streams
    assert len(d) == 17  # the streams of commands 1-2, which sampled power; the last one did not
    assert (d["set"] == "held_out").all()
    assert d["error"].abs().median() == pytest.approx(0.122, abs=0.01)
    with pytest.raises(SystemExit):
        main(["--campaign", str(campaign)])  # neither --out nor --check
    with pytest.raises(SystemExit, match="no such folder"):
        main(["--campaign", str(tmp_path / "none"), "--check", "h100_sxm_fitted"])

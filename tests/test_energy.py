"""Energy and power (simkv/energy/, docs/ENERGY.md): the invariants of the accounting, the
cap, and what summary.json reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import simkv
from simkv.config.bounds import ConfigError
from simkv.energy.accounting import power_model
from simkv.energy.model import PowerModel
from simkv.energy.params import PowerParams, default_for, load_power
from simkv.engine.lifecycle import RELEASED
from simkv.entities.hardware import load_profile
from simkv.perf.roofline import ACT_BYTES

H100 = default_for("h100_sxm_80gb")  # the model an H100 run uses (a device fit, else published)
BASE = ["output.plot=false", "output.progress=false", "cluster.replicas=1",
        "workload=poisson", "workload.num_requests=60", "workload.rate=6"]
ON = [*BASE, "energy.enabled=true"]


def _run(overrides: list[str], out: Path, observer=None) -> dict:
    return simkv.simulate(simkv.compose(overrides), out, observer=observer).summary


def _idle_gpu_seconds(out: Path, end_s: float) -> dict[str, float]:
    """GPU-seconds per (pool, state) from instances.parquet, walked row by row (not through
    metrics.cluster.state_seconds)."""
    rows = pd.read_parquet(out / "instances.parquet").sort_values(["instance", "time_s"], kind="stable")
    got: dict[str, float] = {}
    for _, g in rows.groupby("instance"):
        recs = g.to_dict("records")
        for i, r in enumerate(recs):
            t0 = min(r["time_s"], end_s)
            t1 = min(recs[i + 1]["time_s"] if i + 1 < len(recs) else end_s, end_s)
            if r["to_state"] in RELEASED or t1 <= t0:
                continue
            got[r["to_state"]] = got.get(r["to_state"], 0.0) + (t1 - t0) * r["gpus"]
    return got


# --- the run's energy is the integral of the power model ------------------------------------

class _Integral:
    """Recomputes each committed run's energy above idle from the cost model's operators, one
    iteration at a time, with the power formula written out here."""

    def __init__(self, params: PowerParams) -> None:
        self.p = params
        self.joules = 0.0

    def __call__(self, replica) -> None:
        out, ends, done = replica._out, replica._ends, replica._done
        cost, hw, p = replica.cost, replica.pool.hw, self.p
        m = cost.model
        t_prev = replica._start
        for i in range(done):
            t = float(ends[i]) - t_prev
            t_prev = float(ends[i])
            if i == 0 and out.prefill_tokens:
                tokens, dec, sampled = out.prefill_tokens + out.num_decodes, out.num_decodes, out.num_sampled
                ctx = float(out.decode_context[0]) if dec else 0.0
                pf = (out.prefill_attn_pairs, out.prefill_kv_tokens, out.prefill_tokens)
            elif out.prefill_tokens:
                tokens = dec = sampled = out.tail_decodes
                ctx, pf = float(out.tail_context[i - 1]), (0.0, 0, 0)
            else:
                tokens, dec, sampled = out.num_decodes, out.num_decodes, out.num_sampled
                ctx, pf = float(out.decode_context[i]), (0.0, 0, 0)
            ops = cost.layer_operators(tokens, prefill_pairs=pf[0], prefill_kv_tokens=pf[1],
                                       prefill_tokens=pf[2], decodes=dec, decode_context=ctx)
            flops = sum(o.flops for o in ops) * m.num_layers
            nbytes = sum(o.bytes for o in ops) * m.num_layers
            flops += 2.0 * sampled * m.hidden_size * m.vocab_size
            nbytes += m.hidden_size * m.vocab_size * m.weight_bytes_per_param
            nbytes += sampled * (m.hidden_size + m.vocab_size) * ACT_BYTES
            power = min(p.tdp_w, p.idle_w + p.active_w + p.compute_w * flops / (t * hw.bf16_flops)
                        + p.memory_w * nbytes / (t * hw.hbm_bandwidth))
            self.joules += (power - p.idle_w) * t * replica.gpus


def test_energy_is_idle_times_gpu_seconds_plus_the_steps_power_integral(tmp_path) -> None:
    integral = _Integral(H100)
    s = _run(ON, tmp_path / "r", observer=integral)
    e = s["energy"]
    end = s["cluster"]["window_s"][1]
    held = _idle_gpu_seconds(tmp_path / "r", end)
    idle = H100.idle_w * sum(held.values())
    assert e["idle_joules"] == pytest.approx(idle, rel=1e-9)
    assert e["dynamic_joules"] == pytest.approx(integral.joules, rel=1e-6)
    assert e["gpu_joules"] == pytest.approx(idle + integral.joules, rel=1e-9)
    # GPU-hours and energy integrate the same transitions.
    assert sum(held.values()) / 3600 == pytest.approx(s["gpu_hours"], rel=1e-12)
    assert e["gpu_joules"] >= idle  # idle power x GPU-seconds is a floor
    assert e["dynamic_joules"] > 0
    out_tok = pd.read_parquet(tmp_path / "r" / "requests.parquet").query("status == 'finished'")["output_tokens"].sum()
    assert e["joules_per_output_token"] == pytest.approx(e["gpu_joules"] / out_tok)
    assert e["gpu_kwh"] == pytest.approx(e["gpu_joules"] / 3.6e6)
    assert e["co2_g"] == pytest.approx(e["facility_kwh"] * 481.0)


def test_zero_load_draws_idle_power_only(tmp_path) -> None:
    # Every prompt is longer than the model's context: rejected at arrival, no GPU work.
    s = _run([*ON, "workload.prompt_median=200000", "workload.prompt_sigma=0",
              "workload.prompt_max=200000"], tmp_path / "r")
    e = s["energy"]
    assert s["requests"]["finished"] == 0
    assert e["dynamic_joules"] == 0.0
    assert e["gpu_joules"] == pytest.approx(H100.idle_w * s["gpu_hours"] * 3600, rel=1e-12)
    assert e["joules_per_output_token"] is None


def test_provisioning_and_loading_draw_idle_power(tmp_path) -> None:
    s = _run([*ON, "workload.num_requests=1600", "workload.rate=20", "cluster.max_replicas=2",
              "autoscaler=horizontal", "autoscaler.target=2", "autoscaler.interval_s=2",
              "autoscaler.window_s=4"], tmp_path / "r")
    by_state = s["energy"]["joules_by_state"]
    held = _idle_gpu_seconds(tmp_path / "r", s["cluster"]["window_s"][1])
    assert held.get("provisioning", 0) > 0
    assert held.get("loading", 0) > 0
    for state in ("provisioning", "loading"):
        assert by_state[state] == pytest.approx(H100.idle_w * held[state], rel=1e-9)
    assert by_state["serving"] > H100.idle_w * held["serving"]


@pytest.mark.slow  # among the quick subset's slowest (CONTRIBUTING.md)
def test_default_run_is_unchanged_and_energy_is_deterministic(tmp_path) -> None:
    off = _run(BASE, tmp_path / "off")
    on = _run(ON, tmp_path / "on")
    assert "energy" not in off
    a = pd.read_parquet(tmp_path / "off" / "requests.parquet")
    b = pd.read_parquet(tmp_path / "on" / "requests.parquet")
    pd.testing.assert_frame_equal(a, b)  # accounting alone changes no latency
    again = _run(ON, tmp_path / "again")
    assert json.dumps(on["energy"], sort_keys=True) == json.dumps(again["energy"], sort_keys=True)
    assert (tmp_path / "on" / "summary.json").read_bytes() == (tmp_path / "again" / "summary.json").read_bytes()


# --- caps and clocks ------------------------------------------------------------------------

def _h100() -> PowerModel:
    return power_model(H100, load_profile("h100_sxm_80gb"))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(1e-4, 0.2), st.floats(0, 1.0), st.floats(0, 1.0),
                          st.floats(0, 0.3)), min_size=1, max_size=8),
       st.floats(100.0, 700.0), st.floats(0.4, 1.0))
def test_a_cap_never_raises_power_or_speeds_a_step(steps, cap, clock) -> None:
    m = _h100()
    t = np.array([s[0] for s in steps])
    flops = np.array([s[1] for s in steps]) * t * m.flops_peak
    nbytes = np.array([s[2] for s in steps]) * t * m.hbm
    link = np.array([s[3] for s in steps]) * t * m.link
    free = m.operate(t, flops, nbytes, link)
    got = m.operate(t, flops, nbytes, link, clock=clock, cap_w=cap)
    assert np.all(got.seconds >= t * (1 - 1e-12))
    assert np.all(got.power_w <= free.power_w * (1 + 1e-9))
    met = ~got.unmet
    assert np.all(got.power_w[met] <= cap * (1 + 1e-6))
    assert np.all(got.clock <= clock + 1e-12)
    # A lower cap is never faster.
    lower = m.operate(t, flops, nbytes, link, clock=clock, cap_w=cap * 0.9)
    assert np.all(lower.seconds >= got.seconds * (1 - 1e-9))


def test_a_cap_at_the_tdp_changes_nothing_and_memory_bound_steps_barely_slow() -> None:
    m = _h100()
    t = np.array([0.01, 0.05])
    flops = np.array([0.05, 0.8]) * t * m.flops_peak  # a decode-like and a GEMM-like step
    nbytes = np.array([0.7, 0.05]) * t * m.hbm
    link = np.zeros(2)
    free = m.operate(t, flops, nbytes, link)
    at_tdp = m.operate(t, flops, nbytes, link, cap_w=700.0)
    np.testing.assert_array_equal(at_tdp.seconds, free.seconds)
    half = m.operate(t, flops, nbytes, link, clock=0.5)
    assert half.seconds[0] / t[0] < 1.1  # memory-bound: little slower
    # Compute-bound: 1/clock relative to the clock the TDP left it (its full-clock power
    # is above 700 W, so its calibrated time ran below 1,980 MHz already).
    assert free.power_w[1] == 700.0
    assert 1.3 < half.seconds[1] / t[1] < 2.0
    assert half.power_w[0] < free.power_w[0]


def test_slowed_iterations_are_counted_as_they_run(tmp_path) -> None:
    # Counted at planning, a fast-forwarded run cut by an arrival counted iterations that never
    # ran: 11,345 slowed of 5,407 run under a 350 W cap (a review, helper-33).
    cap = [*ON, "energy.power_cap_w=350", "workload.num_requests=300", "workload.rate=20"]
    pools = [_run([*cap, f"engine.max_fast_forward={ff}"], tmp_path / str(ff))["energy"]["pools"]["default"]
             for ff in (4096, 1)]
    assert 0 < pools[0]["iterations_slowed"] <= pools[0]["iterations"]
    assert pools[0]["iterations_slowed"] == pools[1]["iterations_slowed"]
    assert pools[0]["iterations_cap_unmet"] == pools[1]["iterations_cap_unmet"]


def test_cap_stretches_steps_in_the_run_and_lowers_power(tmp_path) -> None:
    free = _run(ON, tmp_path / "free")
    capped = _run([*ON, "energy.sm_clock_mhz=1000"], tmp_path / "capped")
    p = capped["energy"]["pools"]["default"]
    assert p["iterations_slowed"] > 0
    assert p["mean_sm_mhz_busy"] == pytest.approx(1000.0)
    assert capped["tpot_s"]["mean"] > free["tpot_s"]["mean"]
    a = free["energy"]["pools"]["default"]
    assert (p["dynamic_joules"] / p["busy_gpu_seconds"]) < (a["dynamic_joules"] / a["busy_gpu_seconds"])


# --- refusals ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("overrides", "message"), [
    (["energy.power_cap_w=300"], "energy.power_cap_w cannot act with energy.enabled=false: the power model is built only for energy accounting; set energy.enabled=true"),
    (["energy.grid_gco2_per_kwh=100"], "energy.grid_gco2_per_kwh cannot act with energy.enabled=false; set energy.enabled=true"),
    (["energy.enabled=true", "energy.pue=0.5"], "energy.pue: expected a finite number >= 1, got 0.5"),
    (["energy.enabled=true", "speculative=eagle"], "energy.enabled: the energy model does not count the GPU work of speculative=eagle (the proposer's steps); turn it off or set energy.enabled=false"),
    (["pools=h100_a100", "pools.a100.power_cap_w=200"], "pools.a100.power_cap_w cannot act with energy.enabled=false: the cap acts through the power model; set energy.enabled=true"),
    (["autoscaler=energy", "cluster.max_replicas=2"], "autoscaler=energy needs energy.enabled=true: it chooses instances and clocks with the power model"),
])
def test_bad_energy_config_is_refused_in_one_line(tmp_path, overrides, message) -> None:
    with pytest.raises(ConfigError) as err:
        _run([*BASE, *overrides], tmp_path / "r")
    assert str(err.value) == message


@pytest.mark.parametrize(("overrides", "message"), [
    (["energy.power_cap_w=800"], "energy.power_cap_w=800: expected above 77 W (the idle and clock-floor power of h100_sxm_fitted at its lowest modelled clock, 800 MHz) and at most its TDP, 700 W"),
    (["energy.power=h100_sxm_published", "energy.power_cap_w=80"], "energy.power_cap_w=80: expected above 81 W (the idle and clock-floor power of h100_sxm_published at its lowest modelled clock, 800 MHz) and at most its TDP, 700 W"),
    (["energy.sm_clock_mhz=2500"], "energy.sm_clock_mhz=2500: expected a clock within 800-1980 MHz (h100_sxm_fitted)"),
    (["pools=h100_a100", "pools.a100.power_cap_w=50"], "pools.a100.power_cap_w=50: expected above 72 W (the idle and clock-floor power of a100_sxm_published at its lowest modelled clock, 800 MHz) and at most its TDP, 400 W"),
    (["hardware=t4_16gb", "model=opt_6_7b"], "energy.enabled: no power model for hardware t4_16gb (pool default); name one with energy.power (a100_sxm_published, h100_sxm_fitted, h100_sxm_published, h200_sxm_published) or energy.power_path (docs/ENERGY.md)"),
])
def test_limits_of_the_gpu_are_refused_before_the_run(tmp_path, overrides, message) -> None:
    cfg = [*ON, *overrides]
    if any(o.startswith("pools=") for o in overrides):
        cfg = [o for o in cfg if o != "cluster.replicas=1"]
    with pytest.raises(ValueError, match="^energy|^pools") as err:
        _run(cfg, tmp_path / "r")
    assert str(err.value) == message
    run = json.loads((tmp_path / "r" / "run.json").read_text())
    assert run.get("requests_recorded", 0) == 0


# --- the shipped parameters -------------------------------------------------------------------

def test_every_gpu_with_a_shipped_profile_family_has_a_power_model() -> None:
    for profile, kind in (("h100_sxm_80gb", "fitted"), ("h100_sxm_80gb_calibrated", "fitted"),
                          ("h200", "published"), ("h200_calibrated", "published"),
                          ("a100_80gb", "published")):
        p = default_for(profile)
        assert p is not None
        assert p.kind == kind
        assert all(p.sources[k] for k in ("idle", "active", "compute", "memory", "link", "tdp",
                                          "freq_exponent"))
    assert load_power("h100_sxm_published").tdp_w == 700.0
    assert load_power("a100_sxm_published").tdp_w == 400.0
    assert load_power("h200_sxm_published").tdp_w == 700.0


# --- autoscaler=energy --------------------------------------------------------------------------

@pytest.mark.slow  # over 1 s of the quick subset's CPU (CONTRIBUTING.md)
def test_energy_autoscaler_sheds_instances_and_clock_at_low_load_within_the_slo(tmp_path) -> None:
    load = [*ON[:2], "workload=poisson", "workload.num_requests=900", "workload.rate=6",
            "energy.enabled=true", "cluster.replicas=3"]
    static = _run(load, tmp_path / "static")
    scaled = _run([*load, "cluster.min_replicas=1", "cluster.max_replicas=3", "autoscaler=energy",
                   "autoscaler.interval_s=10", "autoscaler.window_s=20"], tmp_path / "energy")
    p = scaled["energy"]["pools"]["default"]
    assert p["clock_changes"] >= 1
    assert p["mean_sm_mhz_busy"] < 1980
    assert scaled["gpu_hours"] < static["gpu_hours"]
    assert scaled["energy"]["gpu_joules"] < 0.8 * static["energy"]["gpu_joules"]
    assert scaled["requests"]["finished"] == static["requests"]["finished"]
    assert scaled["goodput"]["fraction_met"] >= 0.99
    drains = [e for e in scaled["cluster"]["scaling"]["events"] if e["kind"] == "scale_down"]
    assert drains


def test_energy_autoscaler_predictions_are_monotone(tmp_path) -> None:
    from simkv.energy.accounting import PoolPower
    from simkv.engine.pool import Pool, pool_configs
    from simkv.kv.tiers import load_node_profile
    from simkv.policies.autoscaler.energy import EnergyAware, EnergyAwareConfig

    cfg = simkv.compose([*ON, "cluster.max_replicas=4"])
    pc = pool_configs(cfg)["default"]
    pool = Pool(0, "default", pc, cfg, load_node_profile(cfg.memory.node, None))
    pool.power = PoolPower(pool, cfg)
    policy = EnergyAware(EnergyAwareConfig())
    plans = {(n, c): policy.plan(pool, 12.0, 512.0, 160.0, n, c) for n in (1, 2, 4) for c in (1.0, 0.6)}
    for c in (1.0, 0.6):  # more instances: each one's batch and TPOT no larger
        assert plans[(4, c)].tpot_s <= plans[(2, c)].tpot_s <= plans[(1, c)].tpot_s
        assert plans[(4, c)].batch <= plans[(1, c)].batch
    for n in (1, 2, 4):  # a lower clock: never faster
        assert plans[(n, 0.6)].tpot_s >= plans[(n, 1.0)].tpot_s
    # Idle power: at this load four instances draw more than two.
    assert plans[(4, 1.0)].watts > plans[(2, 1.0)].watts


def test_energy_autoscaler_refuses_a_clock_below_the_model(tmp_path) -> None:
    with pytest.raises(ValueError, match="^autoscaler.clocks: 0.3 is below h100_sxm_fitted's lowest"):
        _run([*ON, "cluster.max_replicas=2", "autoscaler=energy", "autoscaler.clocks=[1.0,0.3]"],
             tmp_path / "r")
    # The default clocks reach below the A100's model: the message gives a list that runs.
    with pytest.raises(ValueError, match="^autoscaler.clocks: 0.5") as err:
        _run([*ON, "hardware=a100_80gb", "cluster.max_replicas=2", "autoscaler=energy"],
             tmp_path / "a100")
    assert str(err.value) == (
        "autoscaler.clocks: 0.5 is below a100_sxm_published's lowest modelled clock (0.567 of "
        "1410 MHz, pool default); list clocks >= 0.567, e.g. autoscaler.clocks=[1,0.9,0.8,0.7,0.6]")
    _run([*ON, "hardware=a100_80gb", "cluster.max_replicas=2", "autoscaler=energy",
          "autoscaler.clocks=[1,0.9,0.8,0.7,0.6]"], tmp_path / "a100_ok")


@pytest.mark.slow  # among the quick subset's slowest (CONTRIBUTING.md)
def test_lora_kernels_add_their_energy(tmp_path) -> None:
    # The adapters' kernels lengthened the steps but their work was not counted: less dynamic
    # energy than without adapters (4,580 J against 4,859 J here; 0.455 against 0.474 J per
    # output token), over a longer busy time. Counted, both exceed the base run's.
    base = _run(ON, tmp_path / "base")["energy"]
    lora = _run([*ON, "lora.adapters=8", "lora.targets=all", "lora.rank=64"], tmp_path / "lora")["energy"]
    assert lora["dynamic_joules"] > base["dynamic_joules"]
    assert lora["joules_per_output_token"] > base["joules_per_output_token"]


def test_another_gpus_power_model_is_refused(tmp_path) -> None:
    # An H100 model on an A100 pool ran with the H100's idle power, TDP and clocks.
    with pytest.raises(ValueError, match="^energy.power=h100_sxm_fitted: ") as err:
        _run(["output.plot=false", "output.progress=false", "workload=poisson",
              "workload.num_requests=10", "energy.enabled=true", "pools=h100_a100",
              "energy.power=h100_sxm_fitted"], tmp_path / "r")
    assert str(err.value) == (
        "energy.power=h100_sxm_fitted: a power model of h100_sxm_80gb, h100_sxm_80gb_calibrated, "
        "and pool a100 runs a100_80gb; leave it unset (each pool's GPU's own model: "
        "a100_sxm_published) or name a model of a100_80gb")


@pytest.mark.slow  # among the quick subset's slowest (CONTRIBUTING.md)
def test_energy_autoscaler_on_fixed_pools_chooses_their_clock(tmp_path) -> None:
    # Every pool of fixed size: it was refused ("no pool to scale ... set cluster.max_replicas"),
    # though the policy chooses the clock too; it now scales every pool's clock, as when the
    # pool is named.
    load = [*ON, "workload.num_requests=120", "autoscaler=energy"]
    unnamed = _run(load, tmp_path / "unnamed")
    named = _run([*load, "autoscaler.pools=[default]"], tmp_path / "named")
    assert unnamed["energy"]["pools"]["default"]["clock_changes"] >= 1
    assert unnamed["energy"] == named["energy"]
    with pytest.raises(ValueError, match="^autoscaler=energy has no pool to scale"):
        _run([*load, "autoscaler.clocks=[1.0]"], tmp_path / "one_clock")


def test_a_failed_instance_draws_idle_power_until_it_is_released(tmp_path) -> None:
    s = _run([*ON, "cluster.replicas=2", "workload.num_requests=200", "workload.rate=20",
              "faults.events=[{time_s:2,kind:gpu,target:0}]", "faults.detect_s=5"], tmp_path / "r")
    held = _idle_gpu_seconds(tmp_path / "r", s["cluster"]["window_s"][1])
    assert held["failed"] == pytest.approx(5.0)
    assert s["energy"]["joules_by_state"]["failed"] == pytest.approx(H100.idle_w * 5.0, rel=1e-9)
    from simkv.metrics.summary import format_table

    line = next(x for x in format_table(s).splitlines() if x.startswith("energy"))
    assert f"{s['energy']['joules_per_output_token']:.3g} J/output token" in line
    assert "kWh GPU" in line


def test_a_series_of_too_many_bins_stops_in_one_line(tmp_path: Path) -> None:
    # Before: numpy was asked for 144 GiB after the run (energy.series_s=1e-9), or summary.json
    # got tens of millions of bins (1e-6).
    with pytest.raises(ValueError, match=r"^energy.series_s=1e-06 s cuts the run into more than "
                                         r"100,000 bins by [0-9.,]+ s of simulated time; set "
                                         r"energy.series_s to at least") as err:
        _run([*ON, "workload.num_requests=20", "energy.series_s=1e-6"], tmp_path)
    assert "\n" not in str(err.value)
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["status"] == "error"
    assert run["error"] == str(err.value)

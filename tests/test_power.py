"""The GPU power sampler's NVML reads, against a stand-in for pynvml (CI has no GPU): every
read lands in its column, and a read the driver refuses gives NaN instead of stopping the
sampler in the middle of a device call."""

from __future__ import annotations

import csv
import math
import sys
import threading
import time
import types
from pathlib import Path

import pytest


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    m = types.ModuleType("pynvml")
    m.NVML_CLOCK_SM, m.NVML_CLOCK_MEM, m.NVML_TEMPERATURE_GPU = 0, 1, 0
    m.NVML_FI_DEV_POWER_INSTANT = 186
    m.nvmlInit = lambda: None
    m.nvmlDeviceGetHandleByIndex = lambda i: "gpu0"
    m.nvmlDeviceGetPowerUsage = lambda h: 350_000  # mW
    start = time.perf_counter()
    m.nvmlDeviceGetTotalEnergyConsumption = lambda h: int((time.perf_counter() - start) * 350_000)

    def refused(*a: object) -> None:
        raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")

    m.nvmlDeviceGetFieldValues = refused
    m.nvmlDeviceGetClockInfo = lambda h, c: 1980 if c == 0 else 2619
    m.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=97, memory=40)
    m.nvmlDeviceGetTemperature = lambda h, t: 55
    m.nvmlDeviceGetName = lambda h: b"Fake H100"
    m.nvmlSystemGetDriverVersion = lambda: "580.159.04"
    m.nvmlDeviceGetEnforcedPowerLimit = lambda h: 700_000
    monkeypatch.setitem(sys.modules, "pynvml", m)
    return m


def test_nvml_reads_scale_units_and_refusals_give_nan(fake_nvml: types.ModuleType) -> None:
    from simkv.calibration.power import Nvml

    row = Nvml().read()
    assert row["power_w"] == pytest.approx(350.0)
    assert math.isnan(row["power_instant_w"])  # the driver refused the field
    assert math.isnan(row["clock_reasons"])  # the stand-in has no clock-event reasons
    assert (row["sm_mhz"], row["mem_mhz"], row["util_gpu"], row["temp_c"]) == (1980, 2619, 97, 55)
    static = Nvml().static()
    assert static["name"] == "Fake H100"
    assert static["power_limit_w"] == 700.0
    assert static["power_default_limit_w"].startswith("unavailable")


def test_sampler_rows_carry_both_clocks_and_a_rising_energy_counter(
        fake_nvml: types.ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from simkv.calibration import power

    monkeypatch.setattr(power.signal, "signal", lambda *a: None)  # not the main thread
    out = tmp_path / "p.csv"
    th = threading.Thread(target=power.sample, args=(out, 0.01, 0.15))
    th.start()
    th.join(5)
    rows = list(csv.DictReader(out.open()))
    assert len(rows) >= 5
    assert list(rows[0]) == power.SAMPLE_FIELDS
    perf = [float(r["perf_s"]) for r in rows]
    energy = [float(r["energy_j"]) for r in rows]
    assert perf == sorted(perf)
    assert energy == sorted(energy)
    assert energy[-1] > energy[0]
    assert abs(float(rows[0]["unix_s"]) - time.time()) < 60
    assert (tmp_path / "p.json").exists()

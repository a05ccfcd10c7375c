"""Energy and power: what a run reports about them and the power policies that act on it.

With ``energy.enabled`` every engine step's power comes from a per-GPU power model (idle
power plus dynamic power from the step's FLOPs, HBM bytes and link bytes: simkv/energy/),
and summary.json gains an ``energy`` section: joules and kWh per pool and instance state,
per request and per token, cost per million tokens and carbon. Two policies act through the
same model: a power cap or a locked SM clock per pool (steps stretched by the clock the cap
allows), and ``autoscaler=energy`` (instance count and clock chosen for the least energy
under the SLO). Parameters and their sources: docs/ENERGY.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from simkv.config.bounds import ConfigError, bounded, check, require

# Global mean carbon intensity of electricity generation in 2023 (Ember, Global Electricity
# Review 2024: 481 gCO2/kWh).
GRID_GCO2_PER_KWH = 481.0


@dataclass(slots=True)
class EnergyConfig:
    """Energy accounting and the run-wide power settings (docs/ENERGY.md)."""

    enabled: bool = False
    # A power model of hardware_profiles/power/ (without .yaml) for every pool, or your own
    # file (a fit of `simkv-calibrate power-fit`); None: each pool's GPU's default model.
    power: str | None = None
    power_path: str | None = None
    # Carbon intensity of the electricity (gCO2 per kWh); default: the 2023 global mean.
    grid_gco2_per_kwh: float = bounded(GRID_GCO2_PER_KWH, ge=0)
    # Facility overhead on the GPUs' energy (power usage effectiveness): 1 counts the GPU
    # boards only, as NVML measures them.
    pue: float = bounded(1.0, ge=1)
    # Price of a kWh of electricity (any currency; 0: not priced).
    price_per_kwh: float = bounded(0.0, ge=0)
    # Every pool's board power limit (W) and locked SM clock (MHz), unless the pool sets its
    # own (pools.<name>.power_cap_w / sm_clock_mhz). None: the GPU's TDP, its boost clock.
    power_cap_w: float | None = bounded(None, gt=0)
    sm_clock_mhz: float | None = bounded(None, gt=0)
    # Width (s) of the bins of summary.json's energy time series (joules and output tokens
    # per bin); 0: no series.
    series_s: float = bounded(0.0, ge=0)

    def __post_init__(self) -> None:
        check(self, "energy.")

    def validate(self, prefix: str = "energy.") -> None:
        require(not (self.power and self.power_path),
                f"{prefix}power and {prefix}power_path both name a power model; set one")
        for key in ("power", "power_path"):  # '' read as unset: the default model ran silently
            require(getattr(self, key) != "", f"{prefix}{key}: expected a power model's name "
                                              f"or file, got ''; leave it unset for the GPU's "
                                              f"default model")
        if not self.enabled:
            for key in ("power", "power_path", "power_cap_w", "sm_clock_mhz"):
                require(getattr(self, key) is None,
                        f"{prefix}{key} cannot act with {prefix}enabled=false: the power model "
                        f"is built only for energy accounting; set {prefix}enabled=true")
            for key, default in (("grid_gco2_per_kwh", GRID_GCO2_PER_KWH), ("pue", 1.0),
                                 ("price_per_kwh", 0.0), ("series_s", 0.0)):
                require(getattr(self, key) == default,
                        f"{prefix}{key} cannot act with {prefix}enabled=false; set "
                        f"{prefix}enabled=true")


def validate_energy(sim: Any) -> None:
    """Rules tying energy to the rest of the run (SimConfig.validate): per-pool power settings
    and the energy autoscaler need the power model; features whose GPU work the energy model
    does not count are refused rather than reported wrong. Limits that depend on the GPU (a
    cap below idle power, a clock above the boost clock) are checked when pools are built
    (simkv/energy/accounting.py)."""
    from simkv.registry import name_of

    e: EnergyConfig = sim.energy
    for name, pc in sim.pools.items():
        for key in ("power_cap_w", "sm_clock_mhz"):
            require(getattr(pc, key) is None or e.enabled,
                    f"pools.{name}.{key} cannot act with energy.enabled=false: the cap acts "
                    f"through the power model; set energy.enabled=true")
    if sim.autoscaler is not None and name_of(sim.autoscaler) == "energy":
        require(e.enabled, "autoscaler=energy needs energy.enabled=true: it chooses instances "
                           "and clocks with the power model")
    if not e.enabled:
        return
    unsupported = []
    if sim.speculative is not None and name_of(sim.speculative) != "none":
        unsupported.append(f"speculative={name_of(sim.speculative)} (the proposer's steps)")
    if sim.kv_policy is not None and name_of(sim.kv_policy) != "full":
        unsupported.append(f"kv_policy={name_of(sim.kv_policy)} (its shaped steps)")
    if sim.model.kind != "autoregressive":
        unsupported.append(f"a {sim.model.kind} model (its shaped steps)")
    if sim.offload is not None and (getattr(sim.offload, "attention_in_storage", False)
                                    or name_of(sim.offload) in ("instinfer", "ssd_stream",
                                                                "dram_stream")):
        unsupported.append(f"offload={name_of(sim.offload)} (attention off the GPU)")
    if any(pc.afd_expert_gpus for pc in sim.pools.values()):
        unsupported.append("afd_expert_gpus (attention-FFN disaggregation)")
    if unsupported:
        raise ConfigError(f"energy.enabled: the energy model does not count the GPU work of "
                          f"{unsupported[0]}; turn it off or set energy.enabled=false")

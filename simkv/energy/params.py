"""A GPU's power parameters, read from hardware_profiles/power/*.yaml with their sources.

A power file describes one GPU kind (not one efficiency calibration), so several hardware
profiles share it: ``profiles`` lists those it is the default for (the H100 datasheet
profile and its calibrated twin). Every number carries a unit and a source, as in the
hardware profiles; ``kind`` says whether the numbers were fitted to published measurements
(``published``) or to this project's device measurements (``fitted``), and ``provenance``
says what they were fitted on. Schema and values: docs/ENERGY.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from simkv.entities.hardware import ProfileError

# key -> unit it must carry.
KEYS = {
    "idle": "W",  # the GPU holding a loaded engine, nothing running
    "active": "W",  # above idle while kernels run at full clock, with negligible work
    "compute": "W",  # above that, at the whole dense BF16 peak (scaled by utilisation)
    "memory": "W",  # above that, at the whole HBM bandwidth
    "link": "W",  # above that, at the whole NVLink bandwidth (one direction)
    "tdp": "W",  # board power limit by default (the datasheet's maximum)
    "max_sm_clock": "MHz",
    "min_sm_clock": "MHz",
}
KINDS = ("published", "fitted")


@dataclass(frozen=True, slots=True)
class PowerParams:
    """One GPU's power model parameters in W and MHz (docs/ENERGY.md)."""

    name: str
    idle_w: float
    active_w: float
    compute_w: float
    memory_w: float
    link_w: float
    tdp_w: float
    max_sm_mhz: float
    min_sm_mhz: float
    # Power of the SM clock domain at clock fraction x scales as x ** freq_exponent (the
    # activity held fixed): f V^2 with voltage following the clock.
    freq_exponent: float
    kind: str = "published"
    sources: dict[str, str] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    path: str = ""
    # Hardware profiles (file names without .yaml) the model was made for; empty: any.
    profiles: tuple[str, ...] = ()

    @property
    def min_fraction(self) -> float:
        return self.min_sm_mhz / self.max_sm_mhz

    def describe(self) -> dict[str, Any]:
        """The parameters as summary.json reports them (the model a run used)."""
        return {"name": self.name, "kind": self.kind, "file": self.path,
                "idle_w": self.idle_w, "active_w": self.active_w, "compute_w": self.compute_w,
                "memory_w": self.memory_w, "link_w": self.link_w, "tdp_w": self.tdp_w,
                "max_sm_mhz": self.max_sm_mhz, "min_sm_mhz": self.min_sm_mhz,
                "freq_exponent": self.freq_exponent}


def _number(doc: Any, where: str, unit: str) -> tuple[float, str]:
    if not isinstance(doc, dict) or "value" not in doc:
        raise ProfileError(f"{where}: expected {{value, unit: {unit}, source}}, got {doc!r}")
    if doc.get("unit") != unit:
        raise ProfileError(f"{where}: unit must be {unit}, got {doc.get('unit')!r}")
    v = doc["value"]
    if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
        raise ProfileError(f"{where}: value must be a number >= 0, got {v!r}")
    return float(v), str(doc.get("source", ""))


def parse_power(doc: Any, where: str) -> PowerParams:
    """Validate a parsed power file; errors name the file and the key."""
    if not isinstance(doc, dict):
        raise ProfileError(f"{where}: expected a mapping")
    allowed = {"name", "kind", "profiles", "power", "freq_exponent", "provenance", "notes"}
    extra = set(doc) - allowed
    if extra:
        raise ProfileError(f"{where}: unknown keys {sorted(extra)}; allowed: {sorted(allowed)}")
    kind = doc.get("kind")
    if kind not in KINDS:
        raise ProfileError(f"{where}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    power = doc.get("power")
    if not isinstance(power, dict) or set(power) != set(KEYS):
        raise ProfileError(f"{where}: power must have exactly the keys {sorted(KEYS)}")
    values, sources = {}, {}
    for key, unit in KEYS.items():
        values[key], sources[key] = _number(power[key], f"{where}: power.{key}", unit)
    exp = doc.get("freq_exponent")
    if not isinstance(exp, dict) or not isinstance(exp.get("value"), int | float):
        raise ProfileError(f"{where}: freq_exponent: expected {{value, source}}")
    gamma = float(exp["value"])
    if not 1.0 <= gamma <= 4.0:
        raise ProfileError(f"{where}: freq_exponent.value must lie in [1, 4], got {gamma}")
    sources["freq_exponent"] = str(exp.get("source", ""))
    if values["idle"] <= 0 or values["tdp"] <= values["idle"] + values["active"]:
        raise ProfileError(f"{where}: power.tdp must exceed power.idle + power.active, and "
                           f"power.idle be > 0")
    if not 0 < values["min_sm_clock"] <= values["max_sm_clock"]:
        raise ProfileError(f"{where}: power.min_sm_clock must lie in (0, max_sm_clock]")
    return PowerParams(
        name=str(doc.get("name", Path(where).stem)), idle_w=values["idle"],
        active_w=values["active"], compute_w=values["compute"], memory_w=values["memory"],
        link_w=values["link"], tdp_w=values["tdp"], max_sm_mhz=values["max_sm_clock"],
        min_sm_mhz=values["min_sm_clock"], freq_exponent=gamma, kind=kind, sources=sources,
        provenance=dict(doc.get("provenance") or {}), path=where,
        profiles=tuple(str(x) for x in doc.get("profiles") or ()))


def _root() -> Any:
    return resources.files("simkv.hardware_profiles").joinpath("power")


def shipped_power() -> list[str]:
    return sorted(p.name[:-5] for p in _root().iterdir() if p.name.endswith(".yaml"))


def _read(name: str | None, path: str | None) -> tuple[Any, str]:
    if path:
        file = Path(path)
        if not file.is_file():
            raise ProfileError(f"energy.power_path: file not found: {path}")
        text, where = file.read_text(), str(file)
    else:
        assert name is not None
        if name not in shipped_power():
            raise ProfileError(f"energy.power: unknown power model '{name}'; valid choices: "
                               f"{', '.join(shipped_power())}")
        text, where = _root().joinpath(f"{name}.yaml").read_text(), f"hardware_profiles/power/{name}.yaml"
    try:
        return yaml.safe_load(text), where
    except yaml.YAMLError as exc:
        raise ProfileError(f"{where}: not valid YAML: {exc}") from exc


def load_power(name: str | None = None, path: str | None = None) -> PowerParams:
    """A shipped power model by name, or a file by path."""
    return parse_power(*_read(name, path))


def default_for(profile: str) -> PowerParams | None:
    """The shipped power model whose ``profiles`` list the hardware profile file ``profile``
    (its name without .yaml), preferring a device fit over published parameters."""
    found = []
    for name in shipped_power():
        doc, where = _read(name, None)
        if profile in (doc.get("profiles") or []):
            found.append(parse_power(doc, where))
    found.sort(key=lambda p: (p.kind != "fitted", p.name))
    return found[0] if found else None

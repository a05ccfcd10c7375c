"""GPU hardware profiles: datasheet peaks and achieved-efficiency curves, with units and sources.

A profile is a YAML file (schema in docs/HARDWARE_PROFILES.md). Every number carries its unit
and its source, because a simulator is only as credible as the provenance of its constants:

    hbm_bandwidth: {value: 3.35, unit: TB/s, source: "NVIDIA H100 datasheet (SXM5)"}

Loading converts to SI (bytes, seconds, FLOP/s) and rejects unknown keys, unknown units and
units of the wrong dimension, naming the file and the key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

SCHEMA_VERSION = 1

_UNITS: dict[str, dict[str, float]] = {
    "bytes": {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
              "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40},
    "bandwidth": {"B/s": 1, "KB/s": 1e3, "MB/s": 1e6, "GB/s": 1e9, "TB/s": 1e12,
                  "GiB/s": 2**30, "MiB/s": 2**20},
    "flops": {"FLOP/s": 1, "GFLOP/s": 1e9, "TFLOP/s": 1e12, "PFLOP/s": 1e15},
    "time": {"s": 1, "ms": 1e-3, "us": 1e-6, "ns": 1e-9},
}

# key -> dimension, for the `gpu:` section.
_GPU_KEYS = {
    "memory": "bytes",
    "bf16_flops": "flops",
    "hbm_bandwidth": "bandwidth",
    "nvlink_bandwidth": "bandwidth",
    "nvlink_latency": "time",
    "pcie_bandwidth": "bandwidth",
    "pcie_latency": "time",
}
# key -> the size variable its curve is indexed by, for the `efficiency:` section.
_EFFICIENCY_KEYS = {
    "gemm_compute": "tokens",
    "gemm_memory": "tokens",
    "attention_compute": "tokens",
    "attention_memory": "tokens",
    "elementwise_memory": "tokens",
    "nvlink": "bytes",
}


class ProfileError(ValueError):
    """A hardware profile file is malformed; the message names the file and the key."""


@dataclass(frozen=True, slots=True)
class EfficiencyCurve:
    """Fraction of the datasheet peak achieved, as a function of a size.

    Piecewise linear in log2(size) between measured points, flat outside them; one point means
    a constant. Calibration (issue 5) writes the measured points.
    """

    sizes: tuple[float, ...]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.sizes or len(self.sizes) != len(self.values):
            raise ValueError("an efficiency curve needs as many sizes as values, at least one")
        if any(not (0 < v <= 1.0) for v in self.values):
            raise ValueError(f"efficiencies must lie in (0, 1], got {self.values}")
        if any(b <= a for a, b in zip(self.sizes, self.sizes[1:], strict=False)):
            raise ValueError(f"curve sizes must increase strictly, got {self.sizes}")
        object.__setattr__(self, "_logx", np.log2(np.maximum(np.asarray(self.sizes, float), 1.0)))
        object.__setattr__(self, "_y", np.asarray(self.values, float))

    _logx: np.ndarray = field(init=False, repr=False, compare=False)
    _y: np.ndarray = field(init=False, repr=False, compare=False)

    @property
    def is_constant(self) -> bool:
        return len(self.values) == 1

    def at(self, size: float) -> float:
        if len(self.values) == 1:
            return self.values[0]
        return float(np.interp(math.log2(max(size, 1.0)), self._logx, self._y))

    def at_array(self, sizes: np.ndarray) -> np.ndarray:
        if len(self.values) == 1:
            return np.full(sizes.shape, self.values[0])
        return np.interp(np.log2(np.maximum(sizes, 1.0)), self._logx, self._y)


# Small operators of a layer priced by their own measured efficiency (optional section
# ``small_ops``): the fraction of HBM bandwidth each achieves on the bytes it must move.
SMALL_OPS = ("rms_norm", "rope", "silu_mul", "residual_add")


@dataclass(frozen=True, slots=True)
class GemmFit:
    """The shape GEMM model's fitted numbers (optional section ``gemm_model``;
    simkv/perf/gemm.py says what they are)."""

    multiprocessors: int
    fixed_s: float
    compute_eff: float
    memory_eff: float
    # A GEMM launched on its own waits this much more for the host (measured eagerly beside
    # graph replays); not charged per GEMM: engines replaying CUDA graphs pay launches once per
    # step (engine.iteration_overhead_s). 0 where not measured.
    launch_s: float = 0.0


@dataclass(frozen=True, slots=True)
class HardwareProfile:
    """One GPU model, in SI units."""

    name: str
    memory_bytes: float
    bf16_flops: float
    hbm_bandwidth: float
    nvlink_bandwidth: float
    nvlink_latency_s: float
    pcie_bandwidth: float
    pcie_latency_s: float
    efficiency: dict[str, EfficiencyCurve]
    sources: dict[str, str]
    path: str = ""
    # Calibrated profiles only; None keeps the token-count efficiency curves for GEMMs and
    # the ten-pass estimate for norms and residuals.
    gemm: GemmFit | None = None
    small_ops: dict[str, float] | None = None

    def eff(self, key: str) -> EfficiencyCurve:
        return self.efficiency[key]


def _quantity(doc: Any, where: str, dimension: str) -> tuple[float, str]:
    if not isinstance(doc, dict) or "value" not in doc or "unit" not in doc:
        raise ProfileError(f"{where}: expected a mapping {{value, unit, source}}, got {doc!r}")
    unit = doc["unit"]
    table = _UNITS[dimension]
    if unit not in table:
        raise ProfileError(
            f"{where}: unit '{unit}' is not a {dimension} unit; expected one of {', '.join(table)}"
        )
    value = doc["value"]
    if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
        raise ProfileError(f"{where}: value must be a positive number, got {value!r}")
    return float(value) * table[unit], str(doc.get("source", ""))


def _curve(doc: Any, where: str) -> tuple[EfficiencyCurve, str]:
    if not isinstance(doc, dict):
        raise ProfileError(f"{where}: expected a mapping, got {doc!r}")
    source = str(doc.get("source", ""))
    try:
        if "value" in doc:
            return EfficiencyCurve((1.0,), (float(doc["value"]),)), source
        if "points" in doc:
            pts = sorted((float(s), float(v)) for s, v in doc["points"])
            return EfficiencyCurve(tuple(p[0] for p in pts), tuple(p[1] for p in pts)), source
    except (TypeError, ValueError) as exc:
        raise ProfileError(f"{where}: {exc}") from exc
    raise ProfileError(f"{where}: expected 'value' (a constant) or 'points' ([[size, eff], ...])")


def parse_profile(doc: Any, path: str) -> HardwareProfile:
    """Validate a parsed profile document; errors name ``path`` and the key."""
    if not isinstance(doc, dict):
        raise ProfileError(f"{path}: expected a mapping at the top level")
    version = doc.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ProfileError(f"{path}: schema_version must be {SCHEMA_VERSION}, got {version!r}")
    allowed_top = {"schema_version", "name", "gpu", "efficiency", "provenance", "notes",
                   "gemm_model", "small_ops"}
    unknown = set(doc) - allowed_top
    if unknown:
        raise ProfileError(
            f"{path}: unknown top-level keys {sorted(unknown)}; allowed: {sorted(allowed_top)}"
        )
    gpu = doc.get("gpu") or {}
    eff = doc.get("efficiency") or {}
    for section, got, allowed in (("gpu", gpu, _GPU_KEYS), ("efficiency", eff, _EFFICIENCY_KEYS)):
        if not isinstance(got, dict):
            raise ProfileError(f"{path}: '{section}' must be a mapping")
        missing = set(allowed) - set(got)
        extra = set(got) - set(allowed)
        if missing:
            raise ProfileError(f"{path}: {section} is missing {sorted(missing)}")
        if extra:
            raise ProfileError(
                f"{path}: unknown keys in {section}: {sorted(extra)}; allowed: {sorted(allowed)}"
            )
    values: dict[str, float] = {}
    sources: dict[str, str] = {}
    for key, dim in _GPU_KEYS.items():
        values[key], sources[f"gpu.{key}"] = _quantity(gpu[key], f"{path}: gpu.{key}", dim)
    curves: dict[str, EfficiencyCurve] = {}
    for key in _EFFICIENCY_KEYS:
        curves[key], sources[f"efficiency.{key}"] = _curve(eff[key], f"{path}: efficiency.{key}")
    gemm = _gemm_fit(doc["gemm_model"], f"{path}: gemm_model") if "gemm_model" in doc else None
    small = _small_ops(doc["small_ops"], f"{path}: small_ops") if "small_ops" in doc else None
    return HardwareProfile(
        name=str(doc.get("name", Path(path).stem)),
        memory_bytes=values["memory"],
        bf16_flops=values["bf16_flops"],
        hbm_bandwidth=values["hbm_bandwidth"],
        nvlink_bandwidth=values["nvlink_bandwidth"],
        nvlink_latency_s=values["nvlink_latency"],
        pcie_bandwidth=values["pcie_bandwidth"],
        pcie_latency_s=values["pcie_latency"],
        efficiency=curves,
        sources=sources,
        path=path,
        gemm=gemm,
        small_ops=small,
    )


def _gemm_fit(doc: Any, where: str) -> GemmFit:
    keys = {"multiprocessors", "fixed", "compute_eff", "memory_eff", "source", "launch"}
    if not isinstance(doc, dict) or set(doc) - keys or keys - {"source", "launch"} - set(doc):
        raise ProfileError(f"{where}: expected the keys {sorted(keys)} (source and launch "
                           "optional)")
    fixed, _ = _quantity(doc["fixed"], f"{where}.fixed", "time")
    launch = _quantity(doc["launch"], f"{where}.launch", "time")[0] if "launch" in doc else 0.0
    effs = {k: doc[k] for k in ("compute_eff", "memory_eff")}
    sms = doc["multiprocessors"]
    if not isinstance(sms, int) or sms < 1:
        raise ProfileError(f"{where}.multiprocessors: a positive integer, got {sms!r}")
    for k, v in effs.items():
        if not isinstance(v, int | float) or not 0 < v <= 1:
            raise ProfileError(f"{where}.{k}: an efficiency in (0, 1], got {v!r}")
    return GemmFit(sms, fixed, float(effs["compute_eff"]), float(effs["memory_eff"]), launch)


def _small_ops(doc: Any, where: str) -> dict[str, float]:
    if not isinstance(doc, dict) or set(doc) - {*SMALL_OPS, "source"} or set(SMALL_OPS) - set(doc):
        raise ProfileError(f"{where}: expected the keys {sorted(SMALL_OPS)} (and source)")
    out = {}
    for k in SMALL_OPS:
        v = doc[k]
        if not isinstance(v, int | float) or not 0 < v <= 1:
            raise ProfileError(f"{where}.{k}: an efficiency in (0, 1], got {v!r}")
        out[k] = float(v)
    return out


def shipped_profiles(subdir: str = "") -> list[str]:
    """Names of the profiles packaged with simkv (files of hardware_profiles/[subdir])."""
    root = resources.files("simkv.hardware_profiles")
    if subdir:
        root = root.joinpath(subdir)
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def read_profile_doc(profile: str, path: str | None, kind: str = "hardware",
                     subdir: str = "") -> tuple[Any, str]:
    """The parsed YAML of a shipped profile (by name) or of any file (by path), and where it
    came from for error messages."""
    if path:
        file = Path(path)
        if not file.is_file():
            raise ProfileError(f"{kind} profile file not found: {path}")
        text, where = file.read_text(), str(file)
    else:
        names = shipped_profiles(subdir)
        if profile not in names:
            raise ProfileError(f"unknown {kind} profile '{profile}'; valid choices: {', '.join(names)}")
        rel = f"{subdir}/{profile}.yaml" if subdir else f"{profile}.yaml"
        text = resources.files("simkv.hardware_profiles").joinpath(rel).read_text()
        where = f"hardware_profiles/{rel}"
    try:
        return yaml.safe_load(text), where
    except yaml.YAMLError as exc:
        raise ProfileError(f"{where}: not valid YAML: {exc}") from exc


def load_profile(profile: str = "h100_sxm_80gb", path: str | None = None) -> HardwareProfile:
    """Load a shipped profile by name, or any profile file by path."""
    return parse_profile(*read_profile_doc(profile, path))

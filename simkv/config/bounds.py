"""Valid ranges of config fields, declared beside the field and checked once before a run.

A numeric field declares its range where it is defined::

    replicas: int = bounded(2, ge=1)
    gpu_memory_utilization: float = bounded(0.9, gt=0, le=1)
    failed: str = bounded("keep", choices=("keep", "drop"))
    weights: list[float] = field(default_factory=lambda: [0.8, 0.2], metadata=meta(ge=0))

``check(cfg)`` walks a config (dataclasses inside dataclasses, policy sections included),
raises ``ConfigError`` naming the dotted key, the value and the range for the first field
outside it, then calls the dataclass's ``validate(prefix)`` method, if it has one, for rules
that tie several fields together. So a negative or zero value can never run silently, and
every rule lives beside the field it is about. Hydra already type-checks; this adds the
ranges it cannot know.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any


class ConfigError(ValueError):
    """A config value outside its valid range; the message names the key."""


def meta(*, ge: float | None = None, gt: float | None = None, le: float | None = None,
         lt: float | None = None, choices: Sequence[str] | None = None) -> dict[str, Any]:
    """The metadata ``bounded`` puts on a field, for ``field(default_factory=..., metadata=)``
    (list fields: every item is checked)."""
    out: dict[str, Any] = {"range": {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le),
                                                         ("lt", lt)) if v is not None}}
    if choices is not None:
        out["choices"] = tuple(choices)
    return out


def bounded(default: Any, *, ge: float | None = None, gt: float | None = None,
            le: float | None = None, lt: float | None = None,
            choices: Sequence[str] | None = None) -> Any:
    """A dataclass field with a default and its valid values: numbers must be finite and
    within the bounds given (None bounds are open); ``choices`` lists the valid strings."""
    return dataclasses.field(default=default,
                             metadata=meta(ge=ge, gt=gt, le=le, lt=lt, choices=choices))


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e16 else f"{v:g}"


def describe(rng: dict[str, float]) -> str:
    words = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    return " and ".join(f"{words[k]} {_num(v)}" for k, v in rng.items())


def violates(value: Any, rng: dict[str, float]) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return True
    return (("ge" in rng and value < rng["ge"]) or ("gt" in rng and value <= rng["gt"])
            or ("le" in rng and value > rng["le"]) or ("lt" in rng and value >= rng["lt"]))


def _expected(rng: dict[str, float]) -> str:
    return f"a finite number {describe(rng)}" if rng else "a finite number"


def check_value(key: str, value: Any, meta: Any) -> None:
    """Raise ConfigError if ``value`` breaks the range or choices declared in ``meta``."""
    rng = meta.get("range")
    choices = meta.get("choices")
    if value is None:
        return
    if choices is not None and value not in choices:
        raise ConfigError(f"{key}: expected one of {', '.join(map(str, choices))}, got {value!r}")
    if rng is None:
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            check_value(f"{key}[{i}]", item, meta)
        return
    if violates(value, rng):
        raise ConfigError(f"{key}: expected {_expected(rng)}, got {value!r}")


def check(cfg: Any, prefix: str = "") -> None:
    """Raise ConfigError for the first field of ``cfg`` (recursively) outside its range,
    then apply the cross-field rules of each dataclass's ``validate(prefix)``."""
    if not dataclasses.is_dataclass(cfg):
        return
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = f"{prefix}{f.name}"
        check_value(key, value, f.metadata)
        if dataclasses.is_dataclass(value):
            check(value, f"{key}.")
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                check(item, f"{key}[{i}].")
        elif isinstance(value, dict):  # named sections (pools)
            for name, item in value.items():
                check(item, f"{key}.{name}.")
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        validate(prefix)


def require(ok: bool, message: str) -> None:
    """Raise ConfigError(message) unless ``ok``: the one-liner of ``validate`` methods."""
    if not ok:
        raise ConfigError(message)

"""Valid ranges of config fields, declared beside the field and checked once before a run.

A numeric field declares its range where it is defined::

    replicas: int = bounded(2, ge=1)
    gpu_memory_utilization: float = bounded(0.9, gt=0, le=1)

``check(cfg)`` walks a config (dataclasses inside dataclasses, policy sections included) and
raises ``ConfigError`` naming the dotted key, the value and the range, so a negative or zero
value can never run silently. Hydra already type-checks; this adds the ranges it cannot know.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any


class ConfigError(ValueError):
    """A config value outside its valid range; the message names the key."""


def bounded(default: Any, *, ge: float | None = None, gt: float | None = None,
            le: float | None = None, lt: float | None = None) -> Any:
    """A dataclass field with a default and a valid range (None bounds are open)."""
    meta = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    return dataclasses.field(default=default, metadata={"range": meta})


def describe(rng: dict[str, float]) -> str:
    words = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    return " and ".join(f"{words[k]} {v:g}" for k, v in rng.items())


def violates(value: Any, rng: dict[str, float]) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return True
    return (("ge" in rng and value < rng["ge"]) or ("gt" in rng and value <= rng["gt"])
            or ("le" in rng and value > rng["le"]) or ("lt" in rng and value >= rng["lt"]))


def check(cfg: Any, prefix: str = "") -> None:
    """Raise ConfigError for the first field of ``cfg`` (recursively) outside its range."""
    if not dataclasses.is_dataclass(cfg):
        return
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = f"{prefix}{f.name}"
        rng = f.metadata.get("range")
        if rng and value is not None and violates(value, rng):
            raise ConfigError(f"{key}: expected a finite number {describe(rng)}, got {value!r}")
        if dataclasses.is_dataclass(value):
            check(value, f"{key}.")
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                check(item, f"{key}[{i}].")

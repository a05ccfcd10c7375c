"""Typed run configuration (dataclasses) and its Hydra registration."""

from __future__ import annotations

from typing import Any

__all__ = [
    "ClusterConfig",
    "EngineConfig",
    "HardwareConfig",
    "KVConfig",
    "OutputConfig",
    "SLOConfig",
    "SimConfig",
]


def __getattr__(name: str) -> Any:
    # NOTE: lazy, so that simkv.config.bounds can be imported by the dataclasses the schema
    # itself imports (entities/model.py) without a cycle.
    if name in __all__:
        from simkv.config import schema

        return getattr(schema, name)
    raise AttributeError(f"module 'simkv.config' has no attribute {name!r}")

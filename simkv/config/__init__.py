"""Typed run configuration (dataclasses) and its Hydra registration."""

from simkv.config.schema import (
    ClusterConfig,
    EngineConfig,
    HardwareConfig,
    KVConfig,
    OutputConfig,
    SimConfig,
    SLOConfig,
)

__all__ = [
    "ClusterConfig",
    "EngineConfig",
    "HardwareConfig",
    "KVConfig",
    "OutputConfig",
    "SLOConfig",
    "SimConfig",
]

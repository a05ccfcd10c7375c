"""Placements: where KV lives below HBM and when it moves (config group ``offload``)."""

from simkv.policies.offload.interface import Placement
from simkv.policies.offload.placements import (
    ClusterStore,
    CsdOffload,
    DramOffload,
    InstInfer,
    NoOffload,
    SsdOffload,
    SsdStream,
    Swap,
    WriteThrough,
)

__all__ = ["ClusterStore", "CsdOffload", "DramOffload", "InstInfer", "NoOffload", "Placement",
           "SsdOffload", "SsdStream", "Swap", "WriteThrough"]

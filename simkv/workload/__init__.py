"""Workloads: request streams into the cluster (config group ``workload``)."""

from simkv.workload.base import ArrivalBatch, FollowUp, OpenLoop, Workload
from simkv.workload.poisson import PoissonWorkload, PoissonWorkloadConfig
from simkv.workload.trace_file import TraceError, TraceWorkload, TraceWorkloadConfig

__all__ = [
    "ArrivalBatch",
    "FollowUp",
    "OpenLoop",
    "PoissonWorkload",
    "PoissonWorkloadConfig",
    "TraceError",
    "TraceWorkload",
    "TraceWorkloadConfig",
    "Workload",
]

"""Workloads: request streams into the cluster (config group ``workload``)."""

from simkv.workload.agents import AgentWorkload, AgentWorkloadConfig
from simkv.workload.base import ArrivalBatch, FollowUp, OpenLoop, Workload
from simkv.workload.burstgpt import BurstGPTWorkload, BurstGPTWorkloadConfig
from simkv.workload.conversations import ConversationWorkload, ConversationWorkloadConfig
from simkv.workload.near_duplicate import NearDuplicateWorkload, NearDuplicateWorkloadConfig
from simkv.workload.poisson import PoissonWorkload, PoissonWorkloadConfig
from simkv.workload.reasoning import (
    ReasoningWorkload,
    ReasoningWorkloadConfig,
    RolloutWorkload,
    RolloutWorkloadConfig,
)
from simkv.workload.shared_prefix import SharedPrefixWorkload, SharedPrefixWorkloadConfig
from simkv.workload.trace_file import TraceError, TraceWorkload, TraceWorkloadConfig

__all__ = [
    "AgentWorkload",
    "AgentWorkloadConfig",
    "ArrivalBatch",
    "BurstGPTWorkload",
    "BurstGPTWorkloadConfig",
    "ConversationWorkload",
    "ConversationWorkloadConfig",
    "FollowUp",
    "NearDuplicateWorkload",
    "NearDuplicateWorkloadConfig",
    "OpenLoop",
    "PoissonWorkload",
    "PoissonWorkloadConfig",
    "ReasoningWorkload",
    "ReasoningWorkloadConfig",
    "RolloutWorkload",
    "RolloutWorkloadConfig",
    "SharedPrefixWorkload",
    "SharedPrefixWorkloadConfig",
    "TraceError",
    "TraceWorkload",
    "TraceWorkloadConfig",
    "Workload",
]

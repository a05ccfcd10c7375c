"""Batch schedulers: what runs in a replica's next iteration (config group ``scheduler``)."""

from simkv.policies.scheduler.batchllm import BatchLLMScheduler, BatchLLMSchedulerConfig
from simkv.policies.scheduler.continuum import ContinuumScheduler, ContinuumSchedulerConfig
from simkv.policies.scheduler.faster_transformer import (
    FasterTransformerScheduler,
    FasterTransformerSchedulerConfig,
)
from simkv.policies.scheduler.interface import Scheduler, SchedulerOutput
from simkv.policies.scheduler.kvshare import KVShareScheduler, KVShareSchedulerConfig
from simkv.policies.scheduler.lightllm import LightLLMScheduler, LightLLMSchedulerConfig
from simkv.policies.scheduler.orca import OrcaScheduler, OrcaSchedulerConfig
from simkv.policies.scheduler.priority import (
    PriorityScheduler,
    PrioritySchedulerConfig,
    SJFSchedulerConfig,
)
from simkv.policies.scheduler.static import StaticScheduler, StaticSchedulerConfig
from simkv.policies.scheduler.transformers_cb import (
    TransformersScheduler,
    TransformersSchedulerConfig,
)
from simkv.policies.scheduler.vllm import VLLMScheduler, VLLMSchedulerConfig

__all__ = [
    "BatchLLMScheduler",
    "BatchLLMSchedulerConfig",
    "ContinuumScheduler",
    "ContinuumSchedulerConfig",
    "FasterTransformerScheduler",
    "FasterTransformerSchedulerConfig",
    "KVShareScheduler",
    "KVShareSchedulerConfig",
    "LightLLMScheduler",
    "LightLLMSchedulerConfig",
    "OrcaScheduler",
    "OrcaSchedulerConfig",
    "PriorityScheduler",
    "PrioritySchedulerConfig",
    "SJFSchedulerConfig",
    "Scheduler",
    "SchedulerOutput",
    "StaticScheduler",
    "StaticSchedulerConfig",
    "TransformersScheduler",
    "TransformersSchedulerConfig",
    "VLLMScheduler",
    "VLLMSchedulerConfig",
]

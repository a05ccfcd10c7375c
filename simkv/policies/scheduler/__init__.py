"""Batch schedulers: what runs in a replica's next iteration (config group ``scheduler``)."""

from simkv.policies.scheduler.batchllm import BatchLLMScheduler, BatchLLMSchedulerConfig
from simkv.policies.scheduler.continuum import ContinuumScheduler, ContinuumSchedulerConfig
from simkv.policies.scheduler.interface import Scheduler, SchedulerOutput
from simkv.policies.scheduler.kvshare import KVShareScheduler, KVShareSchedulerConfig
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
    "KVShareScheduler",
    "KVShareSchedulerConfig",
    "Scheduler",
    "SchedulerOutput",
    "StaticScheduler",
    "StaticSchedulerConfig",
    "TransformersScheduler",
    "TransformersSchedulerConfig",
    "VLLMScheduler",
    "VLLMSchedulerConfig",
]

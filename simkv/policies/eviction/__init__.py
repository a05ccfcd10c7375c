"""Eviction policies: which cached KV granule leaves a tier (config group ``eviction``)."""

from simkv.policies.eviction.cost_aware import CostAware, CostAwareConfig
from simkv.policies.eviction.fifo import FIFO, FIFOConfig
from simkv.policies.eviction.interface import EvictionPolicy
from simkv.policies.eviction.lfu import LFU, LFUConfig
from simkv.policies.eviction.lru import LRU, LRUConfig

__all__ = ["FIFO", "LFU", "LRU", "CostAware", "CostAwareConfig", "EvictionPolicy", "FIFOConfig",
           "LFUConfig", "LRUConfig"]

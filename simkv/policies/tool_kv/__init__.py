"""What happens to a session's KV while its tool runs (config group ``tool_kv``)."""

from simkv.policies.tool_kv.drop import Drop, DropConfig
from simkv.policies.tool_kv.interface import Offload, Pin, Prefetch, ToolKVPolicy
from simkv.policies.tool_kv.offload import OffloadConfig, OffloadDuringTool
from simkv.policies.tool_kv.prefetch import PrefetchBeforeReturn, PrefetchConfig
from simkv.policies.tool_kv.ttl_pin import TTLPin, TTLPinConfig

__all__ = ["Drop", "DropConfig", "Offload", "OffloadConfig", "OffloadDuringTool", "Pin", "Prefetch",
           "PrefetchBeforeReturn", "PrefetchConfig", "TTLPin", "TTLPinConfig", "ToolKVPolicy"]

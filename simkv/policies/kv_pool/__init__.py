"""Cross-instance KV memory (config group ``kv_pool``): none, distattention (Infinite-LLM)."""

from simkv.policies.kv_pool.distattention import DistAttention, DistAttentionConfig
from simkv.policies.kv_pool.interface import KVPool
from simkv.policies.kv_pool.none import NoKVPool, NoKVPoolConfig

__all__ = ["DistAttention", "DistAttentionConfig", "KVPool", "NoKVPool", "NoKVPoolConfig"]

"""KV-cache memory: paged block pools (and, with issue 4, tiers and prefix caches)."""

from simkv.kv.block_pool import BlockPool, blocks_for

__all__ = ["BlockPool", "blocks_for"]

"""``full``: every token's KV stays in HBM (the default, vLLM's behaviour).

For autoregressive models the scheduler never asks this policy anything: it keeps its
closed-form decode batch, so the default path is unchanged. For a diffusion LLM ``full``
means *no cache*: every denoising step recomputes the whole sequence (LLaDA's reference
sampler); for a visual autoregressive model, every earlier scale's KV is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

from simkv.policies.kv_policy.interface import KVPolicyBase
from simkv.registry import register


@dataclass(slots=True)
class FullKVConfig:
    pass


@register("kv_policy", "full", FullKVConfig)
class FullKV(KVPolicyBase):
    is_full = True
    kinds = ("autoregressive", "diffusion", "var")

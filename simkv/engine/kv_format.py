"""Which instances can hand KV to each other: those whose KV cache has one format.

KV computed by one instance is usable by another only if both lay it out the same way: the
same model (its weights produced it), the same shape per token and layer (layers, KV heads,
head sizes, MLA's latent), the same bytes per element (dtype) and the same block size. A
disaggregated prefill pool hands every request's KV to a decode pool, and a prefix cache
shared by several pools serves one pool's KV to another, so the run is refused before it
starts when their formats differ (issue 18: a 3B decode pool used to decode an 8B prefill's
KV at the 3B model's size and speed). DistAttention lends blocks only inside one pool, whose
instances share a format by construction.
"""

from __future__ import annotations

from typing import Any

from simkv.entities.model import ModelSpec

# The fields of a model spec that make up its KV format, in the order a message names them.
KV_FORMAT_FIELDS = ("name", "kind", "num_layers", "num_kv_heads", "head_dim", "v_head_dim",
                    "kv_lora_rank", "qk_rope_head_dim", "kv_bytes_per_element")


def kv_format(model: ModelSpec, block_size: int) -> dict[str, Any]:
    """A pool's KV format: what must match for its KV to be read by another pool."""
    return {**{f: getattr(model, f) for f in KV_FORMAT_FIELDS}, "block_size": block_size}


def mismatch(a: dict[str, Any], b: dict[str, Any]) -> str:
    """The keys where two formats differ, with both values ('' if they match)."""
    return ", ".join(f"{'model' if k == 'name' else 'model.' + k if k != 'block_size' else 'kv.block_size'}"
                     f" {a[k]} vs {b[k]}" for k in a if a[k] != b[k])


def check_same_format(pools: list[Any], block_size: int, why: str, fix: str) -> None:
    """Raise ValueError naming the first pool whose KV format differs from the first one's;
    ``fix`` may name it as ``{pool}`` and the first pool's model as ``{model}``."""
    if len(pools) < 2:
        return
    first = pools[0]
    ref = kv_format(first.model, block_size)
    for p in pools[1:]:
        diff = mismatch(ref, kv_format(p.model, block_size))
        if diff:
            raise ValueError(f"pools.{first.name} and pools.{p.name}: {why}, which needs one KV "
                             f"format; they differ in {diff}: "
                             f"{fix.format(pool=p.name, model=first.model.name)}")

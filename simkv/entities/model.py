"""Model architecture: the numbers a cost model needs, and what follows from them.

Only the architecture is typed in (from the model's public config.json); parameter count,
weight bytes and KV bytes per token are *derived*, so they cannot drift from the shape.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class ModelSpec:
    """A decoder-only transformer, dense or mixture-of-experts (defaults: Llama-3.1-8B)."""

    name: str = "llama3_8b"
    num_layers: int = 32
    hidden_size: int = 4096
    num_heads: int = 32
    num_kv_heads: int = 8
    head_dim: int = 128
    # FFN intermediate size; for MoE the size of *one* expert.
    ffn_size: int = 14336
    vocab_size: int = 128256
    num_experts: int = 1
    experts_per_token: int = 1
    tie_embeddings: bool = False
    qkv_bias: bool = False
    max_model_len: int = 131072
    weight_bytes_per_param: int = 2
    kv_bytes_per_element: int = 2
    source: str = "meta-llama/Llama-3.1-8B config.json"

    def __post_init__(self) -> None:
        for key in ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim",
                    "ffn_size", "vocab_size", "num_experts", "experts_per_token",
                    "max_model_len", "weight_bytes_per_param", "kv_bytes_per_element"):
            value = getattr(self, key)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"model '{self.name}': {key} must be a positive integer, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"model '{self.name}': num_heads ({self.num_heads}) must be a multiple of "
                f"num_kv_heads ({self.num_kv_heads})"
            )
        if self.experts_per_token > self.num_experts:
            raise ValueError(
                f"model '{self.name}': experts_per_token ({self.experts_per_token}) exceeds "
                f"num_experts ({self.num_experts})"
            )

    # --- derived shape -------------------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        return self.num_experts > 1

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def attention_params_per_layer(self) -> int:
        qkv = self.hidden_size * (self.q_dim + 2 * self.kv_dim)
        bias = (self.q_dim + 2 * self.kv_dim) if self.qkv_bias else 0
        return qkv + bias + self.q_dim * self.hidden_size

    @property
    def expert_params(self) -> int:
        """Gated MLP (gate, up, down) of one expert, or of the dense MLP."""
        return 3 * self.hidden_size * self.ffn_size

    @property
    def mlp_params_per_layer(self) -> int:
        router = self.hidden_size * self.num_experts if self.is_moe else 0
        return self.num_experts * self.expert_params + router

    @property
    def params_per_layer(self) -> int:
        norms = 2 * self.hidden_size
        return self.attention_params_per_layer + self.mlp_params_per_layer + norms

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def num_params(self) -> int:
        lm_head = 0 if self.tie_embeddings else self.embedding_params
        return (self.num_layers * self.params_per_layer + self.embedding_params + lm_head
                + self.hidden_size)

    @property
    def active_params(self) -> int:
        """Parameters touched by one token (MoE: only the routed experts)."""
        inactive = (self.num_experts - self.experts_per_token) * self.expert_params
        return self.num_params - self.num_layers * inactive

    @property
    def weight_bytes(self) -> int:
        return self.num_params * self.weight_bytes_per_param

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V of every layer for one token, across all GPUs of a replica."""
        return 2 * self.num_layers * self.kv_dim * self.kv_bytes_per_element

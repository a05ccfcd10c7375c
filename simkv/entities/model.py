"""Model architecture: the numbers a cost model needs, and what follows from them.

Only the architecture is typed in (from the model's public config.json); parameter count,
weight bytes and KV bytes per token are *derived*, so they cannot drift from the shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from simkv.config.bounds import bounded, check, meta, require

KINDS = ("autoregressive", "diffusion", "var")


@dataclass(slots=True)
class ModelSpec:
    """A decoder-only transformer, dense or mixture-of-experts (defaults: Llama-3.1-8B)."""

    name: str = "llama3_8b"
    num_layers: int = bounded(32, ge=1)
    hidden_size: int = bounded(4096, ge=1)
    num_heads: int = bounded(32, ge=1)
    num_kv_heads: int = bounded(8, ge=1)
    head_dim: int = bounded(128, ge=1)
    # FFN intermediate size; for MoE the size of *one* expert.
    ffn_size: int = bounded(14336, ge=1)
    vocab_size: int = bounded(128256, ge=1)
    num_experts: int = bounded(1, ge=1)
    experts_per_token: int = bounded(1, ge=1)
    tie_embeddings: bool = False
    qkv_bias: bool = False
    # Prompt + output tokens at most; token counts are int32 in the result files.
    max_model_len: int = bounded(131072, ge=2, le=2**31 - 1)
    weight_bytes_per_param: int = bounded(2, ge=1)
    kv_bytes_per_element: int = bounded(2, ge=1)
    source: str = "meta-llama/Llama-3.1-8B config.json"
    # --- MoE layouts beyond "every layer routes to E experts" (0 = none) -------------------
    # Leading layers with a dense MLP of dense_ffn_size (DeepSeek's first_k_dense_replace).
    num_dense_layers: int = bounded(0, ge=0)
    dense_ffn_size: int = bounded(0, ge=0)
    # Experts every token passes through besides the routed ones, each of ffn_size
    # (DeepSeek's n_shared_experts).
    shared_experts: int = bounded(0, ge=0)
    # --- Multi-head latent attention (DeepSeek-V2/V3; 0 = ordinary GQA) -----------------------
    # The KV cache holds one compressed latent of kv_lora_rank plus a decoupled RoPE key of
    # qk_rope_head_dim per token and layer, shared by all heads (so not split by TP).
    # head_dim is then qk_nope_head_dim; v_head_dim 0 means head_dim.
    kv_lora_rank: int = bounded(0, ge=0)
    q_lora_rank: int = bounded(0, ge=0)
    qk_rope_head_dim: int = bounded(0, ge=0)
    v_head_dim: int = bounded(0, ge=0)
    # --- What one generation step is (docs/KV_METHODS.md) ---------------------------------
    # autoregressive: one token per step. diffusion (LLaDA, Dream): blocks of
    # diffusion_block masked tokens, each refined over diffusion_steps denoising steps; with
    # diffusion_canvas the whole generation length is a canvas of masks attended from the
    # first step (LLaDA), without it blocks are appended (block diffusion). var (VAR,
    # Infinity): next-scale prediction, one step per token map of var_scales[k]^2 tokens.
    kind: str = bounded("autoregressive", choices=KINDS)
    diffusion_block: int = bounded(0, ge=0)
    diffusion_steps: int = bounded(0, ge=0)
    diffusion_canvas: bool = True
    var_scales: list[int] = field(default_factory=list, metadata=meta(ge=1))
    # Sequences computed per request: 2 under classifier-free guidance (Infinity, VAR).
    guidance_streams: int = bounded(1, ge=1)
    # Parameters a GPU holds besides the decoder stack (a text encoder, cross-attention): in
    # the weights' memory, not in the per-step roofline (they run once per request).
    extra_params: int = bounded(0, ge=0)

    def __post_init__(self) -> None:
        # A model is always the ``model`` section: a model YAML that breaks a rule fails
        # when it is loaded, naming the key.
        check(self, "model.")

    def validate(self, prefix: str = "model.") -> None:
        require(self.kind != "diffusion" or (self.diffusion_block > 0 and self.diffusion_steps > 0),
                f"{prefix}diffusion_block: model '{self.name}': a diffusion model needs "
                f"diffusion_block and diffusion_steps > 0")
        require(self.kind != "var" or bool(self.var_scales),
                f"{prefix}var_scales: model '{self.name}': a var model needs var_scales, the "
                f"side lengths of its token maps")
        require(not self.num_dense_layers or self.is_moe,
                f"{prefix}num_dense_layers: model '{self.name}': num_dense_layers applies to MoE "
                f"models only (num_experts > 1); a dense model's layers all use ffn_size")
        require(self.num_dense_layers < self.num_layers,
                f"{prefix}num_dense_layers: model '{self.name}': num_dense_layers "
                f"({self.num_dense_layers}) must be below num_layers ({self.num_layers})")
        require(not self.num_dense_layers or self.dense_ffn_size > 0,
                f"{prefix}dense_ffn_size: model '{self.name}': num_dense_layers needs "
                f"dense_ffn_size > 0")
        require(self.num_heads % self.num_kv_heads == 0,
                f"{prefix}num_heads: model '{self.name}': num_heads ({self.num_heads}) must be a "
                f"multiple of num_kv_heads ({self.num_kv_heads})")
        require(self.experts_per_token <= self.num_experts,
                f"{prefix}experts_per_token: model '{self.name}': experts_per_token "
                f"({self.experts_per_token}) exceeds num_experts ({self.num_experts})")

    # --- derived shape -------------------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        return self.num_experts > 1

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def image_tokens(self) -> int:
        """Tokens of one generated image of a var model: the sum of its token maps' areas."""
        return sum(h * h for h in self.var_scales)

    @property
    def moe_layers(self) -> int:
        """Layers whose MLP routes to experts (all of a dense model's count as MLP layers)."""
        return self.num_layers - self.num_dense_layers

    @property
    def qk_head_dim(self) -> int:
        """Query/key width of one head (MLA: the no-RoPE part plus the decoupled RoPE key)."""
        return self.head_dim + self.qk_rope_head_dim

    @property
    def v_dim_per_head(self) -> int:
        return self.v_head_dim or self.head_dim

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.qk_head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def attn_out_dim(self) -> int:
        """Width of the attention output that o_proj reads (heads x value width)."""
        return self.num_heads * self.v_dim_per_head

    @property
    def attn_flops_per_pair_head(self) -> int:
        """FLOPs of one (query, key) pair in one head: QK^T over the query/key width plus
        PV over the value width, 2 per multiply-add (4 x head_dim for GQA)."""
        return 2 * self.qk_head_dim + 2 * self.v_dim_per_head

    @property
    def attention_params_per_layer(self) -> int:
        if self.is_mla:
            h, heads = self.hidden_size, self.num_heads
            q = (h * self.q_lora_rank + self.q_lora_rank + self.q_lora_rank * self.q_dim
                 if self.q_lora_rank else h * self.q_dim)
            kv_a = h * (self.kv_lora_rank + self.qk_rope_head_dim) + self.kv_lora_rank
            kv_b = self.kv_lora_rank * heads * (self.head_dim + self.v_dim_per_head)
            return q + kv_a + kv_b + self.attn_out_dim * h
        qkv = self.hidden_size * (self.q_dim + 2 * self.kv_dim)
        bias = (self.q_dim + 2 * self.kv_dim) if self.qkv_bias else 0
        return qkv + bias + self.attn_out_dim * self.hidden_size

    @property
    def qkv_out_dim(self) -> int:
        """Output width of the attention's input projections as one GEMM over hidden_size
        (MLA's low-rank factors counted by their parameters)."""
        if self.is_mla:
            return -(-(self.attention_params_per_layer - self.attn_out_dim * self.hidden_size)
                     // self.hidden_size)
        return self.q_dim + 2 * self.kv_dim

    @property
    def expert_params(self) -> int:
        """Gated MLP (gate, up, down) of one expert, or of the dense MLP."""
        return 3 * self.hidden_size * self.ffn_size

    @property
    def mlp_params_per_layer(self) -> int:
        """MLP of one MoE layer (all experts, shared ones and the router), or the dense MLP."""
        router = self.hidden_size * self.num_experts if self.is_moe else 0
        return (self.num_experts + self.shared_experts) * self.expert_params + router

    @property
    def dense_mlp_params(self) -> int:
        return 3 * self.hidden_size * self.dense_ffn_size

    @property
    def params_per_layer(self) -> int:
        """Parameters of one MoE layer (of any layer, for a dense model)."""
        norms = 2 * self.hidden_size
        return self.attention_params_per_layer + self.mlp_params_per_layer + norms

    @property
    def expert_params_total(self) -> int:
        """Routed experts' parameters over all layers: what expert parallelism spreads."""
        return self.moe_layers * self.num_experts * self.expert_params if self.is_moe else 0

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def num_params(self) -> int:
        lm_head = 0 if self.tie_embeddings else self.embedding_params
        dense = self.num_dense_layers * (self.attention_params_per_layer + self.dense_mlp_params
                                         + 2 * self.hidden_size)
        return (self.moe_layers * self.params_per_layer + dense + self.embedding_params + lm_head
                + self.hidden_size + self.extra_params)

    @property
    def active_params(self) -> int:
        """Parameters touched by one token (MoE: only the routed experts)."""
        inactive = (self.num_experts - self.experts_per_token) * self.expert_params
        return self.num_params - self.moe_layers * inactive

    @property
    def weight_bytes(self) -> int:
        return self.num_params * self.weight_bytes_per_param

    @property
    def kv_elements_per_token_layer(self) -> int:
        """KV elements one token keeps per layer: K and V of each KV head, or MLA's latent."""
        if self.is_mla:
            return self.kv_lora_rank + self.qk_rope_head_dim
        return 2 * self.kv_dim

    @property
    def kv_bytes_per_token(self) -> int:
        """KV of every layer for one token, across all GPUs of a replica."""
        return self.num_layers * self.kv_elements_per_token_layer * self.kv_bytes_per_element

"""What one GPU of an instance holds: weights, KV per token, activations.

A base class of ``CostModel`` (perf/roofline.py), split from it along this seam: the KV
capacity (engine/capacity.py) and the energy and search code read these sizes; the
iteration times do not.
"""

from __future__ import annotations

from simkv.entities.model import ModelSpec

ACT_BYTES = 2  # bf16 activations
LOGIT_BYTES = 4  # fp32 logits


class GPUMemory:
    """Bytes per GPU (methods of ``CostModel``, which sets the attributes below)."""

    model: ModelSpec
    tp: int
    pp: int
    ep: int
    kv_bytes_token_layer: float
    _slots: float
    _resident: float

    def weight_bytes_per_gpu(self) -> float:
        """Weights one GPU holds: everything split by TP and PP, except that under expert
        parallelism each GPU holds E/ep whole routed experts and a replica of the rest."""
        m = self.model
        if self.ep == 1:
            w = m.weight_bytes / (self.tp * self.pp)
        else:
            experts = m.expert_params_total * m.weight_bytes_per_param
            w = ((m.weight_bytes - experts) / self.tp + experts * self._slots / self.ep) / self.pp
        # NOTE: resident in HBM; the rest is streamed each iteration (weights.gpu_fraction).
        return w if self._resident == 1.0 else w * self._resident

    def expert_bytes_per_gpu(self) -> float:
        """Routed-expert weights on one GPU (what an EP resize moves between GPUs)."""
        m = self.model
        experts = m.expert_params_total * m.weight_bytes_per_param * self._slots
        return experts / (self.ep if self.ep > 1 else self.tp) / self.pp

    def kv_bytes_per_token_per_gpu(self) -> float:
        return self.kv_bytes_token_layer * self.model.num_layers / self.pp

    def activation_bytes_per_gpu(self, max_batched_tokens: int, max_seqs: int) -> float:
        """Peak activations of one forward pass (vLLM measures this with a profiling run)."""
        m = self.model
        per_token = (m.hidden_size * 4 + m.qkv_out_dim / self.tp
                     + 2 * m.ffn_size * max(1, m.experts_per_token) / self.tp) * ACT_BYTES
        logits = max_seqs * m.vocab_size / self.tp * LOGIT_BYTES
        # NOTE: per data-parallel rank: the scheduler's budget and seats are per rank (vLLM).
        return max_batched_tokens * per_token + logits

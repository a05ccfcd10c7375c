"""Decode attention inside computational storage drives (InstInfer), as a cost model.

InstInfer (seed paper) keeps the decode-phase KV cache on CSDs and computes decode attention
there, on the drives' internal flash bandwidth, instead of moving KV over PCIe: the GPU runs
every other operator, sends each layer's queries to the drives and gets the attention output
back. So, per decode iteration and layer, attention costs the roofline of the *CSD*
(``max(FLOPs / CSD compute, KV bytes / internal bandwidth)``, the node's drives shared by the
replicas on the node) plus the queries and outputs over PCIe; and every new token's KV
(prefill and decode) is written to the drives at their write bandwidth.

NOTE: GPU work and in-storage attention are serialised per layer (the data dependency of a
layer's attention on its QKV projection); InstInfer overlaps some of it across sequences,
so this is an upper bound on its iteration time. Prefill attention stays on the GPU.
"""

from __future__ import annotations

from simkv.config.schema import EngineConfig
from simkv.entities.hardware import HardwareProfile
from simkv.entities.model import ModelSpec
from simkv.kv.tiers import TierSpec
from simkv.perf.roofline import ACT_BYTES, CostModel, OperatorCost


class InStorageAttentionCost(CostModel):
    def __init__(self, model: ModelSpec, hw: HardwareProfile, csd: TierSpec, share: float,
                 tensor_parallel: int = 1, pipeline_parallel: int = 1,
                 engine: EngineConfig | None = None) -> None:
        super().__init__(model, hw, tensor_parallel, pipeline_parallel, engine)
        if not (csd.internal_bandwidth > 0 and csd.compute_flops > 0):
            raise ValueError("in-storage attention needs the CSD's internal_bandwidth and compute")
        gpus = tensor_parallel * pipeline_parallel
        # This replica's part of the node's drives; per GPU, as the rest of the cost model.
        self.csd_bw = csd.internal_bandwidth * share / gpus
        self.csd_flops = csd.compute_flops * share / gpus
        self.csd_write = csd.write_bandwidth * share / gpus
        flops_per_ctx = 4.0 * model.head_dim * self.heads
        self._const_dattn = True
        self._dattn_c = flops_per_ctx / self.csd_flops
        self._dattn_m = self.kv_bytes_token_layer / self.csd_bw
        # Queries out and attention outputs back over PCIe, per sequence and layer.
        self._dq_m = 2.0 * self.heads * model.head_dim * ACT_BYTES / hw.pcie_bandwidth
        self._kv_write_s = self.kv_bytes_per_token_per_gpu() / self.csd_write

    def _decode_attention(self, decodes: int, context: float) -> OperatorCost:
        m = self.model
        flops = 4.0 * m.head_dim * self.heads * context
        nbytes = context * self.kv_bytes_token_layer
        t = max(flops / self.csd_flops, nbytes / self.csd_bw) + decodes * self._dq_m
        return OperatorCost("attn_decode_csd", flops, nbytes, t)

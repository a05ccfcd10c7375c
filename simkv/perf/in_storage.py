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

``StreamedAttentionCost`` is the baseline of that paper (FlexGen-like offloading to SSD): the
same structure with the drives' host link and PCIe in place of the internal bandwidth.
"""

from __future__ import annotations

from simkv.config.schema import EngineConfig
from simkv.entities.hardware import HardwareProfile
from simkv.entities.model import ModelSpec
from simkv.kv.tiers import TierSpec
from simkv.perf.roofline import CostModel, OperatorCost


class InStorageAttentionCost(CostModel):
    def __init__(self, model: ModelSpec, hw: HardwareProfile, csd: TierSpec, share: float,
                 tensor_parallel: int = 1, pipeline_parallel: int = 1,
                 engine: EngineConfig | None = None) -> None:
        super().__init__(model, hw, tensor_parallel, pipeline_parallel, engine)
        if not (csd.internal_bandwidth > 0 and csd.compute_flops > 0):
            raise ValueError("in-storage attention needs the CSD's internal_bandwidth and compute")
        gpus = tensor_parallel * pipeline_parallel
        # This replica's part of the node's drives; per GPU, as the rest of the cost model.
        self._offload_attention(csd.internal_bandwidth * share / gpus,
                                csd.compute_flops * share / gpus,
                                csd.write_bandwidth * share / gpus,
                                # Queries out and attention outputs back over PCIe.
                                hw.pcie_bandwidth)

    def _offload_attention(self, read_bw: float, flops: float, write_bw: float, q_bw: float) -> None:
        self.attn_read_bw, self.attn_flops, self.kv_write_bw = read_bw, flops, write_bw
        self._const_dattn = True
        self._dattn_c = self._pair_flops / flops
        self._dattn_m = self.kv_bytes_token_layer / read_bw
        self._dq_m = self._q_bytes(1.0) / q_bw
        self._kv_write_s = self.kv_bytes_per_token_per_gpu() / write_bw

    def _decode_attention(self, decodes: int, context: float) -> OperatorCost:
        flops = self._pair_flops * context
        nbytes = context * self.kv_bytes_token_layer
        t = max(flops / self.attn_flops, nbytes / self.attn_read_bw) + decodes * self._dq_m
        return OperatorCost("attn_decode_offloaded", flops, nbytes, t)


class StreamedAttentionCost(InStorageAttentionCost):
    """The baseline InstInfer compares with (FlexGen-style SSD offloading): the KV cache lives
    on the node's NVMe drives (or, for ``dram_stream``, in its CPU DRAM: ``ssd`` is then the
    DRAM tier) and every decode step streams it to the GPU, so attention reads
    at the slower of the drives' read bandwidth (this replica's share) and PCIe, and computes
    on the GPU at its attention efficiency."""

    def __init__(self, model: ModelSpec, hw: HardwareProfile, ssd: TierSpec, share: float,
                 tensor_parallel: int = 1, pipeline_parallel: int = 1,
                 engine: EngineConfig | None = None) -> None:
        CostModel.__init__(self, model, hw, tensor_parallel, pipeline_parallel, engine)
        gpus = tensor_parallel * pipeline_parallel
        read = min(ssd.read_bandwidth * share / gpus, hw.pcie_bandwidth)
        self._offload_attention(read, hw.bf16_flops * hw.eff("attention_compute").at(1.0),
                                min(ssd.write_bandwidth * share / gpus, hw.pcie_bandwidth),
                                hw.hbm_bandwidth)

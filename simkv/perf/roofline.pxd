# C layout of the cost model in the compiled build (setup.py): CostModel extends RunPricing's
# extension type (run_pricing.pxd) with the fields its per-iteration terms read; the rest of
# what it sets lives in the instance's __dict__. GPUMemory stays a Python base after it.
from simkv.perf.run_pricing cimport RunPricing

cdef class CostModel(RunPricing):
    cdef public object model, hw, tp, pp, _linear_coef, _layer_s
    cdef public object _const_attn, _attn_c, _attn_m, _q_m, _pf_attn
    cdef public dict _linear_cache, _sample_cache

    cpdef linear_s(self, tokens)
    cpdef sample_s(self, sampled)
    cpdef _prefill_attention_s(self, pairs, kv_tokens, tokens)

# C layout of the cost model's pricing in the compiled build (setup.py): RunPricing, the base
# of CostModel (roofline.pxd), is an extension type whose pricing reads its own fields and its
# plan's (SchedulerOutput) directly, and calls CostModel's linear_s, sample_s and
# _prefill_attention_s through its C table. A __dict__ keeps what else is set on a cost model
# (perf/options.py and perf/speculative.py replace run_times on the instance, and the
# instance's own wins, as in Python); Python subclasses (AFDCost, the in-storage costs)
# override any of these methods as before.
from simkv.policies.scheduler.interface cimport SchedulerOutput

cdef class RunPricing:
    cdef dict __dict__
    cdef public object engine, layers, dp, _ranks, flops_peak, bw_peak, _eff
    cdef public object kv_bytes_token_layer, _pair_flops, _prefill_token_s, _moe_capture_layers
    cdef public object _dense_pad, _ctx_host_s, _kv_write_s, _q_pad, _logit_rows
    cdef public object _const_dattn, _dattn_c, _dattn_m, _dq_m, _dec_attn, _pad_a, _pad_b

    cpdef linear_s(self, tokens)
    cpdef sample_s(self, sampled)
    cpdef _prefill_attention_s(self, pairs, kv_tokens, tokens)
    cpdef iteration_time(self, SchedulerOutput out)
    cpdef decode_run_times(self, decodes, context, sampled)
    cpdef _roofline_decode_run(self, base, decodes, context)
    cpdef run_times(self, SchedulerOutput out)

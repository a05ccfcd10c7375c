# C layout of a plan (SchedulerOutput) in the compiled build (setup.py): the replica and vLLM's
# scheduler read its fields directly. Declared in the order of the .py's fields: Cython's
# dataclass takes that order for __init__'s positional arguments, repr and eq.
cimport cython

cdef class SchedulerOutput:
    cdef public object num_iterations
    cdef public list prefills
    cdef public object prefill_tokens, prefill_attn_pairs, prefill_kv_tokens, num_decodes
    cdef public object decode_context, num_sampled, tail_decodes, tail_context, first_need
    cdef public object joined, padded, steps, capture

@cython.locals(out=SchedulerOutput)
cpdef SchedulerOutput new_output()

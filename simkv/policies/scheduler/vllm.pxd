# C layout of vLLM's scheduler in the compiled build (setup.py): VLLMScheduler is an extension
# type whose hot methods read its fields, its pool, its decode batch and its Requests directly.
# Python subclasses (the six schedulers beside it) override its cpdef methods as before; a
# __dict__ holds what the shaped steps and subclasses add (and _add_chunk's replacement).
cimport cython
from simkv.entities.request cimport Request
from simkv.kv.block_pool cimport BlockPool
from simkv.engine.decode_batch cimport DecodeBatch
from simkv.policies.scheduler.interface cimport SchedulerOutput, new_output

cdef class _SchedulerRoot:
    pass

cdef class VLLMScheduler(_SchedulerRoot):
    cdef dict __dict__
    cdef public object cfg, block_size, max_fast_forward, waiting, kv, _match, _sized, _plain
    cdef public object policy, model, reserved_in, on_remote, chunked, split_prompts
    cdef public object max_tokens, max_seqs, prefill_in_flight
    cdef public BlockPool pool
    cdef public DecodeBatch decode
    cdef public dict running, prefilling, loading, held

    cpdef admission_error(self, Request req)
    cpdef add_request(self, Request req)
    cpdef num_unfinished(self)
    @cython.locals(pool=BlockPool, dec=DecodeBatch, req=Request, victim=Request, out=SchedulerOutput)
    cpdef schedule(self, now)
    @cython.locals(pool=BlockPool, req=Request, running=dict)
    cpdef _admit(self, SchedulerOutput out, budget, need, now)
    cpdef _seat(self, Request req, now)
    @cython.locals(pool=BlockPool, req=Request, out=SchedulerOutput)
    cpdef _schedule_prefill_first(self, now)
    @cython.locals(dec=DecodeBatch)
    cpdef _plan_decodes(self, SchedulerOutput out, need, preempted, now)
    @cython.locals(dec=DecodeBatch, pool=BlockPool, req=Request)
    cpdef _plan_tail(self, SchedulerOutput out, need, now)
    @cython.locals(dec=DecodeBatch, req=Request, finished=list)
    cpdef update(self, SchedulerOutput out, done, ends)
    cpdef _finish_decoding(self, Request req)
    cpdef _in_flight(self, SchedulerOutput out)

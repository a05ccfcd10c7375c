# C types for the compiled build of simkv/engine/decode_batch.py (setup.py): DecodeBatch is an
# extension type whose methods read its fields and its Requests' directly; engine/steps.py's
# ShapedDecodeBatch subclasses it in Python (cpdef methods stay overridable).
cimport cython
from simkv.entities.request cimport Request

cdef class DecodeBatch:
    cdef public object block_size, ticks, sum_base
    cdef public list phase, _heap
    cdef public dict members

    cpdef join(self, Request req, skip=*)
    cpdef leave(self, Request req)
    cpdef materialise(self, Request req)
    cpdef context_sum(self, skip=*)
    cpdef need_next(self)
    cpdef need_over(self, k, skip=*)
    @cython.locals(req=Request, heap=list, members=dict)
    cpdef ticks_to_first_finish(self)
    @cython.locals(req=Request, heap=list, done=list)
    cpdef advance(self, k)
    @cython.locals(req=Request)
    cpdef _live(self, tuple entry)

@cython.locals(j=Py_ssize_t, total=cython.longlong)
cpdef long long _phase_window(list phase, long long t, Py_ssize_t rem, long long bs) except? -1

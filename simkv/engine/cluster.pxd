# C layout of the cluster in the compiled build (setup.py): Cluster is an extension type whose
# arrivals and completions read its own fields, its Requests' and its recorder's directly.
# A __dict__ keeps what else is set on an instance: engine/models.py's route and
# engine/lora.py's dispatch replace _route and _dispatch on the instance, and the instance's
# own wins over these cpdef methods, as in Python; a Python subclass overrides them as before.
cimport cython
from simkv.entities.request cimport Request
from simkv.metrics.recorder cimport Recorder

cdef class Cluster:
    cdef dict __dict__
    cdef public object env, cfg, workload, _plan_now, observer, max_model_len, granule_tokens
    cdef public object on_progress, pools, topology, memory, models, lora, holders, serving
    cdef public object backlog, unrouted, lifecycle, predictor, router, migration, speculation
    cdef public object _classes, handoff, kv_pool, energy, faults, _chunks, _cols, _extra, _i
    cdef public object next_id, prefixed, completed, last_done_s, pending_followups
    cdef public object arrivals_done
    cdef public Recorder recorder
    cdef public list replicas, kvs

    @cython.locals(i=Py_ssize_t, arrival=list, prompt=list, output=list, session=list,
                   turn=list, req=Request)
    cpdef _arrive(self, _)
    cpdef _dispatch(self, Request req)
    cpdef _route(self, Request req, moved=*)
    cpdef _reject(self, Request req, reason)
    cpdef _finished(self, Request req, now)

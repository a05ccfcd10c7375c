# C layout of the replica in the compiled build (setup.py): Replica is an extension type whose
# run loop reads its own fields directly. A __dict__ keeps what else is set on an instance
# (engine/faults.py and engine/lora.py replace submit, adopt, poke and hand_back, which stay
# def methods so that an instance's own wins, as in Python).
cimport cython
from simkv.policies.scheduler.interface cimport SchedulerOutput

cdef class Replica:
    cdef dict __dict__
    cdef public object index, env, scheduler, cost, on_finish, iterations, observer
    cdef public object livelock_limit, outstanding_requests, outstanding_tokens, predictor
    cdef public object busy, epoch, _out, _ends, _done, _start, _idle_iterations
    cdef public object iterations_run, runs, pool, state, dp, gpus, slots, on_idle
    cdef public object on_run_end, on_stopped, drain_action, work_rate, kv, collectives
    cdef public object power, plan_now, hold_run_end, _next_wake
    cdef public dict _charged
    cdef public list watchers

    cpdef _charge(self, req)
    cpdef _discharge(self, req)
    cpdef _cut(self, t)
    @cython.locals(out=SchedulerOutput)
    cpdef _plan(self, now)
    @cython.locals(out=SchedulerOutput)
    cpdef _run_ended(self, event)
    cpdef _commit(self, SchedulerOutput out, ends, done)

# C types for simkv/perf/fast_runs.py in the compiled build (setup.py); the .py is the
# pure-Python definition and documentation.
cimport cython

@cython.locals(i=Py_ssize_t, c=cython.longlong, x=cython.double, y=cython.double,
               buf=cython.double[::1])
cpdef object roofline_run(double base, double layers, double ac, double am, double q,
                          long long start, long long step, Py_ssize_t k)

@cython.locals(i=Py_ssize_t, c=cython.longlong, x=cython.double, y=cython.double)
cpdef list roofline_short(double base, double layers, double ac, double am, double q,
                          long long start, long long step, Py_ssize_t k)

@cython.locals(i=Py_ssize_t, n=Py_ssize_t, t=cython.double)
cpdef list accumulate_from(double now, list durations)

@cython.locals(i=Py_ssize_t, n=Py_ssize_t, c=cython.double, buf=cython.double[::1],
               src=cython.double[:])
cpdef object ends_from(double now, object durations)

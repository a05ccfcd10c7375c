# C types for the compiled build of simkv/engine/decode_batch.py (setup.py): one loop's
# integers. DecodeBatch stays an ordinary Python class (engine/steps.py subclasses it).
cimport cython

@cython.locals(j=Py_ssize_t, total=cython.longlong)
cpdef long long _phase_window(list phase, long long t, Py_ssize_t rem, long long bs) except? -1

# C layout of the recorder in the compiled build (setup.py): Recorder and TableWriter are
# extension types, so that Recorder.request reads a finished Request's fields directly (not
# through ~35 attribute lookups) and appends its row to the requests' buffer without one.
# A __dict__ on each keeps what the interpreted classes allow (any attribute); a Python
# subclass overrides request as before (tests/test_output_protocol.py does).
from simkv.entities.request cimport Request

cdef class TableWriter:
    cdef dict __dict__
    cdef public object path, partial_path, schema, row_group_size, rows, closed, _writer
    cdef public list buffer, columns
    cdef public Py_ssize_t pending, transpose_at

    cpdef append(self, row)

cdef class Recorder:
    cdef dict __dict__
    cdef public TableWriter requests
    cdef public object iterations, transfers, instances, ttft_slo, tpot_slo
    cdef public object finished, rejected, pool_names, last_slo_met

    cpdef request(self, Request r)

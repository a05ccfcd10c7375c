"""Arrow columns to numpy and back, without importing pandas.

pyarrow imports pandas, when it is installed, the first time it converts anything: ``pa.array``
of a tuple or a numpy array, ``pa.scalar``, ``Array.to_numpy``, a compute function given a
Python scalar, ``pq.read_table`` (its pandas shim asks "is this a pandas Series?" before each
conversion). That import is 0.15-0.25 CPU s, a tenth of a small run's whole process, for a
run that never uses pandas. These helpers go through Arrow's buffers instead (numpy views of
them, arrays built from them), which never ask. Each gives what the pyarrow call it stands
for gives: the same dtype, values and nulls (tests/test_columns.py compares them on random
data); a column of another type, or values pyarrow would convert otherwise (or refuse), go to
pyarrow itself, which is exact and may then import pandas.
"""

from __future__ import annotations

from array import array as _carray
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

_NUMERIC: dict[pa.DataType, np.dtype] = {
    t: np.dtype(d) for t, d in (
        (pa.int8(), np.int8), (pa.int16(), np.int16), (pa.int32(), np.int32), (pa.int64(), np.int64),
        (pa.uint8(), np.uint8), (pa.uint16(), np.uint16), (pa.uint32(), np.uint32),
        (pa.uint64(), np.uint64), (pa.float32(), np.float32), (pa.float64(), np.float64))}
_STRINGS = (pa.string(), pa.large_string())
# Integers a float64 column takes exactly (pyarrow refuses larger ones).
_EXACT_INT = 2**53
# The array module's type codes of the recorder's column types: it converts a tuple of Python
# numbers in one C loop, as fast as pa.array, and refuses None, strings and floats for ints.
_CODES = {pa.float64(): "d", **{t: c for t, size in ((pa.int32(), 4), (pa.int64(), 8))
                                for c in "ilq" if _carray(c).itemsize == size}}


def _bits(buf: pa.Buffer | None, offset: int, n: int) -> np.ndarray:
    """A bitmap (validity or bool values, least significant bit first) as n bools."""
    if buf is None:
        return np.ones(n, bool)
    raw = np.frombuffer(buf, np.uint8, count=(offset + n + 7) // 8)
    return np.unpackbits(raw, bitorder="little")[offset:offset + n].view(bool)


def to_numpy(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """``col.to_numpy(zero_copy_only=False)``: numbers as their dtype (integers with nulls as
    float64, nulls NaN), bools as bool (object with None where null), strings as objects.
    Like pyarrow's, a numeric column without nulls is a read-only view of Arrow's buffer."""
    if isinstance(col, pa.ChunkedArray):
        if col.num_chunks == 1:
            return to_numpy(col.chunk(0))
        t = col.type
        if t not in _NUMERIC and t != pa.bool_() and t not in _STRINGS:
            return col.to_numpy()
        if col.num_chunks == 0:
            return np.empty(0, _NUMERIC.get(t, bool if t == pa.bool_() else object))
        return np.concatenate([to_numpy(c) for c in col.chunks])
    n, t = len(col), col.type
    dtype = _NUMERIC.get(t)
    if dtype is not None:
        bufs = col.buffers()
        values = (np.frombuffer(bufs[1], dtype, count=n, offset=col.offset * dtype.itemsize)
                  if n else np.empty(0, dtype))
        if not col.null_count:
            return values
        out = values.astype(np.float64 if dtype.kind != "f" else dtype)
        out[~_bits(bufs[0], col.offset, n)] = np.nan
        return out
    if t == pa.bool_():
        bufs = col.buffers()
        values = _bits(bufs[1], col.offset, n)
        if not col.null_count:
            return values
        out = values.astype(object)
        out[~_bits(bufs[0], col.offset, n)] = None
        return out
    if t in _STRINGS:
        out = np.empty(n, object)
        out[:] = col.to_pylist()
        return out
    return col.to_numpy(zero_copy_only=False)


def bool_array(mask: np.ndarray) -> pa.Array:
    """``pa.array(mask)`` for a numpy bool array (a filter for ``pc.filter``)."""
    mask = np.asarray(mask, bool)
    return pa.Array.from_buffers(pa.bool_(), len(mask),
                                 [None, pa.py_buffer(np.packbits(mask, bitorder="little"))])


def equal(col: pa.Array | pa.ChunkedArray, value: str) -> np.ndarray:
    """``pc.equal(col, value)`` of a string column (plain or dictionary-encoded) as a numpy
    bool array, a null being False. Compared on Arrow's buffers: neither pandas nor
    pyarrow.compute (35 ms of import a run need not pay) is imported."""
    if isinstance(col, pa.ChunkedArray):
        if col.num_chunks == 1:
            return equal(col.chunk(0), value)
        return np.concatenate([equal(c, value) for c in col.chunks] or [np.zeros(0, bool)])
    n = len(col)
    if n == 0:
        return np.zeros(0, bool)
    if pa.types.is_dictionary(col.type):
        hits = np.array([v == value for v in col.dictionary.to_pylist()] + [False])
        codes = to_numpy(col.indices)
        if codes.dtype.kind == "f":  # null codes (NaN): no entry
            codes = np.where(np.isnan(codes), len(hits) - 1, codes).astype(np.int64)
        return hits[codes]
    if col.type not in _STRINGS:
        import pyarrow.compute as pc

        out = to_numpy(pc.equal(col, _string_scalar(value)))
        return out if out.dtype == bool else np.equal(out, True)
    target = np.frombuffer(value.encode(), np.uint8)
    offsets, data = _string_buffers(col)
    out = np.zeros(n, bool)
    maybe = np.flatnonzero(np.diff(offsets) == len(target))  # only same-length values can match
    if len(target) == 0:
        out[maybe] = True
    elif maybe.size:
        chars = data[offsets[maybe][:, None] + np.arange(len(target))]
        out[maybe[(chars == target).all(axis=1)]] = True
    if col.null_count:
        out &= _bits(col.buffers()[0], col.offset, n)
    return out


def value_counts(col: pa.Array | pa.ChunkedArray, mask: np.ndarray) -> dict[str, int]:
    """How many rows at ``mask`` hold each value of a string column, keyed ``str(value)``
    (a null: "None"): ``pc.value_counts(pc.filter(col, mask))`` as summary.json counts it,
    without pyarrow.compute. Dictionary-encoded columns count in numpy."""
    out: dict[str, int] = {}
    if isinstance(col, pa.ChunkedArray):
        start = 0
        for chunk in col.chunks:
            for k, v in value_counts(chunk, mask[start:start + len(chunk)]).items():
                out[k] = out.get(k, 0) + v
            start += len(chunk)
        return out
    rows = np.flatnonzero(mask)
    if pa.types.is_dictionary(col.type):
        names = [str(v) for v in col.dictionary.to_pylist()] + ["None"]
        codes = to_numpy(col.indices)[rows]
        if codes.dtype.kind == "f":
            codes = np.where(np.isnan(codes), len(names) - 1, codes)
        counts = np.bincount(codes.astype(np.int64), minlength=len(names))
        for name, c in zip(names, counts.tolist(), strict=True):
            if c:
                out[name] = out.get(name, 0) + c
        return out
    values = to_numpy(col)[rows]
    for v in values.tolist():
        out[str(v)] = out.get(str(v), 0) + 1
    return out


def _string_buffers(col: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A string array's offsets (its own n + 1, from its slice) and its data bytes."""
    bufs = col.buffers()
    if bufs[1] is None:  # no values at all
        return np.zeros(len(col) + 1, np.int64), np.zeros(0, np.uint8)
    otype = np.int32 if col.type == pa.string() else np.int64
    itemsize = np.dtype(otype).itemsize
    offsets = np.frombuffer(bufs[1], otype, count=len(col) + 1, offset=col.offset * itemsize)
    data = np.frombuffer(bufs[2], np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    return offsets.astype(np.int64), data


def _string_scalar(value: str) -> pa.Scalar:
    data = value.encode()
    return _strings(1, np.array([0, len(data)], np.int32), data, None)[0]


def _strings(n: int, offsets: np.ndarray, data: bytes | np.ndarray, valid: np.ndarray | None) -> pa.Array:
    return pa.Array.from_buffers(pa.string(), n, [_validity(valid), pa.py_buffer(offsets),
                                                  pa.py_buffer(data)])


def _validity(valid: np.ndarray | None) -> pa.Buffer | None:
    return None if valid is None else pa.py_buffer(np.packbits(valid, bitorder="little"))


def array(values: Sequence[Any] | np.ndarray, type: pa.DataType) -> pa.Array:
    """``pa.array(values, type=type)`` for a column of Python values (None is null).

    Integers, floats, bools and strings are converted in C (the array module, numpy) and
    wrapped as Arrow buffers, about as fast as pa.array; anything else, and anything numpy
    would convert differently from pyarrow (a float in an integer column, an integer beyond
    the type, bytes for a string), goes to ``pa.array``, which converts it as it always did
    or raises its own error. Three values pyarrow refuses are taken (the recorder, whose
    columns these are, never writes them): a bool in an integer column (written 0 or 1), an
    integer 0 or 1 in a bool column, an integer beyond 2**53 in a float64 column (rounded)."""
    n = len(values)
    if not isinstance(values, np.ndarray):
        fast = _plain(values, type, n)
        if fast is not None:
            return fast
    valid: np.ndarray | None = None
    if type in _STRINGS:
        if type == pa.string():
            out = _string_array(values, n)
            if out is not None:
                return out
        return pa.array(values, type=type)
    dtype = _NUMERIC.get(type)
    if dtype is None and type != pa.bool_():
        return pa.array(values, type=type)
    a = np.asarray(values) if n else np.empty(0, dtype or bool)
    if a.dtype == object and a.ndim == 1:  # nulls among the values
        valid = np.fromiter((v is not None for v in values), bool, n)
        if valid.all():
            return pa.array(values, type=type)
        fill = False if dtype is None else 0
        a = np.asarray([fill if v is None else v for v in values])
        if a.dtype == object:
            return pa.array(values, type=type)
    if a.ndim != 1:
        return pa.array(values, type=type)
    if dtype is None:  # bool
        if a.dtype != bool:
            return pa.array(values, type=type)
        data = pa.py_buffer(np.packbits(a, bitorder="little"))
        return pa.Array.from_buffers(type, n, [_validity(valid), data])
    kind = a.dtype.kind
    if dtype.kind == "f":
        inexact = kind in "iu" and n and int(np.abs(a).max()) > _EXACT_INT
        if dtype != np.float64 or kind not in "fiu" or inexact:
            return pa.array(values, type=type)
    elif kind not in "iu" or (n and (a.min() < np.iinfo(dtype).min or a.max() > np.iinfo(dtype).max)):
        return pa.array(values, type=type)
    data = np.ascontiguousarray(a, dtype=dtype)
    return pa.Array.from_buffers(type, n, [_validity(valid), pa.py_buffer(data)])


def _plain(values: Sequence[Any], type: pa.DataType, n: int) -> pa.Array | None:
    """Numbers or bools without None, in one C loop; None where the general path must look."""
    code = _CODES.get(type)
    try:
        if code is not None:
            return pa.Array.from_buffers(type, n, [None, pa.py_buffer(_carray(code, values))])
        if type == pa.bool_():
            raw = np.frombuffer(bytes(values), np.uint8)  # bools (and ints 0-255) as bytes
            if n and raw.max() > 1:
                return None
            return pa.Array.from_buffers(type, n, [None, pa.py_buffer(np.packbits(raw, bitorder="little"))])
    except (TypeError, OverflowError):  # None, another type, beyond the type's range
        return None
    return None


def _string_array(values: Sequence[Any] | np.ndarray, n: int) -> pa.Array | None:
    """A string column of str (and None) values; None where pyarrow must convert it.

    NOTE: the values are joined with NUL between them, encoded once, and the NULs' places
    give the offsets: no Python call per value (a string holding a NUL takes a slower way)."""
    valid: np.ndarray | None = None
    try:
        joined = "\0".join(values)
    except TypeError:  # None among them, or not strings at all
        valid = np.fromiter((v is not None for v in values), bool, n)
        values = ["" if v is None else v for v in values]
        try:
            joined = "\0".join(values)
        except TypeError:
            return None
    try:
        raw = joined.encode()
    except UnicodeEncodeError:
        return None
    if len(raw) - (n - 1) > np.iinfo(np.int32).max:
        return None
    chars = np.frombuffer(raw, np.uint8)
    nul = chars == 0
    offsets = np.empty(n + 1, np.int32)
    offsets[0] = 0
    if n:
        ends = np.flatnonzero(nul)
        if len(ends) != n - 1:  # a value holds a NUL itself: count each one
            lengths = np.fromiter((len(v.encode()) for v in values), np.int64, n)
            np.cumsum(lengths, out=offsets[1:])
            return _strings(n, offsets, b"".join(v.encode() for v in values), valid)
        offsets[1:n] = ends - np.arange(n - 1)  # each end, less the NULs before it
        offsets[n] = len(raw) - (n - 1)
    data = chars[~nul] if n > 1 else chars
    return _strings(n, offsets, data, valid)

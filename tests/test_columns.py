"""simkv.columns gives what the pyarrow calls it stands for give, without importing pandas."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from simkv import columns

TYPES = [pa.int8(), pa.int32(), pa.int64(), pa.uint16(), pa.float32(), pa.float64(), pa.bool_(),
         pa.string()]


def _values(t: pa.DataType, n: int, rng: np.random.Generator, nulls: bool) -> list:
    if t == pa.bool_():
        out: list = [bool(v) for v in rng.random(n) < 0.5]
    elif t == pa.string():
        out = [rng.choice(["finished", "", "rejected", "é", "日本", "a\x00b"]) * int(rng.integers(0, 3))
               for _ in range(n)]
    elif pa.types.is_floating(t):
        out = [float(v) for v in rng.normal(0, 1e6, n)]
        awkward = [np.nan, np.inf, -np.inf, -0.0, 5e-324, 1e308]
        out[: min(n, 6)] = awkward[: min(n, 6)]
    else:
        info = np.iinfo(t.to_pandas_dtype())
        out = [int(v) for v in rng.integers(info.min, info.max, n, endpoint=True)]
    if nulls:
        for i in rng.choice(n, size=max(1, n // 5), replace=False):
            out[i] = None
    return out


def _same(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype
    assert a.shape == b.shape
    if a.dtype.kind == "f":
        assert np.array_equal(a.view(f"u{a.itemsize}"), b.view(f"u{b.itemsize}"))  # bit for bit
    else:
        assert list(a) == list(b)


def _same_array(mine: pa.Array, theirs: pa.Array) -> None:
    """Same type, nulls and values, bit for bit (NaN included, which ``equals`` refuses)."""
    assert mine.type == theirs.type
    assert mine.is_null().to_pylist() == theirs.is_null().to_pylist()
    _same(mine.to_numpy(zero_copy_only=False), theirs.to_numpy(zero_copy_only=False))


@pytest.mark.parametrize("t", TYPES, ids=str)
@pytest.mark.parametrize("nulls", [False, True])
def test_to_numpy_is_pyarrows(t: pa.DataType, nulls: bool) -> None:
    rng = np.random.default_rng(7)
    arr = pa.array(_values(t, 50, rng, nulls), type=t)
    for col in (arr, arr.slice(3, 30), arr.slice(13, 0), pa.chunked_array([arr, arr.slice(9)]),
                pa.chunked_array([arr.slice(5, 11)]), pa.chunked_array([], type=t)):
        _same(columns.to_numpy(col), col.to_numpy(zero_copy_only=False))


@pytest.mark.parametrize("t", TYPES, ids=str)
@pytest.mark.parametrize("nulls", [False, True])
def test_array_is_pyarrows(t: pa.DataType, nulls: bool) -> None:
    rng = np.random.default_rng(3)
    for n in (0, 1, 9, 200):
        values = tuple(_values(t, n, rng, nulls and n > 0))
        _same_array(columns.array(values, t), pa.array(values, type=t))
        if t == pa.string() and n:  # without a NUL in any value (the common, faster way)
            clean = tuple(v.replace("\x00", "") if v else v for v in values)
            _same_array(columns.array(clean, t), pa.array(clean, type=t))


@pytest.mark.parametrize(("values", "t"), [
    ((1, 2**31), pa.int32()),  # beyond the type
    ((1, None, -(2**31) - 1), pa.int32()),
    ((1, 2**64), pa.int64()),
    ((1.0, np.nan), pa.int32()),
    ((1, 2**60, None), pa.float64()),  # not exact as a double
    ((True, 2), pa.bool_()),
    (("a", 3), pa.string()),
    ((1.5, "2"), pa.float64()),
    ((1, None, "x"), pa.int64()),
])
def test_array_refuses_what_pyarrow_refuses(values: tuple, t: pa.DataType) -> None:
    with pytest.raises((pa.ArrowException, OverflowError)) as theirs:
        pa.array(values, type=t)
    with pytest.raises(type(theirs.value), match=str(theirs.value)[:40].replace("(", r"\(")):
        columns.array(values, t)


@pytest.mark.parametrize(("values", "t"), [
    ((3.0, 1), pa.int32()),  # floats that are integers: pyarrow converts them
    ((True, 2.5), pa.float64()),
    ((True, False, None), pa.float64()),
    ((b"ab", "c"), pa.string()),
    ((1, 2), pa.float32()),
    (np.arange(5, dtype=np.int16), pa.int64()),
    (np.array([0.5, np.nan]), pa.float64()),
])
def test_array_converts_what_pyarrow_converts(values: tuple, t: pa.DataType) -> None:
    _same_array(columns.array(values, t), pa.array(values, type=t))


def test_array_takes_three_values_pyarrow_refuses() -> None:
    # The documented leniencies of the fast path (the recorder never writes these values).
    assert columns.array((True, False, 3), pa.int64()).to_pylist() == [1, 0, 3]
    assert columns.array((1, 0, True), pa.bool_()).to_pylist() == [True, False, True]
    assert columns.array((0.5, 2**60 + 1), pa.float64()).to_pylist() == [0.5, float(2**60)]
    for values, t in (((True, 3), pa.int64()), ((1, 0), pa.bool_()), ((0.5, 2**60 + 1), pa.float64())):
        with pytest.raises(pa.ArrowException):
            pa.array(values, type=t)


def test_equal_and_bool_array() -> None:
    col = pa.chunked_array([pa.array(["finished", None, "rejected"]), pa.array(["finished"])])
    assert list(columns.equal(col, "finished")) == [True, False, False, True]
    assert columns.equal(col.chunk(0), "rejected").dtype == bool
    mask = np.array([True, False, True, True, False, False, True, False, True])
    assert columns.bool_array(mask).equals(pa.array(mask))
    assert pc.filter(pa.array(range(9)), columns.bool_array(mask)).to_pylist() == [0, 2, 3, 6, 8]


@pytest.mark.parametrize("encoded", ["plain", "dictionary"])
def test_equal_and_value_counts_are_pyarrow_computes(encoded: str) -> None:
    rng = np.random.default_rng(11)
    words = ["finished", "rejected", "failed", "", "finishe", "finished!", "fin", "é"]
    values = [None if rng.random() < 0.1 else str(rng.choice(words)) for _ in range(300)]
    arr = pa.array(values, type=pa.string())
    if encoded == "dictionary":
        arr = arr.dictionary_encode()
    mask = rng.random(300) < 0.6
    for col, m in ((arr, mask), (arr.slice(17, 200), mask[17:217]), (arr.slice(5, 0), mask[:0]),
                   (pa.chunked_array([arr.slice(0, 90), arr.slice(90)]), mask)):
        for word in ("finished", "", "failed", "é", "absent"):
            want = pc.equal(col, word).to_numpy(zero_copy_only=False)
            assert list(columns.equal(col, word)) == [w is True for w in want], word
        picked = pc.value_counts(pc.filter(col, pa.array(m))).to_pylist()
        assert columns.value_counts(col, m) == {str(v["values"]): v["counts"] for v in picked}


def test_none_of_it_imports_pandas() -> None:
    code = """
import sys
import numpy as np, pyarrow as pa
from simkv import columns
a = columns.array((1, None, 3), pa.int32())
s = columns.array(("x", None, "yé"), pa.string())
b = columns.array((True, None), pa.bool_())
f = columns.array((0.5, 1), pa.float64())
columns.to_numpy(a), columns.to_numpy(s), columns.to_numpy(b), columns.to_numpy(f)
d = pa.DictionaryArray.from_arrays(columns.array((0, None, 1), pa.int32()), columns.array(("x", "y"), pa.string()))
columns.equal(s, "x"), columns.equal(d, "x"), columns.value_counts(d, np.array([True, True, True]))
columns.value_counts(s, np.array([True, False, True]))
print("pandas" in sys.modules, "pyarrow.compute" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"

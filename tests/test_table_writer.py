"""The recorder's TableWriter: rows buffered as tuples, moved into columns every
``TRANSPOSE_EVERY`` rows (while the values are in the CPU's caches), written as row groups of
exactly ``row_group_size`` rows, whatever the two sizes are."""

from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from simkv.metrics import recorder
from simkv.metrics.recorder import TableWriter

SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string()), ("t", pa.float64()),
                    ("ok", pa.bool_())])


def rows(n: int) -> list[tuple]:
    return [(i, f"r{i % 7}", i / 3 if i % 11 else math.nan, bool(i % 2)) for i in range(n)]


@pytest.mark.parametrize(("n", "group"), [(0, 10), (1, 10), (255, 256), (257, 256), (2600, 1000),
                                      (1000, 1000), (513, 7), (1500, 100_000)])
def test_row_groups_are_row_group_size_and_values_are_the_rows(tmp_path, n, group) -> None:
    w = TableWriter(tmp_path / "t.parquet", SCHEMA, {b"k": b"v"}, group)
    data = rows(n)
    for row in data:
        w.append(row)
    w.close()
    f = pq.ParquetFile(tmp_path / "t.parquet")
    sizes = [f.metadata.row_group(i).num_rows for i in range(f.metadata.num_row_groups)]
    full, rest = divmod(n, group)
    assert sizes == [group] * full + ([rest] if rest or not n else [])
    got = f.read()
    assert got.num_rows == n == w.rows
    back = list(zip(*(got.column(c).to_pylist() for c in range(4)), strict=True))
    assert [tuple("nan" if isinstance(v, float) and math.isnan(v) else v for v in r)
            for r in back] == [tuple("nan" if isinstance(v, float) and math.isnan(v) else v
                                     for v in r) for r in data]
    assert f.metadata.metadata[b"simkv.status"] == b"complete"


def test_a_row_of_the_wrong_width_is_refused(tmp_path) -> None:
    w = TableWriter(tmp_path / "t.parquet", SCHEMA, {}, 1000)
    w.append((1, "a", 1.0))  # three values for four columns
    for row in rows(recorder.TRANSPOSE_EVERY - 2):
        w.append(row)
    with pytest.raises(ValueError, match=r"t.parquet: rows of \[3, 4\] values for 4 columns"):
        w.append((2, "b", 2.0, True))  # the row that fills the buffer: the move refuses it
    assert [len(c) for c in w.columns] == [0, 0, 0, 0]  # no column extended


def test_an_interrupt_while_rows_move_to_the_columns_loses_and_repeats_none(tmp_path,
                                                                             monkeypatch) -> None:
    # Ctrl-C arriving while the buffered rows are moved into the columns is held to the end
    # of the move, so the run's partial file has every row once.
    from simkv import output

    calls = []
    real = output.held_signals

    def held():
        calls.append(1)
        return real()

    monkeypatch.setattr(recorder, "held_signals", held)
    w = TableWriter(tmp_path / "t.parquet", SCHEMA, {}, 10_000)
    for row in rows(3 * recorder.TRANSPOSE_EVERY + 5):
        w.append(row)
    assert len(calls) == 3  # every move of rows into the columns holds the signals
    w.close(complete=False)
    got = pq.read_table(tmp_path / "t.partial.parquet")
    assert got.column("id").to_pylist() == list(range(3 * recorder.TRANSPOSE_EVERY + 5))

"""The merge of the shards' tables (simkv/shard_merge.py), on shard tables built here: every
value of every column, nulls and NaN included, lands where the plain definition puts it
(all rows renumbered, sorted by record time then request id), whatever the row-group sizes;
the file is written the same twice; and it is encoded as the merge chooses for speed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from simkv.metrics import schema
from simkv.shard_merge import (
    INSTANCE_COLUMNS,
    _order,
    merge_instances,
    merge_requests,
    write_keys,
)

META = {b"simkv.config": b"{}", b"simkv.seed": b"7"}


def _column(rng: np.random.Generator, field: pa.Field, n: int, instances: int) -> pa.Array:
    """Random values of the field's type, some null; ties in the times (a few values only)."""
    if field.name in INSTANCE_COLUMNS:  # -1: none; nulls only in the first
        return pa.array(rng.integers(-1, instances, n), pa.int32(),
                        mask=(rng.random(n) < 0.02) if field.name == "replica" else None)
    if field.type == pa.string():
        values = rng.choice(["finished", "rejected", "failed", "x" * 40], n).astype(object)
        values[rng.random(n) < 0.05] = None
        return pa.array(values, pa.string())
    if field.type == pa.float64():
        values = rng.integers(0, 400, n) / 8.0  # exact ties across shards
        values[rng.random(n) < 0.05] = np.nan
        return pa.array(values, pa.float64(), mask=rng.random(n) < 0.02)
    if field.type == pa.bool_():
        return pa.array(rng.random(n) < 0.5, pa.bool_(), mask=rng.random(n) < 0.02)
    values = rng.integers(-5, 2**62 if field.type == pa.int64() else 2**30, n)
    return pa.array(values, field.type, mask=rng.random(n) < 0.02)


def _shards(tmp_path: Path, sizes: list[int], row_group: int) -> tuple[list[Path], pa.Table]:
    """Shard folders as a sharded run leaves them (requests.parquet in record-time order,
    the keys from write_keys), and the merge as defined: every shard's rows with the whole
    run's request ids and the cluster's instance ids, sorted by (record time, request id)."""
    rng = np.random.default_rng(11)
    shards, total = len(sizes), sum(sizes)
    owner = rng.permutation(np.repeat(np.arange(shards), sizes))  # whole-run id -> shard
    folders, parts, whens = [], [], []
    for s, n in enumerate(sizes):
        cols = {f.name: _column(rng, f, n, 5) for f in schema.REQUESTS}
        cols["request_id"] = pa.array(rng.permutation(n), pa.int64())  # the shard's own ids
        done = np.where(cols["status"].to_numpy(zero_copy_only=False) == "finished", True, False)
        when = np.where(done, np.nan_to_num(cols["completion_s"].to_numpy(zero_copy_only=False)),
                        np.nan_to_num(cols["arrival_s"].to_numpy(zero_copy_only=False)))
        cols["completion_s"] = pa.array(np.where(done, when, np.nan), pa.float64())
        cols["arrival_s"] = pa.array(np.where(done, 0.0, when), pa.float64())
        table = pa.table(cols, schema=schema.REQUESTS).take(pa.array(np.argsort(when, kind="stable")))
        folder = tmp_path / f"out_{s}"
        folder.mkdir()
        pq.write_table(table, folder / "requests.parquet", row_group_size=row_group)
        ids = np.flatnonzero(owner == s)  # shard s's own id i is the run's ids[i]
        write_keys(folder / "requests.parquet", ids, folder)
        gid = ids[table.column("request_id").to_numpy()]
        renumbered = table.set_column(0, "request_id", pa.array(gid, pa.int64()))
        for col in INSTANCE_COLUMNS:
            c = renumbered.column(col)
            v = c.fill_null(-1).to_numpy()
            renumbered = renumbered.set_column(renumbered.schema.get_field_index(col), col, pa.array(
                np.where(v >= 0, s + shards * v, v), pa.int32(), mask=c.is_null().to_numpy()))
        folders.append(folder)
        parts.append(renumbered)
        whens.append(np.sort(when))
    merged = pa.concat_tables(parts)
    order = np.lexsort((merged.column("request_id").to_numpy(), np.concatenate(whens)))
    assert len(order) == total
    return folders, merged.take(pa.array(order)).combine_chunks()


def _same(a: pa.Table, b: pa.Table) -> None:
    """Equal column by column, floats by their bits (NaN is NaN), nulls where they were."""
    assert a.schema.names == b.schema.names
    for name in a.column_names:
        x, y = a.column(name).combine_chunks(), b.column(name).combine_chunks()
        assert x.type == y.type, name
        np.testing.assert_array_equal(x.is_null().to_numpy(zero_copy_only=False),
                                      y.is_null().to_numpy(zero_copy_only=False), err_msg=name)
        if pa.types.is_floating(x.type):
            np.testing.assert_array_equal(x.fill_null(0.0).to_numpy().view(np.int64),
                                          y.fill_null(0.0).to_numpy().view(np.int64), err_msg=name)
        else:
            assert x.equals(y), name


@pytest.mark.parametrize(("sizes", "row_group", "out_group"), [
    ([900, 700], 128, 256),     # output groups spanning several of each shard's row groups
    ([500, 40, 333], 1000, 64),  # a shard in one row group, output groups smaller than a shard's
    ([300], 64, 100),           # one shard
    ([300, 0, 200], 64, 128),   # a shard without rows (its file has one empty row group)
])
def test_the_merge_is_every_row_renumbered_in_record_time_then_id_order(
        tmp_path: Path, sizes: list[int], row_group: int, out_group: int) -> None:
    folders, want = _shards(tmp_path, sizes, row_group)
    rows = merge_requests(folders, tmp_path / "merged.parquet", META, out_group)
    assert rows == want.num_rows
    f = pq.ParquetFile(tmp_path / "merged.parquet")
    assert f.schema_arrow.equals(schema.REQUESTS)
    assert f.schema_arrow.metadata == META
    footer = f.metadata.metadata
    assert footer[b"simkv.status"] == b"complete"
    assert footer[b"simkv.rows"] == str(rows).encode()
    assert all(f.metadata.row_group(i).num_rows == out_group for i in range(f.num_row_groups - 1))
    _same(f.read(), want)


def test_the_merged_file_is_written_the_same_twice(tmp_path: Path) -> None:
    folders, _ = _shards(tmp_path, [700, 650], 100)
    merge_requests(folders, tmp_path / "a.parquet", META, 256)
    merge_requests(folders, tmp_path / "b.parquet", META, 256)
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


def test_times_and_ids_are_written_plain_strings_and_int32_with_a_dictionary(tmp_path: Path) -> None:
    """A dictionary of nearly distinct values (times, request ids) only costs: the merge
    writes those columns plain, the rest dictionary-encoded as Parquet's default does."""
    folders, _ = _shards(tmp_path, [600, 600], 200)
    merge_requests(folders, tmp_path / "merged.parquet", META, 500)
    meta = pq.ParquetFile(tmp_path / "merged.parquet").metadata
    for j, field in enumerate(schema.REQUESTS):
        chunk = meta.row_group(0).column(j)
        if field.type == pa.bool_():
            continue  # Parquet has no dictionary for booleans
        assert chunk.has_dictionary_page == (field.type in schema.DICTIONARY_TYPES), field.name


def _instances(folders: list[Path]) -> pa.Table:
    """Each shard's instances.parquet (transitions at times with ties, its own instance ids)
    and their merge as defined: the cluster's ids, sorted by (time, instance), ties kept in
    shard order."""
    rng = np.random.default_rng(5)
    parts = []
    for s, folder in enumerate(folders):
        n = 50 + 10 * s
        cols = {"time_s": pa.array(rng.integers(0, 20, n) / 4.0, pa.float64()),
                "instance": pa.array(rng.integers(0, 6, n), pa.int32()),
                "pool": pa.array(rng.choice(["a", "b"], n)), "from_state": pa.array(rng.choice(["x", "y"], n)),
                "to_state": pa.array(rng.choice(["x", "y"], n)), "gpus": pa.array(rng.integers(1, 9, n), pa.int32()),
                "data_parallel": pa.array(np.ones(n, np.int32)), "action": pa.array(rng.integers(-1, 3, n), pa.int32()),
                "reason": pa.array(rng.choice(["r", "q"], n))}
        table = pa.table(cols, schema=schema.INSTANCES)
        pq.write_table(table, folder / "instances.parquet")
        parts.append(table.set_column(1, "instance", pa.array(
            s + len(folders) * table.column("instance").to_numpy(), pa.int32())))
    merged = pa.concat_tables(parts)
    return merged.take(pa.array(np.lexsort((merged.column("instance").to_numpy(),
                                            merged.column("time_s").to_numpy()))))


def test_the_instances_merge_is_every_transition_renumbered_in_time_then_instance_order(
        tmp_path: Path) -> None:
    folders, _ = _shards(tmp_path, [10, 10, 10], 8)
    want = _instances(folders)
    merge_instances(folders, tmp_path / "instances.parquet", META)
    got = pq.read_table(tmp_path / "instances.parquet")
    assert got.schema.metadata == META
    assert got.to_pylist() == want.to_pylist()


def test_the_merge_does_not_import_pandas(tmp_path: Path) -> None:
    """pandas is 0.2-0.4 CPU s of import in the parent's serial part (and at each shard's
    end, for its keys), for nothing: the merge builds its columns from numpy buffers
    (pa.array of a numpy array, Arrow's to_numpy, pq.read_table would import it)."""
    folders, _ = _shards(tmp_path, [400, 300], 100)
    _instances(folders)
    code = f"""
import sys
from pathlib import Path
import numpy as np
from simkv.shard_merge import merge_instances, merge_requests, write_keys
folders = [Path(p) for p in {[str(f) for f in folders]!r}]
write_keys(folders[0] / "requests.parquet", np.arange(1000), Path({str(tmp_path)!r}))
merge_requests(folders, Path({str(tmp_path / "m.parquet")!r}), {{b"k": b"v"}}, 128)
merge_instances(folders, Path({str(tmp_path / "i.parquet")!r}), {{b"k": b"v"}})
print("pandas" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert pq.read_metadata(tmp_path / "m.parquet").num_rows == 700
    assert pq.read_metadata(tmp_path / "i.parquet").num_rows == 110
    assert len(np.load(tmp_path / "gid.npy")) == 400


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_merge_order_is_lexsorts(seed: int) -> None:
    """The rows' order (time, then id) as np.lexsort gives it, on keys with many equal
    times, NaN, -0.0 beside 0.0, shards' runs already sorted or not."""
    rng = np.random.default_rng(seed)
    n = 5000
    when = rng.integers(0, 300, n) / 4.0
    when[rng.random(n) < 0.03] = np.nan
    when[rng.random(n) < 0.03] = -0.0
    when[rng.random(n) < 0.03] = 0.0
    if seed:  # two shards' runs, each in time order
        when = np.concatenate([np.sort(when[:3000]), np.sort(when[3000:])])
    gid = rng.permutation(10 * n)[:n]
    np.testing.assert_array_equal(_order(when, gid), np.lexsort((gid, when)))
    np.testing.assert_array_equal(_order(np.zeros(0), np.zeros(0, np.int64)), np.zeros(0, np.int64))

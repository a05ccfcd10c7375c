"""The shards' tables merged into one dataset, with the whole cluster's ids (simkv/shard.py).

Each shard, in its own process and in parallel with the others, ends its run by writing the
sort key of each of its rows (``write_keys``: when the row was recorded, and its request id in
the whole run), so the parent reads no column of a shard's table to order the rows; the
parent's serial work is to gather the rows in that order and write them, one row group at a
time (``merge_requests``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from simkv.columns import array, equal, to_numpy
from simkv.metrics import schema

# Columns of requests.parquet that name an instance (-1: none), renumbered to the cluster's.
INSTANCE_COLUMNS = ("replica", "prefill_replica", "first_token_replica")


def write_keys(requests: Path, ids: np.ndarray, folder: Path) -> None:
    """``folder/when.npy`` and ``folder/gid.npy``: for each row of a shard's ``requests``
    table, in row order, the time it was recorded (completion, or arrival for a request
    that did not finish) and its request id in the whole run (``ids`` maps the shard's own
    ids to those). Streamed a row group at a time, straight to the files: reading the four
    columns whole took 350-500 MB more at 5M rows (a shard's peak RSS 755-848 MiB). Read by
    row group (iter_batches grew the process by 126 MiB at 1M rows, this by 45), status as
    its dictionary (compared by code), columns through simkv.columns (Arrow's to_numpy
    imports pandas): 0.10-0.14 CPU s per 1M rows against 0.35-0.48."""
    f = pq.ParquetFile(requests, read_dictionary=["status"])
    n = f.metadata.num_rows
    with open(folder / "when.npy", "wb") as w, open(folder / "gid.npy", "wb") as g:
        for fh, dtype in ((w, np.float64), (g, np.int64)):
            np.lib.format.write_array_header_1_0(fh, {
                "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
                "shape": (n,)})
        for i in range(f.num_row_groups):
            b = f.read_row_group(i, columns=["status", "completion_s", "arrival_s", "request_id"],
                                 use_threads=False)
            done = equal(b.column("status"), "finished")
            w.write(np.where(done, to_numpy(b.column("completion_s")),
                             to_numpy(b.column("arrival_s"))).astype(np.float64).tobytes())
            g.write(ids[to_numpy(b.column("request_id"))].astype(np.int64).tobytes())


# Columns gathered in numpy: fixed-width types as numpy holds them.
_FIXED = {pa.int32(): np.dtype(np.int32), pa.int64(): np.dtype(np.int64),
          pa.float64(): np.dtype(np.float64)}


def _gather(chunks: list[pa.Array], pieces: list[tuple[int, np.ndarray, np.ndarray]],
            field: pa.Field, n: int, take: pa.Array) -> pa.Array:
    """One output column: row ``pos`` of the group is row ``loc`` of ``chunks[k]``, for each
    ``(k, pos, loc)`` of ``pieces``. Fixed-width values without nulls are copied in numpy
    straight from the chunks' buffers to their places (no concatenation, no pandas); strings,
    booleans and columns with nulls go through Arrow's take (``take``: the rows' index in
    the chunks laid end to end)."""
    dtype = _FIXED.get(field.type)
    if dtype is None or any(c.null_count for c in chunks):
        return pa.chunked_array(chunks, field.type).take(take).combine_chunks()
    values = np.empty(n, dtype)
    for k, pos, loc in pieces:
        values[pos] = to_numpy(chunks[k])[loc]
    return pa.Array.from_buffers(field.type, n, [None, pa.py_buffer(values)])


def _renumber(col: pa.Array, sh: np.ndarray, shards: int) -> pa.Array:
    """Instance ids of rows from shards ``sh`` (one per row) as the cluster's: shard s's
    instance i is the cluster's instance s + shards * i; -1 (none) and nulls stay."""
    v = to_numpy(col)  # float64, NaN where null, if any null
    valid = None
    if col.null_count:
        valid = ~np.isnan(v)
        v = np.where(valid, v, -1).astype(np.int64)
    v = np.where(v >= 0, sh + shards * v.astype(np.int64), v).astype(np.int32)
    bitmap = None if valid is None else pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(pa.int32(), len(v), [bitmap, pa.py_buffer(v)],
                                 null_count=col.null_count)


def _order(when: np.ndarray, gid: np.ndarray) -> np.ndarray:
    """``np.lexsort((gid, when))``: the rows by time, equal times by id. A stable sort by
    time alone (timsort: each shard's rows are already in time order, so it merges k runs),
    then only the rows whose time another row shares sorted again by (time, id): 0.19-0.23
    CPU s against 0.52-0.54 at 5M rows. NaN times (last, like lexsort's) count as equal."""
    order = np.argsort(when, kind="stable")
    t = when[order]
    same = (t[1:] == t[:-1]) | (np.isnan(t[1:]) & np.isnan(t[:-1]))
    if same.any():
        tied = np.zeros(len(order), bool)
        tied[1:] |= same
        tied[:-1] |= same
        at = np.flatnonzero(tied)
        rows = order[at]
        order[at] = rows[np.lexsort((gid[rows], t[at]))]
    return order


def merge_requests(folders: list[Path], out: Path, metadata: dict[bytes, bytes],
                   row_group: int) -> int:
    """The shards' requests.parquet (shard s's in ``folders[s]``, with its keys) -> one table
    at ``out`` in (record time, request id) order; returns its row count.

    Streamed: the order comes from the keys (16 bytes a row, plus 8 for the order), and each
    output row group takes its rows from the few row groups of each shard that hold them (a
    shard's rows are almost in time order already), each read once, so memory stays a few
    row groups beside the keys. A row's request id is its key's (the shards' own id column
    is not read); its instance ids are renumbered as the group is gathered."""
    shards = len(folders)
    files = [pq.ParquetFile(f / "requests.parquet") for f in folders]
    gid = np.concatenate([np.load(f / "gid.npy") for f in folders])
    sizes = np.array([f.metadata.num_rows for f in files])
    if sizes.sum() != len(gid):
        raise ValueError(f"the shards' keys count {len(gid)} rows, their tables {sizes.sum()}")
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    when = np.concatenate([np.load(f / "when.npy") for f in folders])
    order = _order(when, gid)
    del when
    starts = [np.cumsum([0] + [f.metadata.row_group(i).num_rows for i in range(f.num_row_groups)])
              for f in files]
    out_schema = schema.REQUESTS.with_metadata(metadata)
    read = [name for name in out_schema.names if name != "request_id"]
    cache: dict[tuple[int, int], pa.Table] = {}
    with pq.ParquetWriter(out, out_schema, compression="zstd",
                          use_dictionary=schema.dictionary_columns(out_schema)) as w:
        for c in range(0, len(order), row_group):
            o = order[c:c + row_group]
            n = len(o)
            sh = np.searchsorted(bounds, o, side="right") - 1
            lo = o - bounds[sh]
            tables: list[pa.Table] = []
            pieces: list[tuple[int, np.ndarray, np.ndarray]] = []
            take = np.empty(n, np.int64)
            offset = 0
            for s in np.unique(sh).tolist():
                pos = np.flatnonzero(sh == s)
                group = np.searchsorted(starts[s], lo[pos], side="right") - 1
                first, last = int(group.min()), int(group.max())
                for key in [k for k in cache if k[0] == s and k[1] < first]:
                    del cache[key]
                for g in range(first, last + 1):
                    if starts[s][g] == starts[s][g + 1]:
                        continue  # an empty row group: no rows, and no chunk to count
                    if (s, g) not in cache:
                        # One chunk per column: piece k is chunk k of every column.
                        cache[(s, g)] = files[s].read_row_group(g, columns=read).combine_chunks()
                    here = group == g
                    if here.any():
                        pieces.append((len(tables), pos[here], lo[pos[here]] - starts[s][g]))
                    tables.append(cache[(s, g)])
                take[pos] = offset + lo[pos] - starts[s][first]
                offset += int(starts[s][last + 1] - starts[s][first])
            take_arr = pa.Array.from_buffers(pa.int64(), n, [None, pa.py_buffer(take)])
            cols = []
            for field in out_schema:
                if field.name == "request_id":
                    cols.append(pa.Array.from_buffers(pa.int64(), n, [None, pa.py_buffer(gid[o])]))
                    continue
                chunks = [ch for t in tables for ch in t.column(field.name).chunks]
                col = _gather(chunks, pieces, field, n, take_arr)
                cols.append(_renumber(col, sh, shards) if field.name in INSTANCE_COLUMNS else col)
            w.write_table(pa.Table.from_arrays(cols, schema=out_schema), row_group_size=row_group)
        w.add_key_value_metadata({"simkv.status": "complete", "simkv.rows": str(len(order))})
    return len(order)


def merge_instances(folders: list[Path], out: Path, metadata: dict[bytes, bytes],
                    actions: list[np.ndarray] | None = None) -> None:
    """The shards' instances.parquet -> one, the cluster's instance ids, in (time, instance)
    order; ``actions[s]`` maps shard s's scaling action numbers to the cluster's (-1, the
    initial instances, stays). Read and built through Arrow's buffers: pq.read_table and
    pa.array of a numpy array would import pandas (0.2 CPU s), which nothing else in the
    parent's merge needs."""
    shards = len(folders)
    tables = []
    for s, folder in enumerate(folders):
        t = pq.ParquetFile(folder / "instances.parquet").read()
        v = to_numpy(t.column("instance"))
        t = t.set_column(t.schema.get_field_index("instance"), "instance",
                         array((s + shards * v).astype(np.int32), pa.int32()))
        if actions is not None:
            lookup = np.concatenate([[-1], actions[s]]).astype(np.int32)  # -1 -> -1
            t = t.set_column(t.schema.get_field_index("action"), "action",
                             array(lookup[to_numpy(t.column("action")) + 1], pa.int32()))
        tables.append(t)
    table = pa.concat_tables(tables)
    order = np.lexsort((to_numpy(table.column("instance")), to_numpy(table.column("time_s"))))
    table = table.take(array(order, pa.int64())).replace_schema_metadata(
        schema.INSTANCES.with_metadata(metadata).metadata)
    with pq.ParquetWriter(out, table.schema, compression="zstd",
                          use_dictionary=schema.dictionary_columns(table.schema)) as w:
        w.write_table(table)
        w.add_key_value_metadata({"simkv.status": "complete", "simkv.rows": str(table.num_rows)})

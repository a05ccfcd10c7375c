"""Writing simkv's native trace format (Parquet), from any stream of request columns."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from simkv.workload.base import ArrivalBatch

SCHEMA = pa.schema([
    ("arrival_s", pa.float64()),
    ("prompt_tokens", pa.int32()),
    ("output_tokens", pa.int32()),
    ("session", pa.int64()),
    ("turn", pa.int32()),
    ("think_s", pa.float64()),
    ("model", pa.string()),
    ("log_type", pa.string()),
    ("failed", pa.bool_()),
    ("prefix_hashes", pa.list_(pa.int64())),
], metadata={b"simkv.trace_version": b"1"})


def batch_table(b: ArrivalBatch, think_s: np.ndarray | None = None) -> pa.Table:
    n = len(b)
    return pa.Table.from_arrays([
        pa.array(b.arrival_s, pa.float64()),
        pa.array(b.prompt_tokens, pa.int32()),
        pa.array(b.output_tokens, pa.int32()),
        pa.array(b.session if b.session is not None else np.full(n, -1), pa.int64()),
        pa.array(b.turn if b.turn is not None else np.zeros(n), pa.int32()),
        pa.array(think_s if think_s is not None else np.zeros(n), pa.float64()),
        pa.array(b.model or [""] * n, pa.string()),
        pa.array(b.log_type or [""] * n, pa.string()),
        pa.array(b.failed if b.failed is not None else np.zeros(n, bool), pa.bool_()),
        pa.array(b.prefix or [None] * n, pa.list_(pa.int64())),
    ], schema=SCHEMA)


def write_trace(path: str | Path, batches: Iterable[tuple[ArrivalBatch, np.ndarray | None]],
                granule_tokens: int | None = None) -> int:
    """Write (batch, think times) pairs to a native Parquet trace; returns the row count.

    ``granule_tokens``: the block size the prefix hashes stand for, recorded in the file so
    a replay with another ``kv.prefix_block_tokens`` is refused instead of sharing wrongly.
    """
    rows = 0
    schema = SCHEMA
    if granule_tokens:
        schema = SCHEMA.with_metadata({**SCHEMA.metadata,
                                       b"simkv.prefix_block_tokens": str(granule_tokens).encode()})
    with pq.ParquetWriter(path, schema, compression="zstd") as w:
        for b, think in batches:
            if len(b):
                w.write_table(batch_table(b, think).replace_schema_metadata(schema.metadata))
                rows += len(b)
    return rows

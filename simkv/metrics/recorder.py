"""Record results by columns in the hot loop; write Arrow row groups as they fill.

Appending to Python lists costs tens of nanoseconds; building Arrow arrays happens once per
row group. The writer is opened on the first flush with the explicit schema and the run's
metadata (config JSON, its hash, seed, versions), so every file says what produced it. Files
are written under their partial name and renamed only when the run completes (simkv/output.py).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from simkv.columns import array as arrow_array
from simkv.entities.request import FAILED, REJECTED, Request
from simkv.kv.links import Transfer
from simkv.metrics import schema
from simkv.output import held_signals, partial

# Buffered rows are moved into the columns every this many rows, while their values are
# still in the CPU's caches. Transposed once per row group (65,536 rows), zip read every value
# back from memory: 0.12 CPU s of the 0.27 that writing Vidur's 100k requests took.
TRANSPOSE_EVERY = 256


class TableWriter:
    """Column buffers for one schema, streamed to one Parquet file in row groups.

    The file is ``NAME.partial.parquet`` until ``close(complete=True)`` renames it to
    ``NAME.parquet``; its footer says ``simkv.status`` either way.
    """

    def __init__(self, path: Path, arrow_schema: pa.Schema, metadata: dict[bytes, bytes],
                 row_group_size: int) -> None:
        self.path = path
        self.partial_path = partial(path)
        self.schema = arrow_schema.with_metadata(metadata)
        self.row_group_size = row_group_size
        self._discard()
        self.rows = 0
        self.closed = False
        self._writer: pq.ParquetWriter | None = None

    def append(self, row: tuple[Any, ...]) -> None:
        self.buffer.append(row)
        if len(self.buffer) >= self.transpose_at:
            self._transpose()

    def _transpose(self) -> None:
        """Move the buffered rows into the columns; write a row group once they hold one."""
        if self.buffer:
            # Transposed whole before any column is extended: a row of the wrong width is
            # refused with every column as it was.
            try:
                values = list(zip(*self.buffer, strict=True))
            except ValueError:
                values = []
            if len(values) != len(self.columns):
                widths = sorted({len(row) for row in self.buffer})
                raise ValueError(f"{self.path.name}: rows of {widths} values for "
                                 f"{len(self.columns)} columns")
            # NOTE: signals held: a column extended and the next not would misalign them.
            with held_signals():
                for col, column_values in zip(self.columns, values, strict=True):
                    col.extend(column_values)
                self.pending += len(self.buffer)
                self.buffer = []
        if self.pending >= self.row_group_size:
            self.flush()
        else:
            self.transpose_at = min(TRANSPOSE_EVERY, self.row_group_size - self.pending)

    def flush(self) -> None:
        if self.buffer:
            self._transpose()
            if not self.pending:  # (written by the row group the transposition filled)
                return
        if not self.pending and self._writer is not None:
            return
        table = pa.Table.from_arrays(
            # NOTE: not pa.array, which imports pandas (simkv/columns.py).
            [arrow_array(c, f.type) for c, f in zip(self.columns, self.schema, strict=True)],
            schema=self.schema,
        )
        # NOTE: Ctrl-C or SIGTERM wait until the row group is written and counted: raised in
        # between, the rows would be written twice, or counted but not written.
        with held_signals():
            if self._writer is None:
                self._writer = pq.ParquetWriter(self.partial_path, self.schema, compression="zstd",
                                                use_dictionary=schema.dictionary_columns(self.schema))
            self._writer.write_table(table, row_group_size=self.row_group_size)
            self.rows += self.pending
            self._discard()

    def _discard(self) -> None:
        """Forget the rows not yet written (empty buffers)."""
        # NOTE: rows as tuples, transposed every TRANSPOSE_EVERY rows: one list.append per row
        # is several times cheaper than one per column.
        self.buffer: list[tuple[Any, ...]] = []
        self.columns: list[list[Any]] = [[] for _ in self.schema]
        self.pending = 0  # rows in the columns, not yet written
        self.transpose_at = min(TRANSPOSE_EVERY, self.row_group_size)

    def close(self, complete: bool = True) -> None:
        """Write what is buffered and the footer; a complete file takes its final name.

        A run that failed closes with ``complete=False``: whatever can be written is, and the
        file keeps its partial name. If the buffer itself cannot be written (a value its
        column cannot hold), the row groups already written are still closed properly.
        """
        if self.closed:
            return
        self.closed = True
        try:
            self.flush()
        except BaseException:
            self._discard()
            complete = False
            if self._writer is None:
                self.flush()  # an empty file with the schema, still marked partial
            raise
        finally:
            if self._writer is not None:
                self._writer.add_key_value_metadata(
                    {"simkv.status": "complete" if complete else "partial",
                     "simkv.rows": str(self.rows)})
                self._writer.close()
                self._writer = None
        if complete:
            os.replace(self.partial_path, self.path)


class Recorder:
    """What the engine reports: finished and rejected requests, optionally iterations."""

    def __init__(self, out_dir: Path, metadata: dict[bytes, bytes], row_group_size: int,
                 iterations: bool, ttft_slo: float, tpot_slo: float,
                 transfers: bool = False) -> None:
        self.requests = TableWriter(out_dir / "requests.parquet", schema.REQUESTS, metadata,
                                    row_group_size)
        self.iterations = (TableWriter(out_dir / "iterations.parquet", schema.ITERATIONS,
                                       metadata, row_group_size) if iterations else None)
        self.transfers = (TableWriter(out_dir / "transfers.parquet", schema.TRANSFERS,
                                      metadata, row_group_size) if transfers else None)
        self.instances = TableWriter(out_dir / "instances.parquet", schema.INSTANCES, metadata,
                                     row_group_size)
        self.ttft_slo = ttft_slo
        self.tpot_slo = tpot_slo
        self.finished = 0
        self.rejected = 0
        self.pool_names: list[str] = []
        # Whether the last finished request met both SLOs (the pools' counters read it).
        self.last_slo_met = False

    def request(self, r: Request) -> None:
        if r.state is REJECTED or r.state is FAILED:
            self.rejected += 1
            nan = math.nan
            row = (r.id, r.session, r.turn, r.model, r.log_type, r.replica,
                   self.pool_names[r.pool] if r.pool >= 0 else "",
                   "rejected" if r.state is REJECTED else "failed",
                   r.reject_reason, r.arrival,
                   nan, nan, nan, r.prompt_tokens, r.output_tokens, 0, 0, 0, 0, 0, 0.0, 0,
                   nan, nan, nan, False, r.prefill_replica, nan, r.priority, r.migrations,
                   r.migration_pause, -1)
        else:
            self.finished += 1
            ttft = r.first_token - r.arrival
            e2e = r.finish - r.arrival
            tpot = ((r.finish - r.first_token) / (r.output_tokens - 1)
                    if r.output_tokens > 1 else 0.0)
            met = ttft <= self.ttft_slo and tpot <= self.tpot_slo
            self.last_slo_met = met
            row = (r.id, r.session, r.turn, r.model, r.log_type, r.replica,
                   self.pool_names[r.pool], "finished", "", r.arrival,
                   r.first_scheduled, r.first_token, r.finish, r.prompt_tokens,
                   r.output_tokens, r.cached_tokens, r.cached_hbm,
                   r.cached_dram, r.cached_disk, r.cached_remote, r.kv_wait, r.preemptions,
                   ttft, tpot, e2e, met, r.prefill_replica, r.kv_transfer, r.priority,
                   r.migrations, r.migration_pause,
                   r.first_token_replica if r.first_token_replica >= 0 else r.replica)
        self.requests.append(row)

    def transfer(self, t: Transfer) -> None:
        assert self.transfers is not None
        self.transfers.append((t.start, t.end, t.nbytes, t.what, ",".join(lk.name for lk in t.links)))

    def instance(self, row: tuple) -> None:
        self.instances.append(row)

    def close(self, complete: bool = True) -> None:
        """Close every table; all are closed even if one fails (the first error is raised)."""
        error: BaseException | None = None
        for table in (self.requests, self.instances, self.iterations, self.transfers):
            if table is None:
                continue
            try:
                table.close(complete and error is None)
            except BaseException as exc:
                error = error or exc
        if error is not None:
            raise error

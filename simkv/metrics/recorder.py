"""Record results by columns in the hot loop; write Arrow row groups as they fill.

Appending to Python lists costs tens of nanoseconds; building Arrow arrays happens once per
row group. The writer is opened on the first flush with the explicit schema and the run's
metadata (config JSON, its hash, seed, versions), so every file says what produced it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from simkv.entities.request import Request, State
from simkv.kv.links import Transfer
from simkv.metrics import schema


class TableWriter:
    """Column buffers for one schema, streamed to one Parquet file in row groups."""

    def __init__(self, path: Path, arrow_schema: pa.Schema, metadata: dict[bytes, bytes],
                 row_group_size: int) -> None:
        self.path = path
        self.schema = arrow_schema.with_metadata(metadata)
        self.row_group_size = row_group_size
        # NOTE: rows as tuples, transposed once per row group: one list.append per row is
        # several times cheaper than one per column.
        self.buffer: list[tuple[Any, ...]] = []
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None

    def append(self, row: tuple[Any, ...]) -> None:
        self.buffer.append(row)
        if len(self.buffer) >= self.row_group_size:
            self.flush()

    def flush(self) -> None:
        if not self.buffer and self._writer is not None:
            return
        self.rows += len(self.buffer)
        columns = list(zip(*self.buffer, strict=True)) or [() for _ in self.schema]
        table = pa.Table.from_arrays(
            [pa.array(c, type=f.type) for c, f in zip(columns, self.schema, strict=True)],
            schema=self.schema,
        )
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, self.schema, compression="zstd")
        self._writer.write_table(table, row_group_size=self.row_group_size)
        self.buffer = []

    def close(self) -> None:
        self.flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None


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
        if r.state is State.REJECTED:
            self.rejected += 1
            nan = math.nan
            row = (r.id, r.session, r.turn, r.model, r.log_type, r.replica,
                   self.pool_names[r.pool] if r.pool >= 0 else "", "rejected",
                   r.reject_reason, r.arrival,
                   nan, nan, nan, r.prompt_tokens, r.output_tokens, 0, 0, 0, 0, 0, 0.0, 0,
                   nan, nan, nan, False, r.prefill_replica, nan)
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
                   r.output_tokens, r.cached_hbm + r.cached_dram + r.cached_disk, r.cached_hbm,
                   r.cached_dram, r.cached_disk, r.cached_remote, r.kv_wait, r.preemptions,
                   ttft, tpot, e2e, met, r.prefill_replica, r.kv_transfer)
        self.requests.append(row)

    def transfer(self, t: Transfer) -> None:
        assert self.transfers is not None
        self.transfers.append((t.start, t.end, t.nbytes, t.what, ",".join(lk.name for lk in t.links)))

    def instance(self, row: tuple) -> None:
        self.instances.append(row)

    def close(self) -> None:
        self.requests.close()
        self.instances.close()
        if self.iterations is not None:
            self.iterations.close()
        if self.transfers is not None:
            self.transfers.close()

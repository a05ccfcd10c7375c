"""Replay a trace file: Parquet or CSV with ``arrival_s, prompt_tokens, output_tokens``.

Optional columns ``session`` and ``turn`` are carried into the results. The file is read in
record batches (pyarrow), so a 10M-row trace is never held as Python objects. Bad rows fail
with the file, the row number (1-based, data rows) and the column, or are skipped and
counted when ``on_bad_row: skip``. docs/TRACE_FORMAT.md documents the format.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from simkv.registry import register
from simkv.workload.base import ArrivalBatch, OpenLoop

REQUIRED = ("arrival_s", "prompt_tokens", "output_tokens")
# Rows per Parquet batch and bytes per CSV block read at a time (memory stays bounded).
BATCH_ROWS = 65536
CSV_BLOCK_BYTES = 1 << 22
OPTIONAL = ("session", "turn")


class TraceError(ValueError):
    """A trace file does not match the format; the message names file, row and column."""


@dataclass(slots=True)
class TraceWorkloadConfig:
    path: str = "???"
    # Replay k times faster (arrival times divided by k).
    speedup: float = 1.0
    # Only the first n requests (0 = all).
    limit: int = 0
    # 'error' stops at the first bad row; 'skip' drops it and counts it in the summary.
    on_bad_row: str = "error"

    def __post_init__(self) -> None:
        if not self.speedup > 0:
            raise ValueError("workload.speedup must be > 0")
        if self.on_bad_row not in ("error", "skip"):
            raise ValueError(f"workload.on_bad_row must be 'error' or 'skip', got {self.on_bad_row!r}")


def _batches(path: Path) -> Iterator[pa.RecordBatch]:
    if path.suffix == ".parquet":
        yield from pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS)
        return
    # Read every column as text; numbers are checked below so errors can name the row.
    read = pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES)
    names = pacsv.open_csv(path, read_options=read).schema.names
    opts = pacsv.ConvertOptions(column_types={n: pa.string() for n in names})
    yield from pacsv.open_csv(path, read_options=read, convert_options=opts)


@register("workload", "trace", TraceWorkloadConfig)
class TraceWorkload(OpenLoop):
    def __init__(self, cfg: TraceWorkloadConfig, **_: object) -> None:
        self.cfg = cfg
        self.path = Path(cfg.path)
        self.skipped_rows = 0

    def expected_requests(self) -> int | None:
        if self.path.suffix == ".parquet" and self.path.is_file():
            rows = pq.ParquetFile(self.path).metadata.num_rows
            return min(rows, self.cfg.limit) if self.cfg.limit else rows
        return self.cfg.limit or None

    def arrivals(self, rng: np.random.Generator) -> Iterator[ArrivalBatch]:
        if not self.path.is_file():
            raise TraceError(f"{self.path}: trace file not found")
        row0 = 0  # data rows seen before this batch
        last = -np.inf
        left = self.cfg.limit or -1
        for batch in _batches(self.path):
            cols = batch.schema.names
            missing = [c for c in REQUIRED if c not in cols]
            if missing:
                raise TraceError(
                    f"{self.path}: missing column(s) {missing}; expected {list(REQUIRED)}"
                    f" (optional {list(OPTIONAL)}), found {cols}"
                )
            arrays = {c: self._numbers(batch.column(c), c, row0) for c in REQUIRED}
            for c in OPTIONAL:
                if c in cols:
                    arrays[c] = self._numbers(batch.column(c), c, row0)
            ok = self._check(arrays, row0, last)
            if not ok.all():
                self.skipped_rows += int((~ok).sum())
                arrays = {c: a[ok] for c, a in arrays.items()}
            row0 += batch.num_rows
            if not len(arrays["arrival_s"]):
                continue
            if left >= 0:
                arrays = {c: a[:left] for c, a in arrays.items()}
                left -= len(arrays["arrival_s"])
            last = float(arrays["arrival_s"][-1])
            yield ArrivalBatch(
                arrival_s=arrays["arrival_s"] / self.cfg.speedup,
                prompt_tokens=arrays["prompt_tokens"].astype(np.int64),
                output_tokens=arrays["output_tokens"].astype(np.int64),
                session=arrays["session"].astype(np.int64) if "session" in arrays else None,
                turn=arrays["turn"].astype(np.int64) if "turn" in arrays else None,
            )
            if left == 0:
                return

    def _numbers(self, col: pa.ChunkedArray | pa.Array, name: str, row0: int) -> np.ndarray:
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            stripped = pc.utf8_trim_whitespace(col)
            try:
                col = pc.cast(stripped, pa.float64())
            except pa.ArrowInvalid:
                # Find the first row that is not a number, to name it.
                for i, value in enumerate(stripped.to_pylist()):
                    try:
                        float(value)
                    except (TypeError, ValueError):
                        if self.cfg.on_bad_row == "skip":
                            break
                        got = "an empty cell" if value in ("", None) else repr(value)
                        raise TraceError(
                            f"{self.path}: row {row0 + i + 1}, column '{name}': expected a "
                            f"number, got {got}"
                        ) from None
                # Skipping: unparsable values become NaN and are dropped by _check.
                col = pa.array([_to_float(v) for v in stripped.to_pylist()], pa.float64())
        return np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)

    def _check(self, a: dict[str, np.ndarray], row0: int, last: float) -> np.ndarray:
        """Mask of good rows; raises on the first bad one unless skipping."""
        ok = np.ones(len(a["arrival_s"]), dtype=bool)
        problems: list[tuple[int, str, str]] = []
        t = a["arrival_s"]
        for c in REQUIRED:
            bad = ~np.isfinite(a[c])
            if bad.any():
                i = int(np.argmax(bad))
                problems.append((i, c, f"a finite number, got {a[c][i]}"))
                ok &= ~bad
        for c in ("prompt_tokens", "output_tokens"):
            v = a[c]
            bad = np.isfinite(v) & ((v < 1) | (v != np.floor(v)))
            if bad.any():
                i = int(np.argmax(bad))
                problems.append((i, c, f"a whole number >= 1, got {v[i]}"))
                ok &= ~bad
        bad_t = np.isfinite(t) & (t < 0)
        if bad_t.any():
            i = int(np.argmax(bad_t))
            problems.append((i, "arrival_s", f"a time >= 0, got {t[i]}"))
            ok &= ~bad_t
        # Time must not go back, across batches too: compare with the latest good time.
        good_t = np.where(ok, t, -np.inf)
        latest = np.maximum.accumulate(np.concatenate(([last], good_t)))[:-1]
        back = ok & (t < latest)
        if back.any():
            i = int(np.argmax(back))
            problems.append((i, "arrival_s",
                             f"non-decreasing times, got {t[i]} after {latest[i]}"))
            ok &= ~back
        if problems and self.cfg.on_bad_row == "error":
            i, c, what = min(problems)
            raise TraceError(f"{self.path}: row {row0 + i + 1}, column '{c}': expected {what}")
        return ok


def _to_float(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")

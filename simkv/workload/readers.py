"""Readers of real trace formats, all yielding the same validated column batches.

Each reader maps its file's columns onto simkv's trace model (docs/TRACE_FORMAT.md) and
streams the file in batches, so a 10M-row trace is never a list of Python objects. Every
value is checked; a bad one is reported with the file, the 1-based data row and the file's
*own* column name (``row 7, column 'Request tokens'``), or skipped and counted.

Formats:

* ``native``: simkv's own Parquet or CSV (``arrival_s, prompt_tokens, output_tokens`` and
  optional ``session, turn, model, log_type, think_s``).
* ``burstgpt``: the BurstGPT release CSVs. Files 1-2: ``Timestamp, Model, Request tokens,
  Response tokens, Total tokens, Log Type``; file 3 adds ``Session ID, Elapsed time``.
  ``Response tokens == 0`` marks a failed request; a zero-token prompt is served as one token.
* ``azure``: Azure LLM inference trace 2023 (``TIMESTAMP, ContextTokens, GeneratedTokens``).
* ``mooncake``: Mooncake FAST'25 JSONL (``timestamp`` in ms, ``input_length``,
  ``output_length``, ``hash_ids`` of 512-token prefix blocks).
* ``agent``: agent LLM-call spans as JSONL (``session_id, span_index, start_time_s,
  end_time_s, input_tokens, output_tokens``), as in the Exgentic SWE-bench traces; the tool
  time before a call is the gap since the previous call of its program ended.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

# Rows per Parquet batch and bytes per CSV/JSON block read at a time (memory stays bounded).
BATCH_ROWS = 65536
CSV_BLOCK_BYTES = 1 << 22

FORMATS = ("native", "burstgpt", "azure", "mooncake", "agent")


class TraceError(ValueError):
    """A trace file does not match its format; the message names file, row and column."""


@dataclass(slots=True)
class Columns:
    """One validated batch in trace-model columns (numpy arrays, lists for strings)."""

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    session: np.ndarray | None = None
    turn: np.ndarray | None = None
    model: list[str] | None = None
    log_type: list[str] | None = None
    failed: np.ndarray | None = None
    think_s: np.ndarray | None = None
    prefix: list[tuple[int, ...] | None] | None = None
    # Data rows of the file this batch covered (before dropping bad ones).
    rows: int = 0
    skipped: int = 0

    def select(self, keep: np.ndarray) -> Columns:
        """The rows at ``keep``: a boolean mask, or indices (in the order given)."""
        pos = np.flatnonzero(keep) if keep.dtype == bool else keep
        pick = pos.tolist()

        def a(x: np.ndarray | None) -> np.ndarray | None:
            return None if x is None else x[pos]

        def lst(x: list | None) -> list | None:
            return None if x is None else [x[i] for i in pick]

        return Columns(self.arrival_s[pos], self.prompt_tokens[pos], self.output_tokens[pos],
                       a(self.session), a(self.turn), lst(self.model), lst(self.log_type),
                       a(self.failed), a(self.think_s), lst(self.prefix), self.rows, self.skipped)


@dataclass(slots=True)
class _Validator:
    """Checks numbers batch by batch, remembering the last good time across batches."""

    path: Path
    skip_bad: bool
    last_time: float = -np.inf
    row0: int = 0
    problems: list[tuple[int, str, str]] = field(default_factory=list)
    # Opaque session ids numbered by first appearance, per file read.
    sessions: dict[str, int] = field(default_factory=dict)

    def session_number(self, s: str) -> int:
        if not s:
            return -1
        n = self.sessions.get(s)
        if n is None:
            n = self.sessions[s] = len(self.sessions)
        return n

    def fail_or_mask(self, n: int) -> np.ndarray:
        ok = np.ones(n, dtype=bool)
        if self.problems and not self.skip_bad:
            i, col, what = min(self.problems)
            raise TraceError(f"{self.path}: row {self.row0 + i + 1}, column '{col}': expected {what}")
        for i, _, _ in self.problems:
            ok[i] = False
        return ok

    def numbers(self, col: pa.ChunkedArray | pa.Array, name: str) -> np.ndarray:
        """Floats of a column; text that is not a number is a problem (NaN if skipped)."""
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            stripped = pc.utf8_trim_whitespace(col)
            try:
                col = pc.cast(stripped, pa.float64())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                values = stripped.to_pylist()
                out = np.empty(len(values))
                for i, value in enumerate(values):
                    try:
                        out[i] = float(value)
                    except (TypeError, ValueError):
                        out[i] = np.nan
                        got = "an empty cell" if value in ("", None) else repr(value)
                        self.problems.append((i, name, f"a number, got {got}"))
                return out
        elif not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)
                  or pa.types.is_null(col.type)):
            raise TraceError(f"{self.path}: column '{name}': expected numbers, found {col.type}")
        arr = np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)
        bad = np.isnan(arr)
        for i in np.flatnonzero(bad)[:1]:
            self.problems.append((int(i), name, "a number, got an empty cell"))
        return arr

    def tokens(self, v: np.ndarray, name: str, minimum: int) -> None:
        bad = np.isfinite(v) & ((v < minimum) | (v != np.floor(v)))
        for i in np.flatnonzero(bad)[:1]:
            self.problems.append((int(i), name, f"a whole number >= {minimum}, got {v[i]:g}"))
        for i in np.flatnonzero(np.isinf(v))[:1]:
            self.problems.append((int(i), name, f"a finite number, got {v[i]}"))

    def times(self, t: np.ndarray, name: str) -> None:
        for i in np.flatnonzero(np.isinf(t))[:1]:
            self.problems.append((int(i), name, f"a finite time, got {t[i]}"))
        bad = np.isfinite(t) & (t < 0)
        for i in np.flatnonzero(bad)[:1]:
            self.problems.append((int(i), name, f"a time >= 0, got {t[i]:g}"))
        # Time must not go back, across batches too: compare with the latest earlier time.
        bad_rows = {i for i, _, _ in self.problems}
        good = np.where(np.isfinite(t) & (t >= 0), t, -np.inf)
        if bad_rows:
            good[list(bad_rows)] = -np.inf
        latest = np.maximum.accumulate(np.concatenate(([self.last_time], good)))[:-1]
        back = np.isfinite(t) & (t < latest)
        for i in np.flatnonzero(back)[:1]:
            self.problems.append((int(i), name, f"non-decreasing times, got {t[i]:g} after {latest[i]:g}"))

    def finish(self, cols: Columns, n: int) -> Columns:
        """Apply the problems found in this batch: raise, or drop the bad rows."""
        ok = self.fail_or_mask(n)
        self.problems = []
        cols.rows = n
        cols.skipped = int((~ok).sum())
        out = cols if ok.all() else cols.select(ok)
        if len(out.arrival_s):
            self.last_time = max(self.last_time, float(out.arrival_s.max()))
        self.row0 += n
        return out


# --- batch sources -----------------------------------------------------------------------
def _csv_batches(path: Path) -> Iterator[pa.RecordBatch]:
    read = pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES)
    try:
        names = pacsv.open_csv(path, read_options=read).schema.names
        conv = pacsv.ConvertOptions(column_types={n: pa.string() for n in names})
        yield from pacsv.open_csv(path, read_options=read, convert_options=conv)
    except pa.ArrowInvalid as exc:
        raise TraceError(f"{path}: not a readable CSV file: {exc}") from exc


def _table_batches(path: Path) -> Iterator[pa.RecordBatch]:
    if path.suffix == ".parquet":
        yield from pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS)
    else:
        yield from _csv_batches(path)


def _jsonl_batches(path: Path) -> Iterator[pa.RecordBatch]:
    try:
        reader = pajson.open_json(path, read_options=pajson.ReadOptions(block_size=CSV_BLOCK_BYTES))
        yield from reader
    except pa.ArrowInvalid:
        # Find the offending line to name it.
        with path.open() as f:
            for i, line in enumerate(f, 1):
                try:
                    json.loads(line)
                except json.JSONDecodeError as exc:
                    raise TraceError(f"{path}: line {i}: not valid JSON ({exc.msg})") from None
        raise


def _require(batch: pa.RecordBatch, path: Path, names: list[str], fmt: str) -> None:
    have = batch.schema.names
    missing = [n for n in names if n not in have]
    if missing:
        raise TraceError(f"{path}: missing column(s) {missing} for format '{fmt}'; "
                         f"found {have}")


def _bools(col: pa.Array) -> np.ndarray:
    if pa.types.is_boolean(col.type):
        return np.asarray(col.to_numpy(zero_copy_only=False), dtype=bool)
    return np.array([str(x).strip().lower() in ("true", "1") for x in col.to_pylist()], dtype=bool)


def _strings(batch: pa.RecordBatch, name: str) -> list[str]:
    return [("" if v is None else str(v)) for v in batch.column(name).to_pylist()]


# --- readers --------------------------------------------------------------------------------
def read_native(path: Path, v: _Validator) -> Iterator[Columns]:
    for batch in _table_batches(path):
        _require(batch, path, ["arrival_s", "prompt_tokens", "output_tokens"], "native")
        names = batch.schema.names
        t = v.numbers(batch.column("arrival_s"), "arrival_s")
        p = v.numbers(batch.column("prompt_tokens"), "prompt_tokens")
        o = v.numbers(batch.column("output_tokens"), "output_tokens")
        v.tokens(p, "prompt_tokens", 1)
        v.tokens(o, "output_tokens", 1)
        v.times(t, "arrival_s")
        cols = Columns(t, p, o)
        for name in ("session", "turn"):
            if name in names:
                x = v.numbers(batch.column(name), name)
                v.tokens(x, name, -1)
                setattr(cols, name, x)
        if "think_s" in names:
            cols.think_s = v.numbers(batch.column("think_s"), "think_s")
        for name in ("model", "log_type"):
            if name in names:
                setattr(cols, name, _strings(batch, name))
        if "failed" in names:
            cols.failed = _bools(batch.column("failed"))
        if "prefix_hashes" in names:
            cols.prefix = [None if h is None else tuple(h)
                           for h in batch.column("prefix_hashes").to_pylist()]
        yield v.finish(cols, batch.num_rows)


def read_burstgpt(path: Path, v: _Validator) -> Iterator[Columns]:
    for batch in _csv_batches(path):
        _require(batch, path, ["Timestamp", "Model", "Request tokens", "Response tokens",
                               "Log Type"], "burstgpt")
        t = v.numbers(batch.column("Timestamp"), "Timestamp")
        p = v.numbers(batch.column("Request tokens"), "Request tokens")
        o = v.numbers(batch.column("Response tokens"), "Response tokens")
        v.tokens(p, "Request tokens", 0)
        v.tokens(o, "Response tokens", 0)
        v.times(t, "Timestamp")
        cols = Columns(t, np.maximum(p, 1), o, model=_strings(batch, "Model"),
                       log_type=_strings(batch, "Log Type"), failed=(o == 0))
        if "Session ID" in batch.schema.names:
            ids = _strings(batch, "Session ID")
            # Session ids are opaque strings; number them by first appearance (stable).
            cols.session = np.array([v.session_number(s) for s in ids], dtype=np.float64)
        yield v.finish(cols, batch.num_rows)


def read_azure(path: Path, v: _Validator) -> Iterator[Columns]:
    t0: float | None = None
    for batch in _csv_batches(path):
        _require(batch, path, ["TIMESTAMP", "ContextTokens", "GeneratedTokens"], "azure")
        stamps = pd.to_datetime(pd.Series(batch.column("TIMESTAMP").to_pylist()),
                                format="ISO8601", errors="coerce")
        t = stamps.to_numpy().astype("datetime64[ns]").astype("int64").astype(np.float64) / 1e9
        bad = stamps.isna().to_numpy()
        t[bad] = np.nan
        for i in np.flatnonzero(bad)[:1]:
            v.problems.append((int(i), "TIMESTAMP", "a date and time like 2023-11-16 18:17:03.97"))
        if t0 is None and (~bad).any():
            t0 = float(t[~bad][0])
        t = t - (t0 or 0.0)
        p = v.numbers(batch.column("ContextTokens"), "ContextTokens")
        o = v.numbers(batch.column("GeneratedTokens"), "GeneratedTokens")
        v.tokens(p, "ContextTokens", 1)
        v.tokens(o, "GeneratedTokens", 1)
        v.times(np.where(bad, 0.0, t) if bad.any() else t, "TIMESTAMP")
        yield v.finish(Columns(t, p, o), batch.num_rows)


def read_mooncake(path: Path, v: _Validator) -> Iterator[Columns]:
    for batch in _jsonl_batches(path):
        _require(batch, path, ["timestamp", "input_length", "output_length"], "mooncake")
        t = v.numbers(batch.column("timestamp"), "timestamp") / 1000.0
        p = v.numbers(batch.column("input_length"), "input_length")
        o = v.numbers(batch.column("output_length"), "output_length")
        v.tokens(p, "input_length", 1)
        v.tokens(o, "output_length", 1)
        v.times(t, "timestamp")
        prefix = None
        if "hash_ids" in batch.schema.names:
            prefix = [None if h is None else tuple(h) for h in batch.column("hash_ids").to_pylist()]
        yield v.finish(Columns(t, p, o, prefix=prefix), batch.num_rows)


def read_agent(path: Path, v: _Validator) -> Iterator[Columns]:
    """Agent spans: one program per session_id, calls in span order, sorted by start time.

    The whole file is read (agent traces are thousands of calls, and ordering calls of many
    programs by start time needs them all).
    """
    batches = list(_jsonl_batches(path))
    if not batches:
        return
    table = pa.Table.from_batches(batches)
    need = ["session_id", "span_index", "start_time_s", "end_time_s", "input_tokens",
            "output_tokens"]
    _require(table.to_batches()[0], path, need, "agent")
    start = v.numbers(table.column("start_time_s"), "start_time_s")
    end = v.numbers(table.column("end_time_s"), "end_time_s")
    p = v.numbers(table.column("input_tokens"), "input_tokens")
    o = v.numbers(table.column("output_tokens"), "output_tokens")
    span = v.numbers(table.column("span_index"), "span_index")
    # Calls that errored carry zero tokens: they are failed calls, not bad rows.
    v.tokens(p, "input_tokens", 0)
    v.tokens(o, "output_tokens", 0)
    bad = np.isfinite(start) & np.isfinite(end) & (end < start)
    for i in np.flatnonzero(bad)[:1]:
        v.problems.append((int(i), "end_time_s", f"a time >= start_time_s, got {end[i]:g}"))
    ok = v.fail_or_mask(table.num_rows)
    v.problems = []
    ids = [str(s) for s in table.column("session_id").to_pylist()]
    names = sorted({ids[i] for i in np.flatnonzero(ok)})
    number = {s: k for k, s in enumerate(names)}
    sess = np.array([number.get(s, -1) for s in ids], dtype=np.float64)
    # Turn = rank of the call within its program; think = tool time since the previous call
    # of the program ended (overlapping calls give 0).
    order = np.lexsort((span, sess))
    turn = np.zeros(len(ids))
    think = np.zeros(len(ids))
    prev_s, prev_end, k = -2.0, 0.0, 0
    for i in order:
        if not ok[i]:
            continue
        if sess[i] != prev_s:
            prev_s, k, prev_end = sess[i], 0, end[i]
            turn[i], think[i] = 0, 0.0
        else:
            k += 1
            turn[i] = k
            think[i] = max(0.0, start[i] - prev_end)
            prev_end = max(prev_end, end[i])
    t0 = float(np.nanmin(start[ok])) if ok.any() else 0.0
    cols = Columns(start - t0, np.maximum(p, 1), o, session=sess, turn=turn, think_s=think,
                   failed=(o == 0) | (p == 0),
                   model=[str(m) for m in table.column("request_model").to_pylist()]
                   if "request_model" in table.schema.names else None)
    cols = cols.select(ok)
    cols = cols.select(np.argsort(cols.arrival_s, kind="stable"))
    cols.rows, cols.skipped = table.num_rows, int((~ok).sum())
    v.row0 += table.num_rows
    yield cols


READERS: dict[str, Callable[[Path, _Validator], Iterator[Columns]]] = {
    "native": read_native,
    "burstgpt": read_burstgpt,
    "azure": read_azure,
    "mooncake": read_mooncake,
    "agent": read_agent,
}


def read(path: str | Path, fmt: str = "native", skip_bad: bool = False) -> Iterator[Columns]:
    """Stream a trace file of format ``fmt`` as validated column batches."""
    file = Path(path)
    if fmt not in READERS:
        raise TraceError(f"unknown trace format '{fmt}'; valid choices: {', '.join(FORMATS)}")
    if not file.is_file():
        raise TraceError(f"{file}: trace file not found")
    yield from READERS[fmt](file, _Validator(file, skip_bad))

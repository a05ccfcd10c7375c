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

import csv
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from simkv.workload import trace_columns
from simkv.workload.spec_readers import read_inference_perf, read_servegen
from simkv.workload.trace_columns import (  # noqa: F401  (re-exported: the readers' API)
    _FALSE,
    _TRUE,
    MAX_ID,
    MAX_TIME_S,
    MAX_TOKENS,
    Columns,
    TraceError,
    _float,
    _hash_id,
    _Problem,
    _Validator,
)

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

# Rows per Parquet batch and bytes per CSV/JSON block read at a time (memory stays bounded).
BATCH_ROWS = 65536
CSV_BLOCK_BYTES = 1 << 22

FORMATS = ("native", "burstgpt", "azure", "mooncake", "agent", "servegen", "inference_perf")
# Formats that give distributions, not rows: the rows are drawn from a seeded stream
# (workload/spec_readers.py).
GENERATED = ("servegen", "inference_perf")





# --- batch sources -----------------------------------------------------------------------
def _csv_batches(path: Path) -> Iterator[pa.RecordBatch]:
    read = pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES)
    try:
        names = pacsv.open_csv(path, read_options=read).schema.names
        conv = pacsv.ConvertOptions(column_types={n: pa.string() for n in names})
        yield from pacsv.open_csv(path, read_options=read, convert_options=conv)
    except pa.ArrowInvalid as exc:
        if "Empty CSV file" in str(exc):
            raise TraceError(f"{path}: the trace has no rows (an empty file)") from None
        raise TraceError(f"{path}: {_csv_problem(path) or 'not a readable CSV file: ' + _first_line(exc)}"
                         ) from None
    except UnicodeDecodeError as exc:
        raise TraceError(f"{path}: not a text (UTF-8) CSV file: {exc.reason} at byte {exc.start}"
                         ) from None


def _first_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


def _csv_problem(path: Path) -> str:
    """The first row whose field count differs from the header's (pyarrow names none)."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            for i, row in enumerate(reader, 1):
                if row and len(row) != len(header):
                    return f"row {i}: expected {len(header)} fields as in the header, got {len(row)}"
    except UnicodeDecodeError as exc:
        return f"not a text (UTF-8) CSV file: {exc.reason} at byte {exc.start}"
    except csv.Error as exc:
        return f"not a readable CSV file: {exc}"
    return ""


def _table_batches(path: Path) -> Iterator[pa.RecordBatch]:
    if path.suffix == ".parquet":
        try:
            file = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError):
            raise TraceError(f"{path}: not a readable Parquet file (no Parquet footer: a "
                             f"truncated or partial file, or another format named .parquet)"
                             ) from None
        yield from file.iter_batches(batch_size=BATCH_ROWS)
    else:
        yield from _csv_batches(path)


def _jsonl_batches(path: Path) -> Iterator[pa.RecordBatch]:
    try:
        reader = pajson.open_json(path, read_options=pajson.ReadOptions(block_size=CSV_BLOCK_BYTES))
        yield from reader
    except pa.ArrowInvalid as exc:
        if "Empty JSON stream" in str(exc):
            raise TraceError(f"{path}: the trace has no rows (an empty file)") from None
        # pyarrow counts rows from 0 within a block and names no field: find the line.
        raise TraceError(f"{path}: {_json_problem(path) or 'not readable as JSON lines: ' + _first_line(exc)}"
                         ) from None


def _json_kind(v: object) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true/false"
    if isinstance(v, int | float):
        return "a number"
    if isinstance(v, str):
        return "a string"
    return "a list" if isinstance(v, list) else "an object"


def _json_problem(path: Path) -> str:
    """The first line that is not a JSON object, or whose field changes kind."""
    kinds: dict[str, tuple[str, int]] = {}
    try:
        with path.open(encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                try:
                    doc = json.loads(line)
                except json.JSONDecodeError as exc:
                    return f"line {i}: not valid JSON ({exc.msg}, column {exc.colno})"
                if not isinstance(doc, dict):
                    return f"line {i}: expected a JSON object, got {_json_kind(doc)}"
                for key, value in doc.items():
                    kind = _json_kind(value)
                    if kind == "null":
                        continue
                    seen = kinds.setdefault(key, (kind, i))
                    if seen[0] != kind:
                        return (f"line {i}, field '{key}': expected {seen[0]} as on line "
                                f"{seen[1]}, got {kind} {json.dumps(value)[:40]}")
    except UnicodeDecodeError as exc:
        return f"not a text (UTF-8) file: {exc.reason} at byte {exc.start}"
    return ""


def _require(batch: pa.RecordBatch, path: Path, names: list[str], fmt: str) -> None:
    have = batch.schema.names
    missing = [n for n in names if n not in have]
    if missing:
        raise TraceError(f"{path}: missing column(s) {missing} for format '{fmt}'; "
                         f"found {have}")


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
        cols = Columns(t, p, o)
        if "session" in names:
            cols.session = v.numbers(batch.column("session"), "session")
            v.whole(cols.session, "session", -1, MAX_ID)
        if "turn" in names:
            cols.turn = v.numbers(batch.column("turn"), "turn")
            v.whole(cols.turn, "turn", 0, MAX_TOKENS)
        if "think_s" in names:
            cols.think_s = v.numbers(batch.column("think_s"), "think_s")
            v.durations(cols.think_s, "think_s")
        for name in ("model", "log_type"):
            if name in names:
                setattr(cols, name, _strings(batch, name))
        if "failed" in names:
            cols.failed = v.bools(batch.column("failed"), "failed")
        if "prefix_hashes" in names:
            cols.prefix = v.hashes(batch.column("prefix_hashes"), "prefix_hashes")
        v.times(t, "arrival_s")
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
    import pandas as pd  # its ISO 8601 parser, for this format alone

    t0: float | None = None
    for batch in _csv_batches(path):
        _require(batch, path, ["TIMESTAMP", "ContextTokens", "GeneratedTokens"], "azure")
        raw = batch.column("TIMESTAMP").to_pylist()
        stamps = pd.to_datetime(pd.Series(raw), format="ISO8601", errors="coerce")
        t = stamps.to_numpy().astype("datetime64[ns]").astype("int64").astype(np.float64) / 1e9
        bad = stamps.isna().to_numpy()
        t[bad] = np.nan
        p = v.numbers(batch.column("ContextTokens"), "ContextTokens")
        o = v.numbers(batch.column("GeneratedTokens"), "GeneratedTokens")
        v.tokens(p, "ContextTokens", 1)
        v.tokens(o, "GeneratedTokens", 1)
        v.flag(np.flatnonzero(bad), "TIMESTAMP",
               lambda i, raw=raw: f"a date and time like 2023-11-16 18:17:03.97, got {raw[i]!r}")
        if t0 is None and (~bad).any():
            t0 = float(t[~bad][0])
        t = t - (t0 or 0.0)
        # Times relative to the file's first: an earlier row is out of order, and the
        # message shows the file's own timestamps.
        v.times(t, "TIMESTAMP", shown=lambda i, raw=raw: str(raw[i]).strip(), relative=True)
        yield v.finish(Columns(t, p, o), batch.num_rows)


def read_mooncake(path: Path, v: _Validator) -> Iterator[Columns]:
    for batch in _jsonl_batches(path):
        _require(batch, path, ["timestamp", "input_length", "output_length"], "mooncake")
        t = v.numbers(batch.column("timestamp"), "timestamp") / 1000.0
        p = v.numbers(batch.column("input_length"), "input_length")
        o = v.numbers(batch.column("output_length"), "output_length")
        v.tokens(p, "input_length", 1)
        v.tokens(o, "output_length", 1)
        prefix = None
        if "hash_ids" in batch.schema.names:
            prefix = v.hashes(batch.column("hash_ids"), "hash_ids")
        # Shown in the file's unit (ms).
        v.times(t, "timestamp", shown=lambda i, t=t: f"{t[i] * 1000:g}")
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
    v.whole(span, "span_index", 0, MAX_TOKENS)
    for col, x in (("start_time_s", start), ("end_time_s", end)):
        v.flag(np.flatnonzero(~np.isnan(x) & (~np.isfinite(x) | (np.abs(x) >= MAX_TIME_S))), col,
               lambda i, x=x: f"a finite time < {MAX_TIME_S:.0f} s, got {x[i]:g}")
    v.flag(np.flatnonzero(np.isfinite(start) & np.isfinite(end) & (end < start)), "end_time_s",
           lambda i: f"a time >= start_time_s ({start[i]:g}), got {end[i]:g}")
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


def _import_arrow() -> None:
    """pyarrow, imported on the first read.

    NOTE: the registry imports this module to list the ``workload`` choices (``simkv
    --help``, every run's start); importing pyarrow and pandas there cost ~0.5-0.8 s on 2
    cores, which a run that reads no trace never needed. pandas only where Azure's
    timestamps are parsed (read_azure).
    """
    global pa, pacsv, pajson, pq
    trace_columns.import_arrow()
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson
    import pyarrow.parquet as pq


def read(path: str | Path, fmt: str = "native", skip_bad: bool = False, seed: int = 0,
         block_tokens: int = 512) -> Iterator[Columns]:
    """Stream a trace file of format ``fmt`` as validated column batches.

    ``seed`` draws the rows of the formats that give distributions (``GENERATED``), whose
    shared prompts carry prefix hashes of ``block_tokens``-token blocks. A file with no data
    rows is an error: an empty run would look like a result.
    """
    _import_arrow()
    file = Path(path)
    if fmt not in READERS:
        raise TraceError(f"unknown trace format '{fmt}'; valid choices: {', '.join(FORMATS)}")
    if file.is_dir() and fmt != "servegen":
        raise TraceError(f"{file}: is a directory; expected a trace file")
    if not file.exists():
        raise TraceError(f"{file}: trace file not found")
    if not os.access(file, os.R_OK):
        raise TraceError(f"{file}: cannot be read (permission denied)")
    rows = 0
    try:
        extra = {"seed": seed, "block_tokens": block_tokens} if fmt in GENERATED else {}
        for cols in READERS[fmt](file, _Validator(file, skip_bad), **extra):
            rows += cols.rows
            yield cols
    except OSError as exc:
        raise TraceError(f"{file}: cannot be read: {exc.strerror or _first_line(exc)}") from None
    if rows == 0:
        raise TraceError(f"{file}: the trace has no rows (a header only, or an empty file)")


READERS["servegen"] = read_servegen
READERS["inference_perf"] = read_inference_perf

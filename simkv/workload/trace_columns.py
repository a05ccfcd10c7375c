"""Trace rows validated into simkv's trace-model columns: the shared core of every reader.

Every format reader (workload/readers.py: files with rows; workload/spec_readers.py: files
that give distributions) maps its input onto ``Columns`` and checks it through one
``_Validator``, so a bad value is reported the same way whatever its format: the file, the
1-based data row and the file's own column name. This module is that shared core; it imports
no reader, so the readers can import it and each other without a cycle.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

    from simkv.columns import array as arrow_array
    from simkv.columns import to_numpy


def import_arrow() -> None:
    """pyarrow, imported on the first read (workload/readers.py explains why it is lazy).
    Columns reach numpy through simkv.columns: pyarrow's own conversions import pandas.
    pyarrow.compute (30 ms) only where a column is text (CSV)."""
    global pa, arrow_array, to_numpy
    import pyarrow as pa

    from simkv.columns import array as arrow_array
    from simkv.columns import to_numpy


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


# Token counts are int32 in the result files; times must resolve a microsecond in float64
# (spacing 2**-20 s below 2**32 s: 136 years, so Unix epoch seconds pass; 1e15 does not).
MAX_TOKENS = 2**31 - 1
MAX_TIME_S = 2.0**32
# Ids (sessions, prefix hashes) are int64 in the result files and exact in float64 up to 2**53.
MAX_ID = 2**53
_TRUE = ("true", "t", "yes", "y", "1")
_FALSE = ("false", "f", "no", "n", "0", "")


@dataclass(slots=True)
class _Problem:
    """Rows of a batch that break one rule of one column (indices in the batch)."""

    rows: np.ndarray
    column: str
    expected: Callable[[int], str]


@dataclass(slots=True)
class _Validator:
    """Checks a batch column by column, remembering the last good time across batches.

    Every rule finds *all* the rows of a batch that break it: ``on_bad_row=error`` reports
    the first of them (file, 1-based data row, the file's column name), ``skip`` drops
    every one of them and counts it.
    """

    path: Path
    skip_bad: bool
    last_time: float = -np.inf
    last_shown: str = ""
    row0: int = 0
    problems: list[_Problem] = field(default_factory=list)
    _newest: tuple[float, str] | None = None
    # Opaque session ids numbered by first appearance, per file read.
    sessions: dict[str, int] = field(default_factory=dict)

    def session_number(self, s: str) -> int:
        if not s:
            return -1
        n = self.sessions.get(s)
        if n is None:
            n = self.sessions[s] = len(self.sessions)
        return n

    def flag(self, rows: np.ndarray | list[int], column: str, expected: Callable[[int], str]
             ) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size:
            self.problems.append(_Problem(rows, column, expected))

    def bad_mask(self, n: int) -> np.ndarray:
        bad = np.zeros(n, dtype=bool)
        for p in self.problems:
            bad[p.rows] = True
        return bad

    def fail_or_mask(self, n: int) -> np.ndarray:
        """Raise for the first bad row (error mode), or return the mask of good rows."""
        if self.problems and not self.skip_bad:
            first = min(self.problems, key=lambda p: int(p.rows.min()))
            i = int(first.rows.min())
            raise TraceError(f"{self.path}: row {self.row0 + i + 1}, column '{first.column}': "
                             f"expected {first.expected(i)}")
        return ~self.bad_mask(n)

    def numbers(self, col: pa.ChunkedArray | pa.Array, name: str) -> np.ndarray:
        """Floats of a column; a cell that is not a number is a problem (NaN)."""
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            import pyarrow.compute as pc

            stripped = pc.utf8_trim_whitespace(col)
            try:
                out = np.asarray(to_numpy(pc.cast(stripped, pa.float64())), dtype=np.float64)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                out = np.array([_float(x) for x in stripped.to_pylist()], dtype=np.float64)
            bad = np.flatnonzero(np.isnan(out))
            # NOTE: the cells' text only for the bad rows: a CSV column is text, and turning
            # every cell into a Python string would cost more than the whole check.
            text = dict(zip(bad.tolist(), pc.take(stripped, arrow_array(bad, pa.int64())).to_pylist(),
                            strict=True))
            self.flag(bad, name, lambda i: "a number, got " + (
                "an empty cell" if text[i] in ("", None) else repr(text[i])))
            return out
        if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)
                or pa.types.is_null(col.type)):
            raise TraceError(f"{self.path}: column '{name}': expected numbers, found {col.type}")
        arr = np.asarray(to_numpy(col), dtype=np.float64)
        self.flag(np.flatnonzero(np.isnan(arr)), name, lambda i: "a number, got an empty cell")
        return arr

    def whole(self, v: np.ndarray, name: str, minimum: int, maximum: int = MAX_TOKENS,
              what: str = "a whole number") -> None:
        """Finite whole numbers in [minimum, maximum] (NaN: already flagged as empty)."""
        bad = ~np.isnan(v) & (~np.isfinite(v) | (v < minimum) | (v > maximum)
                              | (v != np.floor(v)))
        self.flag(np.flatnonzero(bad), name,
                  lambda i: f"{what} >= {minimum}{' and <= ' + str(maximum) if v[i] > maximum else ''}, "
                            f"got {v[i]:g}")

    def tokens(self, v: np.ndarray, name: str, minimum: int) -> None:
        self.whole(v, name, minimum)

    def durations(self, v: np.ndarray, name: str) -> None:
        """Finite seconds >= 0 (think and tool times)."""
        bad = ~np.isnan(v) & (~np.isfinite(v) | (v < 0) | (v >= MAX_TIME_S))
        self.flag(np.flatnonzero(bad), name, lambda i: f"seconds >= 0, got {v[i]:g}")

    def times(self, t: np.ndarray, name: str, shown: Callable[[int], str] | None = None,
              relative: bool = False) -> None:
        """Finite, usable and non-decreasing times, across batches too. Checked last: a row
        already bad for another reason neither breaks nor sets the order.

        ``relative`` times were shifted by the file's first time (they may be negative only
        by going back); ``shown(i)`` renders the file's own value for messages.
        """
        show = shown or (lambda i: f"{t[i]:g}")
        finite = np.isfinite(t)
        self.flag(np.flatnonzero(~np.isnan(t) & ~finite), name, lambda i: f"a finite time, got {t[i]}")
        if not relative:
            self.flag(np.flatnonzero(finite & (t < 0)), name, lambda i: f"a time >= 0, got {show(i)}")
        self.flag(np.flatnonzero(finite & (np.abs(t) >= MAX_TIME_S)), name,
                  lambda i: f"a time < {MAX_TIME_S:.0f} s (past it float64 cannot resolve a "
                            f"microsecond), got {show(i)}")
        good = np.where(finite & ~self.bad_mask(len(t)), t, -np.inf)
        latest = np.maximum.accumulate(np.concatenate(([self.last_time], good)))[:-1]
        before = self.last_shown

        def message(i: int) -> str:
            prior = good[:i]
            if prior.size and prior.max() > self.last_time:
                return f"non-decreasing times, got {show(i)} after {show(int(np.argmax(prior)))}"
            return f"non-decreasing times, got {show(i)} after {before}"

        self.flag(np.flatnonzero(finite & (good > -np.inf) & (t < latest)), name, message)
        if good.size and good.max() > self.last_time:
            k = int(np.argmax(good))
            self._newest = (float(t[k]), show(k))

    def bools(self, col: pa.ChunkedArray | pa.Array, name: str) -> np.ndarray:
        """true/false, yes/no, t/f, y/n, 1/0 in any case; an empty cell is false."""
        if pa.types.is_boolean(col.type):
            values = to_numpy(col)  # with nulls: objects, None where null (an empty cell: false)
            return values if values.dtype == bool else np.equal(values, True)
        if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
            v = np.asarray(to_numpy(col), dtype=np.float64)
            v = np.where(np.isnan(v), 0.0, v)
            self.flag(np.flatnonzero((v != 0) & (v != 1)), name,
                      lambda i: f"true/false, yes/no or 1/0, got {v[i]:g}")
            return v == 1
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)
                or pa.types.is_null(col.type)):
            raise TraceError(f"{self.path}: column '{name}': expected true/false values, "
                             f"found {col.type}")
        words = [("" if x is None else str(x).strip().lower()) for x in col.to_pylist()]
        out = np.array([w in _TRUE for w in words], dtype=bool)
        raw = col.to_pylist()
        self.flag([i for i, w in enumerate(words) if w not in _TRUE and w not in _FALSE], name,
                  lambda i: f"true/false, yes/no or 1/0, got {raw[i]!r}")
        return out

    def hashes(self, col: pa.ChunkedArray | pa.Array, name: str) -> list[tuple[int, ...] | None]:
        """Prefix hashes: a list column of whole numbers >= 0, or text such as ``[3, 7, 9]``
        or ``3 7 9`` (a CSV always yields text). An empty cell means none."""
        typ = col.type
        if pa.types.is_list(typ) or pa.types.is_large_list(typ):
            rows: list = col.to_pylist()
        elif pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_null(typ):
            rows = []
            for cell in col.to_pylist():
                text = "" if cell is None else cell.strip().strip("[]()").strip()
                rows.append(None if not text else re.split(r"[\s,;]+", text))
        else:
            raise TraceError(f"{self.path}: column '{name}': expected lists of hashes (whole "
                             f"numbers >= 0), found {typ}")
        out: list[tuple[int, ...] | None] = []
        bad: dict[int, str] = {}
        for i, row in enumerate(rows):
            if row is None:
                out.append(None)
                continue
            try:
                ids = tuple(_hash_id(x) for x in row)
            except ValueError as exc:
                bad[i] = str(exc)
                out.append(None)
                continue
            out.append(ids)
        self.flag(sorted(bad), name, lambda i: f"hashes as whole numbers >= 0, got {bad[i]}")
        return out

    def finish(self, cols: Columns, n: int) -> Columns:
        """Apply the problems found in this batch: raise, or drop the bad rows."""
        ok = self.fail_or_mask(n)
        self.problems = []
        cols.rows = n
        cols.skipped = int((~ok).sum())
        out = cols if ok.all() else cols.select(ok)
        if self._newest is not None:
            # The newest good time of the batch (kept: times are checked last).
            self.last_time, self.last_shown = self._newest
            self._newest = None
        self.row0 += n
        return out


def _float(x: object) -> float:
    try:
        return float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan

def _hash_id(x: object) -> int:
    if isinstance(x, bool):
        raise ValueError(repr(x))
    if isinstance(x, str):
        try:
            x = int(x)
        except ValueError:
            raise ValueError(repr(x)) from None
    if isinstance(x, float):
        if not x.is_integer():
            raise ValueError(repr(x))
        x = int(x)
    if not isinstance(x, int) or not 0 <= x < MAX_ID:
        raise ValueError(repr(x))
    return x

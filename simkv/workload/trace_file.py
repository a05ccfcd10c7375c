"""Replay a trace file of any supported format (``workload=trace``).

The file is streamed through its reader (workload/readers.py); filters, time window,
sampling and rate scaling are applied batch by batch, so memory stays bounded by a batch.
Two passes are made only when ``target_rate`` is set (the first counts requests and span).

With ``closed_loop=true`` and a trace that has sessions, only each session's first call is
replayed at its recorded time; every later call arrives when the previous call of its
session completes plus the recorded think or tool time (``think_s``), so the simulated
system's speed feeds back into the arrivals, as it does for agents and chat users.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from simkv.config.bounds import bounded, check, require
from simkv.entities.request import Request
from simkv.registry import register
from simkv.workload.base import ArrivalBatch, FollowUp
from simkv.workload.context_chains import ContextChains
from simkv.workload.readers import FORMATS, GENERATED, Columns, TraceError, read

__all__ = ["TraceError", "TraceWorkload", "TraceWorkloadConfig"]


@dataclass(slots=True)
class TraceWorkloadConfig:
    path: str = "???"
    # native | burstgpt | azure | mooncake | agent | servegen | inference_perf
    # (docs/TRACE_FORMAT.md).
    format: str = bounded("native", choices=FORMATS)
    # Keep only these models / log types (empty: all), e.g. [GPT-4] or ["API log"].
    models: list[str] = field(default_factory=list)
    log_types: list[str] = field(default_factory=list)
    # Keep requests with start_s <= arrival < end_s, in the file's own time (null: open).
    start_s: float | None = bounded(None)
    end_s: float | None = bounded(None)
    # Shift times so that the first kept request arrives at 0.
    rebase: bool = True
    # Replay k times faster, or (when > 0) at this mean rate in requests/s.
    speedup: float = bounded(1.0, gt=0)
    target_rate: float = bounded(0.0, ge=0)
    # Keep each request with this probability (seeded; thinning keeps the burst shape).
    sample: float = bounded(1.0, gt=0, le=1)
    # Only the first n kept requests (0 = all).
    limit: int = bounded(0, ge=0)
    # Rows the trace marks as failed (BurstGPT: zero response tokens): 'keep' records them
    # as rejected with reason failed_in_trace, 'drop' leaves them out.
    failed: str = bounded("keep", choices=("keep", "drop"))
    # 'error' stops at the first bad row; 'skip' drops every bad row and counts it.
    on_bad_row: str = bounded("error", choices=("error", "skip"))
    # Replay sessions closed-loop (see the module docstring).
    closed_loop: bool = False

    def __post_init__(self) -> None:
        check(self, "workload.")

    def validate(self, prefix: str = "workload.") -> None:
        require(self.format not in GENERATED or self.on_bad_row == "error",
                f"{prefix}on_bad_row=skip cannot act with {prefix}format={self.format}: its rows "
                f"are drawn from distributions, a bad value stops the run")
        require(self.start_s is None or self.end_s is None or self.start_s < self.end_s,
                f"{prefix}start_s ({self.start_s}) must be < {prefix}end_s ({self.end_s}): the "
                f"window [start_s, end_s) would hold no request")


@register("workload", "trace", TraceWorkloadConfig)
class TraceWorkload:
    def __init__(self, cfg: TraceWorkloadConfig, granule_tokens: int | None = None,
                 **_: object) -> None:
        self.cfg = cfg
        self.path = Path(cfg.path)
        # kv.prefix_block_tokens of the run: a native trace written by simkv says which
        # granule its prefix hashes stand for, and must match.
        self.granule_tokens = granule_tokens
        self.skipped_rows = 0
        # Seed of the rows a format of distributions draws (set once per run: both passes of
        # target_rate must see the same rows).
        self.seed = 0
        # Closed loop: calls waiting for their session's previous call to complete.
        self._pending: dict[int, list[FollowUp]] = {}
        # Sessions without prefix hashes: chains derived from their growing context, in the
        # formats whose sessions are programs or conversations (DESIGN: each call's prompt
        # extends the previous context); BurstGPT's session ids say no such thing.
        self._chains = (ContextChains(granule_tokens)
                        if granule_tokens and cfg.format in ("agent", "native") else None)

    def expected_requests(self) -> int | None:
        cfg = self.cfg
        if (self.path.suffix == ".parquet" and self.path.is_file() and cfg.format == "native"
                and not cfg.models and not cfg.log_types and cfg.sample == 1
                and cfg.start_s is None and cfg.end_s is None):
            import pyarrow as pa  # here, not at the top: simkv --help imports this module
            import pyarrow.parquet as pq

            try:
                rows = pq.ParquetFile(self.path).metadata.num_rows
            except (pa.ArrowInvalid, OSError):
                return None  # the reader says what is wrong with the file
            return min(rows, cfg.limit) if cfg.limit else rows
        return cfg.limit or None

    def _check_header(self) -> None:
        if self.granule_tokens is None or self.cfg.format != "native" or self.path.suffix != ".parquet":
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            meta = pq.read_schema(self.path).metadata or {}
        except (pa.ArrowInvalid, OSError):
            return  # the reader says what is wrong with the file
        made_for = meta.get(b"simkv.prefix_block_tokens")
        if made_for is not None and int(made_for) != self.granule_tokens:
            raise TraceError(f"{self.path}: its prefix hashes stand for {int(made_for)}-token "
                             f"blocks, but kv.prefix_block_tokens is {self.granule_tokens}; set "
                             f"kv.prefix_block_tokens={int(made_for)} or regenerate the trace")

    # --- open-loop stream -----------------------------------------------------------------
    def _filtered(self, rng: np.random.Generator | None, count_skipped: bool = True
                  ) -> Iterator[Columns]:
        """The kept rows, batch by batch; ``rng`` thins them when ``sample`` < 1."""
        cfg = self.cfg
        models, logs = set(cfg.models), set(cfg.log_types)
        left = cfg.limit or -1
        kept = 0
        for c in read(self.path, cfg.format, skip_bad=cfg.on_bad_row == "skip", seed=self.seed,
                      block_tokens=self.granule_tokens or 512):
            if count_skipped:
                self.skipped_rows += c.skipped
            keep = np.ones(len(c.arrival_s), dtype=bool)
            if models and c.model is not None:
                keep &= np.array([m in models for m in c.model], dtype=bool)
            if logs and c.log_type is not None:
                keep &= np.array([x in logs for x in c.log_type], dtype=bool)
            if cfg.start_s is not None:
                keep &= c.arrival_s >= cfg.start_s
            if cfg.end_s is not None:
                keep &= c.arrival_s < cfg.end_s
            if cfg.failed == "drop" and c.failed is not None:
                keep &= ~c.failed
            if cfg.sample < 1 and rng is not None:
                keep &= rng.random(len(keep)) < cfg.sample
            if not keep.all():
                c = c.select(keep)
            if left >= 0:
                c = c.select(np.arange(len(c.arrival_s)) < left)
                left -= len(c.arrival_s)
            if len(c.arrival_s):
                kept += len(c.arrival_s)
                yield c
            if left == 0:
                return
        if kept == 0:
            raise TraceError(f"{self.path}: no request is left after {self._filters()}; "
                             f"nothing to simulate")

    def _filters(self) -> str:
        cfg = self.cfg
        parts = [f"workload.{k}={getattr(cfg, k)}" for k in ("models", "log_types")
                 if getattr(cfg, k)]
        parts += [f"workload.{k}={getattr(cfg, k)}" for k in ("start_s", "end_s")
                  if getattr(cfg, k) is not None]
        if cfg.failed == "drop":
            parts.append("workload.failed=drop")
        if cfg.sample < 1:
            parts.append(f"workload.sample={cfg.sample}")
        if cfg.on_bad_row == "skip":
            parts.append("workload.on_bad_row=skip")
        return "the filters (" + ", ".join(parts) + ")" if parts else "reading"

    def _time_transform(self, rng: np.random.Generator | None) -> tuple[float, float]:
        """(offset, divisor): simulated time = (trace time - offset) / divisor.

        With ``target_rate`` the first pass keeps exactly the rows the replay will keep (a
        copy of the run's generator thins them the same way), so the replayed rate is the
        target whatever ``sample`` and ``limit`` are.
        """
        cfg = self.cfg
        if cfg.target_rate <= 0 and not cfg.rebase:
            return 0.0, cfg.speedup
        first = last = None
        n = 0
        twin = copy.deepcopy(rng) if rng is not None and cfg.sample < 1 else None
        for c in self._filtered(twin, count_skipped=False):
            if first is None:
                first = float(c.arrival_s[0])
            last = float(c.arrival_s[-1])
            n += len(c.arrival_s)
            if cfg.target_rate <= 0:
                break  # only the first time was needed
        if first is None:
            return 0.0, cfg.speedup
        offset = first if cfg.rebase else 0.0
        if cfg.target_rate > 0:
            span = (last or first) - first
            if span <= 0 or n < 2:
                raise TraceError(f"{self.path}: cannot scale to workload.target_rate: the kept "
                                 f"requests ({n}) span no time")
            return offset, cfg.target_rate / (n / span)
        return offset, cfg.speedup

    def arrivals(self, rng: np.random.Generator) -> Iterator[ArrivalBatch]:
        self._check_header()
        if self.cfg.format in GENERATED:
            self.seed = int(rng.integers(2**62))
        offset, divisor = self._time_transform(rng)
        closed = self.cfg.closed_loop
        for c in self._filtered(rng):
            if closed and (c.session is None or c.think_s is None):
                raise TraceError(f"{self.path}: workload.closed_loop=true needs the columns "
                                 f"session and think_s, which this trace does not have")
            t = (c.arrival_s - offset) / divisor
            batch = ArrivalBatch(
                arrival_s=t,
                prompt_tokens=c.prompt_tokens.astype(np.int64),
                output_tokens=np.maximum(c.output_tokens, 1).astype(np.int64),
                session=c.session.astype(np.int64) if c.session is not None else None,
                turn=c.turn.astype(np.int64) if c.turn is not None else None,
                model=c.model, log_type=c.log_type,
                failed=c.failed if c.failed is not None and c.failed.any() else None,
                prefix=c.prefix,
            )
            if c.prefix is None and c.session is not None and self._chains is not None:
                batch.prefix = self._chains.derive(batch)  # each call extends its context
            if closed:
                assert c.think_s is not None
                batch = self._hold_later_turns(batch, c.think_s / divisor)
            if len(batch):
                yield batch

    # --- closed loop --------------------------------------------------------------------
    def _hold_later_turns(self, b: ArrivalBatch, think: np.ndarray) -> ArrivalBatch:
        """Release first calls now; queue later calls of each session (in turn order), each
        with its prefix hashes, so a replay shares the KV its source run shared."""
        assert b.session is not None
        first = np.ones(len(b), dtype=bool)
        for i in range(len(b)):
            s = int(b.session[i])
            if s < 0:
                continue
            queue = self._pending.get(s)
            if queue is None:
                self._pending[s] = []
            else:
                first[i] = False
                queue.append(FollowUp(float(think[i]), int(b.prompt_tokens[i]),
                                      int(b.output_tokens[i]), s,
                                      int(b.turn[i]) if b.turn is not None else 0,
                                      prefix=b.prefix[i] if b.prefix is not None else None))
        return b.take(first)

    def on_complete(self, req: Request, now: float) -> list[FollowUp]:
        queue = self._pending.get(req.session) if self.cfg.closed_loop else None
        if not queue:
            return []
        # NOTE: an emptied queue keeps its key: it marks the session as started, so calls of
        # it in later batches are queued rather than released open-loop.
        call = queue.pop(0)
        call.arrival_s += now  # it held the think time until now
        return [call]

"""The request stream contract between workloads and the cluster.

A workload yields its open-loop arrivals in column chunks (numpy arrays, so a long trace is
never a list of objects) and may answer each completion with follow-up calls: that is the
single feedback loop of the simulator, used by closed-loop sessions and agent programs (the
next call arrives after the previous one completes plus a think or tool time).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from simkv.entities.request import Request


@dataclass(slots=True)
class ArrivalBatch:
    """A chunk of requests in arrival order; all arrays have the same length."""

    arrival_s: np.ndarray  # float64, non-decreasing
    prompt_tokens: np.ndarray  # int64 >= 1
    output_tokens: np.ndarray  # int64 >= 1
    session: np.ndarray | None = None  # int64, -1 = none
    turn: np.ndarray | None = None  # int64
    model: list[str] | None = None
    log_type: list[str] | None = None
    failed: np.ndarray | None = None  # bool: recorded as failed by the trace
    prefix: list[tuple[int, ...] | None] | None = None

    def __len__(self) -> int:
        return len(self.arrival_s)

    def take(self, idx: np.ndarray) -> ArrivalBatch:
        """The rows at ``idx`` (an index or boolean mask), every column alike."""
        pos = np.flatnonzero(idx) if idx.dtype == bool else idx
        pick = [int(i) for i in pos]

        def lst(x: list | None) -> list | None:
            return None if x is None else [x[i] for i in pick]

        def arr(x: np.ndarray | None) -> np.ndarray | None:
            return None if x is None else x[pos]

        return ArrivalBatch(self.arrival_s[pos], self.prompt_tokens[pos], self.output_tokens[pos],
                            arr(self.session), arr(self.turn), lst(self.model),
                            lst(self.log_type), arr(self.failed), lst(self.prefix))


@dataclass(slots=True)
class FollowUp:
    """A call that a completion releases (closed loop)."""

    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    session: int = -1
    turn: int = 0
    prefix: tuple[int, ...] | None = None
    # Leading tokens of this prompt that repeat the releasing call's prompt and output (the
    # conversation so far): the cluster turns them into that call's granule ids, so the
    # prefix cache can serve them. Ignored when ``prefix`` is given.
    shared_tokens: int = 0


class Workload(Protocol):
    def arrivals(self, rng: np.random.Generator) -> Iterator[ArrivalBatch]:
        """Open-loop arrivals, in chunks, in arrival order."""
        ...

    def on_complete(self, req: Request, now: float) -> list[FollowUp]:
        """Calls released by ``req`` completing at ``now`` (empty for open-loop workloads)."""
        ...

    def expected_requests(self) -> int | None:
        """Total requests, if known up front (for the progress bar)."""
        ...


class OpenLoop:
    """Mixin: open-loop workloads release nothing on completion."""

    def on_complete(self, req: Request, now: float) -> list[FollowUp]:
        return []

"""Test-only workloads: explicit request lists and a closed-loop conversation."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from simkv.engine.replica import Replica
from simkv.entities.request import Request, State
from simkv.registry import register
from simkv.workload.base import ArrivalBatch, FollowUp, OpenLoop


@dataclass(slots=True)
class ListWorkloadConfig:
    arrival_s: list[float] = field(default_factory=list)
    prompt_tokens: list[int] = field(default_factory=list)
    output_tokens: list[int] = field(default_factory=list)


@register("workload", "test_list", ListWorkloadConfig)
class ListWorkload(OpenLoop):
    def __init__(self, cfg: ListWorkloadConfig, **_: object) -> None:
        self.cfg = cfg

    def expected_requests(self) -> int | None:
        return len(self.cfg.arrival_s)

    def arrivals(self, rng: np.random.Generator) -> Iterator[ArrivalBatch]:
        if self.cfg.arrival_s:
            yield ArrivalBatch(np.asarray(self.cfg.arrival_s, float),
                               np.asarray(self.cfg.prompt_tokens, np.int64),
                               np.asarray(self.cfg.output_tokens, np.int64))


@dataclass(slots=True)
class SeenListWorkloadConfig(ListWorkloadConfig):
    pass


@register("workload", "test_seen_list", SeenListWorkloadConfig)
class SeenListWorkload(ListWorkload):
    """ListWorkload that keeps every request the cluster reports back, finished or rejected:
    the workload hears of each completion, from the first iteration on."""

    def __init__(self, cfg: ListWorkloadConfig, **_: object) -> None:
        super().__init__(cfg)
        self.seen: list[Request] = []

    def on_complete(self, req: Request, now: float) -> list[FollowUp]:
        self.seen.append(req)
        return []


@dataclass(slots=True)
class ChatWorkloadConfig:
    sessions: int = 3
    turns: int = 4
    think_s: float = 0.5
    prompt: int = 100
    output: int = 20


@register("workload", "test_chat", ChatWorkloadConfig)
class ChatWorkload:
    """Each completion releases the session's next turn ``think_s`` later, with the whole
    conversation so far as its prompt (closed loop)."""

    def __init__(self, cfg: ChatWorkloadConfig, **_: object) -> None:
        self.cfg = cfg
        self.completions: list[tuple[int, int, float]] = []

    def expected_requests(self) -> int | None:
        return self.cfg.sessions * self.cfg.turns

    def arrivals(self, rng: np.random.Generator) -> Iterator[ArrivalBatch]:
        n = self.cfg.sessions
        yield ArrivalBatch(np.arange(n, dtype=float) * 0.01,
                           np.full(n, self.cfg.prompt, np.int64),
                           np.full(n, self.cfg.output, np.int64),
                           session=np.arange(n, dtype=np.int64), turn=np.zeros(n, np.int64))

    def on_complete(self, req: Request, now: float) -> list[FollowUp]:
        assert req.state in (State.FINISHED, State.REJECTED)
        self.completions.append((req.session, req.turn, now))
        if req.turn + 1 >= self.cfg.turns:
            return []
        context = req.prompt_tokens + req.output_tokens + self.cfg.prompt
        return [FollowUp(now + self.cfg.think_s, context, self.cfg.output, req.session,
                         req.turn + 1)]


@dataclass(slots=True)
class ScriptWorkloadConfig:
    """Open-loop rows with explicit prefix ids and sessions, plus scripted follow-up calls.

    ``followups`` rows are [session, tool_gap_s, new_prompt_tokens, output_tokens]: each
    completion of ``session`` releases its next row, whose prompt repeats the whole previous
    context (prompt + output) and adds ``new_prompt_tokens``.
    """

    arrival_s: list[float] = field(default_factory=list)
    prompt_tokens: list[int] = field(default_factory=list)
    output_tokens: list[int] = field(default_factory=list)
    prefix: list[list[int]] = field(default_factory=list)
    session: list[int] = field(default_factory=list)
    followups: list[list[float]] = field(default_factory=list)


@register("workload", "test_script", ScriptWorkloadConfig)
class ScriptWorkload:
    def __init__(self, cfg: ScriptWorkloadConfig, **_: object) -> None:
        self.cfg = cfg
        self.pending: dict[int, list[list[float]]] = {}
        for row in cfg.followups:
            self.pending.setdefault(int(row[0]), []).append(row)

    def expected_requests(self) -> int | None:
        return len(self.cfg.arrival_s) + len(self.cfg.followups)

    def arrivals(self, rng: np.random.Generator) -> Iterator[ArrivalBatch]:
        c = self.cfg
        n = len(c.arrival_s)
        prefix = [tuple(p) if p else None for p in c.prefix] if c.prefix else None
        session = np.asarray(c.session, np.int64) if c.session else None
        yield ArrivalBatch(np.asarray(c.arrival_s, float), np.asarray(c.prompt_tokens, np.int64),
                           np.asarray(c.output_tokens, np.int64), session,
                           np.zeros(n, np.int64) if session is not None else None, prefix=prefix)

    def on_complete(self, req: Request, now: float) -> list[FollowUp]:
        rows = self.pending.get(req.session)
        if req.session < 0 or not rows or req.state is State.REJECTED:
            return []
        _, gap, extra, out = rows.pop(0)
        context = req.prompt_tokens + req.output_tokens
        return [FollowUp(now + gap, context + int(extra), int(out), req.session, req.turn + 1,
                         shared_tokens=context)]


class Checker:
    """An engine observer: after every run, time never goes back and the replica's
    invariants (its scheduler's, and through it the KV manager's and the tiers') hold."""

    def __init__(self) -> None:
        self.last_now = -1.0
        self.runs = 0
        self.replicas: dict[int, Replica] = {}

    def __call__(self, replica: Replica) -> None:
        now = replica.env.now
        assert now >= self.last_now, "simulated time went back"
        self.last_now = now
        replica.scheduler.check_invariants()
        pool = replica.scheduler.pool
        assert 0 <= pool.used <= pool.capacity
        self.runs += 1
        self.replicas[replica.index] = replica

"""Closed-loop sessions: agent programs and multi-turn conversations.

Sessions start open-loop (Poisson arrivals at ``session_rate``); within a session each call
arrives when the previous one completes plus a think time (a user) or tool time (an agent),
and its prompt extends the previous context. Only sessions in flight are held in memory.

Subclasses say how a session evolves: ``start`` draws its first call and state, ``follow``
the next call after a completion (or None when the session ends). ``materialise`` writes
the same sessions as a static trace with ``think_s`` (arrivals as if every call took no
time), which ``workload=trace workload.closed_loop=true`` replays closed-loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from simkv.entities.request import Request
from simkv.workload.base import ArrivalBatch, FollowUp

CHUNK = 65536


@dataclass(slots=True)
class Call:
    prompt: int
    output: int
    think_s: float = 0.0
    # Leading prompt tokens equal to the previous call's prompt + output; None: as many as
    # the prompt holds (an append-only context).
    shared: int | None = None


class SessionWorkload:
    """Base of closed-loop generators (not registered itself)."""

    num_sessions: int
    session_rate: float
    max_context: int

    def __init__(self) -> None:
        # session -> (state, turn, its own random stream)
        self._state: dict[int, tuple[Any, int, np.random.Generator]] = {}
        self._seed: np.random.SeedSequence | None = None
        self._generated = 0

    # --- to implement -------------------------------------------------------------------
    def start(self, rng: np.random.Generator) -> tuple[Call, Any]:
        raise NotImplementedError

    def follow(self, rng: np.random.Generator, state: Any, prev: Call) -> tuple[Call, Any] | None:
        raise NotImplementedError

    # --- Workload protocol --------------------------------------------------------------
    def expected_requests(self) -> int | None:
        return None  # depends on how sessions unfold

    def expected_sessions(self) -> int:
        """Sessions the run will start: the progress bar's total for a closed loop."""
        return self.num_sessions

    def sessions_done(self) -> int:
        """Sessions that ended so far (their last call completed): the progress bar's count.

        NOTE: every session generated so far has an entry until it ends, so this is the
        generated count less the entries: O(1), no bookkeeping in the completion path.
        """
        return self._generated - len(self._state)

    def arrivals(self, rng: np.random.Generator) -> Iterator[ArrivalBatch]:
        # NOTE: one stream for the open-loop starts, and one per session for what its
        # completions release, so a session's calls do not depend on the order in which
        # sessions complete (which depends on the policies being compared).
        starts_rng = rng.spawn(1)[0]
        self._seed = np.random.SeedSequence(rng.integers(0, 2**63))
        t = 0.0
        sid = 0
        while sid < self.num_sessions:
            n = min(CHUNK, self.num_sessions - sid)
            times = t + np.cumsum(starts_rng.exponential(1.0 / self.session_rate, n))
            t = float(times[-1])
            prompts, outputs = [], []
            for k in range(n):
                own = self._session_rng(sid + k)
                call, state = self.start(own)
                self._state[sid + k] = (state, 0, own)
                self._generated += 1
                prompts.append(call.prompt)
                outputs.append(call.output)
            yield ArrivalBatch(times, np.array(prompts, np.int64), np.array(outputs, np.int64),
                               session=np.arange(sid, sid + n, dtype=np.int64),
                               turn=np.zeros(n, np.int64))
            sid += n

    def on_complete(self, req: Request, now: float) -> list[FollowUp]:
        entry = self._state.pop(req.session, None)
        if entry is None:
            return []
        state, turn, own = entry
        nxt = self.follow(own, state, Call(req.prompt_tokens, req.output_tokens))
        if nxt is None:
            return []
        call, state = nxt
        if call.prompt + call.output > self.max_context:
            return []  # the conversation outgrew the context window: it ends here
        self._state[req.session] = (state, turn + 1, own)
        shared = (min(call.prompt, req.prompt_tokens + req.output_tokens) if call.shared is None
                  else call.shared)
        return [FollowUp(now + call.think_s, call.prompt, call.output, req.session, turn + 1,
                         shared_tokens=shared)]

    def _session_rng(self, sid: int) -> np.random.Generator:
        assert self._seed is not None
        return np.random.default_rng(np.random.SeedSequence(self._seed.entropy, spawn_key=(sid,)))

    # --- static form ----------------------------------------------------------------------
    def materialise(self, rng: np.random.Generator, granule_tokens: int | None = None
                    ) -> dict[str, Any]:
        """All sessions' calls as trace columns (arrival as if calls took no time).

        With ``granule_tokens`` (kv.prefix_block_tokens) every call also gets
        ``prefix_hashes``: ids of the granules of its prompt and output, the leading ones
        copied from the previous call for the context it repeats, so a replay of the trace
        shares exactly the KV the live run shares (the live run derives the same chain from
        each completion, kv/prefix.py).
        """
        cols: dict[str, list] = {k: [] for k in ("arrival_s", "prompt_tokens", "output_tokens",
                                                 "session", "turn", "think_s", "prefix")}
        next_id = 0
        for batch in self.arrivals(rng):
            assert batch.session is not None
            for i in range(len(batch)):
                t = float(batch.arrival_s[i])
                sid = int(batch.session[i])
                call = Call(int(batch.prompt_tokens[i]), int(batch.output_tokens[i]))
                turn = 0
                shared = 0
                ids: tuple[int, ...] = ()
                while True:
                    prefix = None
                    if granule_tokens:
                        n = (call.prompt + call.output) // granule_tokens
                        keep = min(shared // granule_tokens, len(ids), n)
                        ids = ids[:keep] + tuple(range(next_id, next_id + n - keep))
                        next_id += n - keep
                        prefix = ids or None
                    for key, val in (("arrival_s", t), ("prompt_tokens", call.prompt),
                                     ("output_tokens", call.output), ("session", sid),
                                     ("turn", turn), ("think_s", call.think_s),
                                     ("prefix", prefix)):
                        cols[key].append(val)
                    fu = self.on_complete(Request(0, t, call.prompt, call.output, sid, turn), t)
                    if not fu:
                        break
                    # Zero service time: the call completes when it arrives, so the gap to the
                    # next arrival is exactly its think time.
                    think = fu[0].arrival_s - t
                    t, turn, shared = fu[0].arrival_s, fu[0].turn, fu[0].shared_tokens
                    call = Call(fu[0].prompt_tokens, fu[0].output_tokens, think)
        order = np.argsort(np.asarray(cols["arrival_s"]), kind="stable")
        out: dict[str, Any] = {k: np.asarray(v)[order] for k, v in cols.items() if k != "prefix"}
        out["prefix"] = [cols["prefix"][i] for i in order.tolist()]
        return out

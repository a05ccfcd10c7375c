"""Prefix hash chains derived from a session's growing context, for traces that have none.

An agent program or conversation sends each call with the context so far: the previous
call's prompt, its output, then what came back (a tool's result, the user's next message).
A trace that records only token counts (the Exgentic agent spans, a native trace without
``prefix_hashes``) therefore still says which KV a call can reuse: the leading tokens it
repeats of the previous call. Without a chain, a replay gave every call private granules, so
a real agent trace was simulated as if no prefix cache existed (issue 18: 0% reuse on the
SWE-bench shard replayed closed-loop).

The rule, the one the live session generators follow (workload/sessions.py):

* a call whose prompt holds at least the previous call's prompt + output repeats all of it
  (an append-only context);
* a shorter prompt (the agent reset or compacted its context) repeats only the session's
  first prompt, the system prompt, tool schemas and task every call keeps, up to its length.

Ids are granules of ``kv.prefix_block_tokens`` tokens, counted from 0 in file order; a call's
chain covers its prompt and output, so the next call can extend it.
"""

from __future__ import annotations

import numpy as np

from simkv.workload.base import ArrivalBatch


class ContextChains:
    """Per session: the previous call's chain and context length, and the first prompt."""

    def __init__(self, granule_tokens: int) -> None:
        self.g = granule_tokens
        self._last: dict[int, tuple[tuple[int, ...], int, int]] = {}
        self._next = 0

    def shared_tokens(self, session: int, prompt: int) -> int:
        """Leading tokens of a call of ``session`` with ``prompt`` tokens that repeat its
        previous call's prompt and output (0 for a session's first call)."""
        last = self._last.get(session)
        if last is None:
            return 0
        _, context, first = last
        return context if prompt >= context else min(prompt, first)

    def derive(self, b: ArrivalBatch) -> list[tuple[int, ...] | None]:
        """Chains for every row of ``b`` (None for rows without a session or failed)."""
        assert b.session is not None
        out: list[tuple[int, ...] | None] = []
        failed = b.failed if b.failed is not None else np.zeros(len(b), dtype=bool)
        for i in range(len(b)):
            s = int(b.session[i])
            if s < 0 or failed[i]:
                out.append(None)
                continue
            p, o = int(b.prompt_tokens[i]), int(b.output_tokens[i])
            last = self._last.get(s)
            n = (p + o) // self.g
            keep = 0
            ids: tuple[int, ...] = ()
            if last is not None:
                ids = last[0]
                keep = min(self.shared_tokens(s, p) // self.g, len(ids), n)
            ids = ids[:keep] + tuple(range(self._next, self._next + n - keep))
            self._next += n - keep
            self._last[s] = (ids, p + o, last[2] if last is not None else p)
            out.append(ids or None)
        return out

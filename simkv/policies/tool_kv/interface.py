"""The agent's KV during a tool call: what happens to a call's KV when it ends mid-program.

When an LLM call of a session (an agent program or a conversation) finishes, its KV would
serve the session's next call, which arrives after the tool runs (or the user thinks). A
policy decides, per finished call, one of three things the KV manager knows how to do:

* ``None``: release it like any finished request's KV: it stays in the HBM prefix cache as
  evictable, and survives the wait only if nothing evicts it (vLLM's behaviour);
* ``Pin(ttl_s)``: keep it pinned in HBM for at most ``ttl_s`` (Continuum); the session's
  next call takes the pin over, a session that ends releases it at once;
* ``Offload(tier)``: write it to DRAM or SSD and free the HBM; the next call loads it back
  when it arrives (the tool's return is the prefetch trigger);
* ``Prefetch(tier, at_s, hold_s)``: offload, then load it back before the predicted return
  (policies/tool_kv/prefetch.py).

``observe_gap`` tells the policy every tool/think time seen on its replica, so a policy can
derive its time-to-live from the observed distribution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from simkv.entities.request import Request


@dataclass(frozen=True, slots=True)
class Pin:
    ttl_s: float


@dataclass(frozen=True, slots=True)
class Offload:
    tier: str


@dataclass(frozen=True, slots=True)
class Prefetch:
    """Offload to ``tier``, then load back so that it lands ``at_s`` after the finish (the
    predicted return); landed KV stays pinned until ``hold_s`` after the finish."""

    tier: str
    at_s: float
    hold_s: float


class ToolKVPolicy(Protocol):
    def decide(self, req: Request, now: float) -> Pin | Offload | Prefetch | None:
        """What to do with the KV of ``req``, a session call that just finished."""
        ...

    def observe_gap(self, gap_s: float) -> None:
        """A session's next call arrived ``gap_s`` after the previous one finished."""
        ...

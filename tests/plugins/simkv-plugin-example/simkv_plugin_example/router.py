"""A router registered from outside simkv: the instance with the fewest prompt tokens routed
to it so far, scaled by its speed (a toy: it never learns when they finish).

simkv imports this module because the package declares it under the entry-point group
``simkv.policies``; the decorator does the rest: ``router=fewest_prompt_tokens`` on the
command line, ``fewest_prompt_tokens.weight=...`` to set its field.
"""

from __future__ import annotations

from dataclasses import dataclass

from simkv.registry import register


@dataclass(slots=True)
class FewestPromptTokensConfig:
    # Extra tokens charged per request (the overhead of a call, whatever its length).
    weight: int = 0


@register("router", "fewest_prompt_tokens", FewestPromptTokensConfig)
class FewestPromptTokens:
    def __init__(self, cfg: FewestPromptTokensConfig, **_: object) -> None:
        self.cfg = cfg
        self.sent: dict[int, int] = {}  # instance id -> prompt tokens routed to it

    def route(self, req, replicas, now: float) -> int:  # the Router protocol of simkv
        best = min(range(len(replicas)),
                   key=lambda i: (self.sent.get(replicas[i].index, 0) / replicas[i].work_rate, i))
        inst = replicas[best].index
        self.sent[inst] = self.sent.get(inst, 0) + req.prompt_tokens + self.cfg.weight
        return best

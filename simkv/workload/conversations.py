"""Multi-turn conversations with user think time and a growing context, closed loop.

A conversation has a number of rounds; each round's prompt is the whole conversation so far
(system prompt, every earlier user message and answer) plus the new user message; the next
round arrives when the answer completes plus the user's think time. Presets
(workloads/sharegpt.yaml, workloads/longconv.yaml) carry the fitted numbers and sources.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from simkv.config.bounds import bounded, check
from simkv.registry import register
from simkv.workload.sessions import Call, SessionWorkload


@dataclass(slots=True)
class ConversationWorkloadConfig:
    preset: str = "sharegpt"
    num_conversations: int = bounded(200, ge=1)
    conversation_rate: float = bounded(1.0, gt=0)
    # Rounds per conversation ~ lognormal(mu, sigma), rounded, >= 1.
    rounds_mu: float = bounded(1.294)
    rounds_sigma: float = bounded(1.154, ge=0)
    rounds_max: int = bounded(300, ge=1)
    system_tokens: int = bounded(0, ge=0)
    # User message and answer tokens per round ~ lognormal(mu, sigma).
    user_mu: float = bounded(3.227)
    user_sigma: float = bounded(1.68, ge=0)
    answer_mu: float = bounded(5.765)
    answer_sigma: float = bounded(0.757, ge=0)
    answer_max: int = bounded(4096, ge=1)
    # Think time before the next round ~ lognormal(mu, sigma) seconds.
    think_mu: float = bounded(4.889)
    think_sigma: float = bounded(0.971, ge=0)
    max_context: int = bounded(131072, ge=2, le=2**31 - 1)

    def __post_init__(self) -> None:
        check(self, "workload.")


@dataclass(slots=True)
class _Chat:
    left: int


def _lognormal(rng: np.random.Generator, mu: float, sigma: float) -> float:
    # NOTE: math.exp on a Python float: numpy's scalar ufuncs cost ~1 us per call here.
    return math.exp(mu + sigma * float(rng.standard_normal()))


def _clip(x: float, lo: int, hi: int) -> int:
    return int(min(max(x, lo), hi))


@register("workload", "conversation", ConversationWorkloadConfig)
class ConversationWorkload(SessionWorkload):
    def __init__(self, cfg: ConversationWorkloadConfig, **_: object) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_sessions = cfg.num_conversations
        self.session_rate = cfg.conversation_rate
        self.max_context = cfg.max_context

    def _user(self, rng: np.random.Generator) -> int:
        return max(1, round(_lognormal(rng, self.cfg.user_mu, self.cfg.user_sigma)))

    def _answer(self, rng: np.random.Generator) -> int:
        return _clip(round(_lognormal(rng, self.cfg.answer_mu, self.cfg.answer_sigma)), 1,
                     self.cfg.answer_max)

    def start(self, rng: np.random.Generator) -> tuple[Call, _Chat]:
        cfg = self.cfg
        rounds = _clip(round(_lognormal(rng, cfg.rounds_mu, cfg.rounds_sigma)), 1, cfg.rounds_max)
        return Call(cfg.system_tokens + self._user(rng), self._answer(rng)), _Chat(rounds - 1)

    def follow(self, rng: np.random.Generator, state: _Chat, prev: Call
               ) -> tuple[Call, _Chat] | None:
        if state.left <= 0:
            return None
        state.left -= 1
        think = _lognormal(rng, self.cfg.think_mu, self.cfg.think_sigma)
        return Call(prev.prompt + prev.output + self._user(rng), self._answer(rng), think), state

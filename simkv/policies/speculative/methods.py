"""Speculative decoding methods (config group ``speculative``): none, draft, eagle, ngram.

A method proposes ``num_speculative_tokens`` (k) tokens per decoding sequence and step; the
target verifies them in one forward pass of k + 1 query tokens per sequence (the last token
and the k proposals) and keeps the accepted prefix plus one token of its own (the bonus or
correction token). What differs between methods is what proposing costs (engine cost:
perf/speculative.py) and how often proposals are accepted (this file).

**Acceptance model.** Each proposed token is accepted with probability ``acceptance``
(alpha), independently, until the first rejection (Leviathan et al., ICML 2023, arXiv
2211.17192, section 3.1: the i.i.d. approximation); so a step emits ``min(G, k) + 1`` tokens,
G geometric with P(G >= j) = alpha^j, and on average (1 - alpha^(k+1)) / (1 - alpha). alpha is
an input per (method, draft/target pair, workload): ``acceptance_by_log_type`` maps a request's
log type (a trace's service, e.g. BurstGPT's Conversation log / API log) to its own alpha. The
defaults are converted from Spec-Bench's measured mean accepted tokens per step (Xia et al.,
ACL Findings 2024, arXiv 2401.07851; github hemingkx/Spec-Bench Leaderboard.md, A100, Vicuna-7B,
greedy, batch 1) by solving that formula for alpha at the method's k: SpS (draft model
vicuna-68m, k 5) 2.28 -> 0.578; EAGLE 3.61 -> 0.791 (its tree read as an equivalent chain of
5); prompt lookup (PLD, 10 proposed tokens) 1.73 -> 0.422. docs/SCHEDULING.md has the table.

A request's steps are sampled once, when it joins the decode batch, from a stream seeded by
(run seed, request id, times it joined before), so the same request accepts the same tokens
in every configuration compared, and a preempted request resamples the steps it has left.
The last step emits only what is left: a request generates exactly its requested tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simkv.config.bounds import bounded, check, require
from simkv.entities.request import Request
from simkv.registry import register

# Spec-Bench (A100, Vicuna-7B-v1.3, greedy, batch 1) mean accepted tokens, converted to alpha.
ALPHA_SPS = 0.578
ALPHA_EAGLE = 0.791
ALPHA_PLD = 0.422


@dataclass(slots=True)
class NoSpeculationConfig:
    pass


@dataclass(slots=True)
class _Common:
    # Per-token acceptance of a proposal, and per log type (a trace's service).
    acceptance: float = bounded(0.5, ge=0, lt=1)
    acceptance_by_log_type: dict[str, float] = field(default_factory=dict)

    def validate(self, prefix: str = "speculative.") -> None:
        for name, a in self.acceptance_by_log_type.items():
            require(0 <= a < 1, f"{prefix}acceptance_by_log_type.{name}: expected a number >= 0 "
                                f"and < 1, got {a}")


@dataclass(slots=True)
class DraftModelConfig(_Common):
    """A smaller model of the same tokenizer proposes k tokens, one forward pass each."""

    # A model spec of conf/model sharing the target's vocabulary.
    draft_model: str = "llama3_2_1b"
    # HF assisted generation's default num_assistant_tokens (Spec-Bench's SpS).
    num_speculative_tokens: int = bounded(5, ge=1, le=32)
    acceptance: float = bounded(ALPHA_SPS, ge=0, lt=1)

    def __post_init__(self) -> None:
        check(self, "speculative.")


@dataclass(slots=True)
class EagleConfig(_Common):
    """EAGLE-style heads: one decoder layer of the target's shape, reading the target's
    hidden states, plus the target's LM head, per proposed token (Li et al., ICML 2024,
    arXiv 2401.15077)."""

    num_speculative_tokens: int = bounded(5, ge=1, le=32)
    acceptance: float = bounded(ALPHA_EAGLE, ge=0, lt=1)
    # Decoder layers of the head (EAGLE: 1).
    head_layers: int = bounded(1, ge=1)

    def __post_init__(self) -> None:
        check(self, "speculative.")


@dataclass(slots=True)
class NgramConfig(_Common):
    """Prompt lookup (n-gram matching against the context): no model runs to propose."""

    # PLD's num_pred_tokens (github apoorvumang/prompt-lookup-decoding).
    num_speculative_tokens: int = bounded(10, ge=1, le=32)
    acceptance: float = bounded(ALPHA_PLD, ge=0, lt=1)
    # Host seconds per iteration to match n-grams for the batch (assumed: microseconds).
    proposer_s: float = bounded(1e-4, ge=0)

    def __post_init__(self) -> None:
        check(self, "speculative.")


@register("speculative", "none", NoSpeculationConfig)
class NoSpeculation:
    """Plain decoding (the default): one token per sequence and step."""

    active = False

    def __init__(self, cfg: NoSpeculationConfig, **_: object) -> None:
        self.cfg = cfg


class Speculation:
    """A speculative method as the engine sees it: k, alpha per request, sampled steps."""

    active = True
    kind = ""

    def __init__(self, cfg: Any, *, seed: int = 0, **_: object) -> None:
        self.cfg = cfg
        self.k = cfg.num_speculative_tokens
        self.seed = seed
        self.by_type = dict(cfg.acceptance_by_log_type)
        # Counters for summary.json: steps taken, tokens proposed and accepted (drafts only).
        self.steps = 0
        self.proposed = 0
        self.accepted = 0

    def alpha(self, req: Request) -> float:
        return self.by_type.get(req.log_type, self.cfg.acceptance)

    def emitted(self, req: Request, remaining: int, joins: int) -> np.ndarray:
        """Tokens each step emits until ``remaining`` are generated (the last step cut)."""
        if remaining <= 0:
            return np.zeros(0, dtype=np.int64)
        rng = np.random.default_rng((self.seed, 0x5BEC, req.id, joins))
        a, k = self.alpha(req), self.k
        out: list[np.ndarray] = []
        total = 0
        n = max(4, int(remaining * (1.0 - a) / max(1e-9, 1.0 - a ** (k + 1))) + 4)
        while total < remaining:
            # accepted drafts before the first rejection, at most k; then the target's token
            g = rng.geometric(1.0 - a, n) - 1 if a > 0 else np.zeros(n, dtype=np.int64)
            e = np.minimum(g, k) + 1
            out.append(e)
            total += int(e.sum())
        steps = np.concatenate(out)
        cum = np.cumsum(steps)
        last = int(np.searchsorted(cum, remaining))  # the step that reaches the output
        steps = steps[:last + 1].copy()
        steps[-1] -= int(cum[last]) - remaining
        return steps

    def summary(self) -> dict[str, float]:
        return {"steps": self.steps, "proposed_tokens": self.proposed,
                "accepted_tokens": self.accepted,
                "acceptance_rate": self.accepted / self.proposed if self.proposed else 0.0,
                "tokens_per_step": ((self.accepted + self.steps) / self.steps
                                    if self.steps else 0.0)}


@register("speculative", "draft", DraftModelConfig)
class DraftModel(Speculation):
    kind = "draft"


@register("speculative", "eagle", EagleConfig)
class Eagle(Speculation):
    kind = "eagle"


@register("speculative", "ngram", NgramConfig)
class Ngram(Speculation):
    kind = "ngram"

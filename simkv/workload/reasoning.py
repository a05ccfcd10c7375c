"""Reasoning and RL-rollout workloads: long outputs, many samples per prompt.

* ``workload=reasoning`` (open loop): a reasoning model's online traffic. Arrivals are a
  Gamma renewal process (``rate``, ``cv``); prompt and output lengths are drawn through
  quantile knots (log-linear between knots, workload/distributions.py). The default knots are
  ServeGen's DeepSeek-R1 production workload (Xiang et al., NSDI 2026; github
  alibaba/ServeGen data/reason/deepseek-r1: the 73 clients' per-window length distributions
  over a day, pooled weighted by each client's mean rate, computed for docs/WORKLOADS.md):
  output p10 295, p25 448, p50 807, p75 1,577, p90 4,165, p99 13,533, max 32,768 tokens (mean
  1,690: ten times BurstGPT's), prompt p50 266, p90 3,294, p99 25,753. ServeGen's mean
  aggregate rate over the day is 16 req/s, its per-window arrival CV about 1.
* ``workload=rollout`` (closed loop): synchronous RL rollouts (GRPO/DAPO-style). Each step
  submits ``prompts`` prompts x ``samples`` samples at once; the samples of a prompt share
  its whole prompt (one prefix-hash chain, so the prefix cache computes it once when they
  meet on one instance, as vLLM's parallel sampling does) and are one session (so
  ``router=session_affinity`` keeps a group together). The next step starts ``train_s``
  after the last sample of the step finishes: the long tail of output lengths holds the
  whole step, the effect rollout systems are built around. Defaults: DAPO's 16 samples per
  prompt and 20,480-token cap (Yu et al., arXiv 2503.14476); prompts per step are scaled
  down from its 512 (assumed; set ``prompts``); output lengths the reasoning knots above.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from simkv.config.bounds import bounded, check, require
from simkv.entities.request import Request
from simkv.registry import register
from simkv.workload.base import ArrivalBatch, FollowUp, OpenLoop
from simkv.workload.distributions import from_quantiles, tokens

# ServeGen DeepSeek-R1 (see the module doc): (quantile, tokens).
R1_OUTPUT = [[0.0, 9.0], [0.1, 295.0], [0.25, 448.0], [0.5, 807.0], [0.75, 1577.0],
             [0.9, 4165.0], [0.99, 13533.0], [1.0, 32768.0]]
R1_PROMPT = [[0.0, 4.0], [0.1, 19.0], [0.25, 60.0], [0.5, 266.0], [0.75, 1007.0],
             [0.9, 3294.0], [0.99, 25753.0], [1.0, 57284.0]]
CHUNK = 65536


def _knots_ok(knots: list[list[float]], key: str, prefix: str) -> None:
    q = [k[0] for k in knots if len(k) == 2]
    v = [k[1] for k in knots if len(k) == 2]
    require(len(q) == len(knots) >= 2 and q[0] == 0.0 and q[-1] == 1.0
            and all(b > a for a, b in itertools.pairwise(q))
            and all(b >= a for a, b in itertools.pairwise(v)) and v[0] >= 1,
            f"{prefix}{key}: expected [quantile, tokens] knots from quantile 0 to 1, both "
            f"increasing, tokens >= 1, got {knots}")


@dataclass(slots=True)
class ReasoningWorkloadConfig:
    num_requests: int = bounded(3000, ge=1)
    rate: float = bounded(16.0, gt=0)  # ServeGen DeepSeek-R1's mean aggregate rate
    cv: float = bounded(1.0, gt=0)  # inter-arrival coefficient of variation (Gamma)
    prompt_knots: list[list[float]] = field(default_factory=lambda: [k[:] for k in R1_PROMPT])
    output_knots: list[list[float]] = field(default_factory=lambda: [k[:] for k in R1_OUTPUT])
    # Cap on prompt + output (a model's max_model_len is enforced by the engine too).
    output_max: int = bounded(32768, ge=1, le=2**31 - 1)

    def __post_init__(self) -> None:
        check(self, "workload.")

    def validate(self, prefix: str = "workload.") -> None:
        _knots_ok(self.prompt_knots, "prompt_knots", prefix)
        _knots_ok(self.output_knots, "output_knots", prefix)


@register("workload", "reasoning", ReasoningWorkloadConfig)
class ReasoningWorkload(OpenLoop):
    def __init__(self, cfg: ReasoningWorkloadConfig, **_: object) -> None:
        self.cfg = cfg

    def expected_requests(self) -> int | None:
        return self.cfg.num_requests

    def arrivals(self, rng: np.random.Generator) -> Iterator[ArrivalBatch]:
        cfg = self.cfg
        shape = 1.0 / (cfg.cv * cfg.cv)
        t, left = 0.0, cfg.num_requests
        while left:
            n = min(CHUNK, left)
            gaps = rng.gamma(shape, 1.0 / (cfg.rate * shape), n)
            times = t + np.cumsum(gaps)
            t = float(times[-1])
            prompt = tokens(from_quantiles(rng, cfg.prompt_knots, n))
            output = np.minimum(tokens(from_quantiles(rng, cfg.output_knots, n)), cfg.output_max)
            yield ArrivalBatch(times, prompt, output, log_type=["reasoning"] * n)
            left -= n


@dataclass(slots=True)
class RolloutWorkloadConfig:
    steps: int = bounded(3, ge=1)
    prompts: int = bounded(32, ge=1)
    samples: int = bounded(16, ge=1)  # DAPO: 16 responses per prompt
    prompt_knots: list[list[float]] = field(default_factory=lambda: [[0.0, 64.0], [0.5, 256.0],
                                                                     [1.0, 2048.0]])
    output_knots: list[list[float]] = field(default_factory=lambda: [k[:] for k in R1_OUTPUT])
    output_max: int = bounded(20480, ge=1, le=2**31 - 1)  # DAPO's generation cap
    # Seconds between a step's last sample and the next step (the policy update; assumed).
    train_s: float = bounded(0.0, ge=0)
    # Tokens per prefix block id: must equal kv.prefix_block_tokens (SimConfig.validate).
    block_tokens: int = bounded(512, ge=1)

    def __post_init__(self) -> None:
        check(self, "workload.")

    def validate(self, prefix: str = "workload.") -> None:
        _knots_ok(self.prompt_knots, "prompt_knots", prefix)
        _knots_ok(self.output_knots, "output_knots", prefix)


@register("workload", "rollout", RolloutWorkloadConfig)
class RolloutWorkload:
    """Synchronous RL rollouts: a step's samples at once, the next step after the last."""

    def __init__(self, cfg: RolloutWorkloadConfig, **_: object) -> None:
        self.cfg = cfg
        self._rng: np.random.Generator | None = None
        self._left = 0  # samples of the current step not finished
        self._step = 0
        self._next_block = 0

    def expected_requests(self) -> int | None:
        c = self.cfg
        return c.steps * c.prompts * c.samples

    def _batch(self, t: float) -> ArrivalBatch:
        """One step's prompts x samples, all at ``t``; a group shares its prompt's hashes."""
        c, rng = self.cfg, self._rng
        assert rng is not None
        prompt = tokens(from_quantiles(rng, c.prompt_knots, c.prompts))
        n = c.prompts * c.samples
        output = np.minimum(tokens(from_quantiles(rng, c.output_knots, n)), c.output_max)
        prefixes: list[tuple[int, ...] | None] = []
        group = np.repeat(np.arange(c.prompts), c.samples)
        for p in prompt.tolist():
            k = -(-int(p) // c.block_tokens)
            chain = tuple(range(self._next_block, self._next_block + k))
            self._next_block += k
            prefixes += [chain] * c.samples
        session = self._step * c.prompts + group
        self._left = n
        return ArrivalBatch(np.full(n, t), np.repeat(prompt, c.samples), output,
                            session=session.astype(np.int64),
                            turn=np.full(n, self._step, dtype=np.int64),
                            log_type=["rollout"] * n, prefix=prefixes)

    def arrivals(self, rng: np.random.Generator) -> Iterator[ArrivalBatch]:
        self._rng = rng
        self._step = 0
        yield self._batch(0.0)

    def on_complete(self, req: Request, now: float) -> list[FollowUp]:
        self._left -= 1
        if self._left > 0 or self._step + 1 >= self.cfg.steps:
            return []
        self._step += 1
        b = self._batch(now + self.cfg.train_s)
        assert b.session is not None
        assert b.prefix is not None
        return [FollowUp(float(b.arrival_s[i]), int(b.prompt_tokens[i]), int(b.output_tokens[i]),
                         int(b.session[i]), self._step, prefix=b.prefix[i])
                for i in range(len(b))]

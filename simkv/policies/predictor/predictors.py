"""The built-in output predictors.

``running_mean`` (the default) is what a router in front of real engines can compute: the mean
output of the requests that finished so far, per model (a cluster serving two models learns
two means), starting from a prior worth ``prior_weight`` requests. ``fixed`` is a prior that
never learns. ``oracle`` reads the trace's true output length: no real system has it, and the
name says so; it exists to measure what the knowledge is worth (experiments/heterogeneous.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from simkv.config.bounds import bounded, check
from simkv.entities.request import Request
from simkv.registry import register


@dataclass(slots=True)
class RunningMeanPredictorConfig:
    # Tokens believed before any request has finished (assumed: a chat answer's order of
    # magnitude; its weight fades after the first ``prior_weight`` completions).
    prior_tokens: int = bounded(128, ge=1)
    # How many finished requests the prior counts as.
    prior_weight: float = bounded(1.0, gt=0)

    def __post_init__(self) -> None:
        check(self, "predictor.")


@register("predictor", "running_mean", RunningMeanPredictorConfig)
class RunningMeanPredictor:
    def __init__(self, cfg: RunningMeanPredictorConfig, **_: object) -> None:
        self.cfg = cfg
        # model -> [sum of outputs (the prior's included), weight]
        self._stats: dict[str, list[float]] = {}
        self._cache: dict[str, int] = {}

    def predict(self, req: Request) -> int:
        cached = self._cache.get(req.model)
        if cached is not None:
            return cached
        s = self._stats.get(req.model)
        if s is None:
            value = self.cfg.prior_tokens
        else:
            value = max(1, round(s[0] / s[1]))
        self._cache[req.model] = value
        return value

    def observe(self, req: Request) -> None:
        s = self._stats.get(req.model)
        if s is None:
            c = self.cfg
            s = self._stats[req.model] = [c.prior_tokens * c.prior_weight, c.prior_weight]
        s[0] += req.output_tokens
        s[1] += 1.0
        self._cache.pop(req.model, None)


@dataclass(slots=True)
class FixedPredictorConfig:
    # Every request is believed to generate this many tokens (a max_tokens-style bound, or
    # a prior taken from a workload's statistics).
    tokens: int = bounded(128, ge=1)

    def __post_init__(self) -> None:
        check(self, "predictor.")


@register("predictor", "fixed", FixedPredictorConfig)
class FixedPredictor:
    def __init__(self, cfg: FixedPredictorConfig, **_: object) -> None:
        self.tokens = cfg.tokens

    def predict(self, req: Request) -> int:
        return self.tokens

    def observe(self, req: Request) -> None:
        pass


@dataclass(slots=True)
class OraclePredictorConfig:
    pass


@register("predictor", "oracle", OraclePredictorConfig)
class OraclePredictor:
    """The request's true output length, which no real system knows before it ends."""

    def __init__(self, cfg: OraclePredictorConfig, **_: object) -> None:
        pass

    def predict(self, req: Request) -> int:
        return req.output_tokens

    def observe(self, req: Request) -> None:
        pass

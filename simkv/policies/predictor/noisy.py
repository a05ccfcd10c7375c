"""``predictor=oracle_noisy``: a learned output-length predictor of known quality.

The true output length times a log-normal error ``exp(N(0, sigma))`` drawn once per request
from a stream seeded by the run's seed and the request id, so a prediction does not depend
on who asks first or how often. Papers report a length predictor's quality as the rank
correlation (Kendall's tau) between predicted and true lengths; docs/SCHEDULING.md gives
sigma against tau for ShareGPT-like lengths, and the default stands for LTR's OPT-125M
ranker. The name says oracle because it reads the truth to add noise to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simkv.config.bounds import bounded, check
from simkv.entities.request import Request
from simkv.registry import register


@dataclass(slots=True)
class NoisyOraclePredictorConfig:
    # Log-normal error of the predicted length: 0 is the oracle; 0.75 gives Kendall's tau
    # 0.56 on lengths lognormal with sigma 0.9, the ranking quality reported for LTR's
    # OPT-125M ranker (docs/SCHEDULING.md has the table of sigma against tau).
    sigma: float = bounded(0.75, ge=0)

    def __post_init__(self) -> None:
        check(self, "predictor.")


@register("predictor", "oracle_noisy", NoisyOraclePredictorConfig)
class NoisyOraclePredictor:
    def __init__(self, cfg: NoisyOraclePredictorConfig, *, seed: int = 0, **_: object) -> None:
        self.cfg = cfg
        self.seed = seed
        self._cache: dict[int, int] = {}

    def predict(self, req: Request) -> int:
        got = self._cache.get(req.id)
        if got is None:
            # NOTE: one stream per request id, not one shared stream: the prediction of a
            # request is the same whoever asks first and however often.
            z = np.random.default_rng((self.seed, 0x5EED, req.id)).standard_normal()
            got = max(1, round(req.output_tokens * float(np.exp(self.cfg.sigma * z))))
            self._cache[req.id] = got
        return got

    def observe(self, req: Request) -> None:
        self._cache.pop(req.id, None)

"""Synthetic open-loop workload: Poisson arrivals, lognormal prompt and output lengths.

The simplest stream with the two properties that matter to a serving system, random
inter-arrival times and heavy-tailed lengths. Real traces (BurstGPT, agents, conversations)
come with issue 3; this one is the embedded default until then.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from simkv.config.bounds import bounded, check
from simkv.registry import register
from simkv.workload.base import ArrivalBatch, OpenLoop

CHUNK = 65536


@dataclass(slots=True)
class PoissonWorkloadConfig:
    """Lengths are lognormal: ``median * exp(sigma * N(0,1))``, rounded, clipped to [1, max]."""

    num_requests: int = bounded(3000, ge=1)
    # Requests per second (about 65% of 2 H100s for Llama-3.1-8B).
    rate: float = bounded(40.0, gt=0)
    prompt_median: float = bounded(512.0, ge=1)
    prompt_sigma: float = bounded(0.8, ge=0)
    prompt_max: int = bounded(8192, ge=1, le=2**31 - 1)
    output_median: float = bounded(160.0, ge=1)
    output_sigma: float = bounded(0.7, ge=0)
    output_max: int = bounded(2048, ge=1, le=2**31 - 1)

    def __post_init__(self) -> None:
        check(self, "workload.")


def lognormal_tokens(rng: np.random.Generator, median: float, sigma: float, cap: int,
                     n: int) -> np.ndarray:
    x = np.rint(median * np.exp(sigma * rng.standard_normal(n)))
    return np.clip(x, 1, cap).astype(np.int64)


@register("workload", "poisson", PoissonWorkloadConfig)
class PoissonWorkload(OpenLoop):
    def __init__(self, cfg: PoissonWorkloadConfig, **_: object) -> None:
        self.cfg = cfg

    def expected_requests(self) -> int | None:
        return self.cfg.num_requests

    def arrivals(self, rng: np.random.Generator) -> Iterator[ArrivalBatch]:
        cfg = self.cfg
        t = 0.0
        left = cfg.num_requests
        while left:
            n = min(CHUNK, left)
            gaps = rng.exponential(1.0 / cfg.rate, n)
            arrival = t + np.cumsum(gaps)
            t = float(arrival[-1])
            yield ArrivalBatch(
                arrival_s=arrival,
                prompt_tokens=lognormal_tokens(rng, cfg.prompt_median, cfg.prompt_sigma,
                                               cfg.prompt_max, n),
                output_tokens=lognormal_tokens(rng, cfg.output_median, cfg.output_sigma,
                                               cfg.output_max, n),
            )
            left -= n

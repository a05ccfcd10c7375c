"""Samplers for token counts and times, parameterised the way published figures come.

Published statistics are usually percentiles (p50, p90, p99) or a fitted family with two
parameters; these helpers turn either into numpy draws, vectorised.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def from_quantiles(rng: np.random.Generator, knots: Sequence[Sequence[float]], n: int
                   ) -> np.ndarray:
    """Inverse-CDF draws through (quantile, value) knots, log-linear between knots.

    Log-linear because token counts span decades: between p50 = 74 and p90 = 1291 a linear
    interpolation would put far too much mass at large values.
    """
    q = np.array([k[0] for k in knots], dtype=np.float64)
    v = np.log(np.array([k[1] for k in knots], dtype=np.float64))
    if q[0] != 0.0 or q[-1] != 1.0 or np.any(np.diff(q) <= 0) or np.any(np.diff(v) < 0):
        raise ValueError(f"quantile knots must start at 0, end at 1 and increase: {knots}")
    return np.exp(np.interp(rng.random(n), q, v))


def lognormal_int(rng: np.random.Generator, mu: float, sigma: float, n: int, lo: int = 1,
                  hi: int | None = None) -> np.ndarray:
    """Rounded lognormal draws, clipped to [lo, hi]."""
    x = np.rint(np.exp(mu + sigma * rng.standard_normal(n)))
    return np.clip(x, lo, hi if hi is not None else np.inf).astype(np.int64)


def tokens(x: np.ndarray, lo: int = 1) -> np.ndarray:
    return np.maximum(np.rint(x), lo).astype(np.int64)

"""The power model of one GPU: a step's power from its work, and what a clock or a cap does.

At full clock, a step of duration T whose GPU does F FLOPs, moves B HBM bytes and L link
bytes draws (per GPU)

    P = idle + active + compute x F / (T x peak FLOP/s) + memory x B / (T x HBM bandwidth)
             + link x L / (T x NVLink bandwidth),                      at most the TDP.

``idle`` is the GPU with a loaded engine and nothing running; ``active`` the clock-up floor of
a GPU running kernels that do almost nothing (dev19's ``tiny_kernels`` loop measures it);
the last three scale with how much of each peak the step uses (Splitwise's finding, ISCA
2024 section III-F: the compute-bound prompt phase draws near TDP, the memory-bound token
phase far below it). A step above the TDP draws the TDP: the calibrated step times were
measured on GPUs at their limit.

At SM clock fraction x (a locked clock, or the one a power cap leaves), the compute-bound
share s of the step slows with the clock and the rest (HBM, links, host) does not:

    T(x) = T x (s / x + 1 - s),    s = min(1, F / (peak x gemm efficiency x T));

the SM domain's power scales as x ** gamma (``freq_exponent``: f V^2 with V following f), so
the active floor draws active x**gamma and each FLOP costs x**(gamma - 1) of its full-clock
energy; HBM and link energy per byte do not depend on the SM clock. Power is monotone in the
clock, so a cap's clock is found by bisection: the highest clock whose power fits under it.
A step whose calibrated time was already at the TDP (its full-clock power above it) starts
from the clock the TDP allowed, so a cap equal to the TDP changes nothing.

All functions are vectorised over a run's iterations (numpy arrays of equal length).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simkv.energy.params import PowerParams

BISECTIONS = 40  # clock resolution 2**-40 of the range: far below any effect on a step


@dataclass(slots=True)
class Operating:
    """Iterations at their operating point: durations, power per GPU, clock fraction."""

    seconds: np.ndarray
    power_w: np.ndarray
    clock: np.ndarray
    capped: np.ndarray  # the cap (or clock) slowed this iteration
    unmet: np.ndarray  # even the lowest clock draws more than the cap


class PowerModel:
    """One GPU's power model (PowerParams) against one hardware profile's peaks."""

    def __init__(self, params: PowerParams, flops_peak: float, hbm_bandwidth: float,
                 link_bandwidth: float, compute_efficiency: float) -> None:
        self.p = params
        self.flops_peak = flops_peak
        self.hbm = hbm_bandwidth
        self.link = link_bandwidth
        self.eff = compute_efficiency

    # --- full clock ---------------------------------------------------------------------
    def energies(self, flops: np.ndarray, nbytes: np.ndarray, link: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
        """(compute energy at full clock, HBM + link energy) in J per GPU: the work terms."""
        p = self.p
        compute = p.compute_w * flops / self.flops_peak
        other = p.memory_w * nbytes / self.hbm + p.link_w * link / self.link
        return compute, other

    def power(self, seconds: np.ndarray, flops: np.ndarray, nbytes: np.ndarray,
              link: np.ndarray) -> np.ndarray:
        """Power per GPU (W) of iterations at full clock, at most the TDP."""
        p = self.p
        compute, other = self.energies(flops, nbytes, link)
        t = np.maximum(seconds, 1e-12)
        return np.minimum(p.idle_w + p.active_w + (compute + other) / t, p.tdp_w)

    def compute_share(self, seconds: np.ndarray, flops: np.ndarray) -> np.ndarray:
        """Share of each step's time its SM clock sets: its FLOPs at the achieved peak."""
        t = np.maximum(seconds, 1e-12)
        return np.clip(flops / (self.flops_peak * self.eff * t), 0.0, 1.0)

    # --- clocks and caps ----------------------------------------------------------------
    def _power_at(self, x: np.ndarray, x0: np.ndarray, seconds: np.ndarray, share: np.ndarray,
                  compute: np.ndarray, other: np.ndarray) -> np.ndarray:
        """Power at clock x of a step whose calibrated ``seconds`` were at clock x0."""
        p, g = self.p, self.p.freq_exponent
        t = np.maximum(seconds, 1e-12) * (share / x + 1 - share) / (share / x0 + 1 - share)
        return p.idle_w + p.active_w * x**g + (compute * x ** (g - 1) + other) / t

    def _solve(self, target: float | np.ndarray, lo: np.ndarray, hi: np.ndarray,
               f: object) -> np.ndarray:
        """Highest x in [lo, hi] with f(x) <= target (f increasing); lo where none is."""
        lo, hi = lo.copy(), hi.copy()
        for _ in range(BISECTIONS):
            mid = 0.5 * (lo + hi)
            ok = f(mid) <= target  # type: ignore[operator]
            lo = np.where(ok, mid, lo)
            hi = np.where(ok, hi, mid)
        return lo

    def operate(self, seconds: np.ndarray, flops: np.ndarray, nbytes: np.ndarray,
                link: np.ndarray, clock: float = 1.0, cap_w: float | None = None) -> Operating:
        """Iterations under a locked clock fraction and/or a power cap (W per GPU).

        Without either (clock 1, no cap) the iterations keep their calibrated durations and
        draw ``power(...)``; otherwise each runs at the highest clock not above ``clock``
        whose power fits under ``cap_w`` (the GPU's own minimum clock at the least).
        """
        seconds = np.asarray(seconds, dtype=np.float64)
        base = self.power(seconds, flops, nbytes, link)
        n = seconds.shape[0]
        ones = np.ones(n)
        if clock >= 1.0 and (cap_w is None or cap_w >= self.p.tdp_w):
            return Operating(seconds, base, ones, np.zeros(n, bool), np.zeros(n, bool))
        p = self.p
        share = self.compute_share(seconds, flops)
        compute, other = self.energies(flops, nbytes, link)
        lo = np.full(n, p.min_fraction)
        # The clock the calibrated durations ran at: full, or what the TDP allowed.
        over = p.idle_w + p.active_w + (compute + other) / np.maximum(seconds, 1e-12) > p.tdp_w
        x0 = ones.copy()
        if over.any():
            x0 = np.where(over, self._solve(p.tdp_w, lo, ones, lambda x: self._power_at(
                x, x, seconds, share, compute, other)), 1.0)
        x = np.minimum(x0, clock)
        unmet = np.zeros(n, bool)
        if cap_w is not None and cap_w < p.tdp_w:
            fits = self._solve(cap_w, lo, x, lambda y: self._power_at(
                y, x0, seconds, share, compute, other))
            unmet = self._power_at(lo, x0, seconds, share, compute, other) > cap_w
            x = np.minimum(x, fits)
        slowed = x < x0
        t = seconds * (share / x + 1 - share) / (share / x0 + 1 - share)
        # NOTE: at most the uncapped power: a step whose work the model cannot fit under the TDP
        # even at the lowest clock (a point no GPU reaches) keeps the TDP it was clipped to.
        power = np.where(slowed, np.minimum(self._power_at(x, x0, seconds, share, compute, other),
                                            base), base)
        return Operating(np.where(slowed, t, seconds), power, x, slowed, unmet)

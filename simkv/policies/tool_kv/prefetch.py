"""Offload the KV during the tool call, and load it back *before* the tool is predicted to
return, so the next call finds it in HBM (the open end of ``offload``, docs/MEMORY.md).

``offload`` loads the KV when the next call arrives: that call waits for the load (its
``kv_wait_s``). This policy predicts when the call returns with Continuum's logic (the tool
times seen on the replica: the TTL policy's quantile estimator) and starts the load early:

* the prediction of the return is the ``quantile`` of the observed gaps (low: early, so most
  calls find their KV landed, at the price of HBM held while waiting); ``initial_s`` until
  ``min_samples`` gaps were seen;
* the load starts at ``finish + prediction - (its estimated duration)``; a call that arrives
  before the load started loads as ``offload`` does; one that arrives while it is in flight
  waits only for what is left of it;
* landed KV is pinned for the next call until ``hold_quantile`` of the gaps (Continuum's TTL,
  0.8) after the finish, then left as evictable cache (``pin_landed=false``: at once);
* when the prediction is shorter than writing the KV out and reading it back, the KV stays
  pinned in HBM instead (Continuum's TTL pin): offloading could not pay off.

The manager (kv/manager.py) carries the decision out: it knows the bytes and the links.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from simkv.config.bounds import bounded, check, require
from simkv.entities.request import Request
from simkv.policies.tool_kv.interface import Offload, Pin, Prefetch
from simkv.registry import register

_TIERS = ("dram", "ssd", "csd")


@dataclass(slots=True)
class PrefetchConfig:
    tier: str = bounded("dram", choices=_TIERS)
    # Quantile of the observed tool gaps taken as the predicted return (the load aims to land
    # then); hold_quantile: how long landed KV stays pinned (Continuum's TTL quantile).
    quantile: float = bounded(0.3, gt=0, lt=1)
    hold_quantile: float = bounded(0.8, gt=0, le=1)
    initial_s: float = bounded(5.0, ge=0)
    max_hold_s: float = bounded(300.0, ge=0)
    # Landed KV pinned until the hold (true) or left as evictable cache, which memory pressure
    # may take back before the call (false): pins trade HBM for certainty, as Continuum's.
    pin_landed: bool = True
    min_samples: int = bounded(16, ge=1)
    window: int = bounded(512, ge=1)

    def __post_init__(self) -> None:
        check(self, "tool_kv.")

    def validate(self, prefix: str = "tool_kv.") -> None:
        require(self.quantile <= self.hold_quantile,
                f"{prefix}quantile ({self.quantile}) must be <= {prefix}hold_quantile "
                f"({self.hold_quantile}): the KV would be released before it is predicted back")
        require(self.min_samples <= self.window,
                f"{prefix}min_samples ({self.min_samples}) must be <= {prefix}window ({self.window})")


@register("tool_kv", "prefetch", PrefetchConfig)
class PrefetchBeforeReturn:
    def __init__(self, cfg: PrefetchConfig, **_: object) -> None:
        self.cfg = cfg
        self._gaps: deque[float] = deque(maxlen=cfg.window)
        self._pred = (cfg.initial_s, max(cfg.initial_s, min(cfg.max_hold_s, 2 * cfg.initial_s)))
        self._new = 0

    def prediction(self) -> tuple[float, float]:
        """(predicted return, hold) in seconds after the finish."""
        cfg = self.cfg
        # NOTE: re-derived every 16 new gaps, as TTLPin does (a quantile costs ~100 us).
        if self._new and len(self._gaps) >= cfg.min_samples and (
                self._new >= 16 or len(self._gaps) - self._new < cfg.min_samples):
            gaps = np.fromiter(self._gaps, float)
            q, h = np.quantile(gaps, [cfg.quantile, cfg.hold_quantile])
            self._pred = (float(q), float(min(h, cfg.max_hold_s)))
            self._new = 0
        return self._pred

    def decide(self, req: Request, now: float) -> Pin | Offload | Prefetch | None:
        at, hold = self.prediction()
        return Prefetch(self.cfg.tier, at, max(hold, at) if self.cfg.pin_landed else 0.0)

    def observe_gap(self, gap_s: float) -> None:
        self._gaps.append(gap_s)
        self._new += 1

"""Pin the KV in HBM for a time-to-live derived from the tool times seen (Continuum).

Continuum (seed paper: "Continuum: efficient and robust multi-turn LLM agent scheduling with
KV cache time-to-live") keeps an agent's KV cache pinned in GPU memory across a tool call
for a TTL chosen from the tool-call duration distribution, so that short tool calls find
their KV while long ones do not hold memory forever. Here the TTL is the ``quantile`` of the
tool/think gaps this replica has observed (the last ``window`` of them), ``initial_ttl_s``
until ``min_samples`` gaps were seen, and at most ``max_ttl_s``. ``ttl_s`` fixes it instead.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from simkv.config.bounds import bounded, check, require
from simkv.entities.request import Request
from simkv.policies.tool_kv.interface import Offload, Pin
from simkv.registry import register

REFRESH = 16


@dataclass(slots=True)
class TTLPinConfig:
    # Fixed TTL in seconds; None derives it from the observed gaps.
    ttl_s: float | None = bounded(None, ge=0)
    quantile: float = bounded(0.8, gt=0, le=1)
    initial_ttl_s: float = bounded(10.0, ge=0)
    max_ttl_s: float = bounded(300.0, ge=0)
    min_samples: int = bounded(16, ge=1)
    window: int = bounded(512, ge=1)

    def __post_init__(self) -> None:
        check(self, "tool_kv.")

    def validate(self, prefix: str = "tool_kv.") -> None:
        require(self.min_samples <= self.window,
                f"{prefix}min_samples ({self.min_samples}) must be <= {prefix}window "
                f"({self.window}): the TTL would never be derived from the gaps")


@register("tool_kv", "ttl_pin", TTLPinConfig)
class TTLPin:
    def __init__(self, cfg: TTLPinConfig, **_: object) -> None:
        self.cfg = cfg
        self._gaps: deque[float] = deque(maxlen=cfg.window)
        self._ttl = cfg.initial_ttl_s if cfg.ttl_s is None else cfg.ttl_s
        self._new = 0  # gaps observed since the TTL was last derived

    def ttl(self) -> float:
        cfg = self.cfg
        if cfg.ttl_s is not None:
            return cfg.ttl_s
        # NOTE: re-derived every REFRESH new gaps, not every call: a quantile over the window
        # costs ~100 us, and one gap barely moves it.
        if self._new and len(self._gaps) >= cfg.min_samples and (
                self._new >= REFRESH or len(self._gaps) - self._new < cfg.min_samples):
            self._ttl = min(float(np.quantile(np.fromiter(self._gaps, float), cfg.quantile)),
                            cfg.max_ttl_s)
            self._new = 0
        return self._ttl

    def decide(self, req: Request, now: float) -> Pin | Offload | None:
        return Pin(self.ttl())

    def observe_gap(self, gap_s: float) -> None:
        self._gaps.append(gap_s)
        self._new += 1

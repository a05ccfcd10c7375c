"""Offload the KV to DRAM or SSD during the tool call and load it back when the call returns.

Frees HBM for other requests while the tool runs, at the price of a write now and a read
when the next call arrives (over PCIe, and the drive's link for SSD). The HBM copy stays
pinned until the write lands, so nothing is lost if the tool returns early.
"""

from __future__ import annotations

from dataclasses import dataclass

from simkv.config.bounds import bounded, check
from simkv.entities.request import Request
from simkv.policies.tool_kv.interface import Offload, Pin
from simkv.registry import register

_TIERS = ("dram", "ssd", "csd")


@dataclass(slots=True)
class OffloadConfig:
    tier: str = bounded("dram", choices=_TIERS)

    def __post_init__(self) -> None:
        check(self, "tool_kv.")


@register("tool_kv", "offload", OffloadConfig)
class OffloadDuringTool:
    def __init__(self, cfg: OffloadConfig, **_: object) -> None:
        self.decision = Offload(cfg.tier)

    def decide(self, req: Request, now: float) -> Pin | Offload | None:
        return self.decision

    def observe_gap(self, gap_s: float) -> None:
        pass

"""Drop: the KV of a finished call is released like any other (vLLM's behaviour).

With prefix caching on, released KV stays in HBM as evictable cache, so the next call hits
it unless memory pressure evicted it during the tool call; with ``offload=dram`` and the
like, evicted KV is demoted rather than lost.
"""

from __future__ import annotations

from dataclasses import dataclass

from simkv.entities.request import Request
from simkv.policies.tool_kv.interface import Offload, Pin
from simkv.registry import register


@dataclass(slots=True)
class DropConfig:
    pass


@register("tool_kv", "drop", DropConfig)
class Drop:
    def __init__(self, cfg: DropConfig | None = None, **_: object) -> None:
        pass

    def decide(self, req: Request, now: float) -> Pin | Offload | None:
        return None

    def observe_gap(self, gap_s: float) -> None:
        pass

"""No cross-instance KV memory (the default): an instance's KV lives in its own pool."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from simkv.registry import register


@dataclass(slots=True)
class NoKVPoolConfig:
    pass


@register("kv_pool", "none", NoKVPoolConfig)
class NoKVPool:
    per_iteration = False

    def __init__(self, cfg: NoKVPoolConfig, **_: object) -> None:
        self.cfg = cfg

    def attach(self, instance: Any) -> None:
        pass

    def detach(self, instance: Any) -> None:
        pass

"""No migration (the default): a request finishes where it started (a draining instance
waits for its requests)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from simkv.registry import register


@dataclass(slots=True)
class NoMigrationConfig:
    pass


@register("migration", "none", NoMigrationConfig)
class NoMigration:
    def __init__(self, cfg: NoMigrationConfig, **_: object) -> None:
        self.cfg = cfg

    def bind(self, cluster: Any) -> None:
        pass

    def summary(self) -> dict[str, Any] | None:
        return None

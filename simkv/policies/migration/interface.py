"""The migration-policy contract: which running requests move between instances, and when.

A migration policy is a cluster-level planner like Llumnix's global scheduler: bound to the
cluster once (``bind``), it decides moves and asks engine/migration.py's ``Migrator`` to
carry them out (KV as fabric transfers); it never touches an instance's memory itself.
"""

from __future__ import annotations

from typing import Any, Protocol


class MigrationPolicy(Protocol):
    def bind(self, cluster: Any) -> None:
        """The cluster whose serving instances it may move requests between (called once,
        before the first arrival)."""
        ...

    def summary(self) -> dict[str, Any] | None:
        """What summary.json's ``migration`` section reports (None: nothing)."""
        ...

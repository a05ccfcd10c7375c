"""Live migration of running requests between instances (config group ``migration``)."""

from simkv.policies.migration.interface import MigrationPolicy
from simkv.policies.migration.llumnix import Llumnix, LlumnixConfig
from simkv.policies.migration.none import NoMigration, NoMigrationConfig

__all__ = ["Llumnix", "LlumnixConfig", "MigrationPolicy", "NoMigration", "NoMigrationConfig"]

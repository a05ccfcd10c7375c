"""A Hydra ConfigStore entry whose DictConfig is built when Hydra first loads it.

``ConfigStore.store`` converts a node (``OmegaConf.structured``) as it stores it, and Hydra
deep-copies the whole store once per composition; a run composes one choice per group, so
converting and copying all ~90 choices cost 0.1 CPU s of every start. An entry here holds the
dataclass (or instance) and converts it, with the same call, the first time its ``node`` is
read: Hydra reads entries only through ``ConfigStore.load``, which copies the entry (sharing
the built node) and then gives its copy a deep copy of that node. Imported by
simkv/config/store.py only when it registers (``simkv --help`` imports no Hydra); a module of
its own so that launchers that pickle Hydra's state (joblib, Ray, Slurm) find the class.
"""

from __future__ import annotations

from typing import Any

from hydra.core.config_store import ConfigNode, ConfigStore
from omegaconf import OmegaConf


class DeferredNode(ConfigNode):
    """ConfigNode's fields, with ``node`` built on first read; no package or provider, as
    ``ConfigStore.store`` leaves them."""

    def __init__(self, name: str, group: str, source: object) -> None:
        self.name, self.group, self.package, self.provider = name, group, None, None
        self._box: list[Any] = [source, None]  # shared with the copies load() makes

    @property  # type: ignore[override]
    def node(self) -> Any:
        if self._box[1] is None:
            self._box[1] = OmegaConf.structured(self._box[0])
        return self._box[1]

    @node.setter
    def node(self, value: Any) -> None:  # load() gives its copy its own deep copy
        self._box = [None, value]


def store(cs: ConfigStore, group: str, name: str, node: object) -> None:
    """``cs.store(group=group, name=name, node=node)``, converted on first load."""
    cur = cs.repo
    for part in group.split("/"):
        cur = cur.setdefault(part, {})
    cur[f"{name}.yaml"] = DeferredNode(f"{name}.yaml", group, node)

"""One registry for every plug-in point (router, scheduler, workload, ...).

A policy is registered once, by a decorator on its class, together with the dataclass that
configures it. That single entry feeds three consumers:

* the Hydra ConfigStore (``simkv.config.store``) makes ``<group>=<name>`` selectable on the
  command line, so the CLI choices are always exactly the registered policies;
* ``build(cfg)`` dispatches on the *type* of the config object, so no policy-name strings are
  compared in the hot path;
* error messages list the valid names of a group.

Nothing here imports Hydra: policies and the engine stay importable without it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Entry:
    group: str
    name: str
    config_type: type
    factory: Callable[..., Any]


_BY_GROUP: dict[str, dict[str, Entry]] = {}
_BY_CONFIG: dict[type, Entry] = {}


def register(group: str, name: str, config_type: type) -> Callable[[T], T]:
    """Class decorator: make ``factory(cfg, **deps)`` the implementation of ``group=name``."""

    def wrap(factory: T) -> T:
        entries = _BY_GROUP.setdefault(group, {})
        if name in entries and entries[name].factory is not factory:
            raise ValueError(f"{group}={name} is registered twice")
        if config_type in _BY_CONFIG and _BY_CONFIG[config_type].name != name:
            raise ValueError(f"config class {config_type.__name__} already used by another policy")
        entry = Entry(group, name, config_type, factory)  # type: ignore[arg-type]
        entries[name] = entry
        _BY_CONFIG[config_type] = entry
        return factory

    return wrap


def entries(group: str) -> dict[str, Entry]:
    """Registered entries of a group, sorted by name (deterministic order)."""
    _load_builtins()
    return dict(sorted(_BY_GROUP.get(group, {}).items()))


def groups() -> list[str]:
    _load_builtins()
    return sorted(_BY_GROUP)


def build(cfg: Any, **deps: Any) -> Any:
    """Instantiate the policy configured by ``cfg`` (dispatch on its dataclass type)."""
    _load_builtins()
    entry = _BY_CONFIG.get(type(cfg))
    if entry is None:
        raise TypeError(
            f"{type(cfg).__name__} is not a registered policy config; registered groups: "
            f"{', '.join(groups())}"
        )
    return entry.factory(cfg, **deps)


def config_for(group: str, name: str) -> Any:
    """A default config instance of ``group=name``; the error lists the valid names."""
    known = entries(group)
    if name not in known:
        raise KeyError(f"unknown {group} '{name}'; valid choices: {', '.join(known)}")
    return known[name].config_type()


_loaded = False


def _load_builtins() -> None:
    # NOTE: imported lazily so that `import simkv.registry` stays cheap and cycle-free; the
    # built-in policy modules register themselves on import.
    global _loaded
    if _loaded:
        return
    _loaded = True
    import simkv.policies.autoscaler
    import simkv.policies.eviction
    import simkv.policies.kv_policy
    import simkv.policies.kv_pool
    import simkv.policies.offload
    import simkv.policies.router
    import simkv.policies.scheduler
    import simkv.policies.tool_kv
    import simkv.workload  # noqa: F401


def name_of(cfg: Any) -> str:
    """The registered name of a policy config instance."""
    _load_builtins()
    entry = _BY_CONFIG.get(type(cfg))
    if entry is None:
        raise TypeError(f"{type(cfg).__name__} is not a registered policy config")
    return entry.name

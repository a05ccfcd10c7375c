"""One registry for every plug-in point (router, scheduler, workload, ...).

A policy is registered once, by a decorator on its class, together with the dataclass that
configures it. That single entry feeds three consumers:

* the Hydra ConfigStore (``simkv.config.store``) makes ``<group>=<name>`` selectable on the
  command line, so the CLI choices are always exactly the registered policies;
* ``build(cfg)`` dispatches on the *type* of the config object, so no policy-name strings are
  compared in the hot path;
* error messages list the valid names of a group.

Where policies come from: every installed distribution's entry points of the group
``simkv.policies`` (``importlib.metadata``), simkv's own built-ins included, are imported
before the first look-up, and their modules register with the decorator. So a researcher's
package (``pip install my-simkv-policies``) adds ``scheduler=mine`` the way pytest and Hydra
find their plug-ins, and this module imports no policy package (docs/PLUGINS.md).

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


def implementation(cfg: Any) -> Any:
    """The class (factory) registered for a policy config, without building it: what callers
    ask whether a chosen policy can do something."""
    _load_builtins()
    entry = _BY_CONFIG.get(type(cfg))
    if entry is None:
        raise TypeError(f"{type(cfg).__name__} is not a registered policy config")
    return entry.factory


def config_for(group: str, name: str) -> Any:
    """A default config instance of ``group=name``; the error lists the valid names."""
    known = entries(group)
    if name not in known:
        raise KeyError(f"unknown {group} '{name}'; valid choices: {', '.join(known)}")
    return known[name].config_type()


ENTRY_POINT_GROUP = "simkv.policies"
_loaded = False


class PluginError(ImportError):
    """A policy plug-in (an entry point of ``simkv.policies``) could not be imported."""


def plugin_modules() -> list[tuple[str, str, str]]:
    """(distribution, entry point name, module) of every ``simkv.policies`` entry point,
    simkv's own first, then by distribution and name (a deterministic import order)."""
    from importlib.metadata import distributions

    seen: dict[tuple[str, str], str] = {}
    # NOTE: every distribution's metadata, not entry_points(group=...): that keeps only the
    # first metadata of each name on sys.path, and an editable install leaves a
    # simkv.egg-info in the source tree that can be older than the installed dist-info
    # (seen: the egg-info of an install made before the entry points existed hid them
    # when run from the checkout). One entry per (distribution, name).
    for dist in distributions():
        for ep in dist.entry_points:
            if ep.group == ENTRY_POINT_GROUP:
                seen.setdefault((dist.metadata["Name"] or "?", ep.name), ep.value)
    return sorted(((d, n, v) for (d, n), v in seen.items()), key=lambda x: (x[0] != "simkv", x[0], x[1]))


def _load_builtins() -> None:
    # NOTE: imported lazily so that `import simkv.registry` stays cheap and cycle-free; the
    # policy modules register themselves on import.
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib

    found = plugin_modules()
    if not any(dist == "simkv" for dist, _, _ in found):
        _loaded = False
        raise PluginError("simkv's built-in policies are found through its installed metadata "
                          "(entry points of simkv.policies), and none was found: install simkv "
                          "(pip install -e . in a checkout)")
    for dist, name, module in found:
        try:
            importlib.import_module(module.split(":")[0])
        except Exception as exc:
            _loaded = False
            raise PluginError(f"the simkv.policies plug-in {name!r} of {dist} ({module}) failed "
                              f"to import: {type(exc).__name__}: {exc}") from exc


def name_of(cfg: Any) -> str:
    """The registered name of a policy config instance."""
    _load_builtins()
    entry = _BY_CONFIG.get(type(cfg))
    if entry is None:
        raise TypeError(f"{type(cfg).__name__} is not a registered policy config")
    return entry.name

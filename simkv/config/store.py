"""Hydra registration: the schema and every registered policy become config-group choices.

This module and ``simkv.cli`` are the only ones that import Hydra.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources

import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_module
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from simkv import registry
from simkv.config.bounds import ConfigError
from simkv.config.schema import HardwareConfig, SimConfig
from simkv.entities.hardware import shipped_profiles

_done = False
POLICY_GROUPS = ("scheduler", "router", "workload", "eviction", "offload", "tool_kv", "autoscaler",
                 "kv_policy", "kv_pool")
# Groups a run takes exactly one entry of (Hydra would merge a list of them, last one winning).
SINGLE_CHOICE_GROUPS = ("model", "hardware", "engine", "pools", *POLICY_GROUPS)


def register_configs() -> None:
    global _done
    if _done:
        return
    cs = ConfigStore.instance()
    cs.store(name="simkv_schema", node=SimConfig)
    for group in POLICY_GROUPS:
        for name, entry in registry.entries(group).items():
            cs.store(group=group, name=name, node=entry.config_type)
    for profile in shipped_profiles():
        cs.store(group="hardware", name=profile, node=HardwareConfig(profile=profile))
    for name, node in workload_presets().items():
        cs.store(group="workload", name=name, node=node)
    _done = True


def workload_presets() -> dict[str, object]:
    """Presets of workloads/*.yaml as config instances of their generator."""
    generators = registry.entries("workload")
    presets: dict[str, object] = {}
    root = resources.files("simkv.workloads")
    for item in sorted(root.iterdir(), key=lambda p: p.name):
        if not item.name.endswith(".yaml"):
            continue
        doc = yaml.safe_load(item.read_text())
        where = f"workloads/{item.name}"
        gen = doc.pop("generator", None) if isinstance(doc, dict) else None
        if gen not in generators:
            raise ValueError(f"{where}: 'generator' must be one of {', '.join(generators)}, got {gen!r}")
        try:
            presets[item.name[:-5]] = generators[gen].config_type(**doc)
        except TypeError as exc:
            raise ValueError(f"{where}: {exc}") from exc
    return presets


def check_overrides(overrides: Sequence[str]) -> None:
    """Refuse a list given for a group a run takes one entry of: Hydra merges the entries,
    so ``hardware=[a100_80gb,h200]`` would silently run on the last one."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for o in OverridesParser.create().parse_overrides(list(overrides)):
        if o.key_or_group in SINGLE_CHOICE_GROUPS and isinstance(o.value(), list):
            names = ",".join(str(v) for v in o.value())
            raise ConfigError(f"{o.key_or_group}: expected one choice, got the list [{names}]; "
                              f"to run each, sweep: simkv -m {o.key_or_group}={names}")


def compose(overrides: Sequence[str] = ()) -> SimConfig:
    """The run config with command-line style overrides, as typed dataclasses.

    Example: ``simkv.compose(["model=llama3_70b", "cluster.tensor_parallel=4"])``.
    """
    register_configs()
    check_overrides(overrides)
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_module(config_module="simkv.conf", version_base="1.3"):
        dc = hydra_compose(config_name="config", overrides=list(overrides))
    obj = OmegaConf.to_object(dc)
    assert isinstance(obj, SimConfig)
    return obj

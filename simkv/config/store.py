"""Hydra registration: the schema and every registered policy become config-group choices.

This module and ``simkv.cli`` are the only ones that import Hydra; this one only inside its
functions, so ``simkv --help`` (``help_text``) lists the groups without importing Hydra.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import textwrap
from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any

import yaml

from simkv import registry
from simkv.config.bounds import ConfigError
from simkv.config.schema import HardwareConfig, SimConfig
from simkv.entities.hardware import shipped_profiles

if TYPE_CHECKING:
    from hydra.core.config_store import ConfigStore

_done = False
POLICY_GROUPS = ("scheduler", "router", "workload", "eviction", "offload", "tool_kv", "autoscaler",
                 "kv_policy", "kv_pool", "predictor", "speculative", "migration")
# Groups a run takes exactly one entry of (Hydra would merge a list of them, last one winning).
SINGLE_CHOICE_GROUPS = ("model", "hardware", "engine", "pools", "faults", *POLICY_GROUPS)


# One line per config group for `simkv --help` (the choices are appended from the store).
GROUP_HELP = {
    "model": "the model: layers, heads, experts, KV bytes (simkv/conf/model/*.yaml)",
    "hardware": "the GPU profile: peaks, memory, efficiency curves (hardware_profiles/)",
    "engine": "engine costs the roofline does not price (host overheads; fitted presets)",
    "pools": "instance pools: one, heterogeneous GPUs, expert parallel, prefill/decode split",
    "scheduler": "batch scheduler of each instance (vLLM continuous batching, Continuum, static)",
    "router": "which instance receives a request",
    "workload": "the requests: generators, presets of real traces' shapes, trace files",
    "eviction": "which cached KV leaves a tier first",
    "offload": "KV placement below HBM: DRAM, SSD, CSD, cluster store, streamed KV",
    "tool_kv": "what happens to an agent's KV while a tool runs",
    "kv_policy": "per-sequence KV budgets and model kinds (H2O, SentenceKV, ...; docs/KV_METHODS.md)",
    "kv_pool": "KV memory shared across instances (DistAttention: borrow blocks from others)",
    "predictor": "the output length routers and schedulers expect (running mean; oracle: the true one)",
    "migration": "live migration of running requests between instances (Llumnix: balance, drain, priority)",
    "speculative": "speculative decoding: a draft model, EAGLE heads or n-gram lookup (docs/SCHEDULING.md)",
    "autoscaler": "how pools grow and shrink (horizontal, vertical, in-place ElasticMoE, serverless)",
    "faults": "instances lost at fleet failure rates (llama3) or given times; spot.* (docs/FAULTS.md)",
}
HELP_HEADER = """simkv: a trace-driven discrete-event simulator of LLM serving clusters.

A run replays or generates requests against replicas (GPUs with a paged KV cache and a batch
scheduler) behind a router; iteration times come from a roofline over the model spec and the
hardware profile. It writes requests.parquet, summary.json, latency.png/.pdf and run.json to
its folder (printed at the end; docs/OUTPUTS.md).

Usage: simkv [group=choice ...] [key=value ...]      one run
       simkv -m key=a,b group=x,y                    a sweep: one folder per job
"""
HELP_EXAMPLES = """== Examples ==
  simkv model=llama3_70b hardware=a100_80gb cluster.replicas=4 cluster.tensor_parallel=4
  simkv workload=swebench scheduler=continuum tool_kv=ttl_pin offload=dram
  simkv -m hydra/launcher=joblib router=round_robin,least_work cluster.replicas=2,4
        (then: simkv-compare simkv_runs/multirun/<time> --x cluster.replicas --y ttft_s.p99)
"""
HELP_FOOTER = """Every key below can be overridden (key=value); docs/CONFIG.md explains each.
Errors are one line, exit status 2; HYDRA_FULL_ERROR=1 shows Hydra's full report."""
# `simkv --help` alone answers without composing the config (under a second); the config
# itself is a command away.
HELP_CONFIG = """Every key can be overridden (key=value); docs/CONFIG.md explains each.
  simkv --cfg job [overrides]      the resolved config: every key and its value
  simkv --help [overrides]         this help, then that config
  simkv --version                  simkv's version
Errors are one line, exit status 2; HYDRA_FULL_ERROR=1 shows Hydra's full report."""


def help_text(config: str | None = None) -> str:
    """`simkv --help`: what simkv is, the groups with one line each and their choices, three
    examples, then ``config`` (Hydra's ``$CONFIG`` in its template) or how to print it."""
    lines = [HELP_HEADER, "== Config groups (group=choice) =="]
    groups = list(dict.fromkeys([*GROUP_HELP, *SINGLE_CHOICE_GROUPS]))  # a group added later shows too
    width = max(map(len, groups)) + 1
    for group in groups:
        lines.append(f"  {group:<{width}}{GROUP_HELP.get(group, '')}")
        lines += textwrap.wrap(", ".join(choices(group)), 96, initial_indent=" " * (width + 4),
                               subsequent_indent=" " * (width + 4), break_on_hyphens=False)
    lines += ["", HELP_EXAMPLES, "== Config =="]
    lines += [HELP_FOOTER, "", config] if config is not None else [HELP_CONFIG]
    return "\n".join(lines)


def help_template(cs: ConfigStore | None = None) -> str:
    """Hydra's help template (``simkv --help`` with overrides): the help, then the config."""
    return help_text("$CONFIG")


def choices(group: str) -> list[str]:
    """The names ``group=name`` accepts: registered policies, shipped hardware profiles,
    workload presets and the packaged YAML files (model specs, engines, pools). The same
    names register_configs() puts in Hydra's ConfigStore (tests/test_docs_commands.py)."""
    names = set(registry.entries(group)) if group in POLICY_GROUPS else set()
    if group == "hardware":
        names |= set(shipped_profiles())
    if group == "workload":
        names |= {p.name[:-5] for p in resources.files("simkv.workloads").iterdir()
                  if p.name.endswith(".yaml")}
    folder = resources.files("simkv.conf") / group
    if folder.is_dir():
        names |= {p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml")}
    return sorted(names)


def register_configs() -> None:
    global _done
    if _done:
        return
    from hydra.core.config_store import ConfigStore

    from simkv.config.deferred import store

    cs = ConfigStore.instance()
    cs.store(name="simkv_schema", node=SimConfig)
    # The choices are converted when a composition first loads them (config/deferred.py).
    for group in POLICY_GROUPS:
        for name, entry in registry.entries(group).items():
            store(cs, group, name, entry.config_type)
    for profile in shipped_profiles():
        store(cs, "hardware", profile, HardwareConfig(profile=profile))
    for name, node in workload_presets().items():
        store(cs, "workload", name, node)
    # NOTE: stored last, so the template lists every choice registered above.
    cs.store(group="hydra/help", name="simkv", provider="simkv",
             node={"app_name": "simkv", "header": "", "footer": "", "template": help_template()})
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
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    register_configs()
    check_overrides(overrides)
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="simkv.conf", version_base="1.3"):
            dc = hydra_compose(config_name="config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as exc:
        # One line naming the key (simkv-trace generate and scripts get what simkv prints).
        raise ConfigError(hydra_message(exc)) from None
    except ValueError as exc:
        # OmegaConf indexes a list with the key's last part: int('x') escaped as an internal
        # error with no key (workload.models.x=1).
        raise ConfigError(list_index_message(exc, overrides)) from None
    check_added_keys(dc, overrides)
    obj = OmegaConf.to_object(dc)
    assert isinstance(obj, SimConfig)
    return obj


def list_index_message(exc: ValueError, overrides: Sequence[str]) -> str:
    """``workload.models.x: workload.models is a list; ...``: the override whose last part
    OmegaConf could not read as a list index."""
    m = re.search(r"invalid literal for int\(\) with base 10: '([^']*)'", str(exc))
    if m:
        for o in overrides:
            key = o.split("=", 1)[0].lstrip("+~")
            parent, _, leaf = key.rpartition(".")
            if parent and leaf == m.group(1):
                return (f"{key}: {parent} is a list, indexed by position; set an entry "
                        f"({parent}.0=...) or the whole list ({parent}=[...])")
    from simkv.output import one_line

    return one_line(exc)


def hydra_message(exc: BaseException) -> str:
    """Hydra's composition error (several lines: the override, the cause, the keys, the
    search path) as one line that keeps what names the problem. A key that does not exist
    gets the keys it could have meant, never Hydra's advice to add it with ``+`` (simkv's
    config is typed: an added key would fail later)."""
    from omegaconf.errors import OmegaConfBaseException

    cause = exc.__cause__
    text = str(exc)
    missing = re.search(r"Key '([^']+)' (?:is )?not in (?:struct|'(\w+)')", str(cause or ""))
    full = re.search(r"full_key: (\S+)", str(cause or ""))
    if "Could not override" in text and missing:
        return unknown_key(full.group(1) if full else missing.group(1), missing.group(2))
    if isinstance(cause, OmegaConfBaseException) and str(cause) not in text:
        text += "\n" + str(cause)
    lines = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("Config search path"):
            break
        if line and not line.startswith(("full_key:", "reference_type=", "object_type=",
                                          "Set the environment variable HYDRA_FULL_ERROR",
                                          "To append to your config use")):
            lines.append(line)
    head: list[str] = []
    options: list[str] = []
    label = ""
    for ln in lines:
        if ln.startswith("Available options"):
            label = ln.rstrip(":")
        elif label:
            options.append(ln)
        else:
            head.append(ln.rstrip("."))
    out = "; ".join(head)
    if label:
        out += f"; {label}: {', '.join(options)}"
    if out:
        return out
    from simkv.output import one_line

    return one_line(exc)


def _config_classes() -> dict[str, type]:
    """Every config dataclass by class name: the schema's sections and every policy's."""
    from simkv.config.schema import PoolConfig, SimConfig

    found: dict[str, type] = {}

    def walk(obj: Any) -> None:
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type) \
                and type(obj).__name__ not in found:
            found[type(obj).__name__] = type(obj)
            for f in dataclasses.fields(obj):
                walk(getattr(obj, f.name))

    walk(SimConfig())
    walk(PoolConfig())  # pools is an empty mapping by default: its entries' keys are found here
    for group in POLICY_GROUPS:
        for entry in registry.entries(group).values():
            found.setdefault(entry.config_type.__name__, entry.config_type)
    return found


def unknown_key(key: str, owner: str | None = None, added: bool = False) -> str:
    """``cluster.replica: no such key in cluster (ClusterConfig); did you mean
    cluster.replicas?``: one line, with the closest keys of the section it names."""
    parent, _, leaf = key.rpartition(".")
    if owner is None and parent and not added:
        # Hydra names no dataclass: the parent is a mapping, not a section (this used to list
        # the top level's keys as if they were the mapping's).
        if parent == "pools":  # its entries are pools, which only a preset defines
            return (f"{key}: the chosen pools preset has no pool '{leaf}'; choose one that has "
                    f"it (pools=h100_a100, pd_split, ...: docs/CLUSTER.md) before setting "
                    f"pools.{leaf}.*")
        return (f"{key}: {parent} is a mapping with no entry '{leaf}'; add one with "
                f"'+{key}=<value>'")
    cls = _config_classes().get(owner or "SimConfig")
    where = f" in {parent or 'the config'}" + (f" ({owner})" if owner else "")
    out = f"{key}: no such key{where}"
    if cls is not None and dataclasses.is_dataclass(cls):
        names = [f.name for f in dataclasses.fields(cls)]
        close = difflib.get_close_matches(leaf, names, n=3, cutoff=0.6)
        prefix = f"{parent}." if parent else ""
        if close:
            out += "; did you mean " + " or ".join(prefix + c for c in close) + "?"
        else:
            out += f"; its keys: {', '.join(names)}"
    if added:
        return out + " ('+' cannot add a key to simkv's typed config; docs/CONFIG.md lists them)"
    return out + " (docs/CONFIG.md lists every key)"


def check_added_keys(dc: Any, overrides: Sequence[str]) -> None:
    """Refuse ``+key=value`` (and ``++``) for a key simkv's typed config does not have: Hydra
    adds it to the composed config, which then cannot become the dataclasses (it used to
    end as an internal error). ``hydra.*`` keys (launcher options) may be added."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import DictConfig, OmegaConf

    for o in OverridesParser.create().parse_overrides(list(overrides)):
        key = o.key_or_group
        if not (o.is_add() or o.is_force_add()) or key.startswith("hydra.") or key == "hydra":
            continue
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(dc, parent) if parent else dc
        if not isinstance(node, DictConfig):
            continue
        cls = OmegaConf.get_type(node)
        if cls is not None and dataclasses.is_dataclass(cls) \
                and leaf not in {f.name for f in dataclasses.fields(cls)}:
            raise ConfigError(unknown_key(key, cls.__name__, added=True))

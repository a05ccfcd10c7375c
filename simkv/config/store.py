"""Hydra registration: the schema and every registered policy become config-group choices.

This module and ``simkv.cli`` are the only ones that import Hydra.
"""

from __future__ import annotations

import textwrap
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
                 "kv_policy", "kv_pool", "predictor", "speculative")
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
    "speculative": "speculative decoding: a draft model, EAGLE heads or n-gram lookup (docs/SCHEDULING.md)",
    "autoscaler": "how pools grow and shrink (horizontal, vertical, in-place ElasticMoE)",
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


def help_template(cs: ConfigStore) -> str:
    """`simkv --help`: what simkv is, the groups with one line each and their choices, three
    examples, then the config (Hydra's $CONFIG)."""
    lines = [HELP_HEADER, "== Config groups (group=choice) =="]
    for group in dict.fromkeys([*GROUP_HELP, *SINGLE_CHOICE_GROUPS]):  # a group added later shows too
        text = GROUP_HELP.get(group, "")
        choices = sorted(n[:-5] if n.endswith(".yaml") else n for n in _choices(cs, group))
        lines.append(f"  {group:<11}{text}")
        lines += textwrap.wrap(", ".join(choices), 96, initial_indent=" " * 15,
                               subsequent_indent=" " * 15, break_on_hyphens=False)
    lines += ["", HELP_EXAMPLES, "== Config ==", HELP_FOOTER, "", "$CONFIG"]
    return "\n".join(lines)


def _choices(cs: ConfigStore, group: str) -> list[str]:
    names = set(cs.list(group)) if group in cs.repo else set()
    folder = resources.files("simkv.conf") / group
    if folder.is_dir():  # the packaged YAML options (model specs, engines, pools)
        names |= {p.name for p in folder.iterdir() if p.name.endswith(".yaml")}
    return sorted(names)


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
    # NOTE: stored last, so the template lists every choice registered above.
    cs.store(group="hydra/help", name="simkv", provider="simkv",
             node={"app_name": "simkv", "header": "", "footer": "", "template": help_template(cs)})
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

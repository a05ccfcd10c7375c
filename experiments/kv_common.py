"""Helpers shared by the KV-method experiments (h2o, sentencekv, epicache, elastic_cache,
scalekv, leoam, vattention, flexgen): a batch of identical requests arriving together, one
run, and the figures a paper reports (makespan, generated tokens per second, per-request
latency, peak KV)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

import simkv
from simkv.engine.pool import Pool, load_model, pool_configs
from simkv.kv.tiers import load_node_profile

QUIET = ["output.plot=false", "output.progress=false", "cluster.replicas=1", "kv.prefix_caching=false"]


def batch_trace(folder: Path, n: int, prompt: int, output: int, gap_s: float = 0.0) -> Path:
    """A native trace of ``n`` requests of the same shape, ``gap_s`` apart (0: all at once,
    so the engine sees them as one batch, as the papers' offline runs do)."""
    path = folder / f"batch_{n}_{prompt}_{output}_{gap_s:g}.csv"
    pd.DataFrame({"arrival_s": [i * gap_s for i in range(n)], "prompt_tokens": prompt,
                  "output_tokens": output}).to_csv(path, index=False)
    return path


@dataclass
class Run:
    summary: dict
    requests: pd.DataFrame

    @property
    def makespan_s(self) -> float:
        r = self.requests
        return float(r["completion_s"].max() - r["arrival_s"].min())

    @property
    def generated(self) -> int:
        r = self.requests
        return int(r.loc[r["status"] == "finished", "output_tokens"].sum())

    @property
    def tokens_per_s(self) -> float:
        return self.generated / self.makespan_s


def run(overrides: list[str]) -> Run:
    cfg = simkv.compose([*QUIET, *overrides])
    with tempfile.TemporaryDirectory() as d:
        res = simkv.simulate(cfg, d)
        return Run(res.summary, res.requests)


def run_batch(n: int, prompt: int, output: int, overrides: list[str], gap_s: float = 0.0) -> Run:
    with tempfile.TemporaryDirectory() as d:
        trace = batch_trace(Path(d), n, prompt, output, gap_s)
        return run(["workload=trace", f"workload.path={trace}", "workload.format=native",
                    *overrides])


def pool_of(overrides: list[str]) -> Pool:
    """The pool a run with these overrides would build: its cost model, KV capacity and policy."""
    cfg = simkv.compose([*QUIET, *overrides])
    if isinstance(cfg.model, str):  # pragma: no cover - the schema always gives a spec
        cfg.model = load_model(cfg.model)
    name, pc = next(iter(pool_configs(cfg).items()))
    return Pool(0, name, pc, cfg, load_node_profile(cfg.memory.node, cfg.memory.node_path))


def profile_with(profile: str, folder: Path, **efficiency: float) -> Path:
    """A copy of the shipped GPU profile ``profile`` with some efficiencies replaced (an
    assumed efficiency swept over its plausible range): the file to pass as
    ``hardware.path``. ``folder`` must outlive the runs that read it."""
    import yaml

    src = Path(simkv.__file__).parent.parent / "hardware_profiles" / f"{profile}.yaml"
    if not src.is_file():  # installed wheel: the profiles ship inside the package
        src = Path(simkv.__file__).parent / "hardware_profiles" / f"{profile}.yaml"
    doc = yaml.safe_load(src.read_text())
    for key, value in efficiency.items():
        if key not in doc["efficiency"]:
            raise KeyError(f"{profile} has no efficiency {key!r}")
        doc["efficiency"][key] = {"value": value, "source": f"swept (experiment): {value}"}
    out = folder / f"{profile}_{'_'.join(f'{k}{v:g}' for k, v in efficiency.items())}.yaml"
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def node_with(node: str, folder: Path, section: str, **values: float) -> Path:
    """A copy of the shipped node profile ``node`` with some values of one section replaced
    (assumed quantities swept over their plausible range): the file to pass as
    ``memory.node_path``. Units stay the profile's."""
    import yaml

    src = Path(simkv.__file__).parent.parent / "hardware_profiles" / "nodes" / f"{node}.yaml"
    if not src.is_file():  # installed wheel
        src = Path(simkv.__file__).parent / "hardware_profiles" / "nodes" / f"{node}.yaml"
    doc = yaml.safe_load(src.read_text())
    for key, value in values.items():
        entry = doc[section][key]
        entry["value"] = value
        entry["source"] = f"swept (experiment): {value}"
    out = folder / f"{node}_{section}_{'_'.join(f'{k}{v:g}' for k, v in values.items())}.yaml"
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out

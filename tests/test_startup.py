"""A small run costs its simulation, not its imports (issue 22, docs/PERFORMANCE.md).

pandas is 0.15-0.25 CPU s of import that a plain run never uses: simkv's own modules import
it only where a feature needs it (energy accounting, the Azure reader, SimResult.requests), and
Arrow's columns reach numpy through simkv/columns.py, because pyarrow's own conversions
import pandas too. pyarrow.compute (30 ms) likewise. These tests run ``simkv`` as a user does
and look at what it imported.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import simkv
from simkv.registry import build
from simkv.runner import _Progress

RUN = """
import sys
from simkv.command import main
sys.argv = ["simkv", *{args!r}]
main()
import gc
from simkv.engine.events import LOOP_GC_THRESHOLD
assert gc.get_threshold()[0] == LOOP_GC_THRESHOLD, gc.get_threshold()  # the whole run's
assert gc.get_freeze_count() > 0  # and its objects are left out of the exit's collections
print("imported:", sorted(m for m in ("pandas", "pyarrow.pandas_compat", "pyarrow.compute", "tqdm",
                                     "matplotlib")
                          if m in sys.modules))
"""


def _simkv(args: list[str], cwd: Path) -> str:
    p = subprocess.run([sys.executable, "-c", RUN.format(args=args)], capture_output=True,
                       text=True, cwd=cwd, timeout=300)
    assert p.returncode == 0, p.stderr
    return p.stdout.splitlines()[-1]


@pytest.mark.parametrize("workload", ["generated", "trace"])
def test_a_plain_run_imports_neither_pandas_nor_arrow_compute(workload: str, tmp_path: Path) -> None:
    args = [f"hydra.run.dir={tmp_path / 'run'}", "output.progress=false"]
    if workload == "trace":  # a native Parquet trace, as bench_vidur.py replays
        n = 60
        pq.write_table(pa.table({"arrival_s": np.arange(n) * 0.25,
                                 "prompt_tokens": np.full(n, 300, np.int32),
                                 "output_tokens": np.arange(1, n + 1, dtype=np.int32)}),
                       tmp_path / "trace.parquet")
        args += ["workload=trace", f"workload.path={tmp_path / 'trace.parquet'}"]
    else:
        args += ["workload.num_requests=60"]
    assert _simkv(args, tmp_path) == "imported: []"
    # ... and wrote every default output, the figure included.
    for name in ("requests.parquet", "summary.json", "instances.parquet", "latency.png", "latency.pdf"):
        assert (tmp_path / "run" / name).stat().st_size > 0, name


def test_pandas_where_a_feature_needs_it(tmp_path: Path) -> None:
    # The guard above is not vacuous: energy accounting still computes with pandas.
    args = [f"hydra.run.dir={tmp_path / 'run'}", "output.progress=false", "output.plot=false",
            "workload.num_requests=30", "energy.enabled=true"]
    assert "'pandas'" in _simkv(args, tmp_path)


class _Stderr:
    def __init__(self, tty: bool) -> None:
        self.tty = tty
        self.text = ""

    def isatty(self) -> bool:
        return self.tty

    def write(self, s: str) -> int:
        self.text += s
        return len(s)

    def flush(self) -> None:
        pass


@pytest.mark.parametrize("tty", [True, False])
def test_the_progress_bar_only_on_a_terminal(tty: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # tqdm itself draws nothing where stderr is not a terminal; simkv asks first, so that a
    # script's run does not import it (the guard above: no 'tqdm').
    err = _Stderr(tty)
    monkeypatch.setattr(sys, "stderr", err)
    wl = build(simkv.compose(["workload.num_requests=20"]).workload)
    progress = _Progress(wl, enabled=True)
    progress(20, 3.0)
    progress.close(20)
    assert (progress.bar is not None) == tty
    assert ("20/20" in err.text) == tty


def test_config_choices_are_built_when_hydra_loads_them() -> None:
    # register_configs() defers each choice's DictConfig to its first load (a run loads one
    # per group; Hydra also deep-copies the whole store once per composition): a process
    # converts only the choices it composes, and each is what ConfigStore.store would store.
    code = """
import simkv
import omegaconf
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf, open_dict
from simkv.config.store import POLICY_GROUPS, register_configs
structured = OmegaConf.structured
converted = []
def counting(obj, *a, **k):
    converted.append(getattr(obj, "__name__", type(obj).__name__))
    return structured(obj, *a, **k)
OmegaConf.structured = counting
register_configs()
print(converted)
converted.clear()
simkv.compose(["router=least_work"])
print("LeastWorkConfig" in converted, "SLOAwareConfig" in converted, len(converted) < 25)
OmegaConf.structured = structured
cs = ConfigStore.instance()
for g in (*POLICY_GROUPS, "hardware", "workload"):
    for name, e in cs.repo[g].items():
        assert OmegaConf.to_yaml(e.node) == OmegaConf.to_yaml(structured(e._box[0])), name
        mine = cs.load(g + "/" + name)
        with open_dict(mine.node):  # a loaded copy is the caller's own
            mine.node["probe"] = 1
        assert OmegaConf.to_yaml(cs.load(g + "/" + name).node) == OmegaConf.to_yaml(e.node), name
print("same")
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split("\n")[:3] == ["['SimConfig', 'dict']", "True False True", "same"]  # (dict: the help)

"""Policies from outside the tree: an installed package's entry points add config choices.

The example package (tests/plugins/simkv-plugin-example) is installed with pip into a
folder of its own (``--target``: the test's venv is left as it was, no network: it has no
dependencies), and a fresh ``simkv`` process with that folder on its path routes with it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from simkv import registry

EXAMPLE = Path(__file__).parent / "plugins" / "simkv-plugin-example"


def test_builtins_register_through_entry_points() -> None:
    found = registry.plugin_modules()
    assert ("simkv", "router", "simkv.policies.router") in found
    assert {name for dist, name, _ in found if dist == "simkv"} == {
        "autoscaler", "eviction", "kv_policy", "kv_pool", "offload", "predictor", "router", "scheduler",
        "migration", "speculative", "tool_kv", "workload"}
    # registry.py imports none of them itself: the entry points are the only list.
    source = Path(registry.__file__).read_text()
    assert "import simkv.policies" not in source
    assert "round_robin" in registry.entries("router")


def test_every_builtin_entry_point_ships_in_the_wheel() -> None:
    import tomllib

    doc = tomllib.loads((Path(registry.__file__).parents[1] / "pyproject.toml").read_text())
    listed = set(doc["tool"]["setuptools"]["packages"])
    for module in doc["project"]["entry-points"]["simkv.policies"].values():
        assert module in listed, f"{module} is an entry point but not in [tool.setuptools] packages"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    p = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                        "--no-build-isolation", "--no-index", "--target", str(target), str(EXAMPLE)],
                       capture_output=True, text=True, timeout=300)
    if p.returncode != 0 and "setuptools" in p.stderr:  # pragma: no cover - no build backend here
        pytest.skip(f"cannot build the example package: {p.stderr.strip().splitlines()[-1]}")
    assert p.returncode == 0, p.stderr
    assert (target / "simkv_plugin_example" / "router.py").is_file()
    return target


@pytest.mark.slow
def test_an_installed_package_adds_a_router_to_the_cli(installed: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(installed), os.environ.get("PYTHONPATH", "")])}
    exe = Path(sys.executable).parent / "simkv"
    out = tmp_path / "run"
    p = subprocess.run([str(exe), "router=fewest_prompt_tokens", "router.weight=100", "cluster.replicas=2",
                        "workload=poisson", "workload.num_requests=60", "output.progress=false",
                        "output.plot=false", f"hydra.run.dir={out}"],
                       capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["router"] == {"name": "fewest_prompt_tokens", "weight": 100}
    # simkv --help lists it among the routers; without the package the choice is unknown.
    p = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=300, env=env)
    assert "fewest_prompt_tokens" in p.stdout
    p = subprocess.run([str(exe), "router=fewest_prompt_tokens", f"hydra.run.dir={tmp_path / 'no'}"],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p.returncode == 2
    assert "fewest_prompt_tokens" in p.stderr
    assert "round_robin" in p.stderr


@pytest.mark.slow
def test_a_plugin_that_fails_to_import_is_named(installed: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    dist = broken / "simkv_broken-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: simkv-broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[simkv.policies]\nbroken = simkv_broken_missing\n")
    code = "import simkv.registry as r\ntry:\n    r.groups()\nexcept r.PluginError as e:\n    print(e)\n"
    env = {**os.environ, "PYTHONPATH": str(broken)}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert "plug-in 'broken' of simkv-broken (simkv_broken_missing) failed to import" in p.stdout
    # The command says it in one line (exit status 2: the environment, not simkv, is wrong).
    exe = Path(sys.executable).parent / "simkv"
    p = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1
    assert p.stderr.startswith("simkv: error: PluginError: the simkv.policies plug-in 'broken'")

"""The wheel must contain every subpackage and the data files (non-editable installs)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "simkv").rglob("__init__.py")}
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
    assert "simkv.hardware_profiles" in listed


def test_conf_yaml_is_package_data() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    depth = {len(p.relative_to(ROOT / "simkv").parts) for p in (ROOT / "simkv" / "conf").rglob("*.yaml")}
    assert depth <= {2, 3}
    assert "conf/*.yaml" in patterns["simkv"]
    assert "conf/*/*.yaml" in patterns["simkv"]

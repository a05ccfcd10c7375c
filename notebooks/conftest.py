"""Notebooks run in CI through nbmake (one test per notebook); they are slow, so the quick
subset for contributors (`pytest -m "not slow"`, CONTRIBUTING.md) leaves them out."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.slow)

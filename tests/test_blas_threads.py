"""The ``simkv`` command and the shards' processes start numpy's OpenBLAS with one thread unless
the user set a number (simkv/command.py ``one_blas_thread``: the spare threads only spin)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from simkv.command import BLAS_THREADS, one_blas_thread
from simkv.shard import _one_blas_thread_each


def test_one_thread_unless_the_user_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BLAS_THREADS, raising=False)
    one_blas_thread()
    assert os.environ[BLAS_THREADS] == "1"
    monkeypatch.setenv(BLAS_THREADS, "4")
    one_blas_thread()
    assert os.environ[BLAS_THREADS] == "4"


def test_shards_start_with_one_thread_and_the_parent_keeps_its_setting(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BLAS_THREADS, raising=False)
    with _one_blas_thread_each():
        assert os.environ[BLAS_THREADS] == "1"
    assert BLAS_THREADS not in os.environ
    monkeypatch.setenv(BLAS_THREADS, "3")
    with _one_blas_thread_each():
        assert os.environ[BLAS_THREADS] == "3"
    assert os.environ[BLAS_THREADS] == "3"


def test_the_command_sets_it_before_numpy_is_imported() -> None:
    # What the entry point imports before main() runs must not import numpy (OpenBLAS reads
    # the variable once, when numpy loads it).
    code = "import sys, simkv.command; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

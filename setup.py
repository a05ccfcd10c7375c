"""The optional compiled hot path: the modules of ``simkv._accel.MODULES`` built with Cython.

Metadata, packages and entry points live in pyproject.toml; this file only adds the extension
modules. They are compiled from the ``.py`` sources, with the C layouts and the few C loops
that the ``.pxd`` beside a module declares (values stay Python objects: the same behaviour,
byte-identical results), and the build never fails because of them: without Cython, without
a C compiler, or with ``SIMKV_PURE_PYTHON=1`` set at build time, it installs pure Python, and
a module that fails to compile is left interpreted (simkv/_accel.py then also runs from
source every module built against its types). ``_compiled.json`` records which modules
were built from which source, so that simkv/_accel.py ignores an extension whose source has
changed since (docs/PERFORMANCE.md, "The compiled hot path").
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
ACCEL = HERE / "simkv" / "_accel.py"


def _modules() -> list[str]:
    """``MODULES`` of simkv/_accel.py, read without importing simkv."""
    for node in ast.parse(ACCEL.read_text()).body:
        if (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == "MODULES"):
            return list(ast.literal_eval(node.value))
    raise RuntimeError(f"{ACCEL}: no MODULES")


def _digest(src: Path) -> str:
    """SHA-256 of the ``.py`` and of the ``.pxd`` beside it, if any (simkv/_accel.digest)."""
    h = hashlib.sha256(src.read_bytes())
    pxd = src.with_suffix(".pxd")
    if pxd.exists():
        h.update(pxd.read_bytes())
    return h.hexdigest()


def _say(msg: str) -> None:
    print(f"simkv setup.py: {msg}", file=sys.stderr)


def _extensions() -> list[Extension]:
    if os.environ.get("SIMKV_PURE_PYTHON", "").strip() not in ("", "0"):
        _say("SIMKV_PURE_PYTHON is set: pure Python, nothing compiled")
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        _say("Cython is not installed: pure Python, nothing compiled")
        return []
    # No fused multiply-add: a compiled expression rounds as Python and numpy do (fast_runs.py).
    exts = [Extension(m, [m.replace(".", "/") + ".py"], extra_compile_args=["-ffp-contract=off"])
            for m in _modules()]
    try:
        return list(cythonize(exts, build_dir="build/cython", quiet=True,
                              nthreads=os.cpu_count() or 1,
                              compiler_directives={"language_level": 3,
                                                   # Annotations stay hints: no C types.
                                                   "annotation_typing": False}))
    except Exception as e:  # never fail the install for the fast path
        _say(f"Cython failed ({e}): pure Python, nothing compiled")
        return []


class OptionalBuildExt(build_ext):
    """build_ext that leaves a module interpreted when it cannot be compiled, and writes the
    manifest of the modules it built."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if not self.parallel:  # compile the modules side by side
            self.parallel = os.cpu_count() or 1

    def run(self) -> None:
        self._built: list[str] = []
        try:
            super().run()
        except Exception as e:  # no compiler at all, for instance
            _say(f"no extension built ({e}): pure Python")
        doc = {m: _digest(HERE / (m.replace(".", "/") + ".py")) for m in sorted(self._built)}
        targets = [Path(self.build_lib) / "simkv"]
        if self.inplace or getattr(self, "editable_mode", False):
            targets.append(HERE / "simkv")
        for t in targets:
            t.mkdir(parents=True, exist_ok=True)
            (t / "_compiled.json").write_text(json.dumps(doc, indent=1) + "\n")

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as e:
            _say(f"{ext.name} not compiled ({e}): it stays interpreted")
            return
        self._built.append(ext.name)


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})

"""The optional compiled hot path, and the switch back to pure Python.

``pip install`` compiles the modules in ``MODULES`` with Cython (setup.py): the same source,
run without the interpreter's dispatch (docs/PERFORMANCE.md, "The compiled hot path"). Values
are not typed (except a few C loops that give the same bits), so a compiled module computes
what its source does and gives byte-identical results (tests/test_compiled.py); every policy
and every other module stays interpreted. The ``.pxd`` beside a module declares, for the
compiled build only, eleven of its classes as extension types (Request, BlockPool,
SchedulerOutput, DecodeBatch, VLLMScheduler, Replica, Cluster, Recorder, TableWriter,
RunPricing, CostModel: "Typed classes" in PERFORMANCE.md):
fields of Python objects that compiled code reads directly, not through attribute lookups.
Python subclasses and instance attributes work as before; patching their methods on the
class does not (an extension type is immutable).

An extension module is used only when it was built from the source that sits beside it: the
build writes ``_compiled.json`` (module -> SHA-256 of the ``.py`` and ``.pxd`` compiled), and a
module whose source has changed since (an edited scheduler in an editable install), or that
the manifest does not list, is imported from its ``.py`` instead, and so is every module whose
``.pxd`` cimports its types (``cimports``). So editing a compiled module never runs stale code,
and a build without Cython or a C compiler is pure Python.

``SIMKV_PURE_PYTHON=1`` in the environment imports every module from its source (to compare
the two paths, to profile: cProfile does not see inside compiled functions, or to rule the
compiled path out of a bug). It acts when ``simkv`` is first imported, so set it before.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

T = TypeVar("T")

# The hot path of a run (docs/PERFORMANCE.md profiles): the event loop, the replica's loop,
# the cluster's arrivals and completions, the disaggregated handoff, vLLM's scheduler (the
# base of six others), the decode batch, the block pool, the KV manager (and its sessions'
# part), the KV transfers, the cost model, the recorder. setup.py reads this literal.
MODULES = (
    "simkv.engine.events",
    "simkv.entities.request",
    "simkv.engine.replica",
    "simkv.engine.cluster",
    "simkv.engine.disagg",
    "simkv.engine.decode_batch",
    "simkv.kv.block_pool",
    "simkv.kv.manager",
    "simkv.kv.session_kv",
    "simkv.kv.links",
    "simkv.perf.roofline",
    "simkv.perf.run_pricing",
    "simkv.perf.fast_runs",
    "simkv.metrics.recorder",
    "simkv.policies.scheduler.interface",
    "simkv.policies.scheduler.vllm",
    "simkv.policies.scheduler.vllm_moves",
    "simkv.policies.scheduler.vllm_shaped",
)
ENV = "SIMKV_PURE_PYTHON"
MANIFEST = "_compiled.json"
_ROOT = Path(__file__).resolve().parent
_EXT = tuple(importlib.machinery.EXTENSION_SUFFIXES)


def source_of(module: str) -> Path:
    """The ``.py`` file of a module of ``MODULES``."""
    *pkgs, leaf = module.split(".")[1:]
    return _ROOT.joinpath(*pkgs, leaf + ".py")


def digest(path: Path) -> str:
    """SHA-256 of a module's source: its ``.py``, and the ``.pxd`` beside it where there is
    one (C types for the compiled build: simkv/perf/fast_runs.pxd). setup.py computes the
    same."""
    h = hashlib.sha256(path.read_bytes())
    pxd = path.with_suffix(".pxd")
    if pxd.exists():
        h.update(pxd.read_bytes())
    return h.hexdigest()


def pure_requested() -> bool:
    return os.environ.get(ENV, "").strip() not in ("", "0")


def slotted(cls: type[T]) -> type[T]:
    """The dataclass ``cls`` remade with ``__slots__``, as ``@dataclass(slots=True)`` makes it.

    A dataclass that the compiled build turns into an extension type (Request, BlockPool,
    SchedulerOutput: their ``.pxd``) is declared ``@dataclass`` without ``slots`` (Cython's
    dataclass takes no such argument, and an extension type takes no other decorator); its
    module remakes it here where it runs interpreted, so that both paths refuse an attribute
    the class does not declare. What dataclasses does for ``slots=True``: the same namespace
    (its generated ``__init__``, ``__repr__``, ``__eq__``), less the fields' class-level
    defaults and ``__dict__``, with the fields as slots."""
    names = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
    ns = {k: v for k, v in cls.__dict__.items()
          if k not in names and k not in ("__dict__", "__weakref__")}
    ns["__slots__"] = names
    meta: Any = type(cls)  # (type, or a metaclass of cls)
    new = meta(cls.__name__, cls.__bases__, ns)
    new.__qualname__ = cls.__qualname__
    return new


def read_manifest(root: Path = _ROOT) -> dict[str, str]:
    """Module -> digest of the source each extension was built from ({} if not built)."""
    try:
        doc = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in doc.items()} if isinstance(doc, dict) else {}


_CIMPORT = re.compile(r"^\s*(?:from\s+(simkv(?:\.\w+)+)\s+cimport|cimport\s+(simkv(?:\.\w+)+))",
                      re.MULTILINE)


def cimports(module: str) -> list[str]:
    """The modules of simkv whose C types a module's ``.pxd`` uses (``from simkv.x cimport
    T``): its extension reads their extension types' fields at fixed offsets, so it may run
    only where they run compiled, as built."""
    pxd = source_of(module).with_suffix(".pxd")
    if not pxd.exists():
        return []
    return [a or b for a, b in _CIMPORT.findall(pxd.read_text())]


def from_source(manifest: dict[str, str], forced: bool,
                modules: Sequence[str] = MODULES) -> dict[str, Path]:
    """The modules to import from their ``.py``: all when ``forced`` or nothing was built,
    else those the manifest does not list or whose source changed since the build, and
    those whose ``.pxd`` cimports one of these (an extension built against the extension
    type of a module that now runs from source, e.g. vLLM's scheduler against Request)."""
    out: dict[str, Path] = {}
    for mod in modules:
        src = source_of(mod)
        if forced or not manifest or manifest.get(mod) != digest(src):
            out[mod] = src
    deps = {mod: cimports(mod) for mod in modules if mod not in out}
    changed = True
    while changed:
        changed = False
        for mod, uses in deps.items():
            if mod not in out and any(u in out or u not in modules for u in uses):
                out[mod] = source_of(mod)
                changed = True
    return out


class _SourceFirst(importlib.abc.MetaPathFinder):
    """Imports the listed modules from their ``.py``, ahead of an extension beside them."""

    def __init__(self, sources: dict[str, Path]) -> None:
        self.sources = sources

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        src = self.sources.get(fullname)
        return None if src is None else importlib.util.spec_from_file_location(fullname, src)


def install() -> None:
    """Called first thing by ``simkv/__init__.py``, before any module of ``MODULES`` loads."""
    if any(isinstance(f, _SourceFirst) for f in sys.meta_path):
        return
    sources = from_source(read_manifest(), pure_requested())
    if sources:
        sys.meta_path.insert(0, _SourceFirst(sources))


def loaded() -> dict[str, str]:
    """How each module of ``MODULES`` imported so far runs: "compiled" or "python"."""
    out = {}
    for mod in MODULES:
        m = sys.modules.get(mod)
        if m is not None:
            f = getattr(m, "__file__", "") or ""
            out[mod] = "compiled" if f.endswith(_EXT) else "python"
    return out


def available() -> list[str]:
    """Modules that would run compiled here without ``SIMKV_PURE_PYTHON`` (built, current)."""
    stale = from_source(read_manifest(), forced=False)
    return [m for m in MODULES if m not in stale
            and any(source_of(m).with_suffix(x).exists() for x in _EXT)]

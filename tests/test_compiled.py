"""The compiled hot path (setup.py, simkv/_accel.py) and pure Python give the same bytes.

Each path runs in its own process (the choice is made when simkv is first imported): the
golden runs' configs (tests/golden/make_golden.py) plus a prefill-first replica and a
disaggregated pair, and requests.parquet and summary.json must be byte-identical.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from simkv import _accel
from tests.golden.make_golden import CASES

COMMON = ["output.plot=false", "output.progress=false"]
RUNS = {**{k: [*v, *COMMON] for k, v in CASES.items()},
        # Vidur's shape: whole prompts first (no chunked prefill), blocks of 16.
        "prefill_first": ["cluster.replicas=1", "scheduler.chunked_prefill=false",
                          "kv.block_size=16", "workload.num_requests=400", *COMMON],
        "disaggregated": ["pools=pd_split", "pools.prefill.instances=1",
                          "pools.decode.instances=1", "workload.num_requests=300", *COMMON]}

SCRIPT = """
import json, sys
from pathlib import Path
import simkv
from simkv import _accel
runs, out = json.loads(sys.argv[1]), Path(sys.argv[2])
for name, overrides in runs.items():
    simkv.simulate(simkv.compose(overrides), out / name)
print(json.dumps(_accel.loaded()))
"""


def _run(out: Path, pure: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != _accel.ENV}
    if pure:
        env[_accel.ENV] = "1"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(RUNS), str(out)], env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # two subprocesses, 16 small runs: about 6 s here
def test_compiled_and_pure_python_give_identical_files(tmp_path: Path) -> None:
    built = _accel.available()
    if not built:
        pytest.skip("the compiled hot path is not built in this environment (installed without "
                    "Cython or a C compiler, or with SIMKV_PURE_PYTHON set at build time)")
    compiled = _run(tmp_path / "compiled", pure=False)
    pure = _run(tmp_path / "pure", pure=True)
    # Each process ran the path it was asked for.
    assert {m for m, how in compiled.items() if how == "compiled"} == set(built)
    assert set(pure.values()) == {"python"}
    assert set(pure) == set(compiled)
    for name in RUNS:
        # run.json says which path ran (the results cannot tell).
        ran = {how: json.loads((tmp_path / how / name / "run.json").read_text())["compiled"]
               for how in ("compiled", "pure")}
        assert ran == {"compiled": sorted(built), "pure": []}
        for f in ("requests.parquet", "summary.json"):
            a = (tmp_path / "compiled" / name / f).read_bytes()
            b = (tmp_path / "pure" / name / f).read_bytes()
            assert a == b, f"{name}/{f} differs between the compiled and pure-Python paths"


def test_stale_or_unlisted_extension_is_not_used() -> None:
    """A module runs compiled only if the manifest lists the digest of its current source."""
    mods = ("simkv.engine.events", "simkv.kv.block_pool")  # (neither cimports another)
    fresh = {m: _accel.digest(_accel.source_of(m)) for m in mods}
    assert _accel.from_source(fresh, forced=False, modules=mods) == {}
    assert set(_accel.from_source(fresh, forced=True, modules=mods)) == set(mods)
    # Edited since the build (another digest), or not built (not listed; no manifest at all).
    stale = {**fresh, "simkv.kv.block_pool": "0" * 64}
    assert set(_accel.from_source(stale, forced=False, modules=mods)) == {"simkv.kv.block_pool"}
    unlisted = {"simkv.engine.events": fresh["simkv.engine.events"]}
    assert set(_accel.from_source(unlisted, forced=False, modules=mods)) == {"simkv.kv.block_pool"}
    assert set(_accel.from_source({}, forced=False, modules=mods)) == set(mods)


def test_an_extension_built_against_a_type_from_source_is_not_used() -> None:
    """vLLM's scheduler reads Request, BlockPool, DecodeBatch and SchedulerOutput as C structs
    (vllm.pxd cimports them): where one of those modules runs from its source (edited since
    the build, or not built), so must the scheduler, and the decode batch with Request."""
    mods = _accel.MODULES
    assert set(_accel.cimports("simkv.policies.scheduler.vllm")) == {
        "simkv.entities.request", "simkv.kv.block_pool", "simkv.engine.decode_batch",
        "simkv.policies.scheduler.interface"}
    fresh = {m: _accel.digest(_accel.source_of(m)) for m in mods}
    assert _accel.from_source(fresh, forced=False, modules=mods) == {}
    edited = {**fresh, "simkv.entities.request": "0" * 64}
    assert set(_accel.from_source(edited, forced=False, modules=mods)) == {
        "simkv.entities.request", "simkv.engine.decode_batch", "simkv.policies.scheduler.vllm",
        "simkv.metrics.recorder", "simkv.engine.cluster"}
    # The cluster reads the recorder's fields: an edited recorder sends it to its source.
    recorder_edited = {**fresh, "simkv.metrics.recorder": "0" * 64}
    assert set(_accel.from_source(recorder_edited, forced=False, modules=mods)) == {
        "simkv.metrics.recorder", "simkv.engine.cluster"}
    pool_unbuilt = {m: d for m, d in fresh.items() if m != "simkv.kv.block_pool"}
    assert set(_accel.from_source(pool_unbuilt, forced=False, modules=mods)) == {
        "simkv.kv.block_pool", "simkv.policies.scheduler.vllm"}
    # A plan's layout: the scheduler, the replica and the cost model's pricing read it (and
    # CostModel extends the pricing's type).
    plan_edited = {**fresh, "simkv.policies.scheduler.interface": "0" * 64}
    assert set(_accel.from_source(plan_edited, forced=False, modules=mods)) == {
        "simkv.policies.scheduler.interface", "simkv.policies.scheduler.vllm",
        "simkv.engine.replica", "simkv.perf.run_pricing", "simkv.perf.roofline"}
    # A module cimported from outside the modules asked about counts as not compiled.
    assert set(_accel.from_source(fresh, forced=False,
                                  modules=["simkv.engine.decode_batch"])) == {
        "simkv.engine.decode_batch"}


@pytest.mark.parametrize(("module", "name"), [("simkv.entities.request", "Request"),
                                              ("simkv.kv.block_pool", "BlockPool"),
                                              ("simkv.policies.scheduler.interface",
                                               "SchedulerOutput")])
def test_typed_dataclasses_keep_their_fields(module: str, name: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The dataclasses the compiled build makes extension types (their .pxd declares each
    field) have the fields of the interpreted class in the same order, with the same
    defaults: Cython's dataclass takes the .pxd's order for positional arguments, repr and
    eq. The interpreted class comes from executing the module's source here."""
    spec = importlib.util.spec_from_file_location(f"_pure_{name}", _accel.source_of(module))
    assert spec is not None
    assert spec.loader is not None
    pure_mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, pure_mod)  # (dataclasses looks it up)
    spec.loader.exec_module(pure_mod)
    pure, used = getattr(pure_mod, name), getattr(importlib.import_module(module), name)

    def shape(cls: type) -> list[tuple]:
        return [(f.name, repr(f.default), f.default_factory, f.init, f.repr, f.compare)
                for f in dataclasses.fields(cls)]

    assert shape(used) == shape(pure)
    assert pure.__slots__ == tuple(f.name for f in dataclasses.fields(pure))
    required = [i + 1 for i, f in enumerate(dataclasses.fields(pure))
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    assert repr(used(*required)).replace(used.__qualname__, "C") == \
        repr(pure(*required)).replace(pure.__qualname__, "C")
    for cls in (used, pure):  # either path refuses an attribute the class does not declare
        with pytest.raises(AttributeError):
            cls(*required).not_a_field = 1


def test_a_fresh_plan_equals_the_dataclass_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """``new_output()`` (the schedulers' plan, built field by field) equals ``SchedulerOutput()``
    on every field, interpreted (an unset slot would raise) and as imported here (compiled
    where built), and gives each plan its own ``prefills`` list."""
    module = "simkv.policies.scheduler.interface"
    spec = importlib.util.spec_from_file_location("_pure_interface", _accel.source_of(module))
    assert spec is not None
    assert spec.loader is not None
    pure_mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, pure_mod)
    spec.loader.exec_module(pure_mod)
    for mod in (pure_mod, importlib.import_module(module)):
        a, b = mod.new_output(), mod.SchedulerOutput()
        assert type(a) is mod.SchedulerOutput
        assert a == b
        assert [getattr(a, f.name) for f in dataclasses.fields(b)] == \
            [getattr(b, f.name) for f in dataclasses.fields(b)]
        assert a.prefills is not mod.new_output().prefills

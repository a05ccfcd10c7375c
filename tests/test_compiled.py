"""The compiled hot path (setup.py, simkv/_accel.py) and pure Python give the same bytes.

Each path runs in its own process (the choice is made when simkv is first imported): the
golden runs' configs (tests/golden/make_golden.py) plus a prefill-first replica and a
disaggregated pair, and requests.parquet and summary.json must be byte-identical.
"""

from __future__ import annotations

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
    mods = ("simkv.engine.replica", "simkv.kv.block_pool")
    fresh = {m: _accel.digest(_accel.source_of(m)) for m in mods}
    assert _accel.from_source(fresh, forced=False, modules=mods) == {}
    assert set(_accel.from_source(fresh, forced=True, modules=mods)) == set(mods)
    # Edited since the build (another digest), or not built (not listed; no manifest at all).
    stale = {**fresh, "simkv.kv.block_pool": "0" * 64}
    assert set(_accel.from_source(stale, forced=False, modules=mods)) == {"simkv.kv.block_pool"}
    unlisted = {"simkv.engine.replica": fresh["simkv.engine.replica"]}
    assert set(_accel.from_source(unlisted, forced=False, modules=mods)) == {"simkv.kv.block_pool"}
    assert set(_accel.from_source({}, forced=False, modules=mods)) == set(mods)

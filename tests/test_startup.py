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

RUN = """
import sys
from simkv.command import main
sys.argv = ["simkv", *{args!r}]
main()
print("imported:", sorted(m for m in ("pandas", "pyarrow.pandas_compat", "pyarrow.compute")
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

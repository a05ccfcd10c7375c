"""The per-run latency figure alone, in fresh processes: CPU seconds of its parts.

    python benchmarks/bench_figure.py RUN_DIR [--repeat 3]

RUN_DIR is a finished run's folder (requests.parquet, summary.json, config.json), e.g. one
``simkv`` run of ``bench_vidur.py``'s workload. Each repeat is a new interpreter that first
imports what a run has imported before its figure (simkv.runner, simkv.cli) and raises the
GC threshold as ``simkv.command`` does, then measures with ``time.process_time`` (user +
system of the process): importing simkv.metrics.latency_canvas, reading the figure's numbers
from requests.parquet, laying the panels out, writing latency.png (Pillow, its import
included) and latency.pdf, as ``runner.draw_latency`` does. Which code runs is the
interpreter's (PYTHONPATH can pick another tree for a before/after comparison).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import machine

CHILD = """
import json, sys, time
from pathlib import Path
import simkv.cli, simkv.runner  # what a run has imported before its figure
from simkv.engine.events import raise_gc_threshold
raise_gc_threshold()  # as simkv.command does for the CLI's process
run, out = Path(sys.argv[1]), Path(sys.argv[2])
summary = json.loads((run / "summary.json").read_text())
doc = json.loads((run / "config.json").read_text())
clock = time.process_time
t0 = clock()
from simkv.metrics import latency_canvas
from simkv.metrics.figure_data import latency_data, run_title
t1 = clock()
data = latency_data(run / "requests.parquet", summary)
t2 = clock()
canvas = latency_canvas.draw(data, summary, run_title(doc))
t3 = clock()
canvas.png(out / "latency.png", latency_canvas.DPI)
t4 = clock()
canvas.pdf(out / "latency.pdf")
t5 = clock()
print(json.dumps({"imports": t1 - t0, "data": t2 - t1, "layout": t3 - t2, "png": t4 - t3,
                  "pdf": t5 - t4, "total": t5 - t0}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path, help="a finished run's folder")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as out:
        for _ in range(args.repeat):
            load = os.getloadavg()[0]
            # -P: the working directory is not put first on sys.path (PYTHONPATH picks the tree)
            p = subprocess.run([sys.executable, "-P", "-c", CHILD, str(args.run), out],
                               capture_output=True, text=True, check=True)
            parts = json.loads(p.stdout)
            print(", ".join(f"{k} {v:.3f}" for k, v in parts.items())
                  + f" CPU s; load {load:.1f} -> {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

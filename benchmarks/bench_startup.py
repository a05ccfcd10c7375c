"""Start-up and the default run, whole process: ``simkv --help`` and ``simkv`` itself.

    python benchmarks/bench_startup.py [--repeat 3]

``simkv --help`` (issue 21 made it answer without Hydra, pandas or pyarrow) and the default
run (``simkv`` with no arguments: 3,000 BurstGPT-shaped requests on 2 H100s, requests.parquet,
summary.json and the latency figure, PNG and PDF), each a fresh process measured by os.wait4:
wall time, CPU time (user + system), peak RSS and the load average. Also the default run
without its figure (``output.plot=false``), which says what the figure costs. Targets of
issue 22: ``--help`` <= 1 s, the default run <= 2 s.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import command, machine, record, simkv_command


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--record", help="append one JSON line per run to this file")
    args = ap.parse_args()
    print(f"machine: {machine()}")
    simkv = simkv_command()
    with tempfile.TemporaryDirectory() as d:
        for rep in range(args.repeat):  # interleaved, so drifts of the machine hit each alike
            cases = {"simkv --help": ([*simkv, "--help"], None),
                     "simkv (default run)": ([*simkv, f"hydra.run.dir={d}/run{rep}"], 3000),
                     "simkv output.plot=false": ([*simkv, "output.plot=false",
                                                  f"hydra.run.dir={d}/noplot{rep}"], 3000)}
            for name, (argv, n) in cases.items():
                m = command(argv)
                print(f"{name:<26} {m.line(n)}")
                record(args.record, {"bench": "startup", "case": name}, m)

if __name__ == "__main__":
    main()

"""What every benchmark prints: wall time, CPU time, simulated requests per second, peak RSS,
and the machine's load beside them.

This machine is shared (load 5-9 on 2 cores at times), so wall time alone says little: CPU
time (user + system) is what a run cost, and the load average says how far wall time is from
it. ``command`` measures a whole process (interpreter start, imports, composing the config,
the run, every output file) through ``os.wait4``, which returns the resources of that one
child; ``in_process`` measures a function inside this process.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass
class Measure:
    wall_s: float
    cpu_s: float  # user + system
    user_s: float
    sys_s: float
    peak_rss_mib: float
    load_before: float  # 1-minute load average when it started
    load_after: float

    def line(self, requests: int | None = None) -> str:
        rate = (f"; simulated requests per wall s {requests / self.wall_s:,.0f}, per CPU s "
                f"{requests / self.cpu_s:,.0f}") if requests else ""
        return (f"wall {self.wall_s:.2f} s, CPU {self.cpu_s:.2f} s (user {self.user_s:.2f}, "
                f"sys {self.sys_s:.2f}){rate}; peak RSS {self.peak_rss_mib:.0f} MiB; load "
                f"{self.load_before:.1f} -> {self.load_after:.1f}")


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M')}")


def command(argv: Sequence[str], *, env: dict[str, str] | None = None,
            quiet: bool = True) -> Measure:
    """Run ``argv`` as a child process; its wall time and its own CPU time and peak RSS."""
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.Popen(list(argv), env={**os.environ, **(env or {})},
                            stdout=subprocess.DEVNULL if quiet else None,
                            stderr=subprocess.PIPE if quiet else None)
    err = b""
    if quiet:
        assert proc.stderr is not None
        err = proc.stderr.read()
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.stderr.write(err.decode(errors="replace"))
        raise SystemExit(f"{' '.join(argv)}: exit status {proc.returncode}")
    return Measure(wall, ru.ru_utime + ru.ru_stime, ru.ru_utime, ru.ru_stime,
                   ru.ru_maxrss / 1024, load0, os.getloadavg()[0])


def in_process(fn: Callable[[], Any]) -> tuple[Any, Measure]:
    """Call ``fn``; its result, and the wall and CPU time it took, with that of the child
    processes it started and waited for (a sharded run's shards); peak RSS: the largest of
    this process's and its children's."""
    load0 = os.getloadavg()[0]
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    user = r1.ru_utime - r0.ru_utime + c1.ru_utime - c0.ru_utime
    sys_ = r1.ru_stime - r0.ru_stime + c1.ru_stime - c0.ru_stime
    peak = max(r1.ru_maxrss, c1.ru_maxrss) / 1024
    return out, Measure(wall, user + sys_, user, sys_, peak, load0, os.getloadavg()[0])


def simkv_command() -> list[str]:
    """The ``simkv`` entry point of the Python running this script (its venv's, not PATH's)."""
    exe = Path(sys.executable).with_name("simkv")
    return [str(exe)] if exe.exists() else [sys.executable, "-c",
                                            "import sys; from simkv.command import main; "
                                            "sys.exit(main())"]


def record(path: str | None, row: dict[str, Any], m: Measure) -> None:
    """Append one JSON line (the row, the measure, the machine) to ``path`` if given."""
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({**row, **asdict(m), "machine": machine()}) + "\n")

"""The ``simkv`` command's front door: ``--version`` and ``--help`` answered at once.

Hydra's ``--help`` composes the whole config (and ``--version`` names Hydra's version), which
took 4-7 s on 2 cores; these two answers need neither Hydra nor the simulator, so they are
given here before ``simkv.cli`` (Hydra, the engine, pyarrow) is imported. Everything else,
``--help`` with overrides included (the help, then the config they give), goes to Hydra.
"""

from __future__ import annotations

import os
import sys

BLAS_THREADS = "OPENBLAS_NUM_THREADS"


def main() -> None:
    args = sys.argv[1:]
    if args == ["--version"]:
        from simkv import __version__

        print(f"simkv {__version__}")
        return
    if args in (["--help"], ["-h"]):
        try:
            from simkv.config.store import help_text

            print(help_text())
        except BrokenPipeError:  # `simkv --help | head`: the reader left
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except Exception as exc:  # a plug-in that fails to import: one line, as simkv says it
            from simkv.entry import report

            if os.environ.get("SIMKV_TRACEBACK") == "1":
                raise
            raise SystemExit(report("simkv", exc)) from None
        return
    one_blas_thread()
    _gc_threshold()
    from simkv.cli import main as run

    run()
    # NOTE: the run is over and its files are closed. Frozen, its objects are left out of the
    # collections the interpreter makes as it exits, which each traversed every one of them
    # (the figure's, Hydra's, the engine's): 0.3-0.4 of the default run's 2.1 CPU s went to
    # tearing the process down. The exit itself (atexit, closing files) is unchanged.
    import gc

    gc.freeze()


def one_blas_thread_env() -> dict[str, str]:
    """The environment that starts numpy's OpenBLAS with one thread, unless the user chose a
    number (then nothing): for this process (``one_blas_thread``), the shards' processes
    (simkv/shard.py) and simkv-search's workers (simkv/search/run.py). A run multiplies no
    matrices; the threads OpenBLAS starts on import (one per core) only wait, spinning, and
    their CPU was 3-4% of a run's (the default run 1.39 -> 1.33 CPU s, Vidur's 100k 3.6 ->
    3.45; perf showed ``blas_thread_server`` at 2.7% of the samples)."""
    return {} if BLAS_THREADS in os.environ else {BLAS_THREADS: "1"}


def one_blas_thread() -> None:
    """``one_blas_thread_env`` for this process (call before numpy is imported)."""
    os.environ.update(one_blas_thread_env())


def _gc_threshold() -> None:
    """A run's process keeps the cyclic GC's first threshold at the event loop's
    (engine/events.py, ``LOOP_GC_THRESHOLD``) from its start. Imports, Hydra's composition
    and the figure allocate hundreds of thousands of objects that live to the end and make
    little cyclic garbage; at CPython's 700, their collections (three of them full ones,
    scanning all of matplotlib's objects) took 0.2 of the default run's 1.8 CPU s. Left
    alone if already higher, or 0 (the GC off)."""
    from simkv.engine.events import raise_gc_threshold

    raise_gc_threshold()


if __name__ == "__main__":
    main()

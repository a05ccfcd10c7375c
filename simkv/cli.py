"""The ``simkv`` command: Hydra composes the config, ``simulate`` runs it.

    simkv                                      # the packaged default run
    simkv model=llama3_70b hardware=a100_80gb cluster.replicas=4 cluster.tensor_parallel=4
    simkv -m cluster.replicas=1,2,4 router=round_robin,least_outstanding
    simkv --help                               # every group and its choices

Every error a user can cause ends the run with one line naming the key, file or row, and
exit status 2; anything else is a bug, reported in one line too, its traceback in run.json
(exit status 1). Ctrl-C and SIGTERM end a run cleanly (exit status 130 and 143). In a sweep
the other jobs go on, every job folder has a run.json, and the sweep exits 1 after the last
job if any failed, listing them.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from simkv.config.store import check_added_keys, check_overrides, hydra_message, register_configs
from simkv.entry import report, user_errors
from simkv.metrics.summary import format_table
from simkv.output import one_line, record_failure, sigterm_interrupts
from simkv.results import run_status
from simkv.runner import simulate


def job_dirname(overrides: str) -> str:
    """A sweep job's folder name from its overrides: one level (a path's ``/`` becomes ``_``)
    and short enough for any file system (long names are cut; the job number in front keeps
    them apart)."""
    name = overrides.replace("/", "_").replace("\\", "_") or "defaults"
    return name if len(name.encode()) <= 160 else name.encode()[:160].decode(errors="ignore") + "..."


# NOTE: registered on import, so that launchers running jobs in other processes (joblib)
# resolve hydra.sweep.subdir (conf/config.yaml) too: they import this module for the task.
OmegaConf.register_new_resolver("simkv_dirname", job_dirname, replace=True)
# A single run's folder carries the process id after the time (conf/config.yaml): two runs
# started together may read the same microsecond, and only the pid tells them apart for sure.
OmegaConf.register_new_resolver("simkv_pid", lambda: str(os.getpid()), replace=True)

# What the results line names, when the run wrote it (docs/OUTPUTS.md has them all).
RESULT_NAMES = ("requests.parquet", "summary.json", "latency.png", "latency.pdf", "iterations.parquet",
                "transfers.parquet", "instances.parquet", "trace.json")

# Logged to the job's log file only (conf/config.yaml): the terminal gets one line.
failure_log = logging.getLogger("simkv.failure")

@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def _run(dc: DictConfig) -> float | None:
    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)
    multirun = OmegaConf.select(hc, "job.num", default=None) is not None and \
        str(hc.mode) == "RunMode.MULTIRUN"
    try:
        check_overrides(list(hc.overrides.task))
        check_added_keys(dc, list(hc.overrides.task))
        cfg = OmegaConf.to_object(dc)
        result = simulate(cfg, out)
    except KeyboardInterrupt as exc:
        raise SystemExit(report("simkv", exc, f"; what it finished is kept in {out}")) from None
    except Exception as exc:
        if not (out / "run.json").is_file():
            record_failure(out, exc)  # it failed before simulate() could say so
        failure_log.error("%s", one_line(exc), exc_info=not isinstance(exc, user_errors()))
        code = report("simkv", exc, f" (job {hc.job.num}: {out})" if multirun else "",
                      traceback_hint=f"the traceback is in {out / 'run.json'}")
        if multirun:
            # The other jobs go on; SweepReport fails the sweep at the end. NaN marks the
            # trial failed for an optimising sweeper (Optuna) without stopping it.
            return math.nan
        raise SystemExit(code) from None
    overrides = " ".join(hc.overrides.task) or "(defaults)"
    print(f"\nsimkv {overrides}")
    print(format_table(result.summary, result.config))
    for line in result.summary.get("warnings", []):  # options that could not act (simkv/inert.py)
        print(f"warning: {line}")
    written = [n for n in RESULT_NAMES if (out / n).is_file()]
    print(f"results: {out}  ({', '.join(written)})")
    # The return value is what a Hydra optimising sweeper (Optuna) maximises.
    return float(result.summary["goodput"]["requests_per_s"])


class SweepReport(Callback):
    """Before the first job, refuse an optimising sweeper told to minimise (every job returns
    goodput, better higher; Optuna's default direction is minimize). After the last job: if
    any job did not complete, list each with its error and exit 1 (Hydra itself would exit 0,
    as every job returned)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweeper = config.hydra.sweeper
        direction = OmegaConf.select(sweeper, "direction", default=None)
        directions = list(direction) if OmegaConf.is_list(direction) else [direction]
        # (an enum, Direction.minimize, or its name, as the sweeper's config types it)
        minimise = any(str(d).rsplit(".", 1)[-1] == "minimize" for d in directions)
        if "optuna" in str(sweeper.get("_target_", "")).lower() and minimise:
            # NOTE: SystemExit, not an exception: Hydra turns a callback's exceptions into
            # warnings and goes on.
            print("simkv: error: hydra.sweeper.direction=minimize: every simkv job returns its "
                  "goodput (goodput.requests_per_s, better higher), so Optuna would look for the "
                  "worst run; add hydra.sweeper.direction=maximize", file=sys.stderr)
            raise SystemExit(2)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        root = Path(str(config.hydra.sweep.dir))
        jobs = sorted(p.parent for p in root.glob("**/.hydra") if p.is_dir())
        failed = []
        for job in jobs:
            if not (job / "run.json").is_file():
                failed.append(f"{job}: did not start (no run.json)")
                continue
            status, why = run_status(job)
            if status != "ok":
                failed.append(f"{job}: {status}: {why}")
        if len(failed) < len(jobs):  # once per sweep, after its last job
            print(f"compare the sweep: simkv-compare {root}")
        if failed:
            print(f"simkv: {len(failed)} of {len(jobs)} jobs of the sweep failed:", file=sys.stderr)
            for line in failed:
                print(f"  {line}", file=sys.stderr)
            raise SystemExit(1)


def _one_line_errors(func: Any) -> Any:
    """Stands in for Hydra's run_and_report: a config Hydra cannot compose is one line."""
    try:
        return func()
    except Exception as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"simkv: error: {hydra_message(exc)}", file=sys.stderr)
        raise SystemExit(2) from None


# Command-line options that point Hydra at another config (whose hydra.mode may be set).
_OTHER_CONFIG = ("-cp", "--config-path", "-cn", "--config-name", "-cd", "--config-dir",
                 "--experimental-rerun")


def _skip_mode_composition() -> None:
    """Hydra 1.3 composes the whole config twice per run: once only to read ``hydra.mode``
    (``Hydra.get_mode``), then for the run. simkv's packaged config leaves ``hydra.mode``
    unset, so unless an override or another config could set it the answer is None (what the
    composition would return), and the first composition (a third of the start-up) is
    skipped. With ``hydra.mode`` in an override or another config, Hydra composes as before."""
    from hydra._internal.hydra import Hydra

    args = sys.argv[1:]
    if any("hydra.mode" in a or a.split("=", 1)[0] in _OTHER_CONFIG for a in args):
        return
    if getattr(Hydra.get_mode, "_simkv", False):
        return

    def get_mode(self: Any, config_name: str | None, overrides: list[str]) -> Any:
        return None

    get_mode._simkv = True  # type: ignore[attr-defined]
    Hydra.get_mode = get_mode  # type: ignore[method-assign]


def main() -> None:
    try:
        register_configs()  # imports every policy plug-in: one that fails is one line
    except Exception as exc:
        if os.environ.get("SIMKV_TRACEBACK") == "1":
            raise
        raise SystemExit(report("simkv", exc)) from None
    # NOTE: Hydra prints its own errors (a composition error takes 8 lines) through
    # run_and_report, a private function of hydra-core 1.3 (pinned <1.4); if it moves, Hydra's
    # own report stays.
    from hydra._internal import utils as hydra_utils

    if hasattr(hydra_utils, "run_and_report"):
        hydra_utils.run_and_report = _one_line_errors
    _skip_mode_composition()
    try:
        with sigterm_interrupts():
            _run()
    except KeyboardInterrupt as exc:
        raise SystemExit(report("simkv", exc)) from None
    except BrokenPipeError:  # `simkv --help | head`: the reader left, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(0) from None


if __name__ == "__main__":
    main()

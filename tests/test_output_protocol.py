"""The output protocol, checked by what is left on disk: signals, failed runs, sweeps, reuse.

A complete run has requests.parquet, summary.json and run.json "ok"; anything else (killed by
a signal, failed mid-run, failed at its config) leaves run.json saying so, its tables under
their partial names and readable, no summary, and load_results refusing it.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

import simkv
from simkv.entry import report
from simkv.output import LOCK, FolderInUseError, RunFolder
from simkv.results import IncompleteRunError
from tests.conftest import small
from tests.test_cli_and_determinism import simkv_cmd

QUIET = ["output.plot=false", "output.progress=false"]


def _footer(path: Path) -> dict[bytes, bytes]:
    return dict(pq.read_metadata(path).metadata)


def _stderr_lines(p: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in p.stderr.splitlines() if ln.strip()]


def _assert_partial(out: Path, status: str, error: str) -> int:
    """The folder of a run that did not complete; returns the rows it kept."""
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == status
    assert run["error"] == error
    assert run["tables"] == {"requests": "requests.partial.parquet",
                             "instances": "instances.partial.parquet"}
    for name in ("requests.parquet", "instances.parquet", "summary.json", "latency.png", LOCK):
        assert not (out / name).exists(), name
    assert (out / "config.json").is_file()
    kept = out / "requests.partial.parquet"
    rows = len(pd.read_parquet(kept))
    footer = _footer(kept)
    assert footer[b"simkv.status"] == b"partial"
    assert int(footer[b"simkv.rows"]) == rows
    with pytest.raises(IncompleteRunError, match=f"did not complete \\({status}"):
        simkv.load_results(out)
    with pytest.warns(RuntimeWarning, match="did not complete"):
        partial = simkv.load_results(out, partial=True)
    assert partial.status == status
    assert len(partial.requests) == rows
    return rows


def _default_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code", "message"), [
    (signal.SIGTERM, 143, "terminated by SIGTERM"),
    (signal.SIGINT, 130, "interrupted (Ctrl-C)"),
])
def test_a_signal_ends_the_run_cleanly(tmp_path, sig: int, code: int, message: str) -> None:
    out = tmp_path / "run"
    exe = Path(sys.executable).parent / "simkv"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "simkv.cli"]
    proc = subprocess.Popen(
        [*cmd, "workload=poisson", "workload.num_requests=3000000", "workload.rate=2000",
         "cluster.replicas=1", "output.row_group_size=200", *QUIET, f"hydra.run.dir={out}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # A terminal's process: the signals at their default actions. A test runner's worker
        # can hold SIGINT ignored, which a child inherits through exec (Python then leaves it
        # ignored: CI, 2026-12-07, twice), and the run never sees the Ctrl-C.
        preexec_fn=_default_signals)
    try:
        deadline = time.monotonic() + 120
        # Wait until the run has written some row groups.
        while not ((out / "requests.partial.parquet").exists()
                   and (out / "requests.partial.parquet").stat().st_size > 20_000):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run wrote nothing"
            time.sleep(0.1)
        proc.send_signal(sig)
        try:
            _, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
            pytest.fail(f"the run did not end 60 s after the signal; its stderr: {stderr[-3000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert lines == [f"simkv: {message}; what it finished is kept in {out}"]
    assert _assert_partial(out, "interrupted", message) > 0


@pytest.mark.slow
def test_a_sweep_with_failing_jobs_exits_nonzero_after_the_last_job(tmp_path) -> None:
    # Three jobs: one completes, one fails mid-run (no request finishes for 50 iterations once
    # the long request is alone), one fails at its config. Twenty short requests first.
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,prompt_tokens,output_tokens\n"
                     + "".join(f"{i * 0.01},20,2\n" for i in range(20)) + "10,20,3000\n")
    sweep = tmp_path / "sweep"
    p = simkv_cmd("-m", "workload=trace", f"workload.path={trace}", "cluster.replicas=1",
                  "output.row_group_size=5", "engine.max_fast_forward=1", *QUIET,
                  "engine.livelock_iterations=1000000,50,0",
                  f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert p.returncode == 1, p.stderr
    jobs = {d.name.split("_")[0]: d for d in sweep.iterdir() if d.is_dir()}
    assert sorted(jobs) == ["0", "1", "2"]
    assert json.loads((jobs["0"] / "run.json").read_text())["status"] == "ok"
    assert simkv.load_results(jobs["0"]).summary["requests"]["finished"] == 21
    livelock = json.loads((jobs["1"] / "run.json").read_text())["error"]
    assert livelock.startswith("LivelockError: replica 0: ")
    assert _assert_partial(jobs["1"], "error", livelock) == 20
    bad = "engine.livelock_iterations: expected a finite number >= 1, got 0"
    assert json.loads((jobs["2"] / "run.json").read_text())["error"] == bad
    lines = _stderr_lines(p)
    assert "simkv: 2 of 3 jobs of the sweep failed:" in lines
    assert f"  {jobs['2']}: error: {bad}" in lines
    # simkv-compare lists the failed jobs with their errors, and keeps them in compare.csv.
    exe = Path(sys.executable).parent / "simkv-compare"
    c = subprocess.run([str(exe), str(sweep), "--no-plot"], capture_output=True, text=True,
                       timeout=120)
    assert c.returncode == 0, c.stderr
    assert "2 of 3 runs did not complete" in c.stdout
    assert f"  {jobs['2'].name}: error: {bad}" in c.stdout
    table = pd.read_csv(sweep / "compare.csv")
    assert sorted(table["status"]) == ["error", "error", "ok"]
    assert table.loc[table["status"] == "ok", "ttft_p50_s"].notna().all()


@pytest.mark.slow
def test_every_job_of_a_seed_sweep_has_its_own_folder(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    p = simkv_cmd("-m", "seed=0,1,2", "cluster.replicas=1,2", "workload.num_requests=30", *QUIET,
                  f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    folders = sorted(d for d in sweep.iterdir() if d.is_dir())
    assert len(folders) == 6
    seen = {(simkv.load_results(d).config["seed"], simkv.load_results(d).config["cluster"]["replicas"])
            for d in folders}
    assert seen == {(s, r) for s in (0, 1, 2) for r in (1, 2)}
    for d in folders:  # requests in = finished + rejected in every job
        req = simkv.load_results(d).summary["requests"]
        assert req["total"] == req["finished"] + req["rejected"] == 30
    digests = {(d / "requests.parquet").read_bytes() for d in folders}
    assert len(digests) == 6
    from simkv.metrics.compare import main as compare

    assert compare([str(sweep), "--no-plot"]) == 0
    assert len(pd.read_csv(sweep / "compare.csv")) == 6


def test_a_failed_run_never_leaves_an_older_runs_results(tmp_path, monkeypatch) -> None:
    from simkv.workload import readers

    out = tmp_path / "run"
    simkv.simulate(small(), out)
    assert simkv.load_results(out).summary["requests"]["total"] == 200
    monkeypatch.setattr(readers, "CSV_BLOCK_BYTES", 4096)
    bad = tmp_path / "bad.csv"
    bad.write_text("arrival_s,prompt_tokens,output_tokens\n"
                   + "".join(f"{i * 0.01},50,5\n" for i in range(3000)) + "1e9,bad,5\n")
    with pytest.raises(ValueError, match="row 3001"):
        simkv.simulate(small(["workload=trace", f"workload.path={bad}"]), out)
    rows = _assert_partial(out, "error", f"{bad}: row 3001, column 'prompt_tokens': expected a number, got 'bad'")
    assert 0 < rows < 3000


def test_a_writer_failure_keeps_the_row_groups_written(tmp_path, monkeypatch) -> None:
    # A value the file cannot hold (a token count above int32) reaching the writer: the row
    # groups written before it stay readable, marked partial, and run.json says why.
    # (A subclass the run builds: compiled, Recorder is an extension type, whose methods
    # cannot be replaced on the class; its compiled callers still call the override.)
    from simkv import runner
    from simkv.entities.request import Request
    from simkv.metrics.recorder import Recorder

    class Poisoned(Recorder):
        def request(self, r: Request) -> None:
            if self.finished + self.rejected == 25:
                r.prompt_tokens = 2**40
            super().request(r)

    monkeypatch.setattr(runner, "Recorder", Poisoned)
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="Value 1099511627776 too large to fit in C integer type"):
        simkv.simulate(small(["output.row_group_size=10"]), out)
    run = json.loads((out / "run.json").read_text())
    assert _assert_partial(out, "error", run["error"]) == 20


HOLD = """
import sys, time
from pathlib import Path
from simkv.output import RunFolder
folder = RunFolder(Path(sys.argv[1]))
print("held", flush=True)
time.sleep(120)
"""


def _holder(out: Path) -> subprocess.Popen:
    """Another process that claims ``out`` and keeps it until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_folder_held_by_a_live_run_is_refused_and_a_dead_ones_taken_over(tmp_path) -> None:
    out = tmp_path / "run"
    holder = _holder(out)
    try:
        with pytest.raises(FolderInUseError, match=f"in use by another simkv run \\(pid {holder.pid}\\)"):
            simkv.simulate(small(), out)
        assert not (out / "run.json").exists()  # nothing of the other run's folder touched
    finally:
        holder.send_signal(signal.SIGKILL)  # no chance to let go: its lock stays behind
        holder.wait()
    assert (out / LOCK).exists()
    result = simkv.simulate(small(), out)  # its owner is gone: the lock is stale
    assert result.summary["requests"]["total"] == 200
    assert not (out / LOCK).exists()


@pytest.mark.slow
def test_a_sigkilled_run_reads_killed_not_still_going(tmp_path) -> None:
    """Issue 18, item 7: the lock a SIGKILLed run leaves names a dead pid; it used to be
    trusted as is, so the run read "still going" forever."""
    out = tmp_path / "run"
    exe = Path(sys.executable).parent / "simkv"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "simkv.cli"]
    proc = subprocess.Popen(
        [*cmd, "workload=poisson", "workload.num_requests=3000000", "workload.rate=2000",
         "cluster.replicas=1", "output.row_group_size=200", *QUIET, f"hydra.run.dir={out}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # A terminal's process: the signals at their default actions. A test runner's worker
        # can hold SIGINT ignored, which a child inherits through exec (Python then leaves it
        # ignored: CI, 2026-12-07, twice), and the run never sees the Ctrl-C.
        preexec_fn=_default_signals)
    try:
        deadline = time.monotonic() + 120
        while not (out / "requests.partial.parquet").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run wrote nothing"
            time.sleep(0.05)
        with pytest.raises(IncompleteRunError, match=f"running: the run is still going \\(pid {proc.pid}\\)"):
            simkv.load_results(out)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    assert json.loads((out / "run.json").read_text())["status"] == "running"
    assert (out / LOCK).exists()
    with pytest.raises(IncompleteRunError, match=f"killed: .*its lock names pid {proc.pid}, no longer running"):
        simkv.load_results(out)
    with pytest.warns(RuntimeWarning, match="did not complete"):
        assert simkv.load_results(out, partial=True).status == "killed"
    with pytest.raises(FileNotFoundError, match="not a simkv run folder"):
        simkv.load_results(tmp_path)


def _claim_at_once(path: str, barrier: Any, wins: Any, tried: Any) -> None:
    barrier.wait()
    try:
        folder = RunFolder(Path(path))
    except FolderInUseError:
        folder = None
    else:
        with wins.get_lock():
            wins.value += 1
    with tried.get_lock():
        tried.value += 1
    if folder is None:
        return
    # Hold the folder until every claimer has tried: a fixed sleep let a claimer that a loaded
    # machine delayed past it claim the folder after its release (legitimately, one after the
    # other), which read as two owners (round 17 of 25 at load 7).
    deadline = time.monotonic() + 30
    while tried.value < 4 and time.monotonic() < deadline:
        time.sleep(0.005)
    folder.release()


@pytest.mark.slow
def test_runs_claiming_one_folder_at_once_get_one_owner(tmp_path) -> None:
    """Issue 18, item 13: the lock was created empty and written after; a run reading it in
    between took it for a dead run's, deleted it and claimed the folder too (4 claimers
    released by a barrier: two owners in 25 of 100 rounds). Now exactly one wins, always."""
    ctx = multiprocessing.get_context("fork")
    for k in range(25):
        out = tmp_path / f"r{k}"
        barrier, wins, tried = ctx.Barrier(4), ctx.Value("i", 0), ctx.Value("i", 0)
        procs = [ctx.Process(target=_claim_at_once, args=(str(out), barrier, wins, tried)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=60)
        assert [p.exitcode for p in procs] == [0] * 4
        assert wins.value == 1, f"round {k}: {wins.value} runs claimed one folder"
        assert sorted(f.name for f in out.iterdir()) == []  # no lock and no temporary left


def test_errors_at_every_command_edge_are_one_line(tmp_path, capsys, monkeypatch) -> None:
    from simkv.entry import calibrate, validate
    from simkv.trace_cli import main as trace_cli

    assert trace_cli(["stats", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"simkv-trace: error: {tmp_path}: is a directory; expected a trace file\n"
    folder = tmp_path / "val"
    folder.mkdir()
    (folder / "engine.json").write_text("{")
    monkeypatch.setattr(sys, "argv", ["simkv-validate", str(folder)])
    assert validate() == 2
    err = capsys.readouterr().err
    assert err.startswith("simkv-validate: error: ")
    assert err.count("\n") == 1
    monkeypatch.setattr(sys, "argv", ["simkv-calibrate", "fit", "--raw", str(tmp_path / "none"),
                                      "--out", str(tmp_path / "x.yaml")])
    assert calibrate() == 2
    err = capsys.readouterr().err
    assert err.startswith("simkv-calibrate: error: ")
    assert err.count("\n") == 1
    # Not a user's error: a bug, in one line too, saying how to see the traceback.
    assert report("simkv-trace", ZeroDivisionError("division by zero")) == 1
    assert capsys.readouterr().err == ("simkv-trace: internal error (a bug in simkv, please report "
                                       "it): ZeroDivisionError: division by zero [SIMKV_TRACEBACK=1 "
                                       "shows the traceback]\n")


@pytest.mark.parametrize(("args", "message"), [
    (["cluster.replicas=two"], "simkv: error: Error merging override cluster.replicas=two; Value 'two' of type 'str' could not be converted to Integer"),
    (["model=llama4"], "simkv: error: In 'config': Could not find 'model/llama4'; Available options in 'model': deepseek_v2_lite, deepseek_v3, infinity_8b, llada_8b, llama2_70b, llama2_7b, llama3_2_1b, llama3_2_3b, llama3_70b, llama3_8b, llama_68m, mixtral_8x22b, mixtral_8x7b, opt_30b, opt_6_7b, qwen2_5_14b, qwen2_5_32b, qwen2_5_7b, qwen3_30b_a3b"),
    (["workload=trace"], "simkv: error: workload.path: a value is required (set workload.path=...)"),
    (["hardware=[a100_80gb,h200]"], "simkv: error: hardware: expected one choice, got the list [a100_80gb,h200]; to run each, sweep: simkv -m hardware=a100_80gb,h200"),
    (["engine.livelock_iterations=1", "workload.num_requests=20"], None),
])
def test_the_simkv_command_reports_one_line(tmp_path, args: list[str], message: str | None) -> None:
    out = tmp_path / "r"
    p = simkv_cmd(*args, *QUIET, f"hydra.run.dir={out}", cwd=tmp_path)
    assert p.returncode == 2
    lines = _stderr_lines(p)
    assert len(lines) == 1, p.stderr
    if message is None:
        assert lines[0].startswith("simkv: error: LivelockError: replica 0: ")
        assert lines[0].endswith("the run stops after engine.livelock_iterations iterations "
                                 "without a request finishing")
    else:
        assert lines[0] == message


@pytest.mark.slow
def test_two_single_runs_started_together_get_their_own_folders(tmp_path) -> None:
    env = {**os.environ}
    exe = Path(sys.executable).parent / "simkv"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "simkv.cli"]
    args = [*cmd, "workload.num_requests=20", "cluster.replicas=1", *QUIET]
    procs = [subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for proc in procs:
        proc.communicate(timeout=300)
        assert proc.returncode == 0
    runs = [d for d in (tmp_path / "simkv_runs").glob("*/*") if d.is_dir()]
    assert len(runs) == 2
    # Apart by construction, not by the clock: each name ends with its process's id.
    assert sorted(d.name.rsplit("-", 1)[1] for d in runs) == sorted(str(p.pid) for p in procs)
    for run in runs:
        assert simkv.load_results(run).summary["requests"]["total"] == 20


# The interrupt lost in __del__ is the point: Python prints it as "Exception ignored", which
# pytest reports as a warning.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_interrupt_lost_in_a_finaliser_is_raised_again() -> None:
    """Python runs a signal's handler in whatever code runs next; a KeyboardInterrupt raised
    inside a finaliser (a weakref callback, a __del__: the garbage collector's) is printed as
    "Exception ignored" and lost, and a run went on to its end (here: 3 of 30 Ctrl-C under
    load). Inside sigterm_interrupts() the event loop's check raises it again."""
    import signal as _signal

    from simkv.output import check_interrupt, sigterm_interrupts

    class Dies:
        def __del__(self) -> None:
            _signal.raise_signal(_signal.SIGINT)  # the handler raises in here: lost

    # A terminal's Ctrl-C: Python's own handler (a test runner's worker may hold another).
    before = _signal.signal(_signal.SIGINT, _signal.default_int_handler)
    try:
        with sigterm_interrupts():
            Dies()
            with pytest.raises(KeyboardInterrupt):
                check_interrupt()
        check_interrupt()  # the block has ended: nothing is pending any more
    finally:
        _signal.signal(_signal.SIGINT, before)

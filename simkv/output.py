"""The output protocol of a run folder: a run that ends in any way leaves files a reader can
tell apart, and no two runs ever write one folder (docs/OUTPUTS.md).

1. The folder is claimed: ``.simkv.lock`` is created exclusively with the owner's pid and
   host; a live run holding it makes the next one refuse the folder. Result files of an
   earlier run in the folder are removed, so none can be taken for the new run's.
2. ``config.json``, then ``run.json`` with ``status: running``, are written before anything
   runs.
3. Parquet tables are written as ``NAME.partial.parquet`` and renamed to ``NAME.parquet``
   only when the run ends normally; either way the footer says ``simkv.status`` (complete or
   partial). A failed run closes them, so what it finished stays readable under the partial
   name; a killed one (SIGKILL, power) leaves the partial name and ``status: running``.
4. JSON and PNG files are written under a temporary name and renamed whole.
5. ``run.json`` is written again last: ``ok``, ``error`` or ``interrupted``, with the error
   on one line and its traceback.

While a run is in progress, SIGTERM (what ``timeout``, batch schedulers and ``docker stop``
send) raises ``Terminated``, a KeyboardInterrupt, so it ends a run as cleanly as Ctrl-C.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from simkv import __version__, _accel

LOCK = ".simkv.lock"
TABLES = ("requests", "instances", "iterations", "transfers")
RESULT_FILES = ("config.json", "run.json", "summary.json", "latency.png", "latency.pdf", "trace.json",
                *(f"{t}.parquet" for t in TABLES), *(f"{t}.partial.parquet" for t in TABLES))


class FolderInUseError(ValueError):
    """Another live run holds the folder."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the run was, so it ends like Ctrl-C (outputs closed, run.json)."""


def partial(path: Path) -> Path:
    """``requests.parquet`` -> ``requests.partial.parquet``: the name while not complete."""
    return path.with_name(f"{path.stem}.partial{path.suffix}")


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """Write whole or not at all: a reader never sees half a file."""
    # NOTE: sorted keys and a fixed float format keep the file byte-identical across runs.
    _replace(path, lambda tmp: tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n"))


def _replace(path: Path, write: Callable[[Path], object]) -> None:
    # NOTE: the suffix stays last: writers (matplotlib) pick the format from it.
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_whole(path: Path, write: Callable[[Path], object]) -> None:
    """Let ``write(tmp)`` write a file (a plot), then rename it into place."""
    _replace(path, write)


def one_line(exc: BaseException) -> str:
    """The exception as one line; errors a user causes (ValueError, OSError, config errors)
    carry their own words, anything else is prefixed with its type. OmegaConf's detail lines
    (full_key: ..., object_type=...) become a ``key:`` prefix."""
    if isinstance(exc, Terminated):
        return " ".join(str(exc).split()) or "terminated by SIGTERM"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    key = ""
    kept = []
    for line in str(exc).splitlines():
        line = line.strip()
        if line.startswith("full_key:"):
            key = line.split(":", 1)[1].strip()
        elif line and not line.startswith(("object_type=", "reference_type=")):
            kept.append(line)
    text = " ".join(" ".join(kept).split())
    if "missing mandatory value" in text and key:
        return f"{key}: a value is required (set {key}=...)"
    if key and not text.startswith(key):
        text = f"{key}: {text}"
    user = isinstance(exc, ValueError | OSError) or type(exc).__module__.startswith("omegaconf")
    if text and user:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _owner_of(fd: int) -> dict[str, Any]:
    """The pid and host a lock file names ({} if unreadable)."""
    try:
        doc = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def lock_owner_alive(folder: Path) -> tuple[bool, str]:
    """(whether a live run holds ``folder``, who): the lock file's pid on this host must be
    a live process. A run killed by SIGKILL leaves its lock behind with a dead pid."""
    try:
        fd = os.open(folder / LOCK, os.O_RDONLY)
    except FileNotFoundError:
        return False, "no lock"
    try:
        owner = _owner_of(fd)
    finally:
        os.close(fd)
    pid, host = owner.get("pid"), owner.get("host")
    if host not in (None, socket.gethostname()):
        return True, f"pid {pid} on host {host} (cannot be checked from here)"
    if isinstance(pid, int) and _alive(pid):
        return True, f"pid {pid}"
    return False, f"pid {pid}, no longer running"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


class RunFolder:
    """One run's claim on its folder, from the first file written to the last."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = path / LOCK
        self.t0 = time.time()
        self.digest = ""
        self._fds: list[int] = []
        path.mkdir(parents=True, exist_ok=True)
        self._claim()
        for name in RESULT_FILES:
            (path / name).unlink(missing_ok=True)

    def _claim(self) -> None:
        """Take the folder's lock, or raise FolderInUseError naming who holds it.

        The lock file appears whole and held: written under a private name, locked with
        ``flock``, then linked into place (``link`` fails if a lock exists). A lock no live
        process holds (its run was killed: the kernel let go) is replaced atomically by ours.
        Before, the lock was created empty and written afterwards: a second run reading it in
        between took the empty file for a dead run's, deleted it and ran into the same folder
        (both wrote ``.run.tmp.json``; one failed with exit status 2: issue 18, item 13).
        """
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": self.t0}
        tmp = self.path / f"{LOCK}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        try:
            os.write(fd, json.dumps(me).encode())
            fcntl.flock(fd, fcntl.LOCK_EX)  # a private file: never waits
            for _ in range(8):
                try:
                    os.link(tmp, self.lock)
                    self._fds = [fd]
                    return
                except FileExistsError:
                    pass
                try:
                    old = os.open(self.lock, os.O_RDWR)
                except FileNotFoundError:
                    continue  # its run just ended: try again
                if self._take_over(old, me):
                    os.replace(tmp, self.lock)
                    self._fds = [fd, old]  # held to the end: no one takes the old one either
                    return
            raise FolderInUseError(f"{self.path}: could not claim the folder ({self.lock})")
        except BaseException:
            if not self._fds:
                os.close(fd)
            raise
        finally:
            tmp.unlink(missing_ok=True)

    def _take_over(self, old: int, me: dict[str, Any]) -> bool:
        """True if ``old`` (the lock file at the path) belongs to no live run and may be
        replaced; False if it changed under us (try again); FolderInUseError if it is held."""
        try:
            fcntl.flock(old, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _owner_of(old)
            os.close(old)
            pid = owner.get("pid")
            if pid == os.getpid() and owner.get("host") == me["host"]:
                raise FolderInUseError(f"{self.path}: this process is already running a "
                                       f"simulation into this folder") from None
            raise FolderInUseError(f"{self.path}: in use by another simkv run (pid {pid}); "
                                   f"give each run its own folder") from None
        try:
            same = os.stat(self.lock).st_ino == os.fstat(old).st_ino
        except FileNotFoundError:
            same = False
        owner = _owner_of(old)
        host = owner.get("host")
        if same and host not in (None, me["host"]):
            os.close(old)
            raise FolderInUseError(
                f"{self.path}: in use by a simkv run on host {host} (pid {owner.get('pid')}); "
                f"if that run is gone, delete {self.lock}")
        if not same:
            os.close(old)  # its run ended and another took its place meanwhile
        return same

    def begin(self, config: dict[str, Any], digest: str) -> None:
        """Config first, then run.json saying the run is under way."""
        self.digest = digest
        write_json(self.path / "config.json", config)
        self._run_json("running", {})

    def end(self, exc: BaseException | None, stats: dict[str, Any]) -> None:
        """run.json last (status ok, error or interrupted), then let the folder go. A second
        Ctrl-C waits until it is written."""
        with held_signals():
            self._end(exc, stats)

    def _end(self, exc: BaseException | None, stats: dict[str, Any]) -> None:
        try:
            if exc is None:
                self._run_json("ok", stats)
            else:
                status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "error"
                self._run_json(status, {**stats, "error": one_line(exc),
                                        "traceback": "".join(traceback.format_exception(exc))})
        finally:
            self.release()

    def release(self) -> None:
        """Let the folder go: the lock file goes (if it is still ours), then the flock."""
        if not self._fds:
            return
        try:
            if os.stat(self.lock).st_ino == os.fstat(self._fds[0]).st_ino:
                self.lock.unlink()
        except FileNotFoundError:
            pass
        for fd in self._fds:
            os.close(fd)
        self._fds = []

    def _run_json(self, status: str, extra: dict[str, Any]) -> None:
        files = {t: name for t in TABLES for name in (f"{t}.parquet", f"{t}.partial.parquet")
                 if (self.path / name).is_file()}
        write_json(self.path / "run.json", {
            "status": status, "error": "", "simkv_version": __version__,
            "config_hash": self.digest, "python": sys.version.split()[0],
            "pid": os.getpid(), "host": socket.gethostname(),
            "started_unix_s": self.t0, "tables": files,
            # Which hot-path modules ran compiled (simkv/_accel.py): same results either way.
            "compiled": sorted(m for m, how in _accel.loaded().items() if how == "compiled"),
            **extra,
        })


def record_failure(path: Path, exc: BaseException) -> None:
    """run.json for a job that failed before ``simulate`` could claim its folder (a config
    Hydra could compose but not turn into dataclasses)."""
    try:
        folder = RunFolder(path)
    except (OSError, ValueError):
        return
    folder.end(exc, {})


# The interrupt a signal raised inside sigterm_interrupts(), until the block ends: Python runs
# a signal's handler in whatever Python code runs next, and a KeyboardInterrupt raised inside a
# weakref callback or a __del__ (the garbage collector's) is printed as "Exception ignored"
# and lost, and the run went on to its end (seen: 3 of 30 Ctrl-C under load). The event loop
# raises it again (check_interrupt) until it ends the run.
_PENDING: list[BaseException] = []


def check_interrupt() -> None:
    """Raise the interrupt a signal raised in this run if it was lost (see ``_PENDING``)."""
    if _PENDING:
        raise _PENDING[0]


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises ``Terminated`` inside the block, where the process may set handlers
    (the main thread) and SIGTERM still has its default action (no one else handles it);
    SIGINT raises KeyboardInterrupt there, as Python's own handler does. Both are also kept
    in ``_PENDING`` for ``check_interrupt``."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        yield
        return

    def raising(make: Callable[[], BaseException]) -> Callable[[int, object], None]:
        def handler(signum: int, frame: object) -> None:
            _PENDING[:] = [make()]
            raise _PENDING[0]
        return handler

    signal.signal(signal.SIGTERM, raising(lambda: Terminated("terminated by SIGTERM")))
    own_sigint = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if own_sigint:
        signal.signal(signal.SIGINT, raising(KeyboardInterrupt))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if own_sigint:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        _PENDING.clear()


@contextlib.contextmanager
def held_signals() -> Iterator[None]:
    """Delay SIGINT and SIGTERM until the block is done, so a step that must not be cut in
    half (a row group written and counted, run.json written) is not.

    NOTE: by handlers that only take note, not by the signal mask: the mask is per thread,
    and pyarrow's threads would take the signal and let the main thread raise anyway
    (seen: a row group written but not counted).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []

    def note(signum: int, frame: object) -> None:
        got.append(signum)

    old = {s: signal.signal(s, note) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        for s in dict.fromkeys(got):
            signal.raise_signal(s)  # now, to the handlers the block found


def exit_code(exc: BaseException) -> int:
    """The shell's convention: 128 + signal number for a run ended by a signal."""
    if isinstance(exc, Terminated):
        return 128 + signal.SIGTERM
    if isinstance(exc, KeyboardInterrupt):
        return 128 + signal.SIGINT
    return 1


__all__ = ["LOCK", "RESULT_FILES", "FolderInUseError", "RunFolder", "Terminated", "check_interrupt",
           "exit_code",
           "held_signals", "lock_owner_alive", "one_line", "partial", "record_failure",
           "sigterm_interrupts", "write_json", "write_whole"]

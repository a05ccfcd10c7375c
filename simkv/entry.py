"""The edge of every command: whatever goes wrong, the user reads one line.

Errors a user causes (a config value, a file, a row, a model that does not fit, a policy that
cannot progress) are printed as ``PROG: error: ...`` (exit status 2); anything else is a bug
in simkv, printed as one line too (exit status 1) with the way to see its traceback; Ctrl-C
and SIGTERM end with one line (exit status 130 and 143). ``simkv-validate`` and
``simkv-calibrate`` enter through here, so their internals need no error handling of their
own.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from simkv.output import exit_code, one_line, sigterm_interrupts


def user_errors() -> tuple[type[BaseException], ...]:
    from omegaconf.errors import OmegaConfBaseException

    from simkv.engine.replica import LivelockError
    from simkv.registry import PluginError

    return (ValueError, OSError, LivelockError, OmegaConfBaseException, PluginError)


def report(prog: str, exc: BaseException, where: str = "", traceback_hint: str = "") -> int:
    """Print one line for ``exc`` to stderr and return the exit status it deserves."""
    if isinstance(exc, KeyboardInterrupt):
        print(f"{prog}: {one_line(exc)}{where}", file=sys.stderr)
        return exit_code(exc)
    if isinstance(exc, user_errors()):
        from simkv.engine.replica import LivelockError

        hint = ("; the run stops after engine.livelock_iterations iterations without a request "
                "finishing" if isinstance(exc, LivelockError) else "")
        print(f"{prog}: error: {one_line(exc)}{hint}{where}", file=sys.stderr)
        return 2
    hint = traceback_hint or "SIMKV_TRACEBACK=1 shows the traceback"
    print(f"{prog}: internal error (a bug in simkv, please report it): {one_line(exc)}{where} "
          f"[{hint}]", file=sys.stderr)
    return 1


def guarded(prog: str, main: Callable[[], Any]) -> int:
    """Run a command's ``main``; its exit status (0 for None), or one line and the status
    an exception deserves."""
    try:
        with sigterm_interrupts():
            code = main()
    except (Exception, KeyboardInterrupt) as exc:
        if os.environ.get("SIMKV_TRACEBACK") == "1":
            raise
        return report(prog, exc)
    return int(code or 0)


def validate() -> int:
    """``simkv-validate``."""
    from simkv.validation.cli import main

    return guarded("simkv-validate", main)


def calibrate() -> int:
    """``simkv-calibrate``."""
    from simkv.calibration.cli import main

    return guarded("simkv-calibrate", main)

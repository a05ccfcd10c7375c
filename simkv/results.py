"""Reading a run back: ``load_results(path)`` gives the same object ``simulate`` returned.

A folder is read as a result only if its run.json says the run completed: a run that failed,
was interrupted or killed, or is still going refuses to load (its numbers are not the run's),
unless ``partial=True`` asks for what it wrote, with a warning (docs/OUTPUTS.md).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from simkv.output import lock_owner_alive

if TYPE_CHECKING:
    import pandas as pd  # on first use: a run that never reads its tables never imports it


class IncompleteRunError(ValueError):
    """The folder holds a run that did not complete; the message says why."""


@dataclass
class SimResult:
    """A run: its folder, summary and config; tables are read on first access.

    ``status`` is ``ok`` for a complete run; a partial one (``load_results(...,
    partial=True)``) has the status its run.json gives and an empty summary.
    """

    out_dir: Path
    summary: dict[str, Any]
    config: dict[str, Any]
    _requests: pd.DataFrame | None = field(default=None, repr=False)
    status: str = "ok"
    # Table -> file name in out_dir (partial runs: NAME.partial.parquet).
    tables: dict[str, str] = field(default_factory=dict)

    def _table(self, name: str) -> Path | None:
        path = self.out_dir / self.tables.get(name, f"{name}.parquet")
        return path if path.exists() else None

    @property
    def requests(self) -> pd.DataFrame:
        if self._requests is None:
            path = self._table("requests")
            if path is None:
                raise FileNotFoundError(f"{self.out_dir}: no requests table")
            import pandas as pd

            self._requests = pd.read_parquet(path)
        return self._requests

    def figure(self) -> Any:
        """The run's latency figure (latency.png's content) as a matplotlib Figure: shown
        inline when it is a notebook cell's value; ``fig.savefig(...)`` writes it."""
        from simkv.metrics.plots import latency_figure, run_title

        path = self._table("requests")
        if path is None:
            raise FileNotFoundError(f"{self.out_dir}: no requests table")
        return latency_figure(path, self.summary, run_title(self.config))

    def __repr__(self) -> str:
        """One line: the folder, status, what ran and the headline numbers (the summary and
        config are a dict each, printed whole only when asked for)."""
        from simkv.metrics.plots import run_title

        head = f"SimResult({str(self.out_dir)!r}, status={self.status!r}"
        s = self.summary
        if not s:
            return head + ")"
        req = s.get("requests", {})
        ttft = s.get("ttft_s", {}).get("p99")
        good = s.get("goodput", {}).get("requests_per_s")
        return (f"{head}, {run_title(self.config)}; {req.get('finished')} finished, "
                f"{req.get('rejected')} rejected, TTFT p99 "
                f"{'-' if ttft is None else f'{ttft * 1e3:.1f} ms'}, goodput "
                f"{'-' if good is None else f'{good:.2f} req/s'})")

    @property
    def iterations(self) -> pd.DataFrame | None:
        path = self._table("iterations")
        if path is None:
            return None
        import pandas as pd

        return pd.read_parquet(path)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except ValueError as exc:
        raise IncompleteRunError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise IncompleteRunError(f"{path}: expected a JSON object")
    return doc


def run_status(out: Path) -> tuple[str, str]:
    """(status, why) of a run folder from its run.json: ok, error, interrupted, or killed
    (run.json still says running but no live process holds the folder), or running."""
    run = _read_json(out / "run.json")
    status = str(run.get("status", "unknown"))
    if status != "running":
        return status, str(run.get("error", ""))
    # NOTE: the lock's owner must be alive: a run killed by SIGKILL leaves its lock behind,
    # which read as "still going" forever (issue 18, item 7).
    alive, who = lock_owner_alive(out)
    if alive:
        return "running", f"the run is still going ({who})"
    return "killed", (f"the run ended without writing its status (killed by SIGKILL, a crash or "
                      f"power loss; {'its lock names ' + who if who != 'no lock' else 'no lock left'})")


def load_results(path: str | Path, *, partial: bool = False) -> SimResult:
    """Read a run folder written by ``simulate`` or the ``simkv`` command.

    Args:
        path: the run folder.
        partial: read a run that did not complete (failed, interrupted, killed): its
            requests table holds what it finished; the summary is empty. A warning says so.

    Raises:
        FileNotFoundError: not a simkv run folder.
        IncompleteRunError: the run did not complete (and ``partial`` is false), or its
            files do not belong together.
    """
    out = Path(path)
    if not (out / "run.json").is_file():
        raise FileNotFoundError(f"{out}: not a simkv run folder (no run.json)")
    run = _read_json(out / "run.json")
    status, why = run_status(out)
    config = _read_json(out / "config.json") if (out / "config.json").is_file() else {}
    tables = {str(k): str(v) for k, v in dict(run.get("tables", {})).items()}
    if status != "ok":
        found = ", ".join(tables.values()) or "no table"
        if not partial:
            raise IncompleteRunError(
                f"{out}: the run did not complete ({status}: {why}); it left {found}; "
                f"load_results(path, partial=True) reads what it wrote")
        warnings.warn(f"{out}: reading a run that did not complete ({status}: {why}); its "
                      f"tables hold only what it finished and it has no summary",
                      RuntimeWarning, stacklevel=2)
        return SimResult(out, {}, config, status=status, tables=tables)
    missing = [n for n in ("summary.json", "config.json", "requests.parquet")
               if not (out / n).is_file()]
    if missing:
        raise IncompleteRunError(f"{out}: run.json says ok but {', '.join(missing)} is missing")
    summary = _read_json(out / "summary.json")
    if summary.get("config_hash") != run.get("config_hash"):
        raise IncompleteRunError(f"{out}: summary.json (config {summary.get('config_hash')}) and "
                                 f"run.json (config {run.get('config_hash')}) come from different runs")
    return SimResult(out, summary, config, tables=tables)

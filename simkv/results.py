"""Reading a run back: ``load_results(path)`` gives the same object ``simulate`` returned."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd


@dataclass
class SimResult:
    """A finished run: its folder, summary and config; tables are read on first access."""

    out_dir: Path
    summary: dict[str, Any]
    config: dict[str, Any]
    _requests: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def requests(self) -> pd.DataFrame:
        if self._requests is None:
            self._requests = pd.read_parquet(self.out_dir / "requests.parquet")
        return self._requests

    @property
    def iterations(self) -> pd.DataFrame | None:
        path = self.out_dir / "iterations.parquet"
        return pd.read_parquet(path) if path.exists() else None


def load_results(path: str | Path) -> SimResult:
    """Read a run folder written by ``simulate`` or the ``simkv`` command."""
    out = Path(path)
    missing = [n for n in ("summary.json", "config.json", "requests.parquet")
               if not (out / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{out}: not a simkv run folder (missing {', '.join(missing)})")
    return SimResult(out, json.loads((out / "summary.json").read_text()),
                     json.loads((out / "config.json").read_text()))

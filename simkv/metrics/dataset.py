"""A sweep as one Parquet dataset: every job's requests and summary, the swept values as
columns, partitioned by job.

    simkv -m router=round_robin,least_work cluster.replicas=2,4      # any launcher
    simkv-compare simkv_runs/multirun/<time>                          # writes <sweep>/dataset
    pd.read_parquet("<sweep>/dataset/requests")                       # every request of every job
    pd.read_parquet("<sweep>/dataset/summary")                        # one row per job

Layout (file names are fixed, so the same sweep gives the same files)::

    <sweep>/dataset/requests/job=<n>/part-0.parquet   requests.parquet of job n + swept columns
    <sweep>/dataset/summary/job=<n>/part-0.parquet    its summary.json flattened (``ttft_s.p99``)
                                                      + swept columns + status, error, run

``job`` is the Hydra job number (the folder's ``<n>_`` prefix) and comes back as a column
from the folder names (Hive partitioning: pandas, pyarrow and DuckDB's
``read_parquet('.../*/*.parquet', hive_partitioning=true)`` read it). The swept keys are the
keys of the jobs' overrides (``.hydra/overrides.yaml``), or, for folders written without
Hydra, the config keys whose values differ between runs; a policy group's column holds its
registered name (``router``), any other key its typed value from config.json
(``cluster.replicas``: int). Every summary file has the schema of the union of all jobs'
summary keys, so reading the folder never drops a key that only some jobs have (a memory
section, sessions). Jobs that did not complete keep their summary row (status and error)
and have no requests.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from simkv.results import run_status

# Keys of a job's overrides that say how it ran, not what it ran.
NOT_SWEPT = ("hydra.", "hydra/", "output.plot", "output.progress")


def flatten(doc: dict[str, Any]) -> dict[str, Any]:
    """A nested JSON document (config.json, summary.json) as one level of dotted keys
    (pandas' json_normalize); a policy section's ``name`` stands for the section
    (``router.name`` -> ``router``); lists become JSON text (one Parquet type per column)."""
    flat = pd.json_normalize(doc, sep=".").iloc[0].to_dict() if doc else {}
    out: dict[str, Any] = {}
    for key, val in flat.items():
        key = key.removesuffix(".name") if key.endswith(".name") and key.count(".") == 1 else key
        out[key] = json.dumps(val) if isinstance(val, list | dict) else val
    return out


def job_folders(root: Path) -> list[tuple[int, Path]]:
    """(job number, folder) of every run below ``root``: Hydra's number where the folder
    name starts with it, otherwise the position in sorted order."""
    folders = sorted({p.parent for p in root.rglob("run.json")}
                     | {p.parent for p in root.rglob("summary.json")})
    folders = [f for f in folders if "dataset" not in f.relative_to(root).parts[:1]]
    numbered = []
    for i, folder in enumerate(folders):
        m = re.match(r"(\d+)_", folder.name)
        numbered.append((int(m.group(1)) if m else i, folder))
    if len({n for n, _ in numbered}) != len(numbered):  # not one Hydra sweep: number in order
        numbered = list(enumerate(folders))
    return sorted(numbered)


def overrides(folder: Path) -> dict[str, str] | None:
    """A Hydra job's overrides (``.hydra/overrides.yaml``) as key -> value as given, without
    the keys that say how it ran; None for a folder written without Hydra."""
    path = folder / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return None
    out: dict[str, str] = {}
    for item in yaml.safe_load(path.read_text()) or []:
        key, _, value = str(item).partition("=")
        key = key.lstrip("+~")
        if not key.startswith(NOT_SWEPT) and key not in NOT_SWEPT:
            out[key] = value
    return out


def swept_value(config: dict[str, Any], given: dict[str, str] | None, key: str) -> Any:
    """A swept key's value in one run: typed, from its flattened config.json; for a group
    whose choice is no config field (``pools=pd_split``, ``hardware=h200``, ``engine=...``),
    the choice as given on the command line. Before issue 18 such a column was empty."""
    if key in config:
        return config[key]
    return None if given is None else given.get(key)


def _jobs(root: Path) -> list[dict[str, Any]]:
    jobs = []
    for num, folder in job_folders(root):
        try:
            status, error = run_status(folder) if (folder / "run.json").is_file() else ("ok", "")
        except ValueError as exc:
            status, error = "unreadable", str(exc)
        config = folder / "config.json"
        summary = folder / "summary.json"
        if status == "ok" and not (summary.is_file() and config.is_file()):
            status, error = "incomplete", "summary.json or config.json is missing"
        jobs.append({
            "job": num, "folder": folder, "status": status, "error": error,
            "config": flatten(json.loads(config.read_text())) if config.is_file() else {},
            "summary": flatten(json.loads(summary.read_text())) if status == "ok" else {},
            "overrides": overrides(folder),
        })
    if not jobs:
        raise FileNotFoundError(f"no run (run.json or summary.json) below {root}")
    return jobs


def swept_keys(jobs: list[dict[str, Any]]) -> list[str]:
    """The keys the jobs were swept over, in the order they were given."""
    keys: dict[str, None] = {}
    if all(j["overrides"] is not None for j in jobs):
        for j in jobs:
            keys.update(dict.fromkeys(j["overrides"]))
        return list(keys)
    # Runs written without Hydra (simulate() in a loop): the config keys that differ.
    configs = [j["config"] for j in jobs if j["config"]]
    common = set.intersection(*(set(c) for c in configs)) if configs else set()
    return sorted(k for k in common if len({str(c[k]) for c in configs}) > 1)


def _value(job: dict[str, Any], key: str) -> Any:
    """A swept key's value in a job (``swept_value``)."""
    return swept_value(job["config"], job["overrides"], key)


def summary_table(root: Path) -> tuple[pd.DataFrame, list[str]]:
    """One row per job: job, the swept keys, status, error, run (the folder), then the
    flattened summary; and the swept keys."""
    jobs = _jobs(root)
    keys = swept_keys(jobs)
    rows = [{"job": j["job"], **{k: _value(j, k) for k in keys}, "status": j["status"],
             "error": j["error"], "run": str(j["folder"].relative_to(root)) or ".", **j["summary"]}
            for j in jobs]
    return pd.DataFrame(rows), keys


def gather(root: str | Path, out: str | Path | None = None) -> Path:
    """Write the sweep below ``root`` as a dataset (default ``root/dataset``, replaced
    whole) and return its folder."""
    root = Path(root)
    dest = Path(out) if out is not None else root / "dataset"
    df, keys = summary_table(root)
    if dest.exists():
        shutil.rmtree(dest)
    # NOTE: one Arrow table for all jobs, so every job's file gets the union schema.
    table = pa.Table.from_pandas(df, preserve_index=False).replace_schema_metadata(
        {b"simkv.swept": json.dumps(keys).encode()})
    swept = table.select(keys) if keys else None
    folders = dict(job_folders(root))
    for i, job in enumerate(df["job"].tolist()):
        part = dest / "summary" / f"job={job}"
        part.mkdir(parents=True)
        pq.write_table(table.slice(i, 1).drop_columns(["job"]), part / "part-0.parquet",
                       compression="zstd")
        if df["status"].iloc[i] != "ok":
            continue
        requests = pq.read_table(folders[job] / "requests.parquet")
        for name in keys:
            col = swept.column(name).slice(i, 1)
            requests = requests.append_column(
                pa.field(name, col.type), pa.repeat(col[0], requests.num_rows).cast(col.type))
        part = dest / "requests" / f"job={job}"
        part.mkdir(parents=True)
        pq.write_table(requests, part / "part-0.parquet", compression="zstd")
    return dest


__all__ = ["flatten", "gather", "job_folders", "overrides", "summary_table", "swept_keys",
           "swept_value"]

"""Reading a measurement folder: the layouts docs/VALIDATION.md documents, and nothing else.

A *run* is one folder: one engine configuration (``engine.json``) and its *streams*, one
``requests_<stream>.csv`` each (and, with a step profile, ``iterations_<stream>.csv``).
Accepted layouts (docs/VALIDATION.md, "Bring your own measurements"):

* an ``hf_campaign`` folder: streams named ``<workload>-<load>-<rep>`` (2026-11-30) or
  ``<workload>-<regime>-<load>x-<requests>-<rep>`` (regime: light, transient, sustained), or
  listed with their workload, load and rep in engine.json's ``streams``;
* an ``hf_replay`` folder: ``requests_<load>.csv`` (one replay per load);
* a request-level folder from any engine: ``requests_<stream>.csv`` or ``requests.csv`` with
  per request its arrival, lengths and measured first-token and completion times (or TTFT
  and E2E), no step profile.

engine.json gives the model (``model_spec``, or ``shape``/``model`` naming one of simkv's
model configs), the engine's KV blocks, block size and token budget, and its GPU; anything
missing is refused with one line that names the file and the field (a ``ValueError``), never
read as a default.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from simkv.entities.model import ModelSpec

# <workload>-<load>-<rep>, or <workload>-<regime>-<load>x-<requests>-<rep>.
TAG = re.compile(r"^(?P<workload>[a-z][a-z0-9_]*)(?:-(?P<regime>light|transient|sustained))?"
                 r"-(?P<load>[0-9]+(?:\.[0-9]+)?)x?(?:-(?P<requests>[0-9]+))?-(?P<rep>[a-z])$")
LOAD_TAG = re.compile(r"^(?P<load>[0-9]+(?:\.[0-9]+)?)$")  # hf_replay: requests_<load>.csv
# Request files that are not measured streams (capacity probes, the engine's warm-up).
PROBE = re.compile(r"^(probe|warmup)")
# Per request: required, and one of each pair (absolute times, or latencies).
REQUEST_REQUIRED = ("arrival_s", "prompt_tokens", "output_tokens")
REQUEST_EITHER = (("first_token_s", "ttft_s"), ("completion_s", "e2e_s"))
STEP_REQUIRED = ("start_s", "prepare_s", "forward_s", "tokens", "sequences", "kv_read")
# Where the engine's limits may be recorded, in order of preference.
LIMIT_FIELDS = {
    "num_blocks": ("PagedAttentionCache.num_blocks", "num_blocks"),
    "block_size": ("PagedAttentionCache.block_size", "block_size"),
    "max_batch_tokens": ("PagedAttentionCache.max_batch_tokens", "max_batch_tokens"),
}
# GPU names (engine.json "device") and the calibrated profile that prices them.
DEVICE_PROFILES = (("H200", "h200_calibrated"), ("H100", "h100_sxm_80gb_calibrated"))


@dataclass
class Stream:
    """One measured stream of a run: its name in the files and what it was."""

    tag: str
    workload: str
    load: float
    rep: str
    regime: str = ""
    requests: int = 0

    @property
    def key(self) -> str:
        """The stream without its replay: two reps of one stream share it."""
        return self.tag[:-2] if self.tag[-2:-1] == "-" else self.tag


@dataclass
class Run:
    """One folder: its model, parallelism, engine.json and streams (requests, steps)."""

    folder: Path
    shape: str
    spec: ModelSpec
    tp: int
    engine: dict[str, Any]
    requests: dict[str, pd.DataFrame] = field(default_factory=dict)
    steps: dict[str, pd.DataFrame] = field(default_factory=dict)
    meta: dict[str, Stream] = field(default_factory=dict)
    # Requests the engine evicted (soft resets and CPU offloads), per stream, where recorded
    # (evictions_<stream>.csv: one row per eviction).
    evictions: dict[str, int] = field(default_factory=dict)
    # The name in tables when folders of several campaigns share names (``<campaign>/<folder>``).
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or self.folder.name

    def streams(self) -> list[tuple[str, str, float, str]]:
        """(tag, workload, load, rep) of every stream, in engine.json's order (else files')."""
        return [(s.tag, s.workload, s.load, s.rep) for s in self.meta.values()]


def _fail(where: Path, what: str) -> ValueError:
    return ValueError(f"{where}: {what}")


def read_engine(folder: Path) -> dict[str, Any]:
    path = folder / "engine.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no engine.json (docs/VALIDATION.md lists what a "
                                "measurement folder holds)")
    try:
        e = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise _fail(path, f"not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(e, dict):
        raise _fail(path, "expected a JSON object")
    return e


def model_spec(folder: Path, e: dict[str, Any], model: str | None = None) -> tuple[str, ModelSpec]:
    """The model a run served: engine.json's ``model_spec``, else the simkv model config named
    by ``model`` (the command line), ``shape`` or ``model`` in engine.json."""
    import dataclasses

    path = folder / "engine.json"
    spec = e.get("model_spec")
    if model is None and isinstance(spec, dict):
        names = {f.name for f in dataclasses.fields(ModelSpec)}
        unknown = sorted(set(spec) - names)
        if unknown:
            raise _fail(path, f"model_spec has unknown field(s) {', '.join(unknown)}")
        try:
            s = ModelSpec(**spec)
        except (TypeError, ValueError) as exc:
            raise _fail(path, f"model_spec: {exc}") from None
        return str(e.get("shape") or s.name), s
    name = model or e.get("shape") or e.get("model")
    if not name:
        raise _fail(path, "no model_spec, and no shape or model naming one of simkv's models "
                          "(simkv/conf/model/); add one, or pass --model NAME")
    from importlib import resources

    res = resources.files("simkv.conf").joinpath(f"model/{name}.yaml")
    if not res.is_file():
        known = sorted(p.name.removesuffix(".yaml")
                       for p in resources.files("simkv.conf").joinpath("model").iterdir()
                       if p.name.endswith(".yaml"))
        raise _fail(path, f"model {name!r} is not one of simkv's models ({', '.join(known)})")
    import yaml

    return str(name), ModelSpec(**yaml.safe_load(res.read_text()))


def engine_limit(e: dict[str, Any], name: str, folder: Path) -> int:
    """The engine's KV blocks, block size or token budget, wherever engine.json has it."""
    for key in LIMIT_FIELDS[name]:
        v = e.get(key)
        if v is None and key == name:  # what the engine resolved, else what it was asked
            v = (e.get("engine_resolved") or {}).get(name)
            if v is None:
                v = (e.get("cb_config") or {}).get(name)
        if v is not None:
            try:
                return int(v)
            except (TypeError, ValueError):
                raise _fail(folder / "engine.json", f"{key} must be an integer, got {v!r}") from None
    raise _fail(folder / "engine.json", f"no {LIMIT_FIELDS[name][0]} (or {name}): the engine's "
                                        f"{name.replace('_', ' ')} is needed to model it")


def profile_for(e: dict[str, Any], folder: Path) -> str:
    """simkv's hardware profile for the GPU engine.json names (``hardware``, else ``device``)."""
    if e.get("hardware"):
        return str(e["hardware"])
    device = str(e.get("device") or "")
    for gpu, profile in DEVICE_PROFILES:
        if gpu in device.upper():
            return profile
    raise _fail(folder / "engine.json", f"no hardware profile: device {device!r} is none of "
                                        f"{', '.join(g for g, _ in DEVICE_PROFILES)}; add "
                                        "\"hardware\": \"<simkv profile>\" or pass --profile")


def read_requests(path: Path) -> pd.DataFrame:
    """A stream's requests with ``ttft``, ``tpot`` and ``e2e`` (seconds), in id order.

    Requests the engine got but did not finish in the measured window (``status`` missing,
    e.g. a call cut by its deadline) stay in, with ``measured`` false: they took the engine's
    blocks and steps, so simkv replays them too, and they are left out of every error. Their
    submission time is ``submit_s``, else ``queued_s`` (when the engine queued them), else
    their arrival."""
    try:
        d = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise _fail(path, f"not a CSV table ({one(exc)})") from None
    missing = [c for c in REQUEST_REQUIRED if c not in d]
    missing += [" or ".join(p) for p in REQUEST_EITHER if not any(c in d for c in p)]
    if missing:
        raise _fail(path, f"missing column(s) {', '.join(missing)}")
    if "id" not in d:
        d["id"] = np.arange(len(d))
    d["measured"] = (d["status"].astype(str) != "missing") if "status" in d else True
    d = d.sort_values("id").reset_index(drop=True)
    if "submit_s" not in d:
        d["submit_s"] = np.nan
    if "queued_s" in d:
        d["submit_s"] = d["submit_s"].fillna(d["queued_s"])
    d["submit_s"] = d["submit_s"].fillna(d["arrival_s"])
    if "first_token_s" not in d:
        d["first_token_s"] = d["arrival_s"] + d["ttft_s"]
    if "completion_s" not in d:
        d["completion_s"] = d["arrival_s"] + d["e2e_s"]
    d["ttft"] = d["first_token_s"] - d["arrival_s"]
    d["e2e"] = d["completion_s"] - d["arrival_s"]
    d["tpot"] = (d["completion_s"] - d["first_token_s"]) / np.maximum(1, d["output_tokens"] - 1)
    bad = d["measured"] & ~np.isfinite(d[["ttft", "e2e"]].to_numpy(float)).all(axis=1)
    if bad.any():
        raise _fail(path, f"{int(bad.sum())} request(s) without a finite first-token or "
                          "completion time (drop them or mark status=missing)")
    if not d["measured"].any():
        raise _fail(path, "no measured request")
    return d


def one(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def read_steps(path: Path) -> pd.DataFrame:
    try:
        d = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise _fail(path, f"not a CSV table ({one(exc)})") from None
    missing = [c for c in STEP_REQUIRED if c not in d]
    if missing:
        raise _fail(path, f"missing column(s) {', '.join(missing)}")
    if "captured" not in d:
        d["captured"] = 0
    if "prefill" in d:  # the engine's own "rid:q:past" list (2026-12-07 on): kept apart
        d = d.rename(columns={"prefill": "prefill_ids"})
    d["step_s"] = d["prepare_s"] + d["forward_s"]
    # One prefill chunk per step, as far as the columns tell (stepfit replaces these by the
    # engine's exact composition, replayed through its scheduler).
    d["prefill"] = np.where(d["tokens"] > d["sequences"], d["tokens"] - d["sequences"] + 1, 0)
    d["decodes"] = d["tokens"] - d["prefill"]
    return d


def stream_of(tag: str, listed: dict[str, Any], path: Path) -> Stream:
    """A stream's identity: engine.json's entry for it, else its file name."""
    entry = listed.get(tag)
    m = TAG.match(tag)
    if entry is not None and "load" in entry:
        try:
            load = float(entry["load"])
        except (TypeError, ValueError):
            raise _fail(path.parent / "engine.json", f"streams: {tag}'s load must be a number, "
                                                     f"got {entry['load']!r}") from None
        return Stream(tag, str(entry.get("workload") or (m["workload"] if m else "stream")), load,
                      str(entry.get("rep") or (m["rep"] if m else "a")),
                      str(entry.get("regime") or (m["regime"] if m and m["regime"] else "")),
                      int(entry.get("requests") or 0))
    if m:
        return Stream(tag, m["workload"], float(m["load"]), m["rep"], m["regime"] or "",
                      int(m["requests"] or 0))
    m2 = LOAD_TAG.match(tag)
    if m2:
        return Stream(tag, "stream", float(m2["load"]), "a")
    raise _fail(path, f"stream name {tag!r} is none of <workload>-<load>-<rep>, "
                      "<workload>-<regime>-<load>x-<requests>-<rep> or <load>, and engine.json's "
                      "streams do not list it with its load")


def load_run(folder: Path | str, model: str | None = None) -> Run:
    """A measurement folder (any layout above); refuses what it cannot model, in one line."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    e = read_engine(folder)
    shape, spec = model_spec(folder, e, model)
    for name in LIMIT_FIELDS:
        engine_limit(e, name, folder)
    try:
        tp = int(e.get("tp", 1) or 1)
    except (TypeError, ValueError):
        raise _fail(folder / "engine.json", f"tp must be an integer, got {e.get('tp')!r}") from None
    run = Run(folder, shape, spec, tp, e)
    listed = {str(s["tag"]): s for s in e.get("streams") or [] if isinstance(s, dict) and "tag" in s}
    found: dict[str, Path] = {}
    for path in sorted(folder.glob("requests*.csv")):
        tag = path.stem.removeprefix("requests").removeprefix("_") or "all"
        if PROBE.match(tag):
            continue
        found[tag] = path
    if not found:
        raise _fail(folder, "no requests_<stream>.csv (nor requests.csv): nothing measured to "
                            "predict")
    # engine.json's order (the order the engine ran them), then the files'.
    order = [t for t in listed if t in found] + [t for t in found if t not in listed]
    for tag in order:
        path = found[tag]
        run.meta[tag] = stream_of(tag, listed, path) if tag != "all" else Stream(tag, "stream", math.nan, "a")
        run.requests[tag] = read_requests(path)
        steps = folder / f"iterations_{tag}.csv"
        if steps.is_file():
            run.steps[tag] = read_steps(steps)
        ev = folder / f"evictions_{tag}.csv"
        if ev.is_file():
            try:
                run.evictions[tag] = len(pd.read_csv(ev))
            except pd.errors.EmptyDataError:
                run.evictions[tag] = 0
    return run


def find_runs_in(roots: list[str], model: str | None = None) -> list[Run]:
    """Every measurement folder under each of ``roots``; with more than one root, each run is
    named ``<root>/<folder>`` (two campaigns hold folders of one name: llama3_8b)."""
    runs = []
    for root in roots:
        for r in find_runs(root, model):
            if len(roots) > 1:
                r.label = f"{Path(root).name}/{r.folder.name}"
            runs.append(r)
    return runs


def find_runs(root: Path | str, model: str | None = None) -> list[Run]:
    """Every measurement folder under ``root`` (or ``root`` itself)."""
    root = Path(root)
    if (root / "engine.json").is_file():
        return [load_run(root, model)]
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    runs = [load_run(p.parent, model) for p in sorted(root.glob("*/engine.json"))]
    if not runs:
        raise FileNotFoundError(f"{root}: no engine.json in it or in its subfolders")
    return runs


def graph_keys_before(run: Run, tag: str) -> list[str]:
    """CUDA-graph keys the engine held when ``tag`` started: engine.json's ``graphs_before``
    for that stream when recorded, else the pre-captured keys (precapture.csv) and every key
    of the streams the engine ran before it (their profiled steps). Capacity probes are not
    profiled in the 2026-11-30 campaign, so keys only they met are missing there."""
    for s in run.engine.get("streams") or []:
        if isinstance(s, dict) and s.get("tag") == tag and s.get("graphs_before") is not None:
            return [str(k) for k in s["graphs_before"]]
    keys: dict[str, None] = {}
    pre = run.folder / "precapture.csv"
    if pre.is_file():
        p = pd.read_csv(pre)
        if "key" in p:
            ok = p["status"].astype(str) == "captured" if "status" in p else np.ones(len(p), bool)
            keys.update(dict.fromkeys(p.loc[ok, "key"].dropna().astype(str)))
    for probe in [*sorted(run.folder.glob("iterations_warmup*.csv")),
                  *sorted(run.folder.glob("iterations_probe*.csv"))]:
        keys.update(dict.fromkeys(step_keys(pd.read_csv(probe))))
    for t in run.meta:
        if t == tag:
            break
        if t in run.steps:
            keys.update(dict.fromkeys(step_keys(run.steps[t])))
    return list(keys)


def step_keys(steps: pd.DataFrame) -> list[str]:
    """Each profiled step's graph key, "q/kv/seqlen_k" (empty when not recorded)."""
    cols = ("q_padded", "kv_padded", "seqlen_k")
    if not all(c in steps for c in cols):
        return []
    return [f"{q}/{kv}/{sk}" for q, kv, sk in steps[list(cols)].itertuples(index=False)]

"""Traces given as distributions: ServeGen client data and inference-perf configs.

Two peers describe workloads not as one row per request but as the distributions a load
generator samples from; simkv reads them as it reads any trace (``workload=trace
workload.format=servegen|inference_perf``), generating the rows with a seeded stream and
validating every value, so a bad one is named with its file, row or key:

* **ServeGen** (Xiang et al., NSDI 2026; github alibaba/ServeGen, the format its
  ``ClientPool`` reads and BLIS's ``blis convert servegen`` converts): ``path`` is a model's
  folder (e.g. ``data/reason/deepseek-r1``) of ``chunk-<client>-trace.csv`` (no header; per
  window: start second, rate req/s, CV, arrival pattern ``Gamma``/``Weibull`` or empty for an
  idle window, and its two parameters) and ``chunk-<client>-dataset.json`` (per time
  stamp, each field's distribution as a ``{value: probability}`` mapping: input_tokens,
  output_tokens, reason_ratio). Each active window of each client gets ServeGen's arrivals:
  ``ceil(rate x window)`` gaps of its pattern, rescaled to span the window, those inside it
  kept; lengths from the client's distribution of the latest time stamp at or before the
  window (ServeGen's construct.generate_workload with the clients' own rates).
* **inference-perf** (github kubernetes-sigs/inference-perf, the YAML config its ``load``
  and ``data`` sections define; BLIS's ``blis convert inference-perf``): ``load.type``
  constant (evenly spaced) or poisson, ``load.stages`` of ``rate`` and ``duration`` run in
  sequence ``load.interval`` seconds apart; ``data.type`` random/synthetic (lengths from
  ``input_distribution`` and ``output_distribution``: normal, lognormal, uniform, fixed,
  poisson, clipped to [min, max]) or shared_prefix (``num_groups`` x
  ``num_prompts_per_group`` prompts, each a group's system prompt of
  ``system_prompt_len`` tokens and its own question of ``question_len``, output
  ``output_len``; requests cycle through the prompts as inference-perf does, and the system
  prompt's whole blocks carry the group's prefix hashes).

What cannot be read is refused in one line naming the key: a data type that needs a
dataset's text (shareGPT, cnn_dailymail, ...), concurrency-driven or replayed load, multi-turn
chat.
"""

from __future__ import annotations

import ast
import csv
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from simkv.workload.trace_columns import MAX_TOKENS, Columns, TraceError, _Validator

PATTERNS = ("Gamma", "Weibull")
# Requests one client's window may draw at once (its gaps are drawn together to be rescaled
# to span the window): 10 million, 16,700 req/s over ServeGen's 600 s windows. A larger one
# is refused naming its row (a rate of 1e9 req/s asked numpy for 74.5 GiB: internal error).
MAX_WINDOW_REQUESTS = 10_000_000
TRACE_COLUMNS = ("timestamp", "rate", "cv", "pattern", "shape", "scale")


# --- ServeGen ---------------------------------------------------------------------------
def _pmf(text: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """A ServeGen distribution (``"{value: probability, ...}"``) as (values, CDF)."""
    try:
        doc = ast.literal_eval(text) if isinstance(text, str) else text
    except (ValueError, SyntaxError):
        raise TraceError(f"{where}: expected a mapping {{value: probability}}, got "
                         f"{str(text)[:40]!r}") from None
    if not isinstance(doc, dict) or not doc:
        raise TraceError(f"{where}: expected a non-empty mapping {{value: probability}}")
    values, probs = [], []
    for k, p in doc.items():
        if isinstance(k, bool) or not isinstance(k, int | float) or not math.isfinite(k) or k < 0:
            raise TraceError(f"{where}: expected values >= 0, got {k!r}")
        if isinstance(p, bool) or not isinstance(p, int | float) or not math.isfinite(p) or p < 0:
            raise TraceError(f"{where}: expected probabilities >= 0, got {p!r} for {k!r}")
        values.append(float(k))
        probs.append(float(p))
    order = np.argsort(values, kind="stable")
    v, pr = np.asarray(values)[order], np.asarray(probs)[order]
    total = pr.sum()
    if not math.isclose(total, 1.0, abs_tol=1e-3):
        raise TraceError(f"{where}: expected probabilities summing to 1, got {total:.6g}")
    return v, np.cumsum(pr) / total


def _servegen_client(folder: Path, cid: str) -> tuple[list[tuple], dict[int, dict]]:
    trace_path = folder / f"chunk-{cid}-trace.csv"
    data_path = folder / f"chunk-{cid}-dataset.json"
    if not trace_path.is_file():
        raise TraceError(f"{data_path}: its trace file {trace_path.name} is missing")
    rows: list[tuple] = []
    last = -math.inf
    with trace_path.open(newline="", encoding="utf-8") as f:
        for i, row in enumerate(csv.reader(f), 1):
            if not row:
                continue
            if len(row) != 6:
                raise TraceError(f"{trace_path}: row {i}: expected 6 fields ({', '.join(TRACE_COLUMNS)}), "
                                 f"got {len(row)}")
            vals: list[float] = []
            for col, cell in zip(TRACE_COLUMNS, row, strict=True):
                if col == "pattern":
                    continue
                try:
                    x = float(cell)
                except ValueError:
                    raise TraceError(f"{trace_path}: row {i}, column '{col}': expected a number, "
                                     f"got {cell!r}") from None
                if not math.isfinite(x) or x < 0:
                    raise TraceError(f"{trace_path}: row {i}, column '{col}': expected a number "
                                     f">= 0, got {cell}")
                vals.append(x)
            ts, rate, _cv, shape, scale = vals
            pattern = row[3].strip()
            if ts <= last:
                raise TraceError(f"{trace_path}: row {i}, column 'timestamp': expected increasing "
                                 f"window starts, got {row[0]} after {last:g}")
            last = ts
            if pattern and pattern not in PATTERNS:
                raise TraceError(f"{trace_path}: row {i}, column 'pattern': expected one of "
                                 f"{', '.join(PATTERNS)} or empty, got {pattern!r}")
            if pattern and rate > 0 and (shape <= 0 or scale <= 0):
                raise TraceError(f"{trace_path}: row {i}, column '{'shape' if shape <= 0 else 'scale'}': "
                                 f"expected a number > 0 for a {pattern} window, got "
                                 f"{shape if shape <= 0 else scale:g}")
            rows.append((ts, rate, pattern, shape, scale))
    try:
        doc = json.loads(data_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TraceError(f"{data_path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(doc, dict):
        raise TraceError(f"{data_path}: expected an object of time stamps")
    dists: dict[int, dict] = {}
    for ts, fields in doc.items():
        if not re.fullmatch(r"\d+", str(ts)):
            raise TraceError(f"{data_path}: time stamp {ts!r}: expected whole seconds")
        if not isinstance(fields, dict) or not {"input_tokens", "output_tokens"} <= set(fields):
            raise TraceError(f"{data_path}: time stamp '{ts}': expected the fields input_tokens "
                             f"and output_tokens")
        if not fields["input_tokens"] or fields["input_tokens"] in ("{}", ""):
            continue  # ServeGen skips a window without data
        dists[int(ts)] = {k: _pmf(fields[k], f"{data_path}: time stamp '{ts}', field '{k}'")
                          for k in ("input_tokens", "output_tokens")}
    return rows, dict(sorted(dists.items()))


def read_servegen(path: Path, v: _Validator, seed: int = 0, **_: Any) -> Iterator[Columns]:
    if not path.is_dir():
        raise TraceError(f"{path}: format 'servegen' reads a model's folder of "
                         f"chunk-<client>-trace.csv and chunk-<client>-dataset.json files")
    ids = sorted((p.name.split("-")[1] for p in path.glob("chunk-*-dataset.json")),
                 key=lambda s: (len(s), s))
    if not ids:
        raise TraceError(f"{path}: no chunk-<client>-dataset.json file (not a ServeGen folder)")
    clients = {cid: _servegen_client(path, cid) for cid in ids}
    starts = sorted({r[0] for rows, _ in clients.values() for r in rows})
    rng = np.random.default_rng((seed, 0x5E12))
    for w, ts in enumerate(starts):
        width = (starts[w + 1] - ts) if w + 1 < len(starts) else (ts - starts[w - 1] if w else 600.0)
        times: list[np.ndarray] = []
        prompts: list[np.ndarray] = []
        outputs: list[np.ndarray] = []
        for cid in ids:
            rows, dists = clients[cid]
            row = next((r for r in rows if r[0] == ts), None)
            if row is None or not row[2] or row[1] <= 0:
                continue
            stamps = [t for t in dists if t <= ts]
            if not stamps:
                raise TraceError(f"{path / f'chunk-{cid}-dataset.json'}: no distribution at or "
                                 f"before window {ts:g} s of its trace")
            _, rate, pattern, shape, scale = row
            n = math.ceil(rate * width)
            if n > MAX_WINDOW_REQUESTS:
                raise TraceError(f"{path / f'chunk-{cid}-trace.csv'}: row {rows.index(row) + 1}, "
                                 f"column 'rate': {rate:g} req/s over its {width:g} s window is "
                                 f"{n:,} requests; expected at most {MAX_WINDOW_REQUESTS:,} per "
                                 f"window")
            gaps = (rng.gamma(shape, scale, n) if pattern == "Gamma"
                    else scale * rng.weibull(shape, n))
            total = gaps.sum()
            if total <= 0:
                continue
            t = ts + np.cumsum(gaps * (width / total))
            t = t[t < ts + width]
            if not t.size:
                continue
            d = dists[stamps[-1]]
            times.append(t)
            prompts.append(_draw(rng, d["input_tokens"], t.size))
            outputs.append(_draw(rng, d["output_tokens"], t.size))
        if not times:
            continue
        t = np.concatenate(times)
        order = np.argsort(t, kind="stable")
        p = np.maximum(np.concatenate(prompts)[order], 1.0)
        o = np.maximum(np.concatenate(outputs)[order], 1.0)
        yield Columns(t[order], p, o, rows=len(t))


def _draw(rng: np.random.Generator, dist: tuple[np.ndarray, np.ndarray], n: int) -> np.ndarray:
    values, cdf = dist
    return values[np.minimum(np.searchsorted(cdf, rng.random(n)), len(values) - 1)]


# --- inference-perf ------------------------------------------------------------------------
DATA_TYPES = ("random", "synthetic", "shared_prefix")
TEXT_TYPES = ("mock", "shareGPT", "cnn_dailymail", "infinity_instruct", "billsum_conversations",
              "otel_trace_replay", "conversation_replay", "sharegpt4video")


def _num(doc: Any, key: str, where: str, default: Any = None, minimum: float = 0.0,
         strict: bool = False, whole: bool = False) -> float:
    x = doc.get(key, default) if isinstance(doc, dict) else default
    if x is None:
        raise TraceError(f"{where}{key}: a value is required")
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x) \
            or x < minimum or (strict and x <= minimum) or (whole and x != int(x)):
        what = "a whole number" if whole else "a number"
        raise TraceError(f"{where}{key}: expected {what} {'>' if strict else '>='} "
                         f"{minimum:g}, got {x!r}")
    return float(x)


def _lengths(rng: np.random.Generator, spec: Any, n: int, where: str) -> np.ndarray:
    """Token counts of an inference-perf Distribution (or a plain int), clipped to [min, max]."""
    if isinstance(spec, int) and not isinstance(spec, bool):
        if not 1 <= spec <= MAX_TOKENS:
            raise TraceError(f"{where}: expected a whole number >= 1, got {spec}")
        return np.full(n, float(spec))
    if not isinstance(spec, dict):
        raise TraceError(f"{where}: expected a number of tokens or a distribution "
                         f"(min, max, mean, std_dev, type), got {spec!r}")
    lo = _num(spec, "min", where + ".", 10, whole=True)
    hi = _num(spec, "max", where + ".", 1024, whole=True)
    mean = _num(spec, "mean", where + ".", 512)
    sd = _num(spec, "std_dev", where + ".", 200)
    if lo > hi:
        raise TraceError(f"{where}.min: expected <= max ({hi:g}), got {lo:g}")
    kind = spec.get("type", "normal")
    if kind == "normal":
        x = rng.normal(mean, sd, n)
    elif kind == "lognormal":
        if mean <= 0:
            raise TraceError(f"{where}.mean: expected a number > 0 for a lognormal, got {mean:g}")
        s2 = math.log(1.0 + (sd / mean) ** 2)
        x = rng.lognormal(math.log(mean) - s2 / 2, math.sqrt(s2), n)
    elif kind == "uniform":
        x = rng.uniform(lo, hi + 1, n)
    elif kind == "fixed":
        x = np.full(n, mean)
    elif kind == "poisson":
        x = rng.poisson(mean, n).astype(np.float64)
    else:
        raise TraceError(f"{where}.type: expected one of normal, lognormal, uniform, fixed, "
                         f"poisson, got {kind!r}")
    return np.clip(np.floor(x), max(lo, 1), hi)


def read_inference_perf(path: Path, v: _Validator, seed: int = 0, block_tokens: int = 512,
                        **_: Any) -> Iterator[Columns]:
    import yaml

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        raise TraceError(f"{path}: not valid YAML{line}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("load"), dict):
        raise TraceError(f"{path}: load: expected an inference-perf config with a 'load' section")
    where = f"{path}: "
    load, data = doc["load"], doc.get("data") or {}
    kind = load.get("type", "constant")
    if kind not in ("constant", "poisson"):
        raise TraceError(f"{where}load.type: expected constant or poisson (simkv replays the "
                         f"rate stages; concurrency-driven and replayed load are not read), got {kind!r}")
    stages = load.get("stages")
    if not isinstance(stages, list) or not stages:
        raise TraceError(f"{where}load.stages: expected a list of stages with rate and duration")
    gap = _num(load, "interval", where + "load.", 1.0)
    dtype = data.get("type", "mock") if isinstance(data, dict) else data
    if dtype in TEXT_TYPES:
        raise TraceError(f"{where}data.type: '{dtype}' draws prompts from a dataset's text or a "
                         f"replay, which simkv does not read; supported: {', '.join(DATA_TYPES)}")
    if dtype not in DATA_TYPES:
        raise TraceError(f"{where}data.type: expected one of {', '.join(DATA_TYPES)}, got {dtype!r}")
    rng = np.random.default_rng((seed, 0x1F9E))
    prompts = _shared_prompts(rng, data, where) if dtype == "shared_prefix" else None
    t0 = 0.0
    counter = 0
    for i, st in enumerate(stages):
        sw = f"{where}load.stages[{i}]."
        if not isinstance(st, dict):
            raise TraceError(f"{sw[:-1]}: expected rate and duration, got {st!r}")
        rate = _num(st, "rate", sw, strict=True)
        dur = _num(st, "duration", sw, strict=True, whole=True)
        n = int(rate * dur)
        if n < 1:
            raise TraceError(f"{sw}rate: rate x duration ({rate:g} x {dur:g}) gives no request")
        if kind == "constant":
            t = t0 + np.arange(n) / rate
        else:
            t = t0 + np.cumsum(rng.exponential(1.0 / rate, n))
            t = t[t < t0 + dur]
            n = t.size
        if prompts is None:
            p = _lengths(rng, data.get("input_distribution", {}), n, where + "data.input_distribution")
            o = _lengths(rng, data.get("output_distribution", {}), n, where + "data.output_distribution")
            cols = Columns(t, p, o)
        else:
            cols = _shared_rows(prompts, n, counter, block_tokens)
            cols.arrival_s = t
        counter += n
        cols.rows = n
        if n:
            yield cols
        t0 += dur + gap


def _shared_prompts(rng: np.random.Generator, data: dict, where: str) -> tuple:
    """inference-perf's shared-prefix prompts: per group a system prompt, per prompt a
    question and an output length (drawn once per run)."""
    sp = data.get("shared_prefix")
    sw = where + "data.shared_prefix."
    if not isinstance(sp, dict):
        raise TraceError(f"{sw[:-1]}: expected the shared_prefix section for data.type=shared_prefix")
    if sp.get("enable_multi_turn_chat"):
        raise TraceError(f"{sw}enable_multi_turn_chat: multi-turn chat is not read (set false)")
    gkey = "num_groups" if "num_groups" in sp else "num_unique_system_prompts"
    pkey = "num_prompts_per_group" if "num_prompts_per_group" in sp else "num_users_per_system_prompt"
    groups = int(_num(sp, gkey, sw, 10, minimum=1, whole=True))
    per = int(_num(sp, pkey, sw, 10, minimum=1, whole=True))
    system = _lengths(rng, sp.get("system_prompt_len", 100), groups, sw + "system_prompt_len")
    question = _lengths(rng, sp.get("question_len", 50), groups * per, sw + "question_len")
    output = _lengths(rng, sp.get("output_len", 50), groups * per, sw + "output_len")
    return system, question, output, per


def _shared_rows(prompts: tuple, n: int, start: int, block_tokens: int) -> Columns:
    """Requests ``start``..``start + n`` cycling through the prompts; the system prompt's whole
    blocks carry the group's prefix hashes (the rest of a prompt is private)."""
    system, question, output, per = prompts
    k = (start + np.arange(n)) % len(question)
    g = k // per
    full = (system // block_tokens).astype(np.int64)
    width = int(full.max()) + 1
    prefix = [tuple(int(g[i]) * width + j for j in range(int(full[g[i]]))) or None
              for i in range(n)]
    return Columns(np.zeros(n), system[g] + question[k], output[k], prefix=prefix,
                   session=g.astype(np.float64), rows=n)

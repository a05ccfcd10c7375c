"""The request streams of a GPU measurement campaign (``hf_campaign``): lengths from real
per-request data, seeded arrivals, the plan syntax and the file tags of each replay.

Why a module of its own: these are the pure, CPU-only parts of the campaign (tests run them
without a GPU), and a model of the engine reads the same tags back; ``hf_campaign`` keeps
the engine process and re-exports these names for the scripts that import them from there.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

# Azure LLM inference trace 2023 files (../shared/data/azure_llm_2023/README.md).
AZURE_FILES = {"conv": "AzureLLMInferenceTrace_conv.csv", "code": "AzureLLMInferenceTrace_code.csv"}
WORKLOADS = ("conv", "code", "burst")
SUSTAINED_REQUESTS = 400
BURST_ARRIVAL_SHAPE = 0.5  # BurstGPT's generator default (simkv.workload.burstgpt)


def read_lengths(kind: str, data: Path) -> tuple[np.ndarray, np.ndarray]:
    """(prompt, output) tokens of every row of an Azure 2023 trace file."""
    path = data / AZURE_FILES[kind]
    with path.open() as f:
        rows = list(csv.DictReader(f))
    return (np.array([int(r["ContextTokens"]) for r in rows]),
            np.array([int(r["GeneratedTokens"]) for r in rows]))


def missing_trace_files(data: Path, plans: tuple[str, ...]) -> list[str]:
    """The Azure files a campaign would read from ``data`` and that are not there: the
    warm-up draws conversation rows, and each conv/code stream of the plans its own file
    (BurstGPT-shaped streams read none)."""
    kinds = {"conv"} | {k for plan in plans for k, *_ in parse_plan_reps(plan)}
    return [AZURE_FILES[k] for k in sorted(kinds & AZURE_FILES.keys())
            if not (data / AZURE_FILES[k]).is_file()]


def draw_lengths(kind: str, rng: np.random.Generator, n: int, data: Path | None,
                 max_prompt: int, max_output: int) -> tuple[np.ndarray, np.ndarray]:
    if kind == "burst":
        from simkv.workload.burstgpt import BurstGPTWorkloadConfig
        from simkv.workload.distributions import from_quantiles, tokens

        cfg = BurstGPTWorkloadConfig()
        p = tokens(from_quantiles(rng, cfg.prompt_quantiles, n))
        o = tokens(from_quantiles(rng, cfg.output_quantiles, n))
    else:
        if data is None:
            raise ValueError(f"workload {kind!r} draws rows of the Azure trace: give --data")
        prompts, outputs = read_lengths(kind, data)
        idx = rng.integers(0, len(prompts), n)
        p, o = prompts[idx], outputs[idx]
    # Two output tokens at least: TPOT needs a second token.
    return np.clip(p, 1, max_prompt).astype(int), np.clip(o, 2, max_output).astype(int)


def stream(kind: str, n: int, rate: float, seed: int, data: Path | None, max_prompt: int = 8192,
           max_output: int = 256) -> list[tuple[float, int, int]]:
    """``n`` requests (arrival s, prompt, output) at mean ``rate`` req/s, seeded."""
    if kind not in WORKLOADS:
        raise ValueError(f"unknown workload {kind!r}; choose from {', '.join(WORKLOADS)}")
    rng = np.random.default_rng(seed)
    if kind == "burst":
        gaps = rng.gamma(BURST_ARRIVAL_SHAPE, 1.0 / (rate * BURST_ARRIVAL_SHAPE), n)
    else:
        gaps = rng.exponential(1.0 / rate, n)
    t = np.cumsum(gaps)
    p, o = draw_lengths(kind, rng, n, data, max_prompt, max_output)
    return list(zip(t.tolist(), p.tolist(), o.tolist(), strict=True))


def stream_size(rate: float, span_s: float, lo: int, hi: int) -> int:
    """Requests of a stream: about ``span_s`` seconds of arrivals, within [lo, hi]."""
    return int(min(hi, max(lo, round(rate * span_s))))


def parse_plan(plan: str) -> list[tuple[str, float]]:
    """``"conv:0.3,0.8,2;code:1.5"`` -> [("conv", 0.3), ("conv", 2.0), ...]; a load may carry its
    own replay count, ``2*2`` (see ``plan_reps``)."""
    return [(k, load) for k, load, _ in parse_plan_reps(plan)]


def parse_plan_reps(plan: str) -> list[tuple[str, float, int | None]]:
    """``"burst:2*2,3,1.5"`` -> [("burst", 2.0, 2), ("burst", 3.0, None), ("burst", 1.5, None)]:
    each load with its replay count (None: the campaign's ``--reps``)."""
    out: list[tuple[str, float, int | None]] = []
    for part in filter(None, (p.strip() for p in plan.split(";"))):
        kind, _, loads = part.partition(":")
        if kind not in WORKLOADS or not loads:
            raise ValueError(f"plan part {part!r}: expected WORKLOAD:LOAD[*REPS][,LOAD...] with WORKLOAD "
                             f"one of {', '.join(WORKLOADS)}")
        for x in loads.split(","):
            load, _, reps = x.partition("*")
            out.append((kind, float(load), int(reps) if reps else None))
    return out


def regime(load: float, n: int) -> str:
    """How a reader should take a stream: ``sustained`` overload (at least 400 requests above
    capacity: the queue grows for minutes), ``transient`` overload (fewer requests: a burst the
    engine absorbs), or ``light`` (at or under capacity)."""
    if load <= 1.0:
        return "light"
    return "sustained" if n >= SUSTAINED_REQUESTS else "transient"


def tag(kind: str, load: float, rep: str, n: int | None = None) -> str:
    """File tag of one replay: ``burst-sustained-2x-400-a`` (requests_<tag>.csv,
    iterations_<tag>.csv); without ``n``, the 2026-11-30 campaign's ``conv-0.3-a``."""
    if n is None:
        return f"{kind}-{load:g}-{rep}"
    return f"{kind}-{regime(load, n)}-{load:g}x-{n}-{rep}"


def stream_seed(kind: str, load: float) -> int:
    return 1000 * WORKLOADS.index(kind) + round(load * 100)

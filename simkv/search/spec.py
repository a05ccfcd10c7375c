"""What ``simkv-search`` searches: the deployment space, the workload, the SLO, the question.

A spec is a YAML file (docs/SEARCH.md has a full example) read into ``SearchSpec``; every value
is checked before anything runs, and a bad one is refused in one line naming its key. A
*candidate* is one replica configuration: a GPU kind with its price, tensor- and
pipeline-parallel degrees, the scheduler's batch limit (``max_num_seqs``) and its chunk
(``max_num_batched_tokens`` with chunked prefill, Sarathi-Serve; or no chunking, vLLM's whole
prompts), the dimensions Vidur-Search explores (its config explorer: GPU SKU, TP, PP,
scheduler and chunk size, batch size).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from simkv.config.bounds import ConfigError, bounded, check, meta, require

BACKENDS = ("loky", "ray")


@dataclass(slots=True)
class GPUChoice:
    """A GPU kind (a hardware profile name) and its price per GPU-hour."""

    profile: str = "h100_sxm_80gb"
    price: float = bounded(2.69, gt=0)


@dataclass(slots=True)
class SLOSpec:
    """A request-level SLO on quantiles over the run's requests (Vidur-Search's: TTFT P90 <
    2 s and TBT P99 < 200 ms; simkv's TPOT is a request's mean time between tokens)."""

    ttft_quantile: float = bounded(0.9, gt=0, le=1)
    ttft_s: float = bounded(2.0, gt=0)
    tpot_quantile: float = bounded(0.99, gt=0, le=1)
    tpot_s: float = bounded(0.2, gt=0)


@dataclass(slots=True)
class SearchSpec:
    model: str = "llama2_70b"
    gpus: list[GPUChoice] = field(default_factory=lambda: [GPUChoice(), GPUChoice("a100_80gb", 1.49)])
    tensor_parallel: list[int] = field(default_factory=lambda: [1, 2, 4, 8], metadata=meta(ge=1))
    pipeline_parallel: list[int] = field(default_factory=lambda: [1, 2, 4], metadata=meta(ge=1))
    max_num_seqs: list[int] = field(default_factory=lambda: [32, 64, 128], metadata=meta(ge=1))
    # max_num_batched_tokens with chunked prefill; 0 = no chunking (whole prompts, vLLM v0).
    chunk: list[int] = field(default_factory=lambda: [0, 512, 2048], metadata=meta(ge=0))
    # Overrides giving the workload (any simkv workload), and the key that sets its rate.
    workload: list[str] = field(default_factory=lambda: ["workload=poisson"])
    rate_key: str = "workload.rate"
    # Each run lasts about horizon_s of arrivals: count_key (the workload's number of
    # requests, e.g. workload.num_requests or a trace's workload.limit) is set to
    # max(min_requests, rate x horizon_s), so that an overload has time to build a queue
    # that breaks the TTFT target (a fixed count at a high rate arrives all at once and
    # finishes before any target is missed). Empty count_key: the workload's own count.
    count_key: str = "workload.num_requests"
    horizon_s: float = bounded(120.0, ge=1)
    min_requests: int = bounded(100, ge=1)
    # Overrides for every run (node profile, seed, engine, ...).
    overrides: list[str] = field(default_factory=list)
    slo: SLOSpec = field(default_factory=SLOSpec)
    # Capacity search: stop when the bracket is within this share of the rate (Vidur: 2.5%),
    # or after this many probes.
    granularity: float = bounded(0.025, gt=0, lt=1)
    max_probes: int = bounded(12, ge=1)
    # The cheapest deployment for this rate (requests/s); 0: report capacity per dollar only.
    target_rate: float = bounded(0.0, ge=0)
    # Deployments simulated at target_rate to draw the cost/attainment front: the best this many.
    verify: int = bounded(4, ge=0)
    # Skip candidates whose roofline bound cannot beat the best found (branch and bound).
    prune: bool = True
    n_jobs: int = bounded(2, ge=1)
    backend: str = bounded("loky", choices=BACKENDS)

    def validate(self, prefix: str = "") -> None:
        require(bool(self.gpus), f"{prefix}gpus: expected at least one GPU kind")
        for key in ("tensor_parallel", "pipeline_parallel", "max_num_seqs", "chunk"):
            require(bool(getattr(self, key)), f"{prefix}{key}: expected at least one value")
        require(not self.count_key or self.count_key.startswith("workload."),
                f"{prefix}count_key: expected a workload field (e.g. workload.num_requests or "
                f"workload.limit) or empty, got {self.count_key!r}")
        require(self.rate_key.startswith("workload."),
                f"{prefix}rate_key: expected a workload field (e.g. workload.rate or "
                f"workload.target_rate), got {self.rate_key!r}")
        for c in self.chunk:
            for s in self.max_num_seqs:
                require(c == 0 or c >= s, f"{prefix}chunk: a chunk of {c} tokens is below "
                                          f"max_num_seqs {s}; vLLM requires chunk >= max_num_seqs")


def _build(cls: type, doc: Any, where: str) -> Any:
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(doc).__name__}")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(doc) - names)
    if unknown:
        raise ConfigError(f"{where}{unknown[0]}: unknown key; valid keys: {', '.join(sorted(names))}")
    kw = dict(doc)
    if cls is SearchSpec:
        if "gpus" in kw:
            if not isinstance(kw["gpus"], list):
                raise ConfigError("gpus: expected a list of {profile, price}")
            kw["gpus"] = [_build(GPUChoice, g, f"gpus[{i}].") for i, g in enumerate(kw["gpus"])]
        if "slo" in kw:
            kw["slo"] = _build(SLOSpec, kw["slo"], "slo.")
    try:
        return cls(**kw)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def load_spec(path: str | Path, **over: Any) -> SearchSpec:
    """The spec of a YAML file, command-line values (``over``, not None) winning; checked."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: search spec not found")
    doc = yaml.safe_load(p.read_text()) or {}
    spec = _build(SearchSpec, doc, "")
    for k, v in over.items():
        if v is not None:
            setattr(spec, k, v)
    check(spec)
    return spec


@dataclass(frozen=True, slots=True)
class Candidate:
    """One replica configuration of the space."""

    gpu: str
    price: float
    tp: int
    pp: int
    seqs: int
    chunk: int

    @property
    def gpus(self) -> int:
        return self.tp * self.pp

    @property
    def cost_per_hour(self) -> float:
        return self.gpus * self.price

    def overrides(self, spec: SearchSpec, shape: Any) -> list[str]:
        """The simkv overrides of one replica of this candidate. Without chunking, the token
        budget and ``model.max_model_len`` cover twice the workload's longest sequence of the
        sample, within the model's context (vLLM requires the budget to cover max_model_len
        when prompts are not chunked; each run draws its own lengths)."""
        out = [f"model={spec.model}", f"hardware={self.gpu}", "cluster.replicas=1",
               f"cluster.tensor_parallel={self.tp}", f"cluster.pipeline_parallel={self.pp}",
               "scheduler=vllm", f"scheduler.max_num_seqs={self.seqs}"]
        if self.chunk:
            out += ["scheduler.chunked_prefill=true", f"scheduler.max_num_batched_tokens={self.chunk}"]
        else:
            from simkv.engine.pool import load_model

            longest = no_chunk_budget(shape.longest, self.seqs, load_model(spec.model).max_model_len)
            out += ["scheduler.chunked_prefill=false", f"scheduler.max_num_batched_tokens={longest}",
                    f"model.max_model_len={longest}"]
        return out

    def __str__(self) -> str:
        chunk = f"chunk{self.chunk}" if self.chunk else "nochunk"
        return f"{self.gpu} TP{self.tp} PP{self.pp} seqs{self.seqs} {chunk}"


def no_chunk_budget(longest: int, seqs: int, model_len: int) -> int:
    """Token budget (= max_model_len) of a candidate without chunked prefill: the power of two
    at or above twice the sample's longest sequence, at most the model's own context."""
    return max(seqs, min(model_len, 1 << max(0, (2 * int(longest) - 1).bit_length())))


def candidates(spec: SearchSpec) -> list[Candidate]:
    """Every combination of the space, in a fixed order."""
    return [Candidate(g.profile, g.price, tp, pp, s, c)
            for g, tp, pp, s, c in itertools.product(spec.gpus, spec.tensor_parallel,
                                                      spec.pipeline_parallel, spec.max_num_seqs,
                                                      spec.chunk)]

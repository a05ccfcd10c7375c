"""Capacity bounds from the roofline, before any simulation: what prunes the search.

For a candidate replica (perf/roofline.py's cost model on its GPU and layout, its KV pool from
engine/capacity.py) and the workload's mean prompt P and output O tokens:

* **it fits**, or it is infeasible (the weights and activations leave no KV: capacity.py);
* **a decode step within the TBT SLO**: the largest decode batch B (at most ``max_num_seqs`` and
  what the KV pool holds at the mean context P + O/2) whose step takes at most the TPOT target;
  if even one sequence's step exceeds it, no rate meets the SLO (capacity 0);
* **an upper bound on the rate**: a request needs two resources at once: compute for its P + O
  tokens through the layers, at least (P + O) x c_min (c_min the cheapest time per token, a
  full budget's) plus its prompt's attention; and O decode steps shared by at most B sequences,
  at least O x step(B)/B (each step reads the weights and the batch's KV). Chunked prefill
  lets prefill tokens ride along decode steps, so the two overlap: a saturated replica
  finishes at most 1/max(compute, decode) requests per second. Queueing, interference and
  preemptions only lower what it achieves; a short run can still pass the SLO above it (the
  queue has no time to build), so the search reports every candidate whose simulated capacity
  exceeded its bound.

Candidates are searched best bound first (lowest price per bounded request/s); one whose bound
cannot beat the best capacity per dollar found is skipped without simulating (branch and bound),
and the bound is the bisection's upper bracket.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simkv.config.schema import EngineConfig, KVConfig
from simkv.engine.capacity import kv_capacity
from simkv.engine.pool import load_model
from simkv.entities.hardware import load_profile
from simkv.perf.roofline import CostModel
from simkv.policies.scheduler.interface import SchedulerOutput
from simkv.search.spec import Candidate, no_chunk_budget


@dataclass(frozen=True, slots=True)
class Shape:
    """The workload's request shape: mean prompt and output tokens, longest sequence."""

    prompt: float
    output: float
    longest: int


@dataclass(frozen=True, slots=True)
class Bound:
    feasible: bool
    why: str = ""
    rate: float = 0.0  # upper bound on requests/s of one replica
    batch: int = 0  # decode batch within the TBT SLO and the KV pool
    kv_tokens: int = 0


def bound(c: Candidate, model_name: str, shape: Shape, tpot_s: float) -> Bound:
    model = load_model(model_name)
    hw = load_profile(c.gpu)
    if model.num_heads % c.tp:
        return Bound(False, f"TP{c.tp} does not divide {model.num_heads} heads")
    if model.num_layers % c.pp:
        return Bound(False, f"PP{c.pp} does not divide {model.num_layers} layers")
    cost = CostModel(model, hw, c.tp, c.pp, EngineConfig())
    budget = c.chunk or no_chunk_budget(shape.longest, c.seqs, model.max_model_len)  # as overrides()
    try:
        cap = kv_capacity(cost, hw, KVConfig(), budget, c.seqs)
    except ValueError:
        return Bound(False, "does not fit in memory")
    if cap.tokens < min(shape.longest, model.max_model_len):
        return Bound(False, f"KV holds {cap.tokens} tokens, below the longest sequence")
    ctx = shape.prompt + shape.output / 2.0

    def step(b: int) -> float:
        out = SchedulerOutput(num_decodes=b, decode_context=(b * ctx,), num_sampled=b)
        return float(cost.iteration_time(out))

    most = int(min(c.seqs, cap.tokens // max(ctx, 1.0)))
    if most < 1 or step(1) > tpot_s:
        return Bound(False, "one sequence's decode step exceeds the TPOT target", kv_tokens=cap.tokens)
    lo, hi = 1, most  # largest batch whose step meets the target (step grows with the batch)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if step(mid) <= tpot_s:
            lo = mid
        else:
            hi = mid - 1
    b = lo
    # The cheapest time per token through the layers (a full budget's tokens, compute-bound).
    big = max(budget, 8192)
    c_min = float(cost.linear_s(big)) / big
    # Two resources a request needs at once: the GPU's compute for all its tokens, and the
    # decode steps its output takes (each step reads the weights and the batch's KV for at
    # most b sequences); prefill tokens ride along decode steps under chunked prefill, so
    # the two are a maximum, not a sum.
    p = max(1, round(shape.prompt))
    prefill_attn = float(cost._prefill_attention_s(p * (p + 1) / 2.0, p, p)) * cost.layers
    compute = (shape.prompt + shape.output) * c_min + prefill_attn
    decode = shape.output * step(b) / b
    per_request = max(compute, decode)
    return Bound(True, rate=1.0 / per_request, batch=b, kv_tokens=cap.tokens)


def workload_shape(overrides: list[str]) -> Shape:
    """Mean prompt and output tokens and the longest sequence of the workload, by generating it
    (seed 0) without simulating."""
    import simkv
    from simkv.registry import build

    cfg = simkv.compose(["output.plot=false", "output.progress=false", *overrides])
    wl = build(cfg.workload, granule_tokens=cfg.kv.prefix_block_tokens)
    prompts, outputs = [], []
    for batch in wl.arrivals(np.random.default_rng(0)):
        prompts.append(batch.prompt_tokens)
        outputs.append(batch.output_tokens)
    if not prompts:
        raise ValueError("the workload produced no requests")
    p, o = np.concatenate(prompts), np.concatenate(outputs)
    return Shape(float(p.mean()), float(o.mean()), int((p + o).max()))

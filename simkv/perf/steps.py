"""Prices runs whose steps are shaped by a KV policy or a non-autoregressive model kind.

The same roofline as perf/roofline.py, fed with the step totals of engine/steps.py
(``SchedulerOutput.steps``): an iteration's linear layers see its query tokens, its attention
the query-key pairs and the KV it reads, its LM head the positions that produce logits.

* Steps of one query token each (a KV policy on an autoregressive model, block diffusion with
  one position per block and step) are priced by the roofline's decode path itself, on the
  KV the policy keeps: with nothing extra they cost exactly what ``full`` costs on that KV.
* Steps of several query tokens per sequence (a diffusion step over a block or the whole
  canvas, a visual autoregressive step over a token map) are priced like a prefill chunk
  over cached KV: ``max(pairs x FLOPs per pair, KV bytes + query bytes)`` per layer.
* What a method adds is priced separately and added: a refresh (Elastic-Cache) recomputes
  the cached tokens in ``refresh_depth`` of the layers on ``refresh_fraction`` of the steps
  (the expectation: refresh_fraction x one refresh); fetches (SentenceKV) are seconds on the
  PCIe link plus one copy latency per layer; EpiCache's patched prompt is extra prefill
  query tokens, its sentence encoder seconds per prefill token. A policy whose loads are
  pipelined with the layers (``overlap_extra``: LeoAM) has a step take the longer of its
  compute and its loads instead.

The engine terms fitted for transformers (dense padded attention) and data-parallel attention
are not combined with shaped steps (an error says so).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

import numpy as np

from simkv.policies.scheduler.interface import SchedulerOutput, StepArrays, StepPlan

if TYPE_CHECKING:
    from simkv.perf.roofline import CostModel


def step_run_times(cost: CostModel, out: SchedulerOutput) -> np.ndarray | float:
    """Durations of the iterations of ``out`` (a float for a single one)."""
    plan = out.steps
    assert plan is not None
    if cost._dense_pad or cost.dp > 1:
        raise ValueError("KV policies and diffusion or visual autoregressive models are priced on "
                         "the plain roofline: set engine.kv_padding_tokens=0 and "
                         "data_parallel_attention=1")
    k = out.num_iterations
    times = np.zeros(k)
    if out.prefill_tokens:
        first_decode = plan.decode if out.num_decodes else None
        times[0] = _iteration(cost, out, first_decode, out.num_decodes,
                              float(out.decode_context[0]) if out.num_decodes else 0.0, 0, plan)
        if k > 1:
            times[1:] = _decode_run(cost, plan.tail, out.tail_decodes, out.tail_context, plan)
    else:
        times[:] = _decode_run(cost, plan.decode, out.num_decodes, out.decode_context, plan)
    if k == 1:
        return float(times[0])
    return times


def _extras(cost: CostModel, arr: StepArrays | None, plan: StepPlan) -> np.ndarray | float:
    """Refresh and fetch time per iteration (added to the steps' roofline)."""
    if arr is None:
        return 0.0
    extra = arr.extra_s + np.where(arr.fetching > 0.5, plan.fetch_latency_s, 0.0)
    if plan.refresh_fraction and plan.refresh_depth and arr.refresh.any():
        refresh = np.array([
            cost.linear_s(int(r)) + cost.layers * cost._prefill_attention_s(p, r, int(r)) if r else 0.0
            for r, p in zip(arr.refresh.tolist(), arr.refresh_pairs.tolist(), strict=True)])
        # The expected cost: a refresh on refresh_fraction of the steps; the members' refreshes
        # are priced as one batch (one weight read), as if they fell on the same steps.
        extra = extra + plan.refresh_fraction * plan.refresh_depth * refresh
    return extra


def _decode_run(cost: CostModel, arr: StepArrays | None, b: int, reads: Sequence[float],
                plan: StepPlan) -> np.ndarray:
    """Decode-only iterations of ``b`` members reading ``reads`` KV tokens."""
    if arr is None or arr.single:
        # One query per member: the roofline's own decode path, on the KV the policy keeps.
        # NOTE: whole token counts as floats (the shaped batch's sums), read as such.
        base = np.asarray(cost.decode_run_times(b, cast(Sequence[int], reads), b), dtype=np.float64)
    else:
        base = np.array([_step_s(cost, b, r, q, p, g, 0.0, 0.0) for r, q, p, g in zip(
            np.asarray(reads, dtype=np.float64).tolist(), arr.queries.tolist(),
            arr.pairs.tolist(), arr.logits.tolist(), strict=True)])
    extra = _extras(cost, arr, plan)
    if plan.overlap_extra:
        return np.maximum(base, extra)  # loads pipelined with the step's layers
    return base + extra


def _step_s(cost: CostModel, b: int, read: float, queries: float, pairs: float, logits: float,
            prefill_pairs: float, prefill_kv: float, prefill_tokens: int = 0,
            prefill_sampled: int = 0) -> float:
    """One iteration of multi-token steps (plus a prefill chunk's aggregates, if any)."""
    e = cost.engine
    tokens = prefill_tokens + round(queries)
    attn = cost._prefill_attention_s(pairs, read, int(queries)) if queries else 0.0
    if prefill_tokens:
        attn += cost._prefill_attention_s(prefill_pairs, prefill_kv, prefill_tokens)
    head = cost._head_s(round(logits) + prefill_sampled)
    host = (e.iteration_overhead_s + e.per_sequence_overhead_s * (b + prefill_sampled)
            + cost._prefill_token_s * prefill_tokens
            + cost._ctx_host_s * (read + prefill_kv) + cost._kv_write_s * tokens)
    return cost.linear_s(tokens) + head + cost.layers * attn + host


def _iteration(cost: CostModel, out: SchedulerOutput, arr: StepArrays | None, b: int,
               read: float, i: int, plan: StepPlan) -> float:
    """The first iteration of a run with prefill chunks (and the decodes beside them)."""
    if arr is None or arr.single:
        t = cost.iteration_time(out)
    else:
        sampled = out.num_sampled - b  # the chunks that complete their prompt
        t = _step_s(cost, b, read, float(arr.queries[i]), float(arr.pairs[i]),
                    float(arr.logits[i]), out.prefill_attn_pairs, out.prefill_kv_tokens,
                    out.prefill_tokens, sampled)
    if plan.prefill_tokens or plan.prefill_s:
        x = round(plan.prefill_tokens)
        tokens = out.prefill_tokens + b
        t += (cost.linear_s(tokens + x) - cost.linear_s(tokens)
              + cost.layers * cost._prefill_attention_s(plan.prefill_pairs,
                                                       out.prefill_kv_tokens + x, x)
              + plan.prefill_s)
    if arr is not None:
        extra = _extras(cost, arr, plan)
        e = float(extra[i]) if isinstance(extra, np.ndarray) else extra
        t = max(t, e) if plan.overlap_extra else t + e
    return t

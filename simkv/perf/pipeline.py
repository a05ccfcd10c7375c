"""Pipeline parallelism with micro-batches: stage times, iteration times and the bubble.

A pipeline-parallel instance splits its layers over ``pp`` stages (``pipeline.layer_partition``
or an even split). Without micro-batches (``pipeline.micro_batches=1``, the default) simkv runs
the stages back to back: an iteration takes the sum of its stages, the plain cost model's
time, and this module is not used. With m micro-batches the batch's sequences are split into
m groups that follow each other through the stages. A micro-batch's time on stage i is

    s_i = f_i x body + (i < pp - 1: one activation hop to the next stage) + (last: LM head)

where ``body`` is everything of one micro-batch's iteration except the LM head and the hops
(its layers, attention, host time: the plain cost model's iteration of the micro-batch minus
those two), and f_i the stage's share of the layers. The sum of the s_i is the plain time
of one micro-batch. Then, with S = sum s_i and M = max s_i:

* ``per_iteration`` (GPipe's forward schedule, the pipeline fills and drains every
  iteration): an iteration takes S + (m - 1) M, the flow-shop makespan of m identical jobs;
  for equal stages the idle share of the stages is (pp - 1)/(m + pp - 1) (GPipe, Huang et al.
  2019).
* ``continuous`` (vLLM's virtual engines; Vidur's replica scheduler keeps up to ``pp``
  batches of different requests in flight, vidur/scheduler/replica_scheduler/
  base_replica_scheduler.py, ``on_schedule``): micro-batch j's next token enters stage 0 as
  soon as its previous one left the last stage, so in steady state an iteration (every
  sequence one token) takes max(m M, S): the slowest stage busy with all m micro-batches, or
  one micro-batch's trip through all stages, whichever is longer. With m >= pp equal stages
  nothing idles; with m < pp the stages idle 1 - m/pp of the time.

Why splitting is not free: a micro-batch of b/m sequences reads every weight of its stage
again, so for memory-bound decode m micro-batches cost nearly m times one batch's weight
reads; the roofline of the micro-batch (not b/m of the batch's time) prices that, so the
bubble a schedule removes is weighed against the weight reads it adds.

Approximations, stated: micro-batches are equal (the largest, ceil(b/m) sequences, with its
share of the context, stands for all; gLLM, arXiv 2504.14775, shows real micro-batches are
not); ``continuous`` charges the steady state from a run's first iteration on (the fill of
an empty pipeline, at most (m - 1) M, is not charged at the start of a busy period); at most
as many micro-batches as sequences.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from simkv.config.parallel import PipelineConfig
from simkv.policies.scheduler.interface import SchedulerOutput

ACT_BYTES = 2  # bf16 activations between stages (as perf/roofline.py)


def pipelined(cost: Any, cfg: PipelineConfig) -> Any:
    """``cost`` wrapped for micro-batches, or ``cost`` itself when nothing is pipelined (one
    micro-batch or one stage: the plain path, untouched)."""
    if cfg.micro_batches == 1 or cost.pp == 1:
        return cost
    return PipelinedCost(cost, cfg)


class PipelinedCost:
    """A cost model whose iterations run as micro-batches through pipeline stages.

    Everything but ``run_times`` is the inner cost model's (memory, weights, linear_s)."""

    def __init__(self, inner: Any, cfg: PipelineConfig) -> None:
        self.inner = inner
        p = inner.pp
        layers = inner.model.num_layers
        parts = list(cfg.layer_partition) or [layers // p] * p
        if len(parts) != p or sum(parts) != layers:
            raise ValueError(f"pipeline.layer_partition: expected {p} stages summing to the "
                             f"model's {layers} layers, got {parts}")
        self.partition = parts
        self.fractions = [x / layers for x in parts]
        self.micro_batches = cfg.micro_batches
        self.continuous = cfg.schedule == "continuous"
        self._f_last = self.fractions[-1]
        self._f_other = max(self.fractions[:-1])

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    # --- the pieces of one micro-batch ---------------------------------------------------
    def hop_s(self, tokens: float) -> float:
        """One stage-to-stage send of a micro-batch's activations (perf/roofline.py's hop)."""
        inner = self.inner
        rank = tokens / inner.dp if inner.dp > 1 else tokens
        return (rank * inner.model.hidden_size * ACT_BYTES / inner.hw.nvlink_bandwidth
                + inner.hw.nvlink_latency_s)

    def head_s(self, sampled: int) -> float:
        """The LM head and host overheads of a micro-batch, as the inner model prices them."""
        inner = self.inner
        return inner.sample_s(-(-sampled // inner.dp) if inner.dp > 1 else sampled)

    def stage_times(self, body: float, head: float, hop: float) -> list[float]:
        """Seconds of one micro-batch on each stage."""
        p = len(self.fractions)
        return [f * body + (head if i == p - 1 else hop) for i, f in enumerate(self.fractions)]

    def _combine(self, total: Any, head: float, hop: float, m: int) -> Any:
        """Iteration time(s) from one micro-batch's plain time(s) ``total`` (float or array)."""
        p = len(self.fractions)
        body = total - head - (p - 1) * hop
        slowest = np.maximum(self._f_last * body + head, self._f_other * body + hop)
        if self.continuous:
            return np.maximum(m * slowest, total)
        return total + (m - 1) * slowest

    # --- runs ---------------------------------------------------------------------------
    def _first(self, out: SchedulerOutput) -> tuple[float, float, int]:
        """(iteration time, one micro-batch's plain time, micro-batches) of ``out``'s first
        iteration."""
        seqs = len(out.prefills) + out.num_decodes
        m = max(1, min(self.micro_batches, seqs))
        share = 1.0 / m
        sub = SchedulerOutput(
            num_iterations=1,
            prefill_tokens=-(-out.prefill_tokens // m),
            prefill_attn_pairs=out.prefill_attn_pairs * share,
            prefill_kv_tokens=-(-out.prefill_kv_tokens // m),
            num_decodes=-(-out.num_decodes // m),
            # (the largest micro-batch's share of the context, as _decode_run prices a run)
            decode_context=((float(out.decode_context[0]) * (-(-out.num_decodes // m) / out.num_decodes),)
                            if out.num_decodes else ()),
            num_sampled=-(-out.num_sampled // m),
        )
        total = float(self.inner.iteration_time(sub))
        t = self._combine(total, self.head_s(sub.num_sampled),
                          self.hop_s(sub.prefill_tokens + sub.num_decodes), m)
        return float(t), total, m

    def _decode_run(self, decodes: int, context: Sequence[float], sampled: int) -> np.ndarray:
        m = max(1, min(self.micro_batches, decodes))
        per = -(-decodes // m)
        ctx = np.asarray(context, dtype=np.float64) * (per / decodes)
        s = -(-sampled // m)
        total = np.asarray(self.inner.decode_run_times(per, ctx, s), dtype=np.float64)
        return np.asarray(self._combine(total, self.head_s(s), self.hop_s(per), m))

    def run_times(self, out: SchedulerOutput) -> Sequence[float] | float:
        """Durations of the iterations planned in ``out`` (a float for a single one)."""
        if out.num_iterations == 1:
            return self._first(out)[0]
        if out.prefill_tokens:
            first = self._first(out)[0]
            tail = self._decode_run(out.tail_decodes, out.tail_context, out.tail_decodes)
            return np.concatenate(([first], tail))
        return self._decode_run(out.num_decodes, out.decode_context, out.num_sampled)

    def bubble_fraction(self, out: SchedulerOutput) -> float:
        """Share of stage-time idle in ``out``'s first iteration: 1 - m x S / (pp x T)."""
        t, total, m = self._first(out)
        return 1.0 - m * total / (len(self.fractions) * t)


def gpipe_bubble(stages: int, micro_batches: int) -> float:
    """GPipe's idle share of equal stages, (p - 1)/(m + p - 1), for comparison."""
    return (stages - 1) / (micro_batches + stages - 1)


def flow_shop_ends(stage_s: Sequence[float], micro_batches: int, iterations: int,
                   continuous: bool) -> list[float]:
    """Each iteration's end by the event recurrence (for tests: the closed forms above must
    equal it). Micro-batch j of iteration k starts stage i when stage i is free and it left
    stage i - 1; under ``continuous`` its iteration k + 1 enters stage 0 when its iteration k
    left the last stage; under ``per_iteration`` iteration k + 1 starts when k ended."""
    p, m = len(stage_s), micro_batches
    free = [0.0] * p
    left = [0.0] * m  # when micro-batch j last left the last stage
    ends = []
    start = 0.0
    for _ in range(iterations):
        for j in range(m):
            t = max(left[j], start) if continuous else start
            for i in range(p):
                t = max(t, free[i]) + stage_s[i]
                free[i] = t
            left[j] = t
        end = max(left)
        ends.append(end)
        if not continuous:
            start = end
            free = [end] * p
    return ends


def steady_period(stage_s: Sequence[float], micro_batches: int) -> float:
    """The closed-form period of ``continuous``: max(m x max s_i, sum s_i)."""
    return max(micro_batches * max(stage_s), math.fsum(stage_s))

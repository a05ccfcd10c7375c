"""A planned run's iteration times, from the cost model's operators: the hot path of pricing.

A base class of ``CostModel`` (perf/roofline.py), split from it along this seam: roofline.py
builds the operators of one forward pass and their per-token-count parts; this module prices
what a scheduler planned (``SchedulerOutput``): one iteration with prefill chunks and/or
decodes, or a decode-only run of K iterations whose only varying term is the attention
context (short runs in plain Python, long ones in one numpy expression).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from simkv.config.schema import EngineConfig
from simkv.perf import fast_runs
from simkv.policies.scheduler.interface import SchedulerOutput

SHORT_RUN = 32  # runs up to this many iterations are priced in plain Python
_C_RUNS = fast_runs.COMPILED  # longer ones by a C loop where it is built, else numpy


class RunPricing:
    """Iteration and run times (methods of ``CostModel``, which sets the attributes below and
    provides the operator terms: ``linear_s``, ``sample_s``, the attention terms)."""

    engine: EngineConfig
    layers: int
    dp: int
    _ranks: Callable[[int], float] | None
    flops_peak: float
    bw_peak: float
    _eff: Any
    kv_bytes_token_layer: float
    _pair_flops: float
    _prefill_token_s: float
    _moe_capture_layers: int

    # The operator terms CostModel defines, declared here so that the compiled build calls
    # them through the class's C table (run_pricing.pxd) rather than by attribute lookup.
    def linear_s(self, tokens: int) -> float:
        raise NotImplementedError

    def sample_s(self, sampled: int) -> float:
        raise NotImplementedError

    def _prefill_attention_s(self, pairs: float, kv_tokens: float, tokens: int) -> float:
        raise NotImplementedError

    def iteration_time(self, out: SchedulerOutput) -> float:
        """Seconds of one iteration (prefill chunks and/or decodes)."""
        tokens = out.prefill_tokens + out.num_decodes
        host = self._prefill_token_s * out.prefill_tokens
        kv = 0.0  # KV tokens the step reads, for the engines' measured terms
        if self._dense_pad or self._ctx_host_s:
            kv = out.prefill_kv_tokens + (float(out.decode_context[0]) if out.num_decodes else 0.0)
            host += self._ctx_host_s * kv
        if self._kv_write_s:
            host += tokens * self._kv_write_s
        if self._dense_pad:
            if self._q_pad:  # projections and maybe the LM head on the padded query tokens
                if self._logit_rows:
                    host += self._padded_head_s(tokens) - self._head_s(out.num_sampled)
                return ((self.padded_linear_s(self._padded(tokens), tokens)
                         + self.sample_s(out.num_sampled))
                        + self.dense_attention_s(kv, tokens) + host)
            return ((self.linear_s(tokens) + self.sample_s(out.num_sampled))
                    + self.dense_attention_s(kv, tokens) + host)
        attn = 0.0
        if out.prefill_tokens:
            attn += self._prefill_attention_s(out.prefill_attn_pairs, out.prefill_kv_tokens,
                                              out.prefill_tokens)
        if out.num_decodes:
            b, ctx = out.num_decodes, float(out.decode_context[0])
            if self._const_dattn:
                attn += max(ctx * self._dattn_c, ctx * self._dattn_m + b * self._dq_m)
            else:
                t = self._decode_attention(b, ctx).seconds
                attn += t if self._dec_attn == 1.0 else t * self._dec_attn
        if self.dp > 1:
            # Data-parallel attention: each rank attends its own sequences and samples their
            # tokens, at once; ranks assumed balanced (the roofline is linear in the
            # aggregates, so a rank's time is the batch's over dp).
            if self._ranks is not None:  # whole sequences per rank: the busiest decides
                share = self._ranks(len(out.prefills) + out.num_decodes)
                return (self.linear_s(tokens) + self.sample_s(-(-out.num_sampled // self.dp))
                        + self.layers * attn * share + host)
            return (self.linear_s(tokens) + self.sample_s(-(-out.num_sampled // self.dp))
                    + self.layers * attn / self.dp + host)
        return (self.linear_s(tokens) + self.sample_s(out.num_sampled)) + self.layers * attn + host

    def decode_run_times(self, decodes: int, context: Sequence[int], sampled: int
                         ) -> Sequence[float]:
        """Seconds of each of K decode-only iterations of ``decodes`` sequences.

        ``context[i]`` is the total context attended to in iteration i; only attention
        changes along a run, so it is the only term that varies.
        """
        if self.dp > 1:
            base = self.linear_s(decodes) + self.sample_s(-(-sampled // self.dp))
            if self._kv_write_s:
                base += decodes * self._kv_write_s
            # Per rank (balanced): base plus the batch's attention over dp.
            attn = np.asarray(self._roofline_decode_run(0.0, decodes, context), dtype=np.float64)
            if self._ranks is not None:  # whole sequences per rank: the busiest decides
                times: Sequence[float] = base + attn * self._ranks(decodes)
            else:
                times = base + attn / self.dp
        else:
            if self._q_pad:
                base = self.padded_linear_s(self._padded(decodes), decodes) + self.sample_s(sampled)
                if self._logit_rows:
                    base += self._padded_head_s(decodes) - self._head_s(sampled)
            else:
                base = self.linear_s(decodes) + self.sample_s(sampled)
            if self._kv_write_s:
                base += decodes * self._kv_write_s
            if self._dense_pad:
                times = self._dense_decode_run(base, decodes, context)
            else:
                times = self._roofline_decode_run(base, decodes, context)
        if self._ctx_host_s:  # host time per KV token read, same expression as iteration_time
            return np.asarray(times) + self._ctx_host_s * np.asarray(context, dtype=np.float64)
        return times

    def _roofline_decode_run(self, base: float, decodes: int, context: Sequence[int]
                             ) -> Sequence[float]:
        layers = self.layers
        if self._const_dattn and len(context) <= SHORT_RUN:
            # NOTE: plain Python beats numpy's per-call overhead for short runs, the common
            # case at moderate load; same expression as iteration_time, so same floats.
            # (max() inlined: a builtin call per iteration costs more than the arithmetic; max
            # keeps its first argument unless the second is larger, as this does.)
            ac, am, q = self._dattn_c, self._dattn_m, decodes * self._dq_m
            if _C_RUNS and isinstance(context, range):  # the same values from a C loop
                return fast_runs.roofline_short(base, layers, ac, am, q, context.start,
                                                context.step, len(context))
            return [base + layers * (y if (y := c * am + q) > (x := c * ac) else x)
                    for c in context]
        if isinstance(context, range):
            if _C_RUNS and self._const_dattn:
                # The same values as the numpy expression below, from a C loop (fast_runs.py).
                return fast_runs.roofline_run(base, layers, self._dattn_c, self._dattn_m,
                                              decodes * self._dq_m, context.start,
                                              context.step, len(context))
            ctx = np.arange(context.start, context.stop, context.step, dtype=np.float64)
        else:
            ctx = np.asarray(context, dtype=np.float64)
        if self._const_dattn:
            attn = np.maximum(ctx * self._dattn_c, ctx * self._dattn_m + decodes * self._dq_m)
        else:
            ceff = self._eff["attention_compute"].at_array(ctx)
            meff = self._eff["attention_memory"].at_array(ctx)
            nbytes = ctx * self.kv_bytes_token_layer + self._q_bytes(decodes)
            attn = np.maximum(ctx * self._pair_flops / (self.flops_peak * ceff),
                              nbytes / (self.bw_peak * meff))
            if self._dec_attn != 1.0:
                attn = attn * self._dec_attn
        return base + layers * attn

    def _dense_decode_run(self, base: float, decodes: int, context: Sequence[int]
                          ) -> Sequence[float]:
        """Decode run of an engine with dense padded attention (``dense_attention_s``)."""
        if len(context) <= SHORT_RUN:
            return [base + self.dense_attention_s(float(c), decodes) for c in context]
        pad = self._dense_pad
        ctx = np.asarray(context, dtype=np.float64)
        padded = np.maximum(1.0, np.ceil((ctx - decodes) / pad)) * pad
        return base + padded * (self._pad_a + self._tiled(self._padded(decodes)) * self._pad_b)

    def run_times(self, out: SchedulerOutput) -> Sequence[float] | float:
        """Durations of the iterations planned in ``out`` (a float for a single one)."""
        if out.steps is not None:
            # Steps shaped by a KV policy or a model kind (perf/steps.py); None for full KV.
            from simkv.perf.steps import step_run_times

            return step_run_times(self, out)
        if out.num_iterations == 1:
            if out.capture:  # a CUDA graph recorded on first sight (transformers scheduler)
                t = self.iteration_time(out)
                e = self.engine
                return (t + e.graph_capture_s + e.graph_capture_layer_s * self.layers
                        + e.graph_capture_moe_layer_s * self._moe_capture_layers
                        + e.graph_capture_factor * t)
            return self.iteration_time(out)
        if out.prefill_tokens:
            first = self.iteration_time(out)
            tail = self.decode_run_times(out.tail_decodes, out.tail_context, out.tail_decodes)
            if isinstance(tail, list):
                return [first, *tail]
            return np.concatenate(([first], tail))
        return self.decode_run_times(out.num_decodes, out.decode_context, out.num_sampled)

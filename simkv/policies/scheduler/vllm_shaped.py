"""vLLM's scheduler under shaped steps: a KV policy, a model kind or speculative decoding.

A base class of ``VLLMScheduler`` (vllm.py), split from it along this seam. The plain path
(full KV of an autoregressive model) plans with the closed-form decode batch and never calls
these methods; under a KV policy other than full KV, a diffusion or visual-autoregressive
model, or speculative decoding, the decode batch is engine/steps.py's ``ShapedDecodeBatch``
and admission, prefill chunks and decode runs are planned here (the branch is one flag,
``_plain``, read in vllm.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from simkv.entities.model import ModelSpec
from simkv.entities.request import Request
from simkv.kv.block_pool import BlockPool, blocks_for
from simkv.policies.kv_policy.interface import KVPolicyBase
from simkv.policies.scheduler.interface import SchedulerOutput, StepPlan

if TYPE_CHECKING:
    from collections import deque

    from simkv.kv.manager import KVManager


class ShapedSteps:
    """Admission and planning of shaped steps (methods of ``VLLMScheduler``)."""

    # Set by VLLMScheduler.__init__ (vllm.py), which also provides ``_plan_tail``.
    cfg: Any
    pool: BlockPool
    block_size: int
    policy: KVPolicyBase | None
    model: ModelSpec | None
    decode: Any
    waiting: deque[Request]
    max_fast_forward: int

    def _shaped_init(self, policy: KVPolicyBase | None, model: ModelSpec | None,
                     kv: KVManager | None, spec: Any = None) -> None:
        from simkv.engine.steps import ShapedDecodeBatch

        if policy is None:
            from simkv.policies.kv_policy import FullKV, FullKVConfig

            policy = FullKV(FullKVConfig())
        if model is None:
            raise ValueError("a kv_policy other than full needs the model spec")
        policy.check_model(model)
        # NOTE: speculative decoding keeps full KV (the context is the prefix it caches), so
        # the prefix cache stays usable; a KV policy or model kind keeps KV that is not one.
        if kv is not None and (spec is None or not policy.is_full):
            raise ValueError(f"kv_policy={policy.name} with a {model.kind} model keeps KV that is "
                             f"not a shareable prefix: set kv.prefix_caching=false")
        self.decode = ShapedDecodeBatch(self.pool.block_size, policy, model, self.pool, spec)
        self._add_chunk = self._add_chunk_shaped  # type: ignore[method-assign]

    def _shaped_admission_error(self, req: Request) -> str:
        model, policy = self.model, self.policy
        assert model is not None
        assert policy is not None
        if model.kind == "var" and req.output_tokens != model.image_tokens:
            return "var_output"  # a var model generates exactly its image's tokens
        chunk = self.cfg.max_num_batched_tokens if self.cfg.chunked_prefill else req.prompt_tokens
        prefill = policy.peak_tokens(req.prompt_tokens, req.output_tokens, chunk)
        peak = self.decode.peak_blocks(req, blocks_for(prefill, self.block_size))  # type: ignore[attr-defined]
        if peak > self.pool.capacity:
            return "kv_capacity"
        # As for full KV: a preempted request re-prefills prompt + generated tokens whole.
        if (not self.cfg.chunked_prefill
                and req.prompt_tokens + req.output_tokens - 1 > self.cfg.max_num_batched_tokens):
            return "token_budget"
        return ""

    def _held_blocks(self, computed: int, n: int) -> int:
        assert self.policy is not None
        return blocks_for(self.policy.prefill_held(computed, n), self.block_size)

    def _add_chunk_shaped(self, out: SchedulerOutput, req: Request, n: int) -> int:
        """``_add_chunk`` under a KV policy or model kind: the chunk attends to what the
        policy keeps of the prefix, plus the policy's own work."""
        policy = self.policy
        assert policy is not None
        assert self.model is not None
        c = req.computed
        ctx = policy.prefill_context(c)
        out.prefills.append((req, n))
        out.prefill_tokens += n
        if self.model.kind == "diffusion":
            # Bidirectional over the canvas model's prompt (LLaDA); block-causal in blocks of
            # the model's block otherwise (causal for one-token blocks).
            b = n if self.model.diffusion_canvas else self.model.diffusion_block
            out.prefill_attn_pairs += n * ctx + n * (n + b) / 2
        else:
            out.prefill_attn_pairs += n * ctx + n * (n + 1) / 2
        out.prefill_kv_tokens += ctx + n
        if c + n == req.num_tokens:
            out.num_sampled += 1
        tokens, pairs, seconds = policy.prefill_extra(c, n)
        if tokens or pairs or seconds:
            plan = self._plan_of(out)
            plan.prefill_tokens += tokens
            plan.prefill_pairs += pairs
            plan.prefill_s += seconds
        return n

    def _plan_of(self, out: SchedulerOutput) -> StepPlan:
        if out.steps is None:
            policy = self.policy
            assert policy is not None
            frac, depth = policy.diffusion_refresh()
            out.steps = StepPlan(refresh_fraction=frac, refresh_depth=depth,
                                 fetch_latency_s=policy.fetch_latency_s,
                                 overlap_extra=policy.overlap_extra)
        return out.steps

    def _plan_shaped(self, out: SchedulerOutput, need: int, preempted: bool, now: float) -> None:
        """``_plan_decodes`` for a shaped batch: contexts and step totals are slices of the
        batch's per-tick sums, and the pool check always uses the cumulative need (a step may
        need many blocks: a diffusion canvas, a whole token map)."""
        dec = self.decode
        b = len(dec)
        out.num_decodes = b
        out.num_sampled += b
        out.first_need = need
        if out.prefills:
            if b:  # before _plan_tail joins the prefilled requests
                out.decode_context = dec.reads(1)  # type: ignore[attr-defined]
                arrays = dec.step_arrays(1)  # type: ignore[attr-defined]
                if arrays is not None:
                    self._plan_of(out).decode = arrays
            if not preempted and self.max_fast_forward > 1:
                self._plan_tail(out, need, now)
            return
        k = 1 if preempted else min(dec.ticks_to_first_finish(), self.max_fast_forward)
        if k > 1:
            cum = dec.cumulative_need(k)
            k = max(1, int(np.searchsorted(cum, self.pool.free, side="right")))
            if self.waiting:
                # A step that gives blocks back (a scale compressed) may let the queue's head
                # in: the run ends there, as a finish would.
                k = min(k, dec.first_release(k))  # type: ignore[attr-defined]
        out.num_iterations = k
        out.decode_context = dec.reads(k)  # type: ignore[attr-defined]
        arrays = dec.step_arrays(k)  # type: ignore[attr-defined]
        if arrays is not None:
            self._plan_of(out).decode = arrays

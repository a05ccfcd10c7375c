"""What speculative decoding costs: the proposer's own steps, and the memory it takes.

The target's verification is priced by perf/steps.py from the shaped steps of
engine/steps.py (k + 1 query tokens per sequence through every layer, attention over the
context, k + 1 logits). This module adds what proposing costs, per iteration of a run:

* ``draft``: the draft model runs k decode steps over the iteration's sequences (one forward
  pass per proposed token, vLLM's draft runner), each priced by a roofline cost model of the
  draft on the same GPU and tensor parallelism (its context: the sequence's, plus the tokens
  already proposed, counted as the middle of the k steps); in an iteration with prefill
  chunks the draft also prefills them (its KV must follow the target's);
* ``eagle``: the same with a head of ``head_layers`` decoder layers of the target's shape and
  the target's LM head (EAGLE reads the target's hidden states; the LM head is shared, so
  only the layers take memory);
* ``ngram``: ``proposer_s`` of host time per iteration that decodes.

Each draft step is an engine call and pays ``engine.iteration_overhead_s`` like any
iteration. Memory: the proposer's weights (per GPU) leave the KV pool, and its KV (per token,
per GPU) is kept for the same tokens as the target's, so the pool has
``(free - proposer weights) / (target + proposer KV per block)`` blocks (vLLM allocates the
draft's KV with the same block table).

Left out: tree verification (EAGLE, Medusa: here an equivalent chain of k with the measured
mean accepted tokens), dynamic speculation length (SmartSpec), the draft's own max context.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

from simkv.entities.model import ModelSpec
from simkv.perf.roofline import CostModel
from simkv.policies.scheduler.interface import SchedulerOutput
from simkv.registry import name_of

if TYPE_CHECKING:
    from simkv.engine.capacity import KVCapacity


def proposer_model(spec_cfg: Any, target: ModelSpec) -> ModelSpec | None:
    """The model whose forward passes propose tokens (None: no model runs, ``ngram``)."""
    kind = name_of(spec_cfg)
    if kind == "draft":
        from simkv.engine.pool import load_model

        try:
            draft = load_model(spec_cfg.draft_model)
        except ValueError as exc:
            raise ValueError(f"speculative.draft_model: {exc}") from None
        if draft.vocab_size != target.vocab_size:
            raise ValueError(f"speculative.draft_model: {draft.name} has a vocabulary of "
                             f"{draft.vocab_size} tokens, {target.name} of {target.vocab_size}: a "
                             f"draft must share the target's tokenizer (e.g. llama3_2_1b for "
                             f"llama3_8b, llama_68m for llama2_7b)")
        return draft
    if kind == "eagle":
        return dataclasses.replace(target, name=f"{target.name}_eagle_head",
                                   num_layers=spec_cfg.head_layers, num_dense_layers=0)
    return None


def check_speculation(sim: Any) -> None:
    """Refuse combinations speculation cannot act in (one line naming the key)."""
    spec = sim.speculative
    if spec is None or name_of(spec) == "none":
        return
    sched = name_of(sim.scheduler)
    if sched not in ("vllm", "continuum", "priority", "sjf"):
        raise ValueError(f"speculative={name_of(spec)} needs a continuous-batching scheduler "
                         f"with a shaped decode batch (scheduler=vllm, continuum, priority or "
                         f"sjf), got scheduler={sched}")
    policy = sim.kv_policy
    if policy is not None and name_of(policy) != "full":
        raise ValueError(f"speculative={name_of(spec)} runs with full KV: kv_policy="
                         f"{name_of(policy)} cannot be combined with it (set kv_policy=full)")
    if sim.pipeline.micro_batches > 1:
        raise ValueError(f"speculative={name_of(spec)} is priced on stages run back to back: set "
                         f"pipeline.micro_batches=1")
    if sim.model.kind != "autoregressive":
        raise ValueError(f"speculative={name_of(spec)} applies to autoregressive models; "
                         f"{sim.model.name} is {sim.model.kind}")


class Proposer:
    """Prices one iteration's proposals (added to the target's iteration times)."""

    def __init__(self, spec_cfg: Any, cost: CostModel) -> None:
        self.kind = name_of(spec_cfg)
        self.k = int(spec_cfg.num_speculative_tokens)
        self.host_s = float(getattr(spec_cfg, "proposer_s", 0.0))
        model = proposer_model(spec_cfg, cost.model)
        self.cost: CostModel | None = None
        self.weight_bytes = 0.0
        self.kv_bytes_per_token = 0.0
        if model is not None:
            tp = cost.tp if model.num_heads % cost.tp == 0 and model.num_kv_heads % cost.tp == 0 else 1
            draft = CostModel(model, cost.hw, tp, 1, cost.engine)
            self.cost = draft
            self.kv_bytes_per_token = draft.kv_bytes_per_token_per_gpu()
            if self.kind == "eagle":
                # Its layers only: the embedding and LM head are the target's own.
                per_layer = cost.weight_bytes_per_gpu() * cost.pp / cost.model.num_layers
                self.weight_bytes = per_layer * model.num_layers
            else:
                self.weight_bytes = draft.weight_bytes_per_gpu()

    def _steps(self, decodes: int, contexts: np.ndarray) -> np.ndarray:
        """k proposal steps of ``decodes`` sequences at each context total."""
        assert self.cost is not None
        mid = contexts + decodes * (self.k - 1) / 2.0
        return self.k * np.asarray(self.cost.decode_run_times(decodes, mid, decodes), dtype=np.float64)

    def times(self, out: SchedulerOutput) -> np.ndarray:
        k = out.num_iterations
        extra = np.zeros(k)
        if out.prefill_tokens:
            if out.num_decodes:
                extra[0] += self._decode(out.num_decodes, np.asarray([out.decode_context[0]],
                                                                     dtype=np.float64))[0]
            if self.cost is not None:
                # The proposer builds its KV of the prompt chunks too.
                extra[0] += self.cost.iteration_time(SchedulerOutput(
                    prefill_tokens=out.prefill_tokens, prefill_attn_pairs=out.prefill_attn_pairs,
                    prefill_kv_tokens=out.prefill_kv_tokens))
            if k > 1 and out.tail_decodes:
                tail = np.asarray(out.tail_context, dtype=np.float64)[:k - 1]
                extra[1:1 + len(tail)] += self._decode(out.tail_decodes, tail)
        elif out.num_decodes:
            ctx = np.asarray(out.decode_context, dtype=np.float64)[:k]
            extra[:len(ctx)] += self._decode(out.num_decodes, ctx)
        return extra

    def _decode(self, decodes: int, contexts: np.ndarray) -> np.ndarray:
        if self.cost is None:
            return np.full(len(contexts), self.host_s)
        return self._steps(decodes, contexts) + self.host_s


def apply_speculation(cost: CostModel, sim: Any) -> Proposer | None:
    """Add the proposer's time to ``cost``'s iterations (in place); None when off."""
    spec = sim.speculative
    if spec is None or name_of(spec) == "none":
        return None
    proposer = Proposer(spec, cost)
    inner = cost.run_times

    def run_times(out: SchedulerOutput) -> Any:
        t = np.atleast_1d(np.asarray(inner(out), dtype=np.float64)) + proposer.times(out)
        return float(t[0]) if out.num_iterations == 1 else t

    cost.run_times = run_times  # type: ignore[method-assign]
    cost.proposer = proposer  # type: ignore[attr-defined]
    return proposer


def speculative_capacity(cap: KVCapacity, cost: CostModel, proposer: Proposer | None,
                         override: int | None) -> KVCapacity:
    """The KV pool once the proposer's weights and KV are taken out of it."""
    if proposer is None or override is not None or not (proposer.weight_bytes or
                                                        proposer.kv_bytes_per_token):
        return cap
    per_block = cap.block_size * (cost.kv_bytes_per_token_per_gpu() + proposer.kv_bytes_per_token)
    free = cap.bytes_per_gpu - proposer.weight_bytes
    blocks = max(0, int(free // per_block)) * cost.dp
    if blocks < 1:
        raise ValueError(f"speculative: the proposer's weights ({proposer.weight_bytes / 2**30:.1f} "
                         f"GiB per GPU) leave no room for KV")
    return dataclasses.replace(cap, num_blocks=blocks, bytes_per_gpu=free)

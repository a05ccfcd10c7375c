"""What an engine step does to each GPU: FLOPs, HBM bytes and link bytes.

The power model (model.py) turns a step's work and duration into power; this module counts
the work of the steps the cost model prices, from the same operators
(``CostModel.layer_operators``) and the same aggregates of ``SchedulerOutput``, so that time
and energy describe one step. Everything is the average over the instance's GPUs: an
instance of G GPUs does G times this work in the step (tensor shards, pipeline stages and
data-parallel ranks are assumed balanced, as the cost model assumes them).

* Linear layers (projections, MLP or experts, norms): the operators' FLOPs and bytes for the
  step's query tokens (padded where the engine pads them), per layer, times the layers a GPU
  holds. Routed experts read the weights of the experts the batch touches; under expert
  parallelism the mean GPU's share (the cost model prices the busiest one's).
* Attention: per layer, FLOPs per (query, key) pair and the KV bytes read (prefill pairs and
  KV tokens; decode context), or, for engines that attend over the batch's KV padded to a
  multiple (``engine.kv_padding_tokens``), the padded KV times the tiled query tokens.
* The LM head for the sequences that sample (or the engine's padded logits rows).
* Links: the two ring all-reduces of each layer under tensor parallelism (2 (tp-1)/tp of the
  activations per GPU each), the pipeline hops and the MoE all-to-all.

Linear work depends on the token count only and is cached per count (as ``linear_s``); a
decode run's iterations differ only in their context, so their work is one vector expression.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from simkv.perf.roofline import ACT_BYTES, experts_hit

Work = tuple[np.ndarray, np.ndarray, np.ndarray]  # FLOPs, HBM bytes, link bytes per iteration


class StepWork:
    """Work per GPU of the iterations of a run, for one instance's cost model."""

    def __init__(self, cost: Any) -> None:
        self.cost = cost
        m = cost.model
        self.gpus = max(1, cost.tp * cost.pp * cost.dp)
        # Layers one GPU runs, averaged over the pipeline stages.
        self.layer_share = cost.layers / cost.pp
        self._linear: dict[int, tuple[float, float, float]] = {}
        # Attention per layer per GPU: FLOPs per pair (or per context token in decode) and
        # KV bytes per token read; a rank holds 1/dp of the sequences.
        self.pair_flops = float(cost._pair_flops) / cost.dp
        self.kv_bytes = float(cost.kv_bytes_token_layer) / cost.dp
        self.q_bytes = float(cost._q_bytes(1.0)) / cost.dp
        # LM head: FLOPs per sampled row and the head's weights, per GPU on average.
        h, v = m.hidden_size, m.vocab_size
        self.head_flops = 2.0 * h * v / self.gpus
        self.head_bytes = (cost.dp * h * v * m.weight_bytes_per_param) / self.gpus
        self.head_row_bytes = (h + v / cost.tp) * ACT_BYTES * cost.tp * cost.dp / self.gpus
        self.dense_pad = int(cost._dense_pad)

    # --- linear layers ------------------------------------------------------------------
    def linear(self, tokens: int) -> tuple[float, float, float]:
        """(FLOPs, HBM bytes, link bytes) per GPU of every non-attention operator, all layers."""
        got = self._linear.get(tokens)
        if got is None:
            got = self._linear_work(tokens)
            self._linear[tokens] = got
        return got

    def _layer(self, tokens: int, dense_mlp: bool) -> tuple[float, float, float]:
        cost = self.cost
        flops = nbytes = link = 0.0
        for op in cost.layer_operators(tokens, dense_mlp=dense_mlp):
            if op.name.startswith("attn"):
                continue
            if op.name == "moe_all_to_all":
                link += op.bytes / cost.dp  # per rank GPU's share of the dispatch and combine
                continue
            if op.name == "moe_experts":  # expert parallelism: the mean GPU, not the busiest
                f, b = self._ep_experts(tokens)
                flops += f
                nbytes += b
                continue
            b = op.bytes
            if op.name in ("moe_up_gate", "moe_down") and b == 0.0:
                b = self._grouped_bytes(tokens, op.name)  # the shape model prices time only
            flops += op.flops
            nbytes += b
        return flops, nbytes, link

    def _ep_experts(self, tokens: int) -> tuple[float, float]:
        cost, m = self.cost, self.cost.model
        load = cost._load
        h = m.hidden_size
        f = m.ffn_size if cost.ep > 1 else m.ffn_size / cost.tp
        routed = float(np.mean(load.routed(tokens)))
        touched = float(np.mean(load.touched(tokens)))
        wb = m.weight_bytes_per_param
        return (6.0 * routed * h * f,
                touched * 3 * h * f * wb + routed * (3 * h + 3 * f) * ACT_BYTES)

    def _grouped_bytes(self, tokens: int, name: str) -> float:
        m, tp = self.cost.model, self.cost.tp
        h, f = m.hidden_size, m.ffn_size / tp
        k_dim, n_dim = (h, 2 * f) if name == "moe_up_gate" else (f, h)
        touched = experts_hit(m.num_experts, m.experts_per_token, tokens)
        routed = tokens * m.experts_per_token
        return touched * k_dim * n_dim * m.weight_bytes_per_param + routed * (k_dim + n_dim) * ACT_BYTES

    def _linear_work(self, tokens: int) -> tuple[float, float, float]:
        cost, m = self.cost, self.cost.model
        if tokens <= 0:
            return 0.0, 0.0, 0.0
        f, b, link = self._layer(tokens, False)
        layers = m.moe_layers
        flops, nbytes, links = f * layers, b * layers, link * layers
        if m.num_dense_layers:
            f, b, link = self._layer(tokens, True)
            flops += f * m.num_dense_layers
            nbytes += b * m.num_dense_layers
            links += link * m.num_dense_layers
        rank = tokens / cost.dp if cost.dp > 1 else tokens
        msg = rank * m.hidden_size * ACT_BYTES
        if cost.tp > 1:  # two ring all-reduces per layer
            links += m.num_layers * 2 * 2.0 * (cost.tp - 1) / cost.tp * msg
        if cost.pp > 1:  # activations cross each stage boundary once
            links += (cost.pp - 1) * msg * cost.tp * cost.dp / self.gpus
        # Per GPU of a stage, over the layers it holds on average.
        share = 1.0 / cost.pp
        return flops * share, nbytes * share, links * share

    # --- one step, many steps -----------------------------------------------------------
    def _padded_tokens(self, tokens: int) -> int:
        return int(self.cost._padded(tokens)) if tokens else 0

    def _head(self, sampled: float, tokens: int) -> tuple[float, float]:
        rows = sampled
        logit_rows = self.cost._logit_rows
        if logit_rows and self.cost._q_pad:
            rows = min(self._padded_tokens(tokens), logit_rows)
        if rows <= 0:
            return 0.0, 0.0
        return rows * self.head_flops, self.head_bytes + rows * self.head_row_bytes

    def _attention(self, q_tokens: np.ndarray | float, kv_tokens: np.ndarray | float,
                   pairs: np.ndarray | float) -> tuple[Any, Any]:
        """Attention FLOPs and bytes per GPU over the layers it holds."""
        ls = self.layer_share
        if self.dense_pad:
            pad = self.dense_pad
            past = np.maximum(np.asarray(kv_tokens, dtype=np.float64) - q_tokens, 0.0)
            padded = np.maximum(1.0, np.ceil(past / pad)) * pad
            q = np.asarray(q_tokens, dtype=np.float64)
            tile = self.cost._q_tile
            q_tiled = np.ceil(np.asarray([self._padded_tokens(int(x)) for x in np.atleast_1d(q)],
                                         dtype=np.float64) / tile) * tile
            if np.ndim(q_tokens) == 0:
                q_tiled = q_tiled[0]
            return (ls * self.pair_flops * padded * q_tiled,
                    ls * (padded * self.kv_bytes + q * self.q_bytes))
        return (ls * self.pair_flops * pairs,
                ls * (np.asarray(kv_tokens, dtype=np.float64) * self.kv_bytes + q_tokens * self.q_bytes))

    def run(self, out: Any, done: int | None = None) -> Work:
        """Work per GPU of the first ``done`` iterations of ``out`` (all by default)."""
        k = out.num_iterations if done is None else done
        if out.prefill_tokens:
            tokens = out.prefill_tokens + out.num_decodes
            ctx0 = float(out.decode_context[0]) if out.num_decodes else 0.0
            f, b, link = self.linear(self._padded_tokens(tokens))
            hf, hb = self._head(out.num_sampled, tokens)
            if self.dense_pad:
                af, ab = self._attention(float(tokens), out.prefill_kv_tokens + ctx0, 0.0)
            else:
                af, ab = self._attention(float(out.prefill_tokens), float(out.prefill_kv_tokens),
                                         float(out.prefill_attn_pairs))
                if out.num_decodes:
                    df, db = self._attention(float(out.num_decodes), ctx0, ctx0)
                    af, ab = af + df, ab + db
            first = (f + hf + float(af), b + hb + float(ab), link)
            if k <= 1:
                return (np.array([first[0]]), np.array([first[1]]), np.array([first[2]]))
            tf, tb, tl = self._decode(out.tail_decodes, out.tail_context[:k - 1], out.tail_decodes)
            return (np.concatenate(([first[0]], tf)), np.concatenate(([first[1]], tb)),
                    np.concatenate(([first[2]], tl)))
        return self._decode(out.num_decodes, out.decode_context[:k], out.num_sampled)

    def _decode(self, decodes: int, context: Sequence[int], sampled: int) -> Work:
        ctx = np.asarray(context, dtype=np.float64)
        f, b, link = self.linear(self._padded_tokens(decodes))
        hf, hb = self._head(sampled, decodes)
        af, ab = self._attention(float(decodes), ctx, ctx)
        n = ctx.shape[0]
        return (f + hf + np.broadcast_to(af, (n,)), b + hb + np.broadcast_to(ab, (n,)),
                np.full(n, link))

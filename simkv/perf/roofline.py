"""Iteration time from a roofline over the operators of one transformer forward pass.

For each operator of a layer (QKV projection, attention, output projection, MLP or MoE
experts, norms and residuals) the time is ``max(FLOPs / achieved FLOP/s, bytes / achieved
bandwidth)``; a layer is their sum plus, under tensor parallelism, two ring all-reduces of
the activations over NVLink. The iteration adds the LM head for the sequences that sample a
token and a host-side overhead per iteration and per sequence.

Everything is per GPU: weights, heads and FFN columns are split ``tensor_parallel`` ways,
layers ``pipeline_parallel`` ways (stages run one after another: no micro-batch overlap).
Achieved rates are the datasheet peaks times the efficiency curves of the hardware profile,
indexed by the GEMM's token count, the prefill chunk's tokens, or the decode batch's total
context.

Why operators and not one "weights / bandwidth" formula: prefill is compute-bound and decode
memory-bound, and mixed (chunked-prefill) batches are neither; only per-operator maxima
capture the crossover (Vidur, LLMServingSim and BLIS all decompose by operator too).

The decode-run path is vectorised: within a run only the attention context grows, so every
other operator is computed once and attention for all K iterations in one numpy expression.

Split along two seams into base classes of ``CostModel``: run_pricing.py (a planned run's
iterations priced from these operators: the hot path) and gpu_memory.py (what one GPU holds:
weights, KV per token, activations).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simkv.config.schema import EngineConfig
from simkv.entities.hardware import HardwareProfile
from simkv.entities.model import ModelSpec
from simkv.perf import gemm as shape_gemm
from simkv.perf.all_to_all import DEFAULT as A2A_DEFAULT
from simkv.perf.all_to_all import cost as a2a_cost
from simkv.perf.expert_parallel import (
    AllToAllLinks,
    ExpertLoad,
    MoEConfig,
    all_to_all_bytes,
    all_to_all_s,
    expert_load,
)
from simkv.perf.gpu_memory import ACT_BYTES, GPUMemory
from simkv.perf.ranks import check_moe_options
from simkv.perf.run_pricing import RunPricing


@dataclass(frozen=True, slots=True)
class OperatorCost:
    """One operator's work on one GPU, and the time the roofline gives it."""

    name: str
    flops: float
    bytes: float
    seconds: float


class CostModel(RunPricing, GPUMemory):
    """Roofline iteration times for one replica (model x hardware x parallelism)."""

    def __init__(self, model: ModelSpec, hw: HardwareProfile, tensor_parallel: int = 1,
                 pipeline_parallel: int = 1, engine: EngineConfig | None = None, *,
                 data_parallel: int = 1, expert_parallel: int = 1, moe: MoEConfig | None = None,
                 links: AllToAllLinks | None = None) -> None:
        if model.num_layers % pipeline_parallel:
            raise ValueError(
                f"pipeline_parallel ({pipeline_parallel}) must divide the model's "
                f"{model.num_layers} layers"
            )
        if model.num_heads % tensor_parallel:
            raise ValueError(
                f"tensor_parallel ({tensor_parallel}) must divide the model's "
                f"{model.num_heads} attention heads"
            )
        if data_parallel > 1 and not model.is_moe:
            raise ValueError("data_parallel_attention > 1 applies to MoE models (attention "
                             "replicated per rank, experts spread by expert parallelism); for a "
                             f"dense model such as {model.name} use more instances")
        if expert_parallel not in (1, tensor_parallel * data_parallel):
            raise ValueError(
                f"expert_parallel ({expert_parallel}) must be 1 (experts split by tensor "
                f"parallelism) or tensor_parallel x data_parallel_attention "
                f"({tensor_parallel * data_parallel}): the GPUs of a pipeline stage")
        if expert_parallel > 1 and not model.is_moe:
            raise ValueError(f"expert_parallel > 1 needs an MoE model; {model.name} is dense")
        self.model = model
        self.hw = hw
        self.tp = tensor_parallel
        self.pp = pipeline_parallel
        self.dp = data_parallel
        self.ep = expert_parallel
        self.gpus = tensor_parallel * pipeline_parallel * data_parallel
        self.engine = engine or EngineConfig()
        m, tp = model, tensor_parallel
        self.layers = m.num_layers  # all stages run in sequence for one batch
        self.heads = m.num_heads / tp
        # KV heads are replicated when TP exceeds their number (as vLLM does); MLA's latent
        # is one vector per token shared by all heads, so every TP rank keeps all of it.
        self.kv_heads = max(1.0, m.num_kv_heads / tp)
        if m.is_mla:
            self.kv_bytes_token_layer = float(m.kv_elements_per_token_layer * m.kv_bytes_per_element)
        else:
            self.kv_bytes_token_layer = 2 * self.kv_heads * m.head_dim * m.kv_bytes_per_element
        self._moe_cfg = moe or MoEConfig()
        self._load: ExpertLoad | None = None
        if m.is_moe and (expert_parallel > 1 or self._moe_cfg.routing != "uniform"):
            self._load = expert_load(self._moe_cfg, m.num_experts, m.experts_per_token,
                                     expert_parallel)
        # Expert replicas, all-to-all backend, unequal DP ranks (docs/PARALLELISM.md); each
        # refused where it cannot act, the defaults leave every path below as it was.
        self._slots = 1.0
        self._ranks = check_moe_options(self._moe_cfg, m, expert_parallel, data_parallel)
        if self._moe_cfg.redundant_experts:
            self._slots = (m.num_experts + self._moe_cfg.redundant_experts) / m.num_experts
        self._links = links or AllToAllLinks(hw.nvlink_bandwidth * hw.eff("nvlink").values[-1],
                                             hw.nvlink_latency_s, hw.nvlink_bandwidth,
                                             hw.nvlink_latency_s, 8)
        self.flops_peak = hw.bf16_flops
        self.bw_peak = hw.hbm_bandwidth
        self._eff = hw.efficiency
        # GEMMs priced by shape and small operators by their own measured efficiencies,
        # when a calibrated profile carries them (perf/gemm.py); None: the curves below.
        self._gemm_model = shape_gemm.from_profile(hw)
        self._small_ops = hw.small_ops
        self._const_attn = (hw.eff("attention_compute").is_constant
                            and hw.eff("attention_memory").is_constant)
        self._linear_cache: dict[int, float] = {}
        self._linear_coef = self._linear_coefficients()
        # Attention time per token of context, for the constant-efficiency fast path.
        flops_per_ctx = self._pair_flops = float(model.attn_flops_per_pair_head) * self.heads
        if self._const_attn:
            ceff = hw.eff("attention_compute").values[0]
            meff = hw.eff("attention_memory").values[0]
            self._attn_c = flops_per_ctx / (hw.bf16_flops * ceff)
            self._attn_m = self.kv_bytes_token_layer / (hw.hbm_bandwidth * meff)
            self._q_m = self._q_bytes(1.0) / (hw.hbm_bandwidth * meff)
        # Decode attention's coefficients: the GPU's, unless a subclass moves decode
        # attention elsewhere (perf/in_storage.py: computational storage drives).
        self._const_dattn = self._const_attn
        if self._const_attn:
            self._dattn_c, self._dattn_m, self._dq_m = self._attn_c, self._attn_m, self._q_m
        # Seconds per token whose new KV must be written outside HBM (0 on a GPU).
        self._kv_write_s = 0.0
        e = self.engine
        for key in ("kv_padding_tokens", "attention_query_tile"):
            if getattr(e, key) < 0:
                raise ValueError(f"engine.{key} must be >= 0, got {getattr(e, key)}")
        self._q_tile = e.attention_query_tile or 1
        self._dense_pad = e.kv_padding_tokens
        self._ctx_host_s = e.per_context_token_overhead_s
        # Per prefill token: the engine's host time and its GPU time per dense GEMM FLOP.
        self._prefill_token_s = (e.per_prefill_token_overhead_s + e.prefill_flop_s
                                 * shape_gemm.dense_flops_per_token(m, tensor_parallel))
        self._sample_cache: dict[int, float] = {}
        self._moe_capture_layers = m.moe_layers if m.is_moe else 0  # MoE layers a capture records
        # Padded attention per padded KV token (a) and per padded KV token x query token (b),
        # all layers: the engine's all-layer terms plus its terms in model dimensions.
        d = m.head_dim
        self._pad_a = e.padded_kv_token_s + self.layers * (
            e.padded_kv_layer_s + self.kv_heads * d * e.padded_kv_element_s)
        self._pad_b = (e.padded_kv_query_token_s
                       + self.layers * self.heads * d * e.padded_query_element_s)
        # Engines that pad the step's query tokens run every projection on the padded count,
        # and maybe the LM head on padded rows (EngineConfig).
        self._q_pad = e.query_padding_tokens
        self._logit_rows = e.padded_logits_rows
        self._layer_s = self.layers * e.per_layer_overhead_s
        # Per MoE layer: a fixed time and one per token (its routed expert FLOPs x seconds/FLOP).
        self._moe_terms = (e.moe_layer_overhead_s,
                           e.moe_expert_flop_s * 6.0 * m.experts_per_token * m.hidden_size
                           * m.ffn_size / tensor_parallel) \
            if (e.moe_layer_overhead_s or e.moe_expert_flop_s) else None
        # Seconds per routed expert hit per layer: its weights at HBM peak x the read factor.
        self._moe_read = (e.moe_weight_read_factor * 3.0 * m.hidden_size * m.ffn_size
                          / tensor_parallel * m.weight_bytes_per_param / hw.hbm_bandwidth) \
            if e.moe_weight_read_factor and m.is_moe else 0.0
        self._head_cache: dict[int, float] = {}
        self._padded_moe_cache: dict[tuple[int, int], float] = {}
        # Run options (perf/options.py): attention time factors of the KV allocator and the
        # share of the weights resident in HBM. 1: the plain path, untouched.
        self._pf_attn = 1.0
        self._dec_attn = 1.0
        self._resident = 1.0

    def set_attention_factors(self, prefill: float, decode: float) -> None:
        """Scale prefill and decode attention time (a KV allocator's kernels against the
        paged kernels the hardware profile stands for). Called once, after construction."""
        if prefill != 1.0:
            self._pf_attn = prefill
            if self._const_attn:
                self._attn_c *= prefill
                self._attn_m *= prefill
                self._q_m *= prefill
        if decode != 1.0:
            self._dec_attn = decode
            if self._const_dattn:
                self._dattn_c *= decode
                self._dattn_m *= decode
                self._dq_m *= decode

    # --- operator building blocks -----------------------------------------------------------
    def _q_bytes(self, queries: float) -> float:
        """Activations an attention call moves per GPU besides the KV: queries in, outputs out."""
        m = self.model
        return queries * self.heads * (m.qk_head_dim + m.v_dim_per_head) * ACT_BYTES

    def _gemm(self, name: str, tokens: float, k: float, n: float, weight_sets: float = 1.0
              ) -> OperatorCost:
        """tokens x k times k x n (n already divided by TP), reading the weights once."""
        flops = 2.0 * tokens * k * n
        nbytes = (weight_sets * k * n * self.model.weight_bytes_per_param
                  + tokens * (k + n) * ACT_BYTES)
        if self._gemm_model is not None and tokens:
            return OperatorCost(name, flops, nbytes, self._gemm_model.time(
                tokens, n, k, weight_sets * self.model.weight_bytes_per_param))
        return self._roof(name, flops, nbytes, tokens, "gemm_compute", "gemm_memory")

    def _roof(self, name: str, flops: float, nbytes: float, size: float, ceff: str,
              meff: str) -> OperatorCost:
        t_c = flops / (self.flops_peak * self._eff[ceff].at(size)) if flops else 0.0
        t_m = nbytes / (self.bw_peak * self._eff[meff].at(size)) if nbytes else 0.0
        return OperatorCost(name, flops, nbytes, max(t_c, t_m))

    def _allreduce_s(self, tokens: float) -> float:
        if self.tp == 1 or tokens == 0:
            return 0.0
        msg = tokens * self.model.hidden_size * ACT_BYTES
        bw = self.hw.nvlink_bandwidth * self._eff["nvlink"].at(msg)
        return self.hw.nvlink_latency_s + 2.0 * (self.tp - 1) / self.tp * msg / bw

    def layer_operators(self, tokens: int, prefill_pairs: float = 0.0,
                        prefill_kv_tokens: float = 0.0, prefill_tokens: int = 0,
                        decodes: int = 0, decode_context: float = 0.0,
                        dense_mlp: bool = False) -> list[OperatorCost]:
        """The operators of one layer on one GPU, for a batch with these aggregates.

        ``tokens`` are the instance's; with data-parallel attention each rank runs the
        non-expert operators on its share (``tokens / dp``: balanced ranks assumed), and the
        attention aggregates passed in are per rank. ``dense_mlp``: one of an MoE model's
        leading dense layers.
        """
        m, tp = self.model, self.tp
        h = m.hidden_size
        t = tokens / self.dp if self.dp > 1 else tokens
        ops = [
            self._gemm("qkv_proj", t, h, m.qkv_out_dim / tp),
            self._gemm("o_proj", t, m.attn_out_dim / tp, h),
        ]
        if prefill_tokens:
            # QK^T and PV: 2 FLOPs per multiply-add, d per head, for each causal pair.
            flops = self._pair_flops * prefill_pairs
            nbytes = prefill_kv_tokens * self.kv_bytes_token_layer + self._q_bytes(prefill_tokens)
            ops.append(self._roof("attn_prefill", flops, nbytes, prefill_tokens,
                                  "attention_compute", "attention_memory"))
        if decodes:
            ops.append(self._decode_attention(decodes, decode_context))
        if m.is_moe and not dense_mlp:
            ops.extend(self._moe(tokens))
        else:
            f = (m.dense_ffn_size if m.is_moe else m.ffn_size) / tp
            ops.append(self._gemm("mlp_up_gate", t, h, 2 * f))
            ops.append(self._gemm("mlp_down", t, f, h))
        if self._small_ops is not None:
            ops.append(self._priced_small_ops(t))
        else:
            # Two RMSNorms and two residual adds: ~10 activation passes of h values per token.
            ops.append(self._roof("norms", 0.0, 10.0 * t * h * ACT_BYTES, t,
                                  "gemm_compute", "elementwise_memory"))
        return ops

    def _priced_small_ops(self, tokens: float) -> OperatorCost:
        """Norms, rotary embedding, SiLU x up and residual adds of one layer, each at its own
        measured efficiency on the bytes it must move (calibrated profiles: ``small_ops``)."""
        m, eff = self.model, self._small_ops
        assert eff is not None
        f = (m.dense_ffn_size if m.is_moe else m.ffn_size) / self.tp
        by_op = shape_gemm.small_op_bytes(tokens, m.hidden_size, self.heads, self.kv_heads,
                                          m.head_dim, f, ACT_BYTES)
        seconds = sum(nbytes / (self.bw_peak * eff[op]) for op, nbytes in by_op.items())
        return OperatorCost("norms", 0.0, float(sum(by_op.values())), seconds)

    def _decode_attention(self, decodes: int, context: float) -> OperatorCost:
        flops = self._pair_flops * context
        nbytes = context * self.kv_bytes_token_layer + self._q_bytes(decodes)
        # NOTE: indexed by the total context read: small reads are latency-bound whatever
        # the batch shape (calibration, docs/CALIBRATION.md).
        return self._roof("attn_decode", flops, nbytes, context,
                          "attention_compute", "attention_memory")

    def _moe(self, tokens: int, real: int | None = None) -> list[OperatorCost]:
        """The MoE layer's operators for ``tokens`` tokens, of which ``real`` are requests'
        (the rest the engine's query padding: identical rows, routed alike)."""
        m, tp = self.model, self.tp
        h, f = m.hidden_size, m.ffn_size / tp
        e, k = m.num_experts, m.experts_per_token
        t = tokens / self.dp if self.dp > 1 else tokens
        shared = []
        if m.shared_experts:
            fs = m.shared_experts * f
            shared = [self._gemm("moe_shared_up_gate", t, h, 2 * fs),
                      self._gemm("moe_shared_down", t, fs, h)]
        if self._load is None and self._gemm_model is not None and tokens:
            # By shape: one grouped GEMM per projection, each expert's rows in whole tiles.
            gm, wb = self._gemm_model, m.weight_bytes_per_param
            routed = tokens * k
            pad = tokens - real if real is not None and real < tokens else 0
            up = gm.grouped_time(tokens - pad, e, k, 2 * f, h, wb, pad)
            down = gm.grouped_time(tokens - pad, e, k, h, f, wb, pad)
            return [
                self._gemm("moe_router", tokens, h, e / tp),
                OperatorCost("moe_up_gate", 2.0 * routed * h * 2 * f, 0.0, up),
                OperatorCost("moe_down", 2.0 * routed * f * h, 0.0, down),
                *shared,
            ]
        if self._load is None:
            # Expected distinct experts hit by `tokens` tokens each picking k of e uniformly:
            # the weights of exactly those experts are read.
            touched = e * (1.0 - (1.0 - k / e) ** tokens)
            routed = tokens * k
            return [
                self._gemm("moe_router", tokens, h, e / tp),
                self._gemm("moe_up_gate", routed, h, 2 * f, weight_sets=touched),
                self._gemm("moe_down", routed, f, h, weight_sets=touched),
                *shared,
            ]
        return [self._gemm("moe_router", t, h, e / tp), *shared, *self._expert_parallel_ops(tokens)]

    def _expert_parallel_ops(self, tokens: float) -> list[OperatorCost]:
        """Routed experts under expert parallelism (or skewed routing): the layer waits for
        the most loaded GPU, plus the dispatch and combine all-to-alls (perf/expert_parallel.py)."""
        m = self.model
        load = self._load
        assert load is not None
        h = m.hidden_size
        # Whole experts per GPU under EP; sliced by TP otherwise.
        f = m.ffn_size if self.ep > 1 else m.ffn_size / self.tp
        routed = load.routed(tokens)
        touched = load.touched(tokens)
        wb = m.weight_bytes_per_param
        seconds = np.zeros(load.ep)
        for k_dim, n_dim in ((h, 2 * f), (f, h)):
            flops = 2.0 * routed * k_dim * n_dim
            nbytes = touched * k_dim * n_dim * wb + routed * (k_dim + n_dim) * ACT_BYTES
            size = np.maximum(routed, 1.0)
            t_c = flops / (self.flops_peak * self._eff["gemm_compute"].at_array(size))
            t_m = nbytes / (self.bw_peak * self._eff["gemm_memory"].at_array(size))
            seconds += np.maximum(t_c, t_m)
        g = int(np.argmax(seconds))
        ops = [OperatorCost("moe_experts", float(6.0 * routed[g] * h * f),
                            float(touched[g] * 3 * h * f * wb), float(seconds[g]))]
        if self.ep > 1 and self._moe_cfg.all_to_all != A2A_DEFAULT:
            nbytes, a2a = a2a_cost(self._moe_cfg.all_to_all, load, tokens, h,
                                   self._moe_cfg.dispatch_bytes_per_element, self._links)
            ops.append(OperatorCost("moe_all_to_all", 0.0, nbytes, a2a))
        elif self.ep > 1:
            dispatch, combine = all_to_all_bytes(load, tokens, h,
                                                 self._moe_cfg.dispatch_bytes_per_element)
            a2a = (all_to_all_s(dispatch, self.ep, self._links)
                   + all_to_all_s(combine, self.ep, self._links))
            ops.append(OperatorCost("moe_all_to_all", 0.0, dispatch + combine, a2a))
        return ops

    def _head_s(self, sampled: int) -> float:
        m = self.model
        if sampled == 0:
            return 0.0
        op = self._gemm("lm_head", sampled, m.hidden_size, m.vocab_size / self.tp)
        return op.seconds

    def linear_s(self, tokens: int) -> float:
        """Everything of an iteration but attention and sampling, for ``tokens`` tokens.

        NOTE: cached per token count: it is called once per engine run and depends on
        nothing else (profiling showed operator objects dominating run time otherwise).
        """
        t = self._linear_cache.get(tokens)
        if t is None:
            if self._linear_coef is not None:
                # Same operators as layer_operators(), from precomputed coefficients: a cache
                # miss costs ~2 us instead of ~50 (prefill sizes vary from run to run).
                x = float(tokens)
                layer = 0.0
                for f, w, a, cf, cm in self._linear_coef:
                    layer += max(f * x * cf, (w + a * x) * cm)
            else:
                ops = self.layer_operators(tokens)
                # (a list, not a generator: the compiled build's cpdef takes no closure;
                # sum() adds the same floats in the same order)
                layer = sum([op.seconds for op in ops if not op.name.startswith("attn")])
            m = self.model
            rank = tokens / self.dp if self.dp > 1 else tokens
            pp_hops = (self.pp - 1) * (rank * m.hidden_size * ACT_BYTES
                                       / self.hw.nvlink_bandwidth + self.hw.nvlink_latency_s)
            t = m.moe_layers * (layer + 2.0 * self._allreduce_s(rank)) + pp_hops
            if m.num_dense_layers:
                ops = self.layer_operators(tokens, dense_mlp=True)
                dense = sum([op.seconds for op in ops if not op.name.startswith("attn")])
                t += m.num_dense_layers * (dense + 2.0 * self._allreduce_s(rank))
            if m.is_moe and self._moe_terms:  # engine terms measured on its steps (validation)
                t += m.moe_layers * (self._moe_terms[0] + self._moe_terms[1] * tokens)
            if self._moe_read:
                t += m.moe_layers * self._moe_read * experts_hit(m.num_experts,
                                                                 m.experts_per_token, tokens)
            self._linear_cache[tokens] = t
        return t

    def padded_linear_s(self, padded: int, real: int) -> float:
        """``linear_s`` of a step the engine pads from ``real`` to ``padded`` query tokens:
        the same but for an MoE model's routed experts, whose padding rows all go to the
        same experts (``_moe``); cached per (padded, real)."""
        if not self.model.is_moe or real >= padded or self._gemm_model is None:
            return self.linear_s(padded)
        key = (padded, real)
        t = self._padded_moe_cache.get(key)
        if t is None:
            diff = (sum(op.seconds for op in self._moe(padded, real))
                    - sum(op.seconds for op in self._moe(padded)))
            if self._moe_read:
                e, k = self.model.num_experts, self.model.experts_per_token
                diff += self._moe_read * (experts_hit(e, k, real, padded - real)
                                          - experts_hit(e, k, padded))
            t = self.linear_s(padded) + self.model.moe_layers * diff
            self._padded_moe_cache[key] = t
        return t

    def _linear_coefficients(self) -> list[tuple[float, float, float, float, float]] | None:
        """Per operator (FLOPs/token, weight bytes, activation bytes/token, s/FLOP, s/byte).

        Only for dense models with constant GEMM and elementwise efficiencies; otherwise the
        efficiency or the weights read depend on the token count non-linearly.
        """
        effs = ("gemm_compute", "gemm_memory", "elementwise_memory")
        if self.model.is_moe or not all(self._eff[k].is_constant for k in effs):
            return None
        if self._gemm_model is not None or self._small_ops is not None:
            return None
        if self.model.is_mla:
            return None  # its projections are counted by layer_operators(); not on a hot path
        m, tp = self.model, self.tp
        h, f = m.hidden_size, m.ffn_size / tp
        cf = 1.0 / (self.flops_peak * self._eff["gemm_compute"].values[0])
        cm = 1.0 / (self.bw_peak * self._eff["gemm_memory"].values[0])
        ce = 1.0 / (self.bw_peak * self._eff["elementwise_memory"].values[0])
        wb = m.weight_bytes_per_param
        coef = []
        for k, n in ((h, (m.q_dim + 2 * m.kv_dim) / tp), (m.q_dim / tp, h), (h, 2 * f), (f, h)):
            coef.append((2.0 * k * n, k * n * wb, (k + n) * ACT_BYTES, cf, cm))
        coef.append((0.0, 0.0, 10.0 * h * ACT_BYTES, cf, ce))  # norms and residuals
        return coef

    def sample_s(self, sampled: int) -> float:
        """LM head for the sequences that sample, plus the host-side overheads (cached)."""
        t = self._sample_cache.get(sampled)
        if t is None:
            t = (self._head_s(sampled) + self.engine.iteration_overhead_s
                 + self.engine.per_sequence_overhead_s * sampled)
            if self._layer_s:
                t += self._layer_s
            self._sample_cache[sampled] = t
        return t

    def _padded(self, tokens: int) -> int:
        """The step's token count as the engine's projections see it (query padding)."""
        pad = self._q_pad
        return -(-tokens // pad) * pad if pad and tokens else tokens

    def _padded_head_s(self, tokens: int) -> float:
        """The LM head's extra time when it runs on padded rows instead of the sampled
        sequences (engine.padded_logits_rows); added to sample_s, which prices the latter."""
        t = self._head_cache.get(tokens)
        if t is None:
            t = self._head_s(min(self._padded(tokens), self._logit_rows))
            self._head_cache[tokens] = t
        return t

    def _prefill_attention_s(self, pairs: float, kv_tokens: float, tokens: int) -> float:
        if self._const_attn:
            return max(pairs * self._attn_c, kv_tokens * self._attn_m + tokens * self._q_m)
        flops = self._pair_flops * pairs
        nbytes = kv_tokens * self.kv_bytes_token_layer + self._q_bytes(tokens)
        t = self._roof("attn_prefill", flops, nbytes, tokens, "attention_compute",
                       "attention_memory").seconds
        return t if self._pf_attn == 1.0 else t * self._pf_attn

    def dense_attention_s(self, kv_tokens: float, q_tokens: int) -> float:
        """One step's attention, all layers, for an engine that attends over the batch's KV
        padded to a multiple of ``engine.kv_padding_tokens`` in one masked call: its time
        follows the padded length (a step function of the context), not each sequence's."""
        pad = self._dense_pad
        # transformers pads the KV already cached (not the step's new tokens), one interval
        # at least: max(1, ceil(past / pad)) intervals (pad_to_interval in its utils.py)
        padded = max(1.0, -(-(kv_tokens - q_tokens) // pad)) * pad
        return padded * (self._pad_a + self._tiled(self._padded(q_tokens)) * self._pad_b)

    def _tiled(self, q_tokens: int) -> int:
        """Query tokens as the dense attention counts them: whole tiles."""
        tile = self._q_tile
        return -(-q_tokens // tile) * tile


def experts_hit(experts: int, top_k: int, tokens: float, padding: float = 0.0) -> float:
    """Expected experts hit by ``tokens`` tokens each routed to ``top_k`` of ``experts``
    uniformly; ``padding`` identical rows all go to the same ``top_k``."""
    spread = 1.0 - (1.0 - min(1.0, top_k / experts)) ** tokens
    return top_k + (experts - top_k) * spread if padding else experts * spread


def roofline_floor_s(flops: float, nbytes: float, hw: HardwareProfile) -> float:
    """The datasheet roofline bound, without efficiencies (for sanity checks)."""
    return max(flops / hw.bf16_flops, nbytes / hw.hbm_bandwidth)


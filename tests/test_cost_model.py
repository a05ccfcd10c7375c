"""The roofline cost model against numbers computed by hand.

A toy model (1 layer, hidden 100, one head of 100, FFN 200, vocab 1000) on a toy GPU with
round peaks and efficiencies of 1, so each operator's time can be checked on paper.
"""

from __future__ import annotations

import numpy as np
import pytest

from simkv.config.schema import EngineConfig
from simkv.entities.hardware import EfficiencyCurve, HardwareProfile
from simkv.entities.model import ModelSpec
from simkv.perf.roofline import CostModel
from simkv.policies.scheduler.interface import SchedulerOutput

TOY = ModelSpec(name="toy", num_layers=1, hidden_size=100, num_heads=1, num_kv_heads=1,
                head_dim=100, ffn_size=200, vocab_size=1000, max_model_len=4096)
NO_OVERHEAD = EngineConfig(iteration_overhead_s=0.0, per_sequence_overhead_s=0.0)


def gpu(flops: float, bw: float, nvlink: float = 1e9) -> HardwareProfile:
    one = EfficiencyCurve((1.0,), (1.0,))
    keys = ("gemm_compute", "gemm_memory", "attention_compute", "attention_memory",
            "elementwise_memory", "nvlink")
    return HardwareProfile("toy", 1e12, flops, bw, nvlink, 0.0, 1e9, 0.0,
                           dict.fromkeys(keys, one), {})


def test_decode_iteration_is_memory_bound_by_hand() -> None:
    cost = CostModel(TOY, gpu(flops=1e12, bw=1e9), engine=NO_OVERHEAD)
    # One sequence attending to 10 tokens. Bytes at 1 GB/s, i.e. 1 byte = 1 ns:
    #   qkv   100x300 weights * 2 B + (100 + 300) activations * 2 B = 60,800 ns
    #   o     100x100 * 2 + 200 * 2                                  = 20,400
    #   attn  10 tokens * K,V 2 x 100 x 2 B + q and out 2 x 100 x 2  =  4,400
    #   up+gate 100x400 * 2 + 500 * 2                                = 81,000
    #   down  200x100 * 2 + 300 * 2                                  = 40,600
    #   norms 10 passes x 100 x 2 B                                  =  2,000
    #   lm head 100x1000 * 2 + 1100 * 2                              = 202,200
    out = SchedulerOutput(num_decodes=1, decode_context=(10,), num_sampled=1)
    assert cost.iteration_time(out) == pytest.approx(411_400e-9, rel=1e-12)
    names = [op.name for op in cost.layer_operators(1, decodes=1, decode_context=10)]
    assert names == ["qkv_proj", "o_proj", "attn_decode", "mlp_up_gate", "mlp_down", "norms"]


def test_prefill_iteration_is_compute_bound_by_hand() -> None:
    cost = CostModel(TOY, gpu(flops=1e12, bw=1e15), engine=NO_OVERHEAD)
    # 1000 new tokens, nothing cached: FLOPs at 1 TFLOP/s, 1 MFLOP = 1 us.
    #   qkv 2*1000*100*300 = 60 us; o 20 us; up+gate 80 us; down 40 us
    #   attention: 500,500 causal pairs * 4 * 100 FLOPs = 200.2 us
    #   lm head for the one sampled sequence: 2*100*1000 = 0.2 us
    #   norms: 2 MB at 1 PB/s = 0.002 us
    out = SchedulerOutput(prefill_tokens=1000, prefill_attn_pairs=1000 * 1001 / 2,
                          prefill_kv_tokens=1000, num_sampled=1)
    assert cost.iteration_time(out) == pytest.approx(400.402e-6, rel=1e-9)


def test_overheads_add_per_iteration_and_per_sequence() -> None:
    eng = EngineConfig(iteration_overhead_s=1e-3, per_sequence_overhead_s=1e-5)
    base = CostModel(TOY, gpu(1e12, 1e9), engine=NO_OVERHEAD)
    with_oh = CostModel(TOY, gpu(1e12, 1e9), engine=eng)
    out = SchedulerOutput(num_decodes=4, decode_context=(40,), num_sampled=4)
    assert with_oh.iteration_time(out) - base.iteration_time(out) == pytest.approx(1.04e-3)


def test_tensor_parallel_halves_weights_and_adds_two_allreduces() -> None:
    model = ModelSpec(name="toy2", num_layers=1, hidden_size=100, num_heads=2, num_kv_heads=2,
                      head_dim=50, ffn_size=200, vocab_size=1000, max_model_len=4096)
    tp1 = CostModel(model, gpu(1e12, 1e9, nvlink=1e9), 1, engine=NO_OVERHEAD)
    tp2 = CostModel(model, gpu(1e12, 1e9, nvlink=1e9), 2, engine=NO_OVERHEAD)
    out = SchedulerOutput(num_decodes=1, decode_context=(10,), num_sampled=1)
    # Each all-reduce of 1 token x 100 x 2 B over a 2-GPU ring moves 2*(1/2)*200 B = 200 ns.
    linear1 = sum(o.seconds for o in tp1.layer_operators(1) if o.name != "norms")
    linear2 = sum(o.seconds for o in tp2.layer_operators(1) if o.name != "norms")
    assert linear2 == pytest.approx(linear1 / 2, rel=0.02)  # weights dominate, split in two
    assert tp2._allreduce_s(1) == pytest.approx(200e-9)
    assert tp2.iteration_time(out) < tp1.iteration_time(out)


def test_moe_reads_only_the_experts_it_touches() -> None:
    moe = ModelSpec(name="moe", num_layers=1, hidden_size=100, num_heads=1, num_kv_heads=1,
                    head_dim=100, ffn_size=200, vocab_size=1000, num_experts=8,
                    experts_per_token=2, max_model_len=4096)
    cost = CostModel(moe, gpu(1e12, 1e9), engine=NO_OVERHEAD)
    one = {o.name: o for o in cost.layer_operators(1)}
    many = {o.name: o for o in cost.layer_operators(4096)}
    # One token touches exactly 2 of 8 experts; thousands touch all 8.
    assert one["moe_down"].bytes == pytest.approx(2 * 200 * 100 * 2 + 2 * 300 * 2)
    assert many["moe_down"].bytes == pytest.approx(8 * 200 * 100 * 2 + 4096 * 2 * 300 * 2, rel=1e-6)


def test_decode_run_matches_single_iterations() -> None:
    cost = CostModel(TOY, gpu(1e12, 1e9), engine=EngineConfig())
    ctx = np.array([500, 508, 516, 524])
    run = cost.decode_run_times(8, ctx, 8)
    single = [cost.iteration_time(SchedulerOutput(num_decodes=8, decode_context=(int(c),),
                                                  num_sampled=8)) for c in ctx]
    np.testing.assert_allclose(run, single, rtol=1e-12)


def test_llama8b_decode_is_close_to_weight_read_time() -> None:
    from simkv.entities.hardware import load_profile

    h100 = load_profile("h100_sxm_80gb")
    cost = CostModel(ModelSpec(), h100, engine=NO_OVERHEAD)
    t = cost.iteration_time(SchedulerOutput(num_decodes=1, decode_context=(128,), num_sampled=1))
    m = ModelSpec()
    # Batch-1 decode streams every weight once except the input embedding table, of which a
    # lookup reads one row; norms, attention and activations add about 1%.
    streamed = (m.num_params - m.embedding_params) * m.weight_bytes_per_param
    weights = streamed / (h100.hbm_bandwidth * 0.9)  # gemm_memory efficiency
    assert weights < t < 1.03 * weights


@pytest.mark.parametrize("tp", [1, 2, 8])
def test_linear_fast_path_equals_the_operator_sum(tp: int) -> None:
    from simkv.entities.hardware import load_profile

    model = ModelSpec(name="qwen_like", num_layers=64, hidden_size=5120, num_heads=40,
                      num_kv_heads=8, head_dim=128, ffn_size=27648, vocab_size=152064,
                      qkv_bias=True, max_model_len=32768)
    cost = CostModel(model, load_profile("h100_sxm_80gb"), tp)
    assert cost._linear_coef is not None
    for tokens in (1, 3, 64, 777, 8192):
        ops = [o for o in cost.layer_operators(tokens) if not o.name.startswith("attn")]
        expected = cost.layers * (sum(o.seconds for o in ops) + 2 * cost._allreduce_s(tokens))
        assert cost.linear_s(tokens) == pytest.approx(expected, rel=1e-12)


DENSE = EngineConfig(iteration_overhead_s=0.0, per_sequence_overhead_s=0.0,
                     kv_padding_tokens=1000, padded_kv_token_s=1e-6,
                     padded_kv_query_token_s=1e-9, per_context_token_overhead_s=1e-8)


def test_dense_padded_attention_steps_at_the_padding_interval() -> None:
    """transformers' paged SDPA under CUDA graphs: attention follows the cached KV padded to
    the interval (one interval at least), not each sequence's context."""
    cost = CostModel(TOY, gpu(1e12, 1e9), engine=DENSE)
    plain = CostModel(TOY, gpu(1e12, 1e9), engine=NO_OVERHEAD)

    def decode(ctx: int) -> float:
        return cost.iteration_time(SchedulerOutput(num_decodes=4, decode_context=(ctx,),
                                                   num_sampled=4))

    # 4 decodes whose past is 996 tokens (ctx 1000 with the new ones): one interval;
    # a past of 1001: two.
    one, two = decode(1000), decode(1005)
    assert two - one == pytest.approx(1000 * (1e-6 + 4 * 1e-9) + 5 * 1e-8)
    # Within an interval only the host's per-token cost grows.
    assert decode(900) - decode(500) == pytest.approx(400 * 1e-8)
    # Nothing cached still reads one padded interval.
    out = SchedulerOutput(prefill_tokens=100, prefill_kv_tokens=100, prefill_attn_pairs=5050,
                          num_sampled=1)
    linear = plain.linear_s(100) + plain.sample_s(1)
    assert cost.iteration_time(out) == pytest.approx(
        linear + 1000 * (1e-6 + 100 * 1e-9) + 100 * 1e-8)


@pytest.mark.parametrize("k", [4, 100])  # the short-run loop and the vectorised path
def test_dense_decode_run_matches_single_iterations(k: int) -> None:
    cost = CostModel(TOY, gpu(1e12, 1e9), engine=DENSE)
    ctx = range(900, 900 + 8 * k, 8)
    run = cost.decode_run_times(8, ctx, 8)
    single = [cost.iteration_time(SchedulerOutput(num_decodes=8, decode_context=(c,),
                                                  num_sampled=8)) for c in ctx]
    np.testing.assert_allclose(run, single, rtol=1e-12)
    assert len({round(t, 12) for t in single}) > 1  # the run crosses an interval


def test_negative_kv_padding_is_refused() -> None:
    with pytest.raises(ValueError, match="kv_padding_tokens"):
        CostModel(TOY, gpu(1e12, 1e9), engine=EngineConfig(kv_padding_tokens=-1))


@pytest.mark.parametrize("k", [4, 100])
def test_host_cost_per_context_token_in_decode_runs(k: int) -> None:
    eng = EngineConfig(iteration_overhead_s=0.0, per_sequence_overhead_s=0.0,
                       per_context_token_overhead_s=1e-8)
    cost = CostModel(TOY, gpu(1e12, 1e9), engine=eng)
    plain = CostModel(TOY, gpu(1e12, 1e9), engine=NO_OVERHEAD)
    ctx = range(900, 900 + 8 * k, 8)
    run = np.asarray(cost.decode_run_times(8, ctx, 8))
    np.testing.assert_allclose(run - np.asarray(plain.decode_run_times(8, ctx, 8)),
                               np.asarray(ctx) * 1e-8, rtol=1e-9, atol=1e-15)


def test_dense_attention_counts_queries_in_whole_tiles() -> None:
    import dataclasses

    tiled = CostModel(TOY, gpu(1e12, 1e9), engine=dataclasses.replace(DENSE, attention_query_tile=512))
    exact = CostModel(TOY, gpu(1e12, 1e9), engine=DENSE)
    # 4 queries over one padded interval: a tile of 512 counts 512 of them, 508 more.
    assert tiled.dense_attention_s(1000, 4) - exact.dense_attention_s(1000, 4) == pytest.approx(
        1000 * 508 * 1e-9)
    # 513 queries (past 1,000: one interval) take two tiles.
    assert tiled.dense_attention_s(1513, 513) == pytest.approx(1000 * (1e-6 + 1024 * 1e-9))


def test_prefill_tokens_priced_per_dense_gemm_flop() -> None:
    """engine.prefill_flop_s: each prefill token costs its dense GEMM FLOPs at that rate (issue
    19: Qwen2.5-14B's prefill tokens took 1.9x Llama-8B's, as their FLOPs; Mixtral's fewer)."""
    from simkv.perf.gemm import dense_flops_per_token

    # TOY: qkv 100x300 + o 100x100 + gate/up/down 3 x 100x200 = 100,000 weights, 2 FLOPs each.
    assert dense_flops_per_token(TOY) == 200_000
    assert dense_flops_per_token(TOY, tensor_parallel=2) == 100_000
    eng = EngineConfig(iteration_overhead_s=0.0, per_sequence_overhead_s=0.0, prefill_flop_s=1e-12)
    out = SchedulerOutput(prefill_tokens=1000, prefill_attn_pairs=1000 * 1001 / 2,
                          prefill_kv_tokens=1000, num_sampled=1)
    plain = CostModel(TOY, gpu(1e12, 1e9), engine=NO_OVERHEAD).iteration_time(out)
    priced = CostModel(TOY, gpu(1e12, 1e9), engine=eng).iteration_time(out)
    assert priced - plain == pytest.approx(1000 * 200_000 * 1e-12)
    decode = SchedulerOutput(num_decodes=4, decode_context=(40,), num_sampled=4)
    assert CostModel(TOY, gpu(1e12, 1e9), engine=eng).iteration_time(decode) == pytest.approx(
        CostModel(TOY, gpu(1e12, 1e9), engine=NO_OVERHEAD).iteration_time(decode))


def test_dense_flops_per_token_of_shipped_shapes() -> None:
    """Dense models: every weight but the embeddings, norms and LM head; MoE: the attention
    projections only (routed experts are priced apart)."""
    from simkv.config.store import compose
    from simkv.perf.gemm import dense_flops_per_token

    llama = compose(["model=llama3_8b"]).model
    lm = 0 if llama.tie_embeddings else llama.embedding_params
    body = llama.num_params - llama.embedding_params - lm - llama.hidden_size
    body -= llama.num_layers * 2 * llama.hidden_size + llama.extra_params  # norms
    assert dense_flops_per_token(llama) == pytest.approx(2 * body)
    mixtral = compose(["model=mixtral_8x7b"]).model
    assert dense_flops_per_token(mixtral) == 2 * mixtral.num_layers * mixtral.attention_params_per_layer


def test_graph_capture_prices_moe_layers_apart() -> None:
    """engine.graph_capture_moe_layer_s: a step recording a CUDA graph of an MoE model pays it
    per MoE layer (issue 19: Mixtral's 16 layers captured in as long as Llama's 32)."""
    import dataclasses

    moe = dataclasses.replace(TOY, name="toy_moe", num_layers=4, num_experts=4,
                              experts_per_token=2)
    eng = EngineConfig(iteration_overhead_s=0.0, per_sequence_overhead_s=0.0,
                       graph_capture_layer_s=1e-3, graph_capture_moe_layer_s=2e-3)
    out = SchedulerOutput(num_decodes=4, decode_context=(40,), num_sampled=4)
    cap = dataclasses.replace(out, capture=True)
    for model, extra in ((TOY, 1e-3), (moe, 4 * 1e-3 + 4 * 2e-3)):
        cost = CostModel(model, gpu(1e12, 1e9), engine=eng)
        assert cost.run_times(cap) - cost.iteration_time(out) == pytest.approx(extra)

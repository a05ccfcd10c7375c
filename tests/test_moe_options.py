"""Expert replication (EPLB), all-to-all backends and unequal data-parallel ranks
(perf/moe_placement.py, perf/all_to_all.py, perf/ranks.py): invariants and hand checks."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import simkv
from simkv.config.bounds import ConfigError
from simkv.config.schema import MoEConfig
from simkv.entities.hardware import load_profile
from simkv.perf.all_to_all import cost, low_latency_bandwidth
from simkv.perf.expert_parallel import AllToAllLinks, expert_load
from simkv.perf.moe_placement import ReplicatedLoad, balancedness, replicate
from simkv.perf.ranks import busiest_share, expected_max_normal
from simkv.perf.roofline import CostModel
from simkv.policies.scheduler.interface import SchedulerOutput
from tests.test_expert_parallel import spec

LINKS = AllToAllLinks(400e9, 1e-5, 50e9, 5e-6, 8)


def test_replicate_minimises_the_largest_load_per_replica() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        w = rng.random(4) + 0.01
        for slots in range(4, 9):
            count = replicate(w, slots)
            best = min(max(w / np.array(c)) for c in itertools.product(range(1, 6), repeat=4)
                       if sum(c) == slots)
            assert max(w / count) == pytest.approx(best)


@settings(max_examples=25, deadline=None)
@given(st.sampled_from([8, 16, 64]), st.integers(1, 4), st.sampled_from([2, 4, 8]),
       st.integers(0, 3), st.floats(0.0, 2.0))
def test_eplb_never_loses_an_expert_nor_a_token(experts: int, k: int, ep: int, extra: int,
                                                  zipf: float) -> None:
    redundant = extra * ep  # slots divide over the GPUs
    cfg = MoEConfig(routing="zipf", zipf_exponent=zipf, placement="eplb",
                    redundant_experts=redundant)
    load = expert_load(cfg, experts, min(k, experts), ep)
    assert isinstance(load, ReplicatedLoad)
    # Every expert has a replica; slots are all used, the same number on every GPU.
    assert (load.replicas >= 1).all()
    assert load.replicas.sum() == experts + redundant
    assert np.bincount(load.replica_gpu, minlength=ep).tolist() == [(experts + redundant) // ep] * ep
    # Every (token, expert) selection lands on some replica: k per token.
    assert load.routed(100.0).sum() == pytest.approx(100 * min(k, experts))


def test_eplb_balances_better_than_placement_alone() -> None:
    skew: dict = {"routing": "zipf", "zipf_exponent": 1.2}
    contiguous = expert_load(MoEConfig(**skew), 64, 6, 16)
    balanced = expert_load(MoEConfig(**skew, placement="balanced"), 64, 6, 16)
    eplb0 = expert_load(MoEConfig(**skew, placement="eplb"), 64, 6, 16)
    eplb = expert_load(MoEConfig(**skew, placement="eplb", redundant_experts=16), 64, 6, 16)
    b = {n: balancedness(x, 4096) for n, x in
         (("contiguous", contiguous), ("balanced", balanced), ("eplb0", eplb0), ("eplb", eplb))}
    assert b["contiguous"] < b["balanced"] <= b["eplb0"] + 1e-12 < b["eplb"]
    assert b["eplb"] > 0.95
    # Uniform routing and no replicas: EPLB's packing changes nothing.
    flat = expert_load(MoEConfig(placement="eplb"), 64, 6, 16)
    assert flat.routed(512) == pytest.approx(expert_load(MoEConfig(), 64, 6, 16).routed(512))


def test_replicas_take_memory() -> None:
    m = spec("qwen3_30b_a3b")
    hw = load_profile("h100_sxm_80gb")
    plain = CostModel(m, hw, 1, 1, data_parallel=4, expert_parallel=4)
    eplb = CostModel(m, hw, 1, 1, data_parallel=4, expert_parallel=4,
                     moe=MoEConfig(placement="eplb", redundant_experts=32))
    experts = m.expert_params_total * m.weight_bytes_per_param
    assert eplb.weight_bytes_per_gpu() - plain.weight_bytes_per_gpu() == pytest.approx(
        experts * 32 / 128 / 4)
    assert eplb.expert_bytes_per_gpu() == pytest.approx(plain.expert_bytes_per_gpu() * 160 / 128)


def test_all_to_all_backends_by_hand() -> None:
    load = expert_load(MoEConfig(), 8, 2, 4)  # 4 GPUs of one node, 2 experts each
    h, t = 16, 100
    # DeepEP normal (the default): per destination GPU, 75 x 13/28 vectors each way.
    nbytes, s = cost("deepep_high_throughput", load, t, h, 2.0, LINKS)
    one = 75 * 13 / 28 * h * 2
    assert nbytes == pytest.approx(2 * one)
    assert s == pytest.approx(2 * (1e-5 + one / 400e9))
    # Low latency: every (token, expert) pair landing on the GPU, its own tokens included.
    nbytes, s = cost("deepep_low_latency", load, t, h, 1.0, LINKS)
    pairs = t * 2 / 4
    bw_d, bw_c = low_latency_bandwidth(4, 50e9)
    assert (bw_d, bw_c) == (98e9, 127e9)  # below EP 8: EP 8's measurement
    assert nbytes == pytest.approx(pairs * h * 3)
    assert s == pytest.approx(2 * 5e-6 + pairs * h / bw_d + pairs * h * 2 / bw_c)
    # All-gather / reduce-scatter: every other rank's tokens, whatever the routing.
    nbytes, s = cost("allgather_reducescatter", load, t, h, 1.0, LINKS)
    assert nbytes == pytest.approx(2 * 75 * h * 2)
    assert s == pytest.approx(2 * (3 * 1e-5 + 75 * h * 2 / 400e9))
    # The low-latency bandwidth follows DeepEP's table in log EP, scaled by the NIC.
    assert low_latency_bandwidth(16, 50e9) == (63e9, 74e9)
    assert low_latency_bandwidth(32, 100e9) == (96e9, 106e9)
    assert low_latency_bandwidth(512, 50e9) == (39e9, 40e9)


def test_backend_choice_reaches_the_cost_model() -> None:
    m = spec("qwen3_30b_a3b")
    hw = load_profile("h100_sxm_80gb")
    out = SchedulerOutput(num_decodes=64, decode_context=(64 * 1000,), num_sampled=64)
    t = {b: CostModel(m, hw, 1, 1, data_parallel=8, expert_parallel=8,
                      moe=MoEConfig(all_to_all=b)).iteration_time(out)
         for b in ("deepep_high_throughput", "deepep_low_latency", "allgather_reducescatter")}
    assert len(set(t.values())) == 3


def test_busiest_rank_share() -> None:
    assert expected_max_normal(1) == 0.0
    assert expected_max_normal(2) == pytest.approx(1 / math.sqrt(math.pi), rel=1e-6)
    assert expected_max_normal(8) == pytest.approx(1.4236, abs=1e-3)
    assert busiest_share(4, 8, 0.0) == 0.5 / 2  # two sequences each: even
    assert busiest_share(4, 5, 0.0) == pytest.approx(2 / 5)  # whole sequences: one rank has 2
    assert busiest_share(4, 1, 0.0) == 1.0
    assert busiest_share(1, 7, 3.0) == 1.0
    # The spread of contexts adds c z / sqrt(n / dp), shrinking as the batch grows.
    assert busiest_share(4, 400, 1.0) == pytest.approx(0.25 * (1 + expected_max_normal(4) / 10))
    assert busiest_share(4, 40, 1.0) > busiest_share(4, 400, 1.0) > 0.25


def test_unequal_ranks_slow_the_step_and_equal_ones_change_nothing() -> None:
    m = spec("qwen3_30b_a3b")
    hw = load_profile("h100_sxm_80gb")
    even = CostModel(m, hw, 1, 1, data_parallel=4, expert_parallel=4)
    seqs = CostModel(m, hw, 1, 1, data_parallel=4, expert_parallel=4,
                     moe=MoEConfig(dp_balance="sequences"))
    spread = CostModel(m, hw, 1, 1, data_parallel=4, expert_parallel=4,
                       moe=MoEConfig(dp_balance="sequences", rank_context_cv=1.0))
    out = SchedulerOutput(num_decodes=64, decode_context=(64 * 3000,), num_sampled=64)
    assert seqs.iteration_time(out) == even.iteration_time(out)  # 16 per rank: even, exactly
    assert spread.iteration_time(out) > even.iteration_time(out)
    odd = SchedulerOutput(num_decodes=5, decode_context=(5 * 3000,), num_sampled=5)
    assert seqs.iteration_time(odd) > even.iteration_time(odd)
    run = seqs.decode_run_times(64, np.arange(64 * 3000, 64 * 3000 + 640, 64), 64)
    assert np.asarray(run) == pytest.approx(np.asarray(
        even.decode_run_times(64, np.arange(64 * 3000, 64 * 3000 + 640, 64), 64)))


MOE = ["model=qwen3_30b_a3b", "pools=moe_ep", "workload.num_requests=60"]


@pytest.mark.parametrize(("overrides", "message"), [
    (["moe.redundant_experts=32"], "moe.redundant_experts cannot act with moe.placement=contiguous: "
     "replicas are placed by EPLB; set moe.placement=eplb"),
    (["moe.rank_context_cv=1"], "moe.rank_context_cv cannot act with moe.dp_balance=even; set "
     "moe.dp_balance=sequences"),
    (["moe.all_to_all=nccl"], "moe.all_to_all: expected one of deepep_high_throughput, "
     "deepep_low_latency, allgather_reducescatter, got 'nccl'"),
    (["moe.all_to_all=deepep_low_latency"], "moe.all_to_all=deepep_low_latency cannot act: it "
     "needs an MoE pool with expert_parallel > 1 (e.g. model=qwen3_30b_a3b pools=moe_ep)"),
    (["moe.placement=eplb", "moe.redundant_experts=8"], "moe.placement=eplb cannot act: it needs "
     "an MoE pool with expert_parallel > 1 (e.g. model=qwen3_30b_a3b pools=moe_ep)"),
    (["moe.dp_balance=sequences", "model=mixtral_8x7b"], "moe.dp_balance=sequences cannot act: it "
     "needs an MoE pool with data_parallel_attention > 1 (e.g. model=qwen3_30b_a3b pools=moe_ep)"),
])
def test_bad_moe_values_are_refused(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        simkv.simulate(simkv.compose(["cluster.replicas=1", "output.plot=false",
                                      "output.progress=false", *overrides]))
    assert str(err.value) == message


def test_slots_that_do_not_divide_are_refused_naming_the_pool() -> None:
    cfg = simkv.compose([*MOE, "moe.placement=eplb", "moe.redundant_experts=3",
                         "output.plot=false", "output.progress=false"])
    with pytest.raises(ValueError, match=r"pools.moe: expert_parallel \(2\) must divide the "
                                         r"model's 128 experts \+ moe.redundant_experts \(3\)"):
        simkv.simulate(cfg)


def test_moe_options_run_end_to_end() -> None:
    base = simkv.simulate(simkv.compose([*MOE, "moe.routing=zipf", "moe.zipf_exponent=1.2",
                                         "output.plot=false", "output.progress=false"]))
    eplb = simkv.simulate(simkv.compose([*MOE, "moe.routing=zipf", "moe.zipf_exponent=1.2",
                                         "moe.placement=eplb", "moe.redundant_experts=2",
                                         "moe.all_to_all=deepep_low_latency",
                                         "moe.dp_balance=sequences", "moe.rank_context_cv=0.8",
                                         "output.plot=false", "output.progress=false"]))
    assert eplb.summary["requests"]["finished"] == base.summary["requests"]["finished"] == 60

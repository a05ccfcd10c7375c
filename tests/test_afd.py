"""Attention-FFN disaggregation (perf/afd.py): MegaScale-Infer's pipeline formula, memory,
layouts, refusals, and a run end to end."""

from __future__ import annotations

import pytest

import simkv
from simkv.config.bounds import ConfigError
from simkv.config.schema import EngineConfig, MoEConfig
from simkv.entities.hardware import load_profile
from simkv.perf.afd import AFDCost
from simkv.perf.roofline import CostModel
from simkv.policies.scheduler.interface import SchedulerOutput
from tests.test_expert_parallel import spec

QUIET = ["output.plot=false", "output.progress=false"]


def _afd(model: str = "mixtral_8x22b", tp: int = 2, ranks: int = 4, experts: int = 8,
         m: int = 3) -> AFDCost:
    return AFDCost(spec(model), load_profile("a100_80gb"), tp, EngineConfig(),
                   data_parallel=ranks, expert_gpus=experts, micro_batches=m, moe=MoEConfig(),
                   network_bandwidth=25e9, network_latency_s=5e-6)


def test_the_pipeline_is_megascale_infers_equation_five() -> None:
    c = _afd()
    layers = c.model.moe_layers
    # Conditions of Eqs. 1-3 hold (Tc < Tf, m Tf >= 2 (Tf + Tc)): Eq. 5 exactly.
    ta, te, tc = 1.0e-3, 0.9e-3, 0.3e-3
    assert c._pipeline(ta, te, tc, 3) == pytest.approx((ta + te + 2 * tc) + ta * (3 * layers - 1))
    # One micro-batch: nothing overlaps, every layer pays the whole round trip.
    assert c._pipeline(ta, te, tc, 1) == pytest.approx(layers * (ta + te + 2 * tc))
    # Links slower than compute: they set the pace.
    assert c._pipeline(ta, te, 2e-3, 4) == pytest.approx((ta + te + 4e-3) + 2e-3 * (4 * layers - 1))


def test_micro_batches_hide_the_round_trip_but_reread_the_experts() -> None:
    def times(batch: int) -> dict[int, float]:
        out = SchedulerOutput(num_decodes=batch, decode_context=(batch * 650,), num_sampled=batch)
        return {m: _afd(m=m).iteration_time(out) for m in (1, 2, 3, 4)}

    # A batch large enough that the experts' GEMMs are compute-bound (~340 tokens per expert
    # per micro-batch): overlapping the sides nearly halves the step, more changes little.
    big = times(4096)
    assert big[2] < 0.6 * big[1]
    assert big[4] == pytest.approx(big[2], rel=0.01)
    # A small batch: each micro-batch reads every expert's weights again (memory-bound), so
    # past two micro-batches splitting costs more than it hides (MegaScale-Infer caps m at 4:
    # "too many micro-batches degrade expert GEMM efficiency").
    small = times(512)
    assert small[3] > small[2]


def test_attention_gpus_hold_no_expert_and_get_the_kv() -> None:
    afd = _afd(tp=1, ranks=8, experts=8)
    colocated = CostModel(spec("mixtral_8x22b"), load_profile("a100_80gb"), 1, 1,
                          data_parallel=8, expert_parallel=8)
    m = spec("mixtral_8x22b")
    experts = m.expert_params_total * m.weight_bytes_per_param
    assert afd.weight_bytes_per_gpu() == pytest.approx(m.weight_bytes - experts)
    assert afd.expert_bytes_per_gpu() == pytest.approx(experts / 8)
    assert afd.weight_bytes_per_gpu() < colocated.weight_bytes_per_gpu() - experts / 8 * 0.99
    # Each expert split over 2 GPUs (16 expert GPUs for 8 experts): TP inside the expert.
    assert _afd(experts=16).expert_tp == 2
    with pytest.raises(ValueError, match=r"afd_expert_gpus \(3\) must divide"):
        _afd(experts=3)
    with pytest.raises(ValueError, match="each expert GPU would hold"):
        _afd(experts=1)
    with pytest.raises(ValueError, match="needs an MoE model"):
        _afd(model="llama3_8b")


AFD = ["model=qwen3_30b_a3b", "pools=afd", "workload=poisson", "workload.num_requests=300",
       "workload.rate=20", *QUIET]


def test_an_afd_instance_serves_every_request() -> None:
    res = simkv.simulate(simkv.compose(AFD))
    assert res.summary["requests"]["finished"] == 300
    pool = res.summary["cluster"]["pools"]["afd"]
    assert pool["layout"] == "TP1-DP4-AFD4"
    # 8 GPUs held for the whole run (4 attention + 4 expert).
    assert pool["gpu_hours"] == pytest.approx(8 * pool["state_seconds"]["serving"] / 3600)


@pytest.mark.parametrize(("overrides", "message"), [
    (["pools.afd.expert_parallel=4"], "pools.afd.afd_expert_gpus: the experts live on the expert "
     "GPUs; set pools.afd.expert_parallel=1 and pools.afd.pipeline_parallel=1"),
    (["pools.afd.afd_expert_gpus=0", "pools.afd.afd_micro_batches=4"],
     "pools.afd.afd_micro_batches cannot act with pools.afd.afd_expert_gpus=0"),
    (["pools.afd.afd_micro_batches=0"],
     "pools.afd.afd_micro_batches: expected a finite number >= 1, got 0"),
])
def test_bad_afd_values_are_refused(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        simkv.simulate(simkv.compose([*AFD, *overrides]))
    assert str(err.value) == message


def test_a_dense_model_is_refused_naming_the_pool() -> None:
    with pytest.raises(ValueError, match="pools.afd: afd_expert_gpus needs an MoE model"):
        simkv.simulate(simkv.compose([*AFD, "model=llama3_8b"]))

"""Pipeline parallelism with micro-batches (perf/pipeline.py): the closed forms against the
event recurrence, one micro-batch equal to the back-to-back stages, bubbles, bad values."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import simkv
from simkv.config.bounds import ConfigError
from simkv.config.parallel import PipelineConfig
from simkv.engine import pool as pool_module
from simkv.entities.hardware import load_profile
from simkv.perf.pipeline import (
    PipelinedCost,
    flow_shop_ends,
    gpipe_bubble,
    pipelined,
    steady_period,
)
from simkv.perf.roofline import CostModel
from simkv.policies.scheduler.interface import SchedulerOutput
from tests.test_expert_parallel import spec

BASE = ["cluster.replicas=1", "output.plot=false", "output.progress=false", "workload=poisson",
        "workload.num_requests=150", "workload.rate=6", "model=llama3_70b",
        "cluster.pipeline_parallel=4"]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.05, 3.0), min_size=2, max_size=6), st.integers(1, 8))
def test_closed_forms_equal_the_event_recurrence(stages: list[float], m: int) -> None:
    fill = sum(stages) + (m - 1) * max(stages)
    # Per iteration (GPipe): fill and drain every iteration.
    ends = flow_shop_ends(stages, m, 4, continuous=False)
    assert ends == pytest.approx([fill * (k + 1) for k in range(4)])
    # Continuous: after the first fill, one period per iteration, from the second on.
    ends = flow_shop_ends(stages, m, 6, continuous=True)
    assert ends == pytest.approx([fill + k * steady_period(stages, m) for k in range(6)])


def _cost() -> CostModel:
    return CostModel(spec("llama3_70b"), load_profile("h100_sxm_80gb"), 1, 4)


def _outs() -> list[SchedulerOutput]:
    return [
        SchedulerOutput(num_decodes=12, decode_context=(12 * 900,), num_sampled=12),
        SchedulerOutput(prefill_tokens=700, prefill_attn_pairs=700 * 701 / 2, prefill_kv_tokens=700,
                        prefills=[(None, 700)], num_decodes=5, decode_context=(4000,), num_sampled=6),  # type: ignore[list-item]
        SchedulerOutput(num_iterations=40, num_decodes=7,
                        decode_context=np.arange(7000, 7040) * 1.0, num_sampled=7),
        SchedulerOutput(num_iterations=5, prefill_tokens=64, prefill_attn_pairs=64 * 65 / 2,
                        prefill_kv_tokens=64, prefills=[(None, 64)], num_decodes=3,  # type: ignore[list-item]
                        decode_context=(300,), num_sampled=4, tail_decodes=4,
                        tail_context=np.arange(400, 404) * 1.0),
    ]


@pytest.mark.parametrize("schedule", ["continuous", "per_iteration"])
def test_one_micro_batch_is_the_back_to_back_stages(schedule: str) -> None:
    inner = _cost()
    wrapped = PipelinedCost(inner, PipelineConfig(micro_batches=1, schedule=schedule))
    for out in _outs():
        plain = np.atleast_1d(inner.run_times(out))
        piped = np.atleast_1d(wrapped.run_times(out))
        assert piped == pytest.approx(plain, rel=1e-12)
    # And the run path does not wrap at all: the default is the plain cost model, untouched.
    assert pipelined(inner, PipelineConfig()) is inner


@pytest.mark.slow  # among the quick subset's slowest (CONTRIBUTING.md)
def test_one_micro_batch_run_equals_todays_run(monkeypatch) -> None:
    plain = simkv.simulate(simkv.compose(BASE)).requests
    # Force the wrapper on with one micro-batch: every request's times equal today's.
    monkeypatch.setattr(pool_module, "pipelined",
                        lambda cost, cfg: PipelinedCost(cost, PipelineConfig(micro_batches=1)))
    forced = simkv.simulate(simkv.compose(BASE)).requests
    for col in ("first_token_s", "completion_s"):
        assert forced[col].to_numpy() == pytest.approx(plain[col].to_numpy(), rel=1e-9)


def test_equal_stages_give_gpipes_bubble() -> None:
    # A cost whose micro-batch stage times are equal and scale with the tokens (no head, no
    # hop): the per-iteration bubble is GPipe's (p - 1)/(m + p - 1); continuous has none
    # once m >= p, and 1 - m/p below.
    class Linear:
        pp, dp = 4, 1
        model = spec("llama3_70b")
        hw = load_profile("h100_sxm_80gb")

        def iteration_time(self, out: SchedulerOutput) -> float:
            return 1e-3 * (out.prefill_tokens + out.num_decodes)

        def sample_s(self, sampled: int) -> float:
            return 0.0

    out = SchedulerOutput(num_decodes=64, decode_context=(64000,), num_sampled=64)
    for m in (1, 2, 4, 8):
        per = PipelinedCost(Linear(), PipelineConfig(micro_batches=m, schedule="per_iteration"))
        per.hop_s = lambda tokens: 0.0  # type: ignore[method-assign]
        assert per.bubble_fraction(out) == pytest.approx(gpipe_bubble(4, m))
        cont = PipelinedCost(Linear(), PipelineConfig(micro_batches=m))
        cont.hop_s = lambda tokens: 0.0  # type: ignore[method-assign]
        assert cont.bubble_fraction(out) == pytest.approx(max(0.0, 1 - m / 4))


def test_micro_batches_trade_bubbles_for_weight_reads() -> None:
    inner = _cost()
    decode = SchedulerOutput(num_decodes=64, decode_context=(64 * 2000,), num_sampled=64)
    cost = {m: PipelinedCost(inner, PipelineConfig(micro_batches=m)) for m in (1, 2, 3, 4, 8, 16)}
    t = {m: c.run_times(decode) for m, c in cost.items()}
    bubble = {m: c.bubble_fraction(decode) for m, c in cost.items()}
    # Below m = pp the bubble shrinks faster than the re-read weights cost ...
    assert t[3] < t[2] < t[1]
    assert bubble[1] == pytest.approx(0.75)
    assert bubble[3] < bubble[2] < bubble[1]
    # ... from m = pp on the stages never wait for each other (only the last stage's LM head
    # and host time leave the others idle) and each extra micro-batch re-reads the weights.
    assert bubble[16] == pytest.approx(bubble[4], abs=0.01)
    assert bubble[8] == pytest.approx(bubble[4], abs=0.01)
    assert t[16] > t[8] > t[4]
    # Uneven stages: the slowest stage sets the pace.
    skew = PipelinedCost(inner, PipelineConfig(micro_batches=4, layer_partition=[26, 18, 18, 18]))
    assert skew.run_times(decode) > t[4]


def test_micro_batched_run_serves_every_request() -> None:
    res = simkv.simulate(simkv.compose([*BASE, "pipeline.micro_batches=4"]))
    plain = simkv.simulate(simkv.compose(BASE))
    assert res.summary["requests"]["finished"] == 150
    # Four micro-batches keep the four stages busy: decode is faster than back to back.
    assert res.summary["tpot_s"]["p50"] < 0.7 * plain.summary["tpot_s"]["p50"]


@pytest.mark.parametrize(("overrides", "message"), [
    (["pipeline.micro_batches=4"], "pipeline.micro_batches=4 cannot act: every pool has "
     "pipeline_parallel=1 (set cluster.pipeline_parallel or pools.<name>.pipeline_parallel > 1)"),
    (["pipeline.micro_batches=0"], "pipeline.micro_batches: expected a finite number >= 1, got 0"),
    (["pipeline.schedule=per_iteration"], "pipeline.schedule=per_iteration cannot act with "
     "pipeline.micro_batches=1 (the stages run back to back)"),
    (["pipeline.schedule=gpipe"], "pipeline.schedule: expected one of continuous, per_iteration, got 'gpipe'"),
    (["cluster.pipeline_parallel=4", "pipeline.layer_partition=[8,8,8,8]"],
     "pipeline.layer_partition cannot act with pipeline.micro_batches=1: stages run back to back, "
     "so how the layers split does not change an iteration's time"),
    (["cluster.pipeline_parallel=4", "pipeline.micro_batches=2", "pipeline.layer_partition=[8,8,16]"],
     "pipeline.layer_partition: expected 4 stages (pipeline_parallel), got 3"),
    (["cluster.pipeline_parallel=2", "pipeline.micro_batches=2", "pipeline.layer_partition=[10,10]"],
     "pipeline.layer_partition: the stages' layers must sum to model.num_layers (32), got 20"),
    (["cluster.pipeline_parallel=2", "pipeline.micro_batches=2", "kv.allocator.kind=vattention",
      "kv.prefix_caching=false"], "pipeline.micro_batches > 1 prices plain iterations and cannot "
     "be combined with kv.allocator.kind=vattention"),
])
def test_bad_pipeline_values_are_refused(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        simkv.simulate(simkv.compose(["cluster.replicas=1", "output.plot=false",
                                      "output.progress=false", *overrides]))
    assert str(err.value) == message

"""KV policies and the model kinds whose steps are not one-token decodes (docs/KV_METHODS.md).

What must hold: a budget of 100% is ``full`` exactly; budgets are never exceeded; blocks and
the attention's bytes follow the budget; a diffusion LLM with blocks of one token and one step
per block costs exactly an autoregressive decode; a visual autoregressive model's KV is the
sum of its token maps; and the methods' own costs move their figures the right way.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import simkv
from simkv.config.bounds import ConfigError
from simkv.engine.steps import ShapedDecodeBatch
from simkv.entities.hardware import load_profile
from simkv.entities.model import ModelSpec
from simkv.entities.request import Request
from simkv.kv.block_pool import BlockPool, blocks_for
from simkv.perf.roofline import CostModel
from simkv.policies.kv_policy import H2O, FullKV, H2OConfig, ScaleKV, ScaleKVConfig
from simkv.policies.scheduler import VLLMScheduler, VLLMSchedulerConfig
from tests.conftest import small
from tests.helpers import Checker

NO_PREFIX = "kv.prefix_caching=false"
# A pool small enough that sequences are preempted and runs stop where it runs dry.
TIGHT = ["kv.num_gpu_blocks_override=300", "workload.prompt_max=2048", "workload.output_max=512"]


def _requests(overrides: list[str], tmp_path, name: str, observer=None) -> pd.DataFrame:
    cfg = small(["workload.num_requests=150", "workload.rate=30", NO_PREFIX, *overrides])
    res = simkv.simulate(cfg, tmp_path / name, observer=observer)
    return res.requests.sort_values("request_id").reset_index(drop=True)


@pytest.mark.parametrize("policy", [
    ["kv_policy=h2o", "kv_policy.budget_fraction=1.0"],
    ["kv_policy=sentencekv", "kv_policy.budget_tokens=0"],
    ["kv_policy=epicache", "kv_policy.kv_budget=0"],
])
@pytest.mark.parametrize("pressure", [[], TIGHT], ids=["roomy", "tight"])
def test_budget_of_100_percent_is_full(tmp_path, policy: list[str], pressure: list[str]) -> None:
    full = _requests(pressure, tmp_path, "full")
    same = _requests([*policy, *pressure], tmp_path, "policy")
    if pressure:
        assert full["preemptions"].sum() > 0, "the tight case must exercise preemption"
    pd.testing.assert_frame_equal(full, same)


def test_scalekv_at_100_percent_is_full_cache(tmp_path) -> None:
    var = ["model=infinity_8b", "workload.prompt_median=1", "workload.prompt_sigma=0",
           "workload.output_median=10521", "workload.output_sigma=0", "workload.output_max=10521",
           "workload.num_requests=12", "workload.rate=1"]
    full = _requests(var, tmp_path, "full")
    same = _requests([*var, "kv_policy=scalekv", "kv_policy.budget_fraction=1.0"], tmp_path, "s")
    pd.testing.assert_frame_equal(full, same)


class BudgetChecker(Checker):
    """After every run: invariants, and no decoding sequence above the policy's budget."""

    def __init__(self, bound) -> None:
        super().__init__()
        self.bound = bound
        self.seen = 0

    def __call__(self, replica) -> None:
        super().__call__(replica)
        sched = replica.scheduler
        for req in list(sched.decode.members.values()):
            sched.decode.materialise(req)
            context = req.prompt_tokens + req.generated - 1
            assert req.computed <= self.bound(context), (req.id, req.computed, context)
            self.seen += 1
        for req in sched.prefilling.values():
            assert req.blocks + req.shared <= blocks_for(self.bound(req.computed) + 8192, 16)


@pytest.mark.parametrize(("policy", "bound"), [
    (["kv_policy=h2o", "kv_policy.budget_fraction=0.2"], lambda c: math.ceil(0.2 * c)),
    (["kv_policy=h2o", "kv_policy.budget_fraction=0.5", "kv_policy.budget_tokens=300"],
     lambda c: min(300, math.ceil(0.5 * c))),
    (["kv_policy=epicache", "kv_policy.kv_budget=256"], lambda c: min(c, 256)),
    # Selected tokens plus Llama-3.1-8B's sentence vectors (2 tokens' worth per 25 tokens).
    (["kv_policy=sentencekv", "kv_policy.budget_tokens=300"],
     lambda c: min(c, 300 + 2 * math.ceil(c / 25))),
])
def test_budgets_are_never_exceeded(tmp_path, policy: list[str], bound) -> None:
    check = BudgetChecker(bound)
    reqs = _requests([*policy, *TIGHT], tmp_path, "run", observer=check)
    assert (reqs["status"] == "finished").all()
    assert check.seen > 100


def _scheduler(policy, model: ModelSpec, blocks: int = 100_000, bs: int = 16) -> VLLMScheduler:
    cost = CostModel(model, load_profile("h100_sxm_80gb"))
    policy.check_model(model)
    policy.bind(cost)
    return VLLMScheduler(VLLMSchedulerConfig(), pool=BlockPool(blocks, bs), max_fast_forward=4096,
                         kv_policy=policy, model=model), cost


def test_blocks_and_bytes_follow_the_budget() -> None:
    """A sequence keeps blocks for its budget once its prefill is done, and its decode run's
    attention reads (and is priced on) exactly the kept tokens."""
    model = ModelSpec()
    sched, cost = _scheduler(H2O(H2OConfig(budget_fraction=0.25, score_bytes=0.0)), model)
    sched.max_fast_forward = 1  # the prefill alone first (no decode run planned with it)
    req = Request(0, 0.0, 1000, 201)
    sched.add_request(req)
    out = sched.schedule(0.0)
    assert out is not None
    assert out.num_iterations == 1
    assert req.blocks == blocks_for(1000, 16)  # the prefill holds the whole prompt
    assert not sched.update(out, 1, [1.0])
    sched.max_fast_forward = 4096
    # After the prefill: 250 of 1000 tokens, so 16 blocks instead of 63.
    assert sched.pool.used == blocks_for(250, 16) == sched.decode.held_blocks()
    out = sched.schedule(1.0)
    assert out is not None
    assert out.num_iterations == 200
    kept = [math.ceil(0.25 * (1000 + i)) for i in range(1, 201)]
    np.testing.assert_array_equal(out.decode_context, kept)
    full_cost = CostModel(model, load_profile("h100_sxm_80gb"))
    np.testing.assert_array_equal(cost.run_times(out), full_cost.decode_run_times(1, kept, 1))
    sched.update(out, 200, list(np.arange(2, 202.0)))
    assert sched.pool.used == 0
    assert req.finish == 201.0


def test_diffusion_with_one_token_blocks_and_one_step_is_autoregressive_decode(tmp_path) -> None:
    ar = _requests(["model=llama3_8b", *TIGHT], tmp_path, "ar")
    diffusion = _requests(["model=llama3_8b", "model.kind=diffusion", "model.diffusion_block=1",
                           "model.diffusion_steps=1", "model.diffusion_canvas=false",
                           "kv_policy=elastic_cache", "kv_policy.refresh_fraction=0", *TIGHT],
                          tmp_path, "diffusion")
    assert ar["preemptions"].sum() > 0
    pd.testing.assert_frame_equal(ar, diffusion)


def _var_model(scales: list[int], streams: int) -> ModelSpec:
    return ModelSpec(name="var_toy", kind="var", var_scales=scales, guidance_streams=streams,
                     vocab_size=64)


@pytest.mark.parametrize("streams", [1, 2])
def test_var_kv_is_the_sum_of_its_scales(streams: int) -> None:
    model = _var_model([1, 2, 4, 8], streams)
    sched, cost = _scheduler(FullKV(), model, bs=4)
    req = Request(0, 0.0, 1, model.image_tokens)  # the condition's slot is scale 1's token
    assert sched.admission_error(req) == ""
    sched.add_request(req)
    out = sched.schedule(0.0)
    sched.update(out, 1, [1.0])
    batch = sched.decode
    assert isinstance(batch, ShapedDecodeBatch)
    out = sched.schedule(1.0)
    assert out.num_iterations == 3  # scales 2x2, 4x4, 8x8
    np.testing.assert_array_equal(out.steps.decode.queries, np.array([4, 16, 64]) * streams)
    # Step k attends to the condition, the maps before it and its own.
    np.testing.assert_array_equal(out.decode_context, np.array([1 + 4, 5 + 16, 21 + 64]) * streams)
    sched.update(out, 2, [2.0, 3.0])
    batch.materialise(req)
    assert req.computed == (1 + 4 + 16) * streams
    assert sched.pool.used == blocks_for((1 + 4 + 16) * streams, 4)
    t = cost.run_times(out)
    assert t[2] > t[1] > t[0] > 0  # bigger maps, longer steps
    # The sum of the scales: 1 + 4 + 16 + 64 tokens per stream once the image is done.
    prof = batch.profile(Request(1, 0.0, 1, model.image_tokens, computed=1, generated=1))
    assert prof.kv[-1] == sum(h * h for h in model.var_scales) * streams


def test_var_request_of_another_size_is_rejected() -> None:
    sched, _ = _scheduler(FullKV(), _var_model([1, 2, 4], 1))
    assert sched.admission_error(Request(0, 0.0, 1, 20)) == "var_output"


def test_scalekv_keeps_its_budget_of_earlier_scales() -> None:
    model = _var_model([1, 2, 4, 8, 16], 1)
    policy = ScaleKV(ScaleKVConfig(budget_fraction=0.25, first_scale=3))
    sched, _ = _scheduler(policy, model)
    prof = sched.decode.profile(Request(0, 0.0, 1, model.image_tokens, computed=1, generated=1))
    # Scales 2x2 and 4x4 keep everything; 8x8 keeps a quarter of its 21-token prefix, 16x16
    # a quarter of 85 (whole tokens, rounded up).
    np.testing.assert_array_equal(prof.rows[1], [5, 21, math.ceil(0.25 * 21) + 64,
                                                 math.ceil(0.25 * 85) + 256])
    paper = ScaleKV(ScaleKVConfig(first_scale=0, drafter_layers=1, drafter_tokens=[10, 10, 10, 10, 10],
                                  refiner_tokens=[2, 2, 2, 2, 2]))
    paper.check_model(ModelSpec(name="m", num_layers=4, kind="var", var_scales=[1, 2]))
    assert paper.var_prefix(100, 2) == (10 + 3 * 2) / 4


@pytest.mark.slow  # among the quick subset's slowest (CONTRIBUTING.md)
def test_diffusion_cache_reuse_is_cheaper_and_refresh_costs(tmp_path) -> None:
    diff = ["model=llada_8b", "workload.prompt_median=200", "workload.prompt_sigma=0",
            "workload.output_median=128", "workload.output_sigma=0", "workload.num_requests=20",
            "workload.rate=1000"]
    e2e = {}
    for name, extra in {"none": [], "cached": ["kv_policy=elastic_cache", "kv_policy.refresh_fraction=0"],
                        "refresh": ["kv_policy=elastic_cache", "kv_policy.refresh_fraction=0.5"]}.items():
        e2e[name] = _requests([*diff, *extra], tmp_path, name)["e2e_s"].max()
    assert e2e["cached"] < e2e["refresh"] < e2e["none"]
    assert e2e["none"] / e2e["cached"] > 3


@pytest.mark.slow
def test_sentencekv_fetches_cost_and_keep_latency_flat(tmp_path) -> None:
    """Beyond its budget SentenceKV's step reads the same tokens whatever the context, so its
    time per output token stays nearly flat while full attention's grows; fetching more of the
    selection each step costs more."""
    tpot = {}
    for prompt in (8_000, 32_000):
        # Four sequences decoded together (the first one's TPOT also waits for the other
        # three prefills: medians).
        base = [f"workload.prompt_median={prompt}", "workload.prompt_sigma=0",
                "workload.prompt_max=40000", "workload.output_median=64", "workload.output_sigma=0",
                "workload.num_requests=4", "workload.rate=1000", "scheduler.chunked_prefill=false",
                "scheduler.max_num_batched_tokens=131072"]
        tpot["full", prompt] = _requests(base, tmp_path, f"f{prompt}")["tpot_s"].median()
        for frac in (0.04, 1.0):
            tpot[frac, prompt] = _requests(
                [*base, "kv_policy=sentencekv", f"kv_policy.fetch_fraction={frac}"], tmp_path,
                f"s{prompt}{frac}")["tpot_s"].median()
    assert tpot["full", 32_000] / tpot["full", 8_000] > 1.3
    assert tpot[0.04, 32_000] / tpot[0.04, 8_000] < 1.1
    assert tpot[1.0, 32_000] > tpot[0.04, 32_000]


def test_dram_stream_is_slower_than_hbm(tmp_path) -> None:
    base = ["workload.num_requests=40", "workload.rate=1000", "model=opt_6_7b",
            "workload.prompt_max=1024", "workload.output_max=512"]
    hbm = _requests(base, tmp_path, "hbm")
    dram = _requests([*base, "offload=dram_stream"], tmp_path, "dram")
    assert dram["tpot_s"].median() > 2 * hbm["tpot_s"].median()


@pytest.mark.parametrize(("overrides", "message"), [
    (["kv_policy=h2o", "kv_policy.budget_fraction=0"], "kv_policy.budget_fraction: expected"),
    (["kv_policy=h2o", "kv_policy.budget_fraction=1.5"], "kv_policy.budget_fraction: expected"),
    (["kv_policy=elastic_cache"], "elastic_cache applies to diffusion models"),
    (["kv_policy=h2o", "model=llada_8b"], "h2o applies to autoregressive models"),
    (["kv_policy=h2o", "kv.prefix_caching=true"], "set kv.prefix_caching=false"),
    (["kv_policy=h2o", "scheduler=static"], "scheduler=static runs full KV"),
])
def test_bad_kv_policy_configs_name_the_problem(tmp_path, overrides: list[str], message: str) -> None:
    prefix = [] if "kv.prefix_caching=true" in overrides else [NO_PREFIX]
    with pytest.raises((ConfigError, ValueError), match=message):
        simkv.simulate(small(["workload.num_requests=5", *prefix, *overrides]), tmp_path)


@pytest.mark.parametrize("overrides", [
    ["kv_policy=h2o", *TIGHT],
    ["kv_policy=sentencekv", "kv_policy.budget_tokens=200", *TIGHT],
    ["kv_policy=epicache", "kv_policy.kv_budget=200", "scheduler.max_num_batched_tokens=512",
     *TIGHT],
    ["model=llada_8b", "kv_policy=elastic_cache", "workload.output_max=300", "workload.prompt_max=2048",
     "kv.num_gpu_blocks_override=2000"],
    ["model=infinity_8b", "kv_policy=scalekv", "workload.prompt_median=1",
     "workload.prompt_sigma=0", "workload.output_median=10521", "workload.output_sigma=0",
     "workload.output_max=10521", "workload.rate=2", "kv.num_gpu_blocks_override=4000"],
], ids=["h2o", "sentencekv", "epicache", "elastic_cache", "scalekv"])
def test_shaped_fast_forward_equals_step_by_step(tmp_path, overrides: list[str]) -> None:
    check = Checker()
    fast = _requests([*overrides, "engine.max_fast_forward=4096"], tmp_path, "fast", check)
    slow = _requests([*overrides, "engine.max_fast_forward=1"], tmp_path, "slow")
    assert (fast["status"] == "finished").all()
    assert check.runs > 0
    times = ["first_scheduled_s", "first_token_s", "completion_s", "ttft_s", "tpot_s", "e2e_s"]
    pd.testing.assert_frame_equal(fast.drop(columns=times), slow.drop(columns=times))
    for col in times:
        np.testing.assert_allclose(fast[col], slow[col], rtol=1e-9, atol=1e-12)
    engine = {n: simkv.load_results(tmp_path / n).summary["engine"] for n in ("fast", "slow")}
    assert engine["fast"]["iterations"] == engine["slow"]["iterations"]
    assert engine["fast"]["runs"] < engine["slow"]["runs"]


def test_batch_arriving_together_is_admitted_as_step_by_step(tmp_path) -> None:
    """Eight requests at once, prompts that fill the token budget exactly: the prefill
    iteration must not plan a decode tail while the queue waits only for budget (the next
    iteration admits more), or the fast-forward engine serialises the batch."""
    from tests.helpers import ListWorkloadConfig

    def go(ff: int) -> pd.DataFrame:
        cfg = small(["scheduler.max_num_batched_tokens=2048", f"engine.max_fast_forward={ff}"])
        cfg.workload = ListWorkloadConfig([0.0] * 8, [1024] * 8, [200] * 8)
        return simkv.simulate(cfg, tmp_path / str(ff)).requests.sort_values("request_id")

    fast, slow = go(4096), go(1)
    np.testing.assert_allclose(fast["completion_s"], slow["completion_s"], rtol=1e-9)
    assert fast["first_scheduled_s"].max() < fast["completion_s"].min()  # all admitted early


@pytest.mark.parametrize("policy", [["kv_policy=sentencekv", "kv_policy.budget_tokens=1024"],
                                    ["kv_policy=leoam", "hardware=rtx4090_24gb", "memory.node=pc_nvme"],
                                    ["kv_policy=elastic_cache", "model=llada_8b"]])
def test_a_one_token_output_under_a_kv_policy_runs(tmp_path, policy: list[str]) -> None:
    """docs/KV_METHODS.md's lines on the default workload ended as an internal error
    (IndexError in steps.autoregressive and steps.diffusion): a request with one output token
    has no decode step left to charge the policy's join cost or the canvas to."""
    cfg = small(["workload=test_list", "workload.arrival_s=[0.0,0.1]", "workload.prompt_tokens=[3000,200]",
                 "workload.output_tokens=[1,5]", "kv.prefix_caching=false", *policy])
    result = simkv.simulate(cfg, tmp_path / "run")
    assert result.summary["requests"]["finished"] == 2

"""Priority classes, SJF on predicted lengths, preemption by priority, load shedding, and the
Orca / LightLLM / FasterTransformer schedulers (docs/SCHEDULING.md)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import kendalltau

import simkv
from simkv.config.bounds import ConfigError
from simkv.entities.request import Request
from simkv.policies.predictor import NoisyOraclePredictor, NoisyOraclePredictorConfig
from simkv.policies.scheduler.priority import RankedQueue
from tests.conftest import small

OVERLOAD = ["workload.num_requests=400", "workload.rate=60", "kv.num_gpu_blocks_override=700",
            "priority.high_fraction=0.2"]


def run(overrides: list[str], tmp_path, name: str = "run", check: bool = True) -> pd.DataFrame:
    def observe(replica) -> None:
        replica.scheduler.check_invariants()

    res = simkv.simulate(small(overrides), tmp_path / name, observer=observe if check else None)
    return res.requests.sort_values("request_id").reset_index(drop=True)


def req(i: int, prio: int = 0, out: int = 10, arrival: float = 0.0) -> Request:
    return Request(i, arrival, 10, out, priority=prio)


# --- the queue ----------------------------------------------------------------------------
def test_ranked_queue_orders_by_class_then_started_then_prediction_then_arrival() -> None:
    q = RankedQueue(lambda r: float(r.output_tokens), max_wait=None)
    a, b, c, d = req(0, 0, 50), req(1, 1, 90), req(2, 0, 5, 0.1), req(3, 1, 20, 0.2)
    e = req(4, 0, 999, 0.3)
    e.preemptions = 1
    for r in (a, b, c, d):
        q.append(r)
    q.appendleft(e)
    assert [r.id for r in q] == [3, 1, 4, 2, 0]
    assert [q.popleft().id for _ in range(5)] == [3, 1, 4, 2, 0]
    assert not q


def test_ranked_queue_serves_the_oldest_first_once_it_waited_max_wait() -> None:
    q = RankedQueue(lambda r: 0.0, max_wait=5.0)
    old, new = req(0, 0, arrival=0.0), req(1, 2, arrival=4.0)
    q.append(old)
    q.append(new)
    q.now = 4.9
    assert q[0] is new
    q.now = 5.0
    assert q[0] is old
    assert q.popleft() is old
    assert q.popleft() is new


# --- predictors ---------------------------------------------------------------------------
def test_noisy_oracle_is_deterministic_per_request_and_ranks_as_documented() -> None:
    rng = np.random.default_rng(1)
    lengths = np.clip(np.rint(160 * np.exp(0.9 * rng.standard_normal(4000))), 1, 4096)
    reqs = [Request(i, 0.0, 10, int(n)) for i, n in enumerate(lengths)]
    p = NoisyOraclePredictor(NoisyOraclePredictorConfig(), seed=3)
    first = [p.predict(r) for r in reqs]
    again = NoisyOraclePredictor(NoisyOraclePredictorConfig(), seed=3)
    assert [again.predict(r) for r in reversed(reqs)][::-1] == first
    tau = kendalltau(lengths, first).statistic
    assert 0.52 < tau < 0.60  # docs/SCHEDULING.md: the default sigma 0.75 gives tau ~0.56
    exact = NoisyOraclePredictor(NoisyOraclePredictorConfig(sigma=0.0))
    assert [exact.predict(r) for r in reqs[:50]] == [int(n) for n in lengths[:50]]


# --- priority -----------------------------------------------------------------------------
def test_without_classes_or_pressure_priority_and_sjf_equal_fcfs(tmp_path) -> None:
    base = ["workload.num_requests=150", "workload.rate=10"]
    ref = run(base, tmp_path, "vllm")
    for name in ("priority", "sjf"):
        got = run([*base, f"scheduler={name}"], tmp_path, name)
        pd.testing.assert_frame_equal(got, ref)


def test_high_class_gets_lower_tails_under_overload_and_every_request_finishes(tmp_path) -> None:
    fcfs = run([*OVERLOAD, "scheduler=vllm"], tmp_path, "fcfs")
    prio = run([*OVERLOAD, "scheduler=priority"], tmp_path, "prio")
    assert (prio["status"] == "finished").all()
    assert len(prio) == 400
    hi, lo = prio[prio["priority"] == 1], prio[prio["priority"] == 0]
    assert 40 < len(hi) < 120
    assert hi["ttft_s"].quantile(0.99) < 0.5 * fcfs.loc[hi.index, "ttft_s"].quantile(0.99)
    assert hi["ttft_s"].mean() < lo["ttft_s"].mean()
    assert prio["preemptions"].sum() > 0


def test_preemption_takes_lower_classes_first(tmp_path, monkeypatch) -> None:
    from simkv.policies.scheduler.priority import PriorityScheduler

    taken: list[tuple[int, int]] = []  # (victim's class, lowest class running before)
    inner = PriorityScheduler._victim

    def spy(self):  # type: ignore[no-untyped-def]
        low = min(r.priority for r in self.running.values())
        rid, victim = inner(self)
        taken.append((victim.priority, low))
        return rid, victim

    monkeypatch.setattr(PriorityScheduler, "_victim", spy)
    prio = run([*OVERLOAD, "scheduler=priority"], tmp_path)
    assert len(taken) == prio["preemptions"].sum() > 0
    assert all(v == low for v, low in taken)
    assert any(v == 0 for v, _ in taken)


@pytest.mark.slow  # among the quick subset's slowest (CONTRIBUTING.md)
@pytest.mark.parametrize("extra", [
    ["workload.num_requests=200"],
    # A higher class waiting behind a prefill planned with its decode run makes room at the
    # prefill's end, as step by step (10 rows' preemptions differed at 400 requests).
    [],
    # Shedding reads the prompt tokens ahead and the prefill rate measured at a prefill
    # iteration's end: the same fast-forwarded as step by step.
    ["workload.num_requests=200", "scheduler.shed=slo", "scheduler.ttft_target_s=0.3"],
    ["scheduler.preempt=false", "scheduler.shed=slo", "workload.num_requests=300",
     "scheduler.ttft_target_s=0.02", "workload.rate=20", "kv.num_gpu_blocks_override=null"],
    # A waiting request that ages (max_wait_s) within a fast-forwarded run becomes the head
    # at the next iteration's plan, as step by step (257 and 278 rows differed before).
    ["workload.num_requests=300", "scheduler.max_wait_s=5"],
    ["workload.num_requests=300", "scheduler.max_wait_s=3", "scheduler.preempt=false"],
])
def test_fast_forward_equals_step_by_step_with_classes(tmp_path, extra: list[str]) -> None:
    base = [*OVERLOAD, "scheduler=priority", *extra]
    a = run([*base, "engine.max_fast_forward=4096"], tmp_path, "fast")
    b = run([*base, "engine.max_fast_forward=1"], tmp_path, "slow")
    times = ["first_scheduled_s", "first_token_s", "completion_s", "ttft_s", "tpot_s", "e2e_s"]
    pd.testing.assert_frame_equal(a.drop(columns=times), b.drop(columns=times))
    for col in times:
        np.testing.assert_allclose(a[col], b[col], rtol=1e-9, atol=1e-12)


def test_strict_priority_says_it_may_starve_and_aging_bounds_the_wait(tmp_path) -> None:
    # Most requests are of the high class: under strict priority a low one waits until the
    # high ones drain; with aging it is served once it is among the oldest.
    mostly_high = [*OVERLOAD, "priority.high_fraction=0.8", "scheduler=priority"]
    aged = run([*mostly_high, "scheduler.max_wait_s=1"], tmp_path, "aged")
    strict = run([*mostly_high, "scheduler.max_wait_s=null"], tmp_path, "strict")
    lo_aged = aged[aged["priority"] == 0]["ttft_s"]
    lo_strict = strict[strict["priority"] == 0]["ttft_s"]
    assert lo_aged.mean() < 0.7 * lo_strict.mean()
    assert (aged["status"] == "finished").all()
    assert (strict["status"] == "finished").all()


@pytest.mark.slow  # over 1 s of the quick subset's CPU (CONTRIBUTING.md)
def test_sjf_on_the_oracle_beats_fcfs_and_on_constant_predictions_equals_it(tmp_path) -> None:
    base = ["workload.num_requests=300", "workload.rate=45", "workload.output_sigma=1.2",
            "scheduler.max_num_seqs=16"]
    fcfs = run(base, tmp_path, "fcfs")
    oracle = run([*base, "scheduler=sjf", "predictor=oracle"], tmp_path, "oracle")
    # One value for every request: the order is arrival order.
    flat = run([*base, "scheduler=sjf", "predictor=fixed"], tmp_path, "flat")
    assert oracle["e2e_s"].mean() < 0.8 * fcfs["e2e_s"].mean()
    pd.testing.assert_frame_equal(flat, fcfs)


@pytest.mark.slow  # over 1 s of the quick subset's CPU (CONTRIBUTING.md)
def test_slo_shedding_rejects_only_unprotected_classes(tmp_path) -> None:
    shed = run([*OVERLOAD, "scheduler=priority", "scheduler.shed=slo",
                "scheduler.ttft_target_s=0.5"], tmp_path, "shed")
    kept = run([*OVERLOAD, "scheduler=priority"], tmp_path, "kept")
    gone = shed[shed["reject_reason"] == "shed"]
    assert len(gone) > 0
    assert (gone["priority"] == 0).all()
    served = shed[shed["status"] == "finished"]
    assert served["ttft_s"].quantile(0.9) < kept["ttft_s"].quantile(0.9)
    queue = run([*OVERLOAD, "scheduler=priority", "scheduler.shed=queue",
                 "scheduler.shed_max_queue=4"], tmp_path, "queue")
    assert ((queue["reject_reason"] == "shed") <= (queue["priority"] == 0)).all()
    assert (queue["reject_reason"] == "shed").sum() > 0


@pytest.mark.parametrize(("overrides", "key"), [
    (["scheduler=priority", "scheduler.shed_max_queue=8"], "scheduler.shed_max_queue"),
    (["scheduler=priority", "scheduler.ttft_target_s=1"], "scheduler.ttft_target_s"),
    (["scheduler=priority", "scheduler.shed=queue", "scheduler.ttft_target_s=1"],
     "scheduler.ttft_target_s"),
    (["scheduler=priority", "scheduler.protect_priority=2"], "scheduler.protect_priority"),
    (["scheduler=priority", "scheduler.order=lifo"], "scheduler.order"),
    (["scheduler=orca", "scheduler.chunked_prefill=false"], "scheduler.chunked_prefill"),
    (["scheduler=lightllm", "scheduler.chunked_prefill=true"], "scheduler.chunked_prefill"),
    (["priority.high_fraction=1.5"], "priority.high_fraction"),
    (["predictor=oracle_noisy", "predictor.sigma=-1"], "predictor.sigma"),
])
def test_bad_or_idle_options_are_refused_naming_the_key(tmp_path, overrides, key) -> None:
    with pytest.raises(ConfigError) as exc:
        simkv.simulate(small(overrides), tmp_path)
    msg = str(exc.value)
    assert msg.startswith(key)
    assert "\n" not in msg


# --- Orca, LightLLM, FasterTransformer ------------------------------------------------------
@pytest.mark.slow  # over 1 s of the quick subset's CPU (CONTRIBUTING.md)
def test_orca_reserves_and_never_preempts(tmp_path) -> None:
    over = ["workload.num_requests=300", "workload.rate=60", "kv.num_gpu_blocks_override=2000",
            "scheduler.reserve_tokens=2560"]
    orca = run([*over, "scheduler=orca"], tmp_path, "orca")
    vllm = run(over[:-1], tmp_path, "vllm")
    assert orca["preemptions"].sum() == 0
    assert vllm["preemptions"].sum() > 0
    long = orca["prompt_tokens"] + orca["output_tokens"] - 1 > 2560
    assert (orca.loc[long, "reject_reason"] == "reservation").all()
    assert (orca.loc[~long, "status"] == "finished").all()


@pytest.mark.slow  # among the quick subset's slowest (CONTRIBUTING.md)
def test_lightllm_with_the_oracle_does_not_run_out_of_memory(tmp_path) -> None:
    over = ["workload.num_requests=200", "workload.rate=60", "kv.num_gpu_blocks_override=900",
            "workload.prompt_max=3000", "workload.output_max=1000"]
    light = run([*over, "scheduler=lightllm", "predictor=oracle"], tmp_path, "light")
    assert light["preemptions"].sum() == 0
    assert (light["status"] == "finished").all()
    guess = run([*over, "scheduler=lightllm", "predictor=fixed", "predictor.tokens=1"],
                tmp_path, "guess")
    assert guess["preemptions"].sum() > 0  # a prediction too short lets the pool run dry


def test_faster_transformer_batches_by_reservation(tmp_path) -> None:
    ft = run(["workload.num_requests=100", "workload.rate=40", "scheduler=faster_transformer",
              "kv.num_gpu_blocks_override=1024", "scheduler.reserve_tokens=4096"], tmp_path)
    done = ft[ft["status"] == "finished"]
    # 1024 blocks of 16 tokens hold four 4096-token reservations: batches of at most 4 start
    # together (same first_scheduled_s).
    assert done.groupby("first_scheduled_s").size().max() <= 4
    long = ft["prompt_tokens"] + ft["output_tokens"] - 1 > 4096
    assert (ft.loc[long, "reject_reason"] == "reservation").all()


def test_faster_transformer_refuses_what_no_batch_could_reserve(tmp_path) -> None:
    # One reservation (4096 tokens: 256 blocks) larger than the pool (64 blocks): no batch
    # could ever form, and the instance ran 2,000,000 empty iterations; now each request is
    # refused at arrival (kv_capacity), as scheduler=orca does.
    ft = run(["workload.num_requests=20", "scheduler=faster_transformer",
              "kv.num_gpu_blocks_override=64"], tmp_path)
    assert len(ft) == 20
    assert (ft["reject_reason"] == "kv_capacity").all()


def test_ranked_queue_lists_a_request_that_came_back_once() -> None:
    # A request popped and put back (a preemption) left its old heap entry behind: listed
    # twice, and a failed instance handed it back twice (KeyError).
    q = RankedQueue(lambda r: 0.0, max_wait=None)
    a, b = req(1, arrival=0.0), req(2, arrival=1.0)
    q.append(a)
    q.append(b)
    assert q.popleft() is a
    q.appendleft(a)
    assert [r.id for r in q] == [1, 2]
    assert q.popleft() is a
    assert q.popleft() is b
    assert not q

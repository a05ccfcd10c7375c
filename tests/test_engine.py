"""End-to-end behaviour of the engine: equivalence, queueing theory, rejections, loops."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

import simkv
from simkv.config.schema import SimConfig
from simkv.engine.capacity import DoesNotFitError
from simkv.policies.router import LeastOutstandingConfig, RoundRobinConfig
from simkv.policies.scheduler import StaticSchedulerConfig, VLLMSchedulerConfig
from simkv.workload import PoissonWorkloadConfig
from tests.conftest import small
from tests.helpers import ChatWorkloadConfig, ListWorkloadConfig

TIME_COLS = ["first_scheduled_s", "first_token_s", "completion_s"]


def run(cfg: SimConfig, tmp_path, name: str = "run") -> pd.DataFrame:
    return simkv.simulate(cfg, tmp_path / name).requests.sort_values("request_id").reset_index(drop=True)


@pytest.mark.parametrize(
    "overrides",
    [
        [],  # roomy KV: runs end at finishes and arrivals
        # A small pool: preemptions, and decode runs that stop where the pool runs dry.
        ["kv.num_gpu_blocks_override=400", "workload.prompt_max=2048", "workload.output_max=1024"],
        ["scheduler.chunked_prefill=false"],
        ["scheduler.max_num_seqs=8", "scheduler.max_num_batched_tokens=256"],
        ["scheduler=static", "scheduler.max_batch_size=8"],
        # A router that counts outstanding work sees a static batch's member done at its own
        # last token, not when the batch's run ends.
        ["scheduler=static", "scheduler.max_batch_size=8", "cluster.replicas=2",
         "router=least_outstanding", "workload.rate=60"],
        # Micro-batches through pipeline stages: a step's decode context is priced as the
        # largest micro-batch's share whether the step is planned alone or in a run.
        ["model=llama3_70b", "cluster.pipeline_parallel=4", "pipeline.micro_batches=4",
         "workload.rate=25"],
        ["cluster.replicas=3", "router=least_outstanding", "kv.num_gpu_blocks_override=500",
         "workload.prompt_max=2048", "workload.output_max=1024"],
        # A router that reads the prompt tokens pending prefill: a prompt's last chunk planned
        # with the decode run after it (committed at planning) and one planned alone (step by
        # step) must read the same.
        ["cluster.replicas=3", "router=slo_aware", "workload.rate=60"],
        # A router that reads the prefix caches: a prompt's KV enters its instance's cache
        # when its last chunk's iteration ends, whether a decode run is planned behind it or not.
        ["cluster.replicas=3", "router=prefix_affinity", "workload=near_duplicate",
         "workload.template_tokens=3000", "workload.suffix_median=300"],
        # Changes that take effect mid-run cut the run after the iteration in flight, as
        # step by step: an energy autoscaler's clock locks, an elastic resize's slowed cost.
        ["energy.enabled=true", "cluster.replicas=3", "cluster.min_replicas=1",
         "cluster.max_replicas=3", "autoscaler=energy", "autoscaler.interval_s=0.3",
         "autoscaler.window_s=1", "autoscaler.clocks=[1.0,0.9,0.8,0.7,0.6,0.55]"],
        ["model=llama3_70b", "cluster.tensor_parallel=2", "cluster.max_tensor_parallel=8",
         "workload.num_requests=400", "workload.rate=10", "autoscaler=elastic_tp", "autoscaler.metric=arrival_rate",
         "autoscaler.target=2", "autoscaler.scale_down_stabilization_s=10",
         "autoscaler.interval_s=2", "autoscaler.window_s=4"],
    ],
)
def test_fast_forward_equals_step_by_step(tmp_path, overrides: list[str]) -> None:
    base = ["workload.num_requests=300", "workload.rate=40", *overrides]
    fast = small([*base, "engine.max_fast_forward=4096"])
    slow = small([*base, "engine.max_fast_forward=1"])
    a, b = run(fast, tmp_path, "fast"), run(slow, tmp_path, "slow")
    assert (a["status"] == "finished").all()
    pd.testing.assert_frame_equal(a.drop(columns=[*TIME_COLS, "ttft_s", "tpot_s", "e2e_s"]),
                                  b.drop(columns=[*TIME_COLS, "ttft_s", "tpot_s", "e2e_s"]))
    for col in TIME_COLS:
        # Same iterations, summed in a different order: equal to rounding.
        np.testing.assert_allclose(a[col], b[col], rtol=1e-9, atol=1e-12)
    if "kv.num_gpu_blocks_override=400" in overrides:
        assert a["preemptions"].sum() > 0, "this case must exercise preemption"
    fast_runs = simkv.load_results(tmp_path / "fast").summary["engine"]
    slow_runs = simkv.load_results(tmp_path / "slow").summary["engine"]
    assert fast_runs["iterations"] == slow_runs["iterations"]
    assert slow_runs["runs"] == slow_runs["iterations"]
    if "scheduler=static" not in overrides:
        assert fast_runs["runs"] < slow_runs["runs"]


@pytest.mark.slow
def test_md1_queue_matches_pollaczek_khinchine(tmp_path) -> None:
    # One replica, one request at a time, every request 1 prompt + 1 output token: each is
    # one identical iteration, so the replica is an M/D/1 server.
    cfg = small(["workload.num_requests=50000", "workload.prompt_median=1",
                 "workload.prompt_sigma=0", "workload.output_median=1", "workload.output_sigma=0",
                 "scheduler.max_num_seqs=1", "scheduler.max_num_batched_tokens=1",
                 "workload.rate=1"])
    service = simkv.simulate(small(["workload.num_requests=1", "workload.prompt_median=1",
                                    "workload.prompt_sigma=0", "workload.output_median=1",
                                    "workload.output_sigma=0"]), tmp_path / "one").requests["e2e_s"][0]
    rho = 0.7
    cfg.workload.rate = rho / service
    df = simkv.simulate(cfg, tmp_path / "md1").requests
    np.testing.assert_allclose(df["e2e_s"] - df["ttft_s"], 0.0, atol=1e-12)
    np.testing.assert_allclose(df["first_token_s"] - df["first_scheduled_s"], service, rtol=1e-9)
    wait = (df["first_scheduled_s"] - df["arrival_s"]).mean()
    expected = rho * service / (2 * (1 - rho))  # Pollaczek-Khinchine, deterministic service
    assert wait == pytest.approx(expected, rel=0.03)


def test_requests_beyond_the_context_are_rejected_and_the_run_goes_on(tmp_path) -> None:
    wl = ListWorkloadConfig(arrival_s=[0.0, 0.1, 0.2, 0.3],
                            prompt_tokens=[100, 131_000, 100, 200_000],
                            output_tokens=[10, 2000, 10, 10])
    cfg = dataclasses.replace(small(), workload=wl)
    df = run(cfg, tmp_path)
    assert list(df["status"]) == ["finished", "rejected", "finished", "rejected"]
    assert list(df["reject_reason"]) == ["", "max_model_len", "", "max_model_len"]
    summary = simkv.load_results(tmp_path / "run").summary
    assert summary["requests"]["rejected_by_reason"] == {"max_model_len": 2}


def test_requests_larger_than_the_kv_pool_are_rejected(tmp_path) -> None:
    wl = ListWorkloadConfig(arrival_s=[0.0, 0.5], prompt_tokens=[100, 5000], output_tokens=[10, 10])
    cfg = dataclasses.replace(small(["kv.num_gpu_blocks_override=100"]), workload=wl)
    df = run(cfg, tmp_path)
    assert list(df["reject_reason"]) == ["", "kv_capacity"]


def test_model_that_does_not_fit_fails_before_the_run_with_numbers(tmp_path) -> None:
    cfg = small(["model=llama3_70b", "hardware=a100_80gb"])
    with pytest.raises(DoesNotFitError, match=r"131\.4 GiB of weights.*raise cluster.tensor_parallel"):
        simkv.simulate(cfg, tmp_path)
    assert (tmp_path / "config.json").exists()  # evidence of what was attempted


def test_closed_loop_turn_arrives_after_completion_plus_think_time(tmp_path) -> None:
    wl = ChatWorkloadConfig(sessions=3, turns=4, think_s=0.5)
    cfg = dataclasses.replace(small(), workload=wl)
    df = run(cfg, tmp_path)
    assert len(df) == 12
    assert (df["status"] == "finished").all()
    for _, turns in df.groupby("session"):
        turns = turns.sort_values("turn")
        assert list(turns["turn"]) == [0, 1, 2, 3]
        gaps = turns["arrival_s"].to_numpy()[1:] - turns["completion_s"].to_numpy()[:-1]
        np.testing.assert_allclose(gaps, 0.5, atol=1e-9)
        # Each turn carries the whole conversation so far.
        assert list(turns["prompt_tokens"]) == [100, 220, 340, 460]


@pytest.mark.slow  # among the quick subset's slowest (CONTRIBUTING.md)
def test_continuous_batching_beats_static_batching(tmp_path) -> None:
    cont = run(small(["workload.num_requests=400", "workload.rate=25"]), tmp_path, "cb")
    stat = run(small(["workload.num_requests=400", "workload.rate=25", "scheduler=static"]),
               tmp_path, "static")
    # Orca's and vLLM's point: static batches hold slots until the longest output is done.
    assert cont["e2e_s"].mean() < 0.5 * stat["e2e_s"].mean()


def test_least_outstanding_balances_better_than_round_robin_under_skew(tmp_path) -> None:
    # Every 4th request is 20x longer; round robin sends all of them to replica 0.
    n = 400
    prompt = [2000 if i % 4 == 0 else 100 for i in range(n)]
    output = [400 if i % 4 == 0 else 20 for i in range(n)]
    arrival = [i * 0.02 for i in range(n)]
    wl = ListWorkloadConfig(arrival, prompt, output)
    base = small(["cluster.replicas=4"])
    rr = run(dataclasses.replace(base, workload=wl, router=RoundRobinConfig()), tmp_path, "rr")
    lo = run(dataclasses.replace(base, workload=wl, router=LeastOutstandingConfig()), tmp_path, "lo")
    assert rr.groupby("replica")["prompt_tokens"].sum()[0] == 100 * 2000
    assert lo["e2e_s"].quantile(0.9) < rr["e2e_s"].quantile(0.9)


def test_simulate_returns_dataframe_and_load_results_reads_it_back(tmp_path) -> None:
    res = simkv.simulate(small(), tmp_path)
    again = simkv.load_results(tmp_path)
    assert again.summary == res.summary
    pd.testing.assert_frame_equal(again.requests, res.requests)
    assert res.summary["requests"]["finished"] == 200
    assert set(res.requests.columns) >= {"ttft_s", "tpot_s", "e2e_s", "slo_met", "replica"}


def test_dataclass_config_without_hydra(tmp_path) -> None:
    cfg = SimConfig(scheduler=VLLMSchedulerConfig(max_num_seqs=16),
                    router=RoundRobinConfig(),
                    workload=PoissonWorkloadConfig(num_requests=50, rate=5.0))
    cfg.output.plot = False
    cfg.output.progress = False
    res = simkv.simulate(cfg, tmp_path)
    assert res.summary["requests"]["finished"] == 50
    assert res.config["scheduler"]["name"] == "vllm"


def test_static_scheduler_holds_slots_until_the_batch_ends(tmp_path) -> None:
    wl = ListWorkloadConfig([0.0, 0.0, 0.001], [100, 100, 100], [5, 50, 5])
    cfg = dataclasses.replace(small(), workload=wl, scheduler=StaticSchedulerConfig(max_batch_size=2))
    df = run(cfg, tmp_path)
    # Requests 0 and 1 form the first batch; request 2 waits for the whole batch (50 tokens).
    assert df["first_scheduled_s"][2] >= df["completion_s"][1] - 1e-12
    assert df["completion_s"][0] < df["completion_s"][1]


@pytest.mark.slow  # among the quick subset's slowest (CONTRIBUTING.md)
def test_simultaneous_arrivals_with_a_nearly_full_pool(tmp_path) -> None:
    # Regression: 2,000 shared-prefix requests at t = 0; a prefill filled the pool so the
    # decode run planned after it could not get its first blocks (over-allocation).
    for ff in (1, 4096):
        cfg = small(["workload=batchllm", "workload.num_requests=2000", f"engine.max_fast_forward={ff}",
                         "kv.prefix_caching=false"])  # the pressure needs unshared prefixes
        df = simkv.simulate(cfg, tmp_path / f"ff{ff}").requests
        assert (df["status"] == "finished").all()
        assert df["preemptions"].sum() > 0


def test_fast_forward_equals_step_by_step_when_decodes_evict_prefixes(tmp_path) -> None:
    """Decode runs that take evictable cached blocks end with the first iteration that takes
    them, so prefixes are evicted when step by step evicts them: a router reading the caches
    routes the same (fast-forwarded, the evictions came at the run's end)."""
    base = ["cluster.replicas=4", "workload=sharegpt", "workload.num_conversations=60",
            "workload.conversation_rate=5", "workload.think_mu=1", "kv.num_gpu_blocks_override=1200",
            "router=prefix_affinity"]
    quiet = ["output.plot=false", "output.progress=false"]
    a = run(simkv.compose([*quiet, *base, "engine.max_fast_forward=4096"]), tmp_path, "fast")
    b = run(simkv.compose([*quiet, *base, "engine.max_fast_forward=1"]), tmp_path, "slow")
    assert (a["status"] == "finished").sum() > 300  # (turns longer than 1,200 blocks are rejected)
    times = [*TIME_COLS, "arrival_s", "ttft_s", "tpot_s", "e2e_s", "kv_wait_s"]
    pd.testing.assert_frame_equal(a.drop(columns=times), b.drop(columns=times))
    for col in times:
        np.testing.assert_allclose(a[col], b[col], rtol=1e-9, atol=1e-12)
    fast = simkv.load_results(tmp_path / "fast").summary
    assert fast["engine"]["runs"] < fast["engine"]["iterations"]
    assert fast["memory"]["tiers"]["hbm_cache"]["bytes_evicted"] > 0, "this case must evict cached prefixes"


def test_kv_utilization_reads_the_blocks_of_iterations_already_run(tmp_path) -> None:
    """An autoscaler reading kv_utilization mid-run counts the blocks the run's ended
    iterations took (step by step commits each at its end): it resizes as step by step does
    (before: 55 resizes fast-forwarded against 63, a review, helper-33)."""
    base = ["output.plot=false", "output.progress=false", "model=llama3_70b",
            "cluster.tensor_parallel=2", "cluster.max_tensor_parallel=8", "router=least_work",
            "workload.num_requests=400", "workload.mean_rate=25", "workload.hour_s=4",
            "workload.failure_rate=0", "workload.volume=profile",
            "workload.volume_profile=[6.0,0.5,6.0,0.5,6.0,0.5]", "autoscaler=elastic_tp",
            "autoscaler.metric=kv_utilization", "autoscaler.target=0.3", "autoscaler.interval_s=1",
            "autoscaler.window_s=2", "autoscaler.scale_down_stabilization_s=2"]
    a = run(simkv.compose([*base, "engine.max_fast_forward=4096"]), tmp_path, "fast")
    b = run(simkv.compose([*base, "engine.max_fast_forward=1"]), tmp_path, "slow")
    events = [simkv.load_results(tmp_path / n).summary["cluster"]["scaling"]["events"]
              for n in ("fast", "slow")]
    assert len(events[0]) > 4, "this case must resize"
    assert [e.get("kind", e) for e in events[0]] == [e.get("kind", e) for e in events[1]]
    pd.testing.assert_frame_equal(a.drop(columns=[*TIME_COLS, "ttft_s", "tpot_s", "e2e_s"]),
                                  b.drop(columns=[*TIME_COLS, "ttft_s", "tpot_s", "e2e_s"]))
    for col in TIME_COLS:
        np.testing.assert_allclose(a[col], b[col], rtol=1e-9, atol=1e-12)



SHARED_4000 = ["workload.program_rate=2", "kv.num_gpu_blocks_override=4000"]


@pytest.mark.parametrize("overrides", [
    # The node's DRAM tier, shared, small: one instance's demotions evict granules there.
    [*SHARED_4000, "router=session_affinity", "offload=dram", "memory.dram_gib=8"],
    # Another instance's HBM cache, read over NVLink: its publishes and evictions.
    [*SHARED_4000, "router=round_robin", "memory.peer_hbm=true"],
    # A tool call's KV prefetched back into this HBM and pinned: no block is freed, but the
    # queued call finds it in HBM now.
    ["workload.program_rate=1", "kv.num_gpu_blocks_override=6000", "hardware=a100_80gb",
     "router=session_affinity", "offload=dram", "tool_kv=prefetch", "tool_kv.quantile=0.5"],
])
def test_fast_forward_equals_step_by_step_when_what_admission_reads_changes(
        tmp_path, overrides: list[str]) -> None:
    """What a queued request's admission finds (KVManager.match) changes outside the
    instance's plans: two instances of a node read KV the other writes (the node's DRAM tier,
    or each other's HBM with memory.peer_hbm), and a prefetch lands. A run in flight with
    requests waiting is cut after the iteration in flight, where step by step plans next and
    reads the change (before: the queue's head stayed blocked to the run's end; 288 of the
    agents_dram golden's 675 rows differed, 334 of this peer_hbm case's 429, 120 of this
    prefetch case's 429)."""
    base = ["output.plot=false", "output.progress=false", "workload=swebench",
            "workload.num_programs=8", "cluster.replicas=2", *overrides]
    a = run(simkv.compose([*base, "engine.max_fast_forward=4096"]), tmp_path, "fast")
    b = run(simkv.compose([*base, "engine.max_fast_forward=1"]), tmp_path, "slow")
    times = [*TIME_COLS, "arrival_s", "ttft_s", "tpot_s", "e2e_s", "kv_wait_s"]
    pd.testing.assert_frame_equal(a.drop(columns=times), b.drop(columns=times))
    for col in times:
        np.testing.assert_allclose(a[col], b[col], rtol=1e-9, atol=1e-12)
    fast = simkv.load_results(tmp_path / "fast").summary
    assert fast["engine"]["runs"] < fast["engine"]["iterations"] / 10
    if "tool_kv=prefetch" in overrides:
        assert fast["memory"]["prefetch"]["landed"] > 0, "this case must land prefetches"
    elif "offload=dram" in overrides:
        assert fast["memory"]["tiers"]["dram"]["bytes_evicted"] > 0, "this case must evict from DRAM"
        assert a["cached_dram_tokens"].sum() > 0, "this case must load KV from DRAM"
    else:
        assert fast["memory"]["peer_hbm"]["hit_tokens"] > 0, "this case must read a peer's HBM"


def test_a_committed_run_no_longer_reads_as_in_flight(tmp_path) -> None:
    # Regression (a review, helper-37): while a run's commit ran its callbacks (finished
    # requests, a kv_pool's give-back), the run still read as in flight, so kv_used,
    # spare_blocks and in_flight counted its committed blocks twice (DistAttention's
    # give-back then returned fewer blocks than it could).
    seen = {"finished": 0, "multi": 0}

    def check(r: object) -> None:
        pool = r.scheduler.pool  # type: ignore[attr-defined]
        seen["finished"] += 1
        seen["multi"] += r.iterations_run > r.runs  # type: ignore[attr-defined]
        assert r.in_flight() == (None, 0)  # type: ignore[attr-defined]
        assert r.kv_used() == pool.used  # type: ignore[attr-defined]
        assert r.spare_blocks() == pool.free  # type: ignore[attr-defined]

    def observer(r: object) -> None:
        if getattr(r, "_checked", False):
            return
        r._checked = True  # type: ignore[attr-defined]
        finish = r.on_finish  # type: ignore[attr-defined]

        def on_finish(req: object, t: float, r: object = r) -> None:
            check(r)  # inside the commit: a finished request is reported
            finish(req, t)

        r.on_finish = on_finish  # type: ignore[attr-defined]

    simkv.simulate(small(), tmp_path / "run", observer=observer)
    assert seen["finished"] > 0
    assert seen["multi"] > 0, "this case must commit runs of many iterations"

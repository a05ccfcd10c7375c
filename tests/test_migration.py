"""Live migration (migration=llumnix): every request finishes once, KV blocks are conserved,
the pause is the last stage only, draining instances move their requests, priorities stay
(docs/SCHEDULING.md)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import simkv
from tests.conftest import small
from tests.helpers import ListWorkloadConfig

LOAD = ["cluster.replicas=4", "workload.num_requests=600", "workload.rate=30",
        "kv.num_gpu_blocks_override=900", "workload.output_sigma=1.2", "workload.output_max=4000",
        "router=least_outstanding"]


def run(overrides: list[str], tmp_path, name: str = "run"):
    def observe(replica) -> None:
        replica.scheduler.check_invariants()  # free + held (reservations too) == capacity

    res = simkv.simulate(small(overrides), tmp_path / name, observer=observe)
    return res, res.requests.sort_values("request_id").reset_index(drop=True)


def test_every_request_finishes_once_and_blocks_are_conserved(tmp_path) -> None:
    res, df = run([*LOAD, "migration=llumnix"], tmp_path)
    m = res.summary["migration"]
    assert len(df) == 600
    assert df["request_id"].is_unique
    assert (df["status"] == "finished").all()
    assert m["moved"] > 0
    assert m["landed"] == m["moved"]
    assert m["live_moves"] == m["moved"] + m["aborted"]
    assert m["reserved_blocks_at_end"] == 0
    moved = df[df["migrations"] > 0]
    assert df["migrations"].sum() == m["moved"]
    # Paused only for the last stage (<= 16 blocks over NVLink, and an admission).
    assert moved["migration_pause_s"].max() < 0.05
    assert (moved["preemptions"] == 0).any()  # moved, not recomputed


@pytest.mark.slow  # among the quick subset's slowest (CONTRIBUTING.md)
def test_measure_only_changes_nothing_but_the_summary(tmp_path) -> None:
    _, plain = run(LOAD, tmp_path, "plain")
    res, measured = run([*LOAD, "migration=llumnix", "migration.migrate=false"], tmp_path, "m")
    pd.testing.assert_frame_equal(plain, measured)
    assert res.summary["migration"]["moved"] == 0
    assert 0 <= res.summary["migration"]["fragmented_share"] <= 1


@pytest.mark.slow  # over 1 s of the quick subset's CPU (CONTRIBUTING.md)
def test_a_draining_instance_moves_its_requests_instead_of_waiting(tmp_path) -> None:
    # A burst scales 1 -> 3 instances; in the lull after it, scale-down drains instances
    # that still run long requests (3,000 output tokens).
    rng = np.random.default_rng(0)
    hi = np.cumsum(rng.exponential(1 / 8, 320))
    lo = hi[-1] + np.cumsum(rng.exponential(4.0, 60))
    t = np.concatenate([hi, lo]).tolist()
    wl = ListWorkloadConfig(t, [500] * len(t), [3000] * len(t))
    base = ["cluster.replicas=1", "cluster.max_replicas=3", "autoscaler=horizontal",
            "autoscaler.metric=outstanding", "autoscaler.target=16",
            "autoscaler.scale_down_stabilization_s=20"]
    waits = {}
    for name, extra in (("wait", []), ("move", ["migration=llumnix"])):
        cfg = small([*base, *extra])
        cfg.workload = wl
        res = simkv.simulate(cfg, tmp_path / name,
                             observer=lambda r: r.scheduler.check_invariants())
        df = res.requests
        assert (df["status"] == "finished").all()
        rows = pd.read_parquet(tmp_path / name / "instances.parquet")
        drain = rows[rows["to_state"] == "draining"].groupby("instance")["time_s"].min()
        stop = rows[rows["to_state"] == "stopped"].groupby("instance")["time_s"].min()
        both = drain.index.intersection(stop.index)
        assert len(both) > 0
        waits[name] = float((stop[both] - drain[both]).mean())
        if name == "move":
            assert res.summary["migration"]["drained"] > 0
    assert waits["move"] < 0.5 * waits["wait"]


def test_priority_headroom_never_moves_the_high_class(tmp_path) -> None:
    _, df = run([*LOAD, "priority.high_fraction=0.2", "migration=llumnix",
                 "migration.priority_headroom=0.2"], tmp_path)
    assert df.loc[df["priority"] == 1, "migrations"].sum() == 0
    assert df.loc[df["priority"] == 0, "migrations"].sum() > 0


def test_fast_forward_moves_what_step_by_step_moves(tmp_path) -> None:
    """Llumnix reads an instance as of its tick: the free blocks and a decoding request's KV
    count the iterations of the run in flight that have ended (a fast-forwarded run commits
    them at its end), and a prompt joined to the decode batch at planning is still
    prefilling. Before, it read them as of the instance's last commit: 64 of these 300 rows
    differed fast-forwarded (23 moves against 20 step by step)."""
    base = ["cluster.replicas=4", "workload.num_requests=300", "workload.rate=60",
            "kv.num_gpu_blocks_override=700", "workload.output_sigma=1.2",
            "workload.output_max=2000", "router=least_outstanding", "migration=llumnix",
            "migration.interval_s=0.01"]
    fast, a = run([*base, "engine.max_fast_forward=4096"], tmp_path, "fast")
    slow, b = run([*base, "engine.max_fast_forward=1"], tmp_path, "slow")
    assert slow.summary["migration"]["moved"] > 10, "the test needs moves"
    assert fast.summary["engine"]["runs"] < fast.summary["engine"]["iterations"] / 5
    mf, ms = dict(fast.summary["migration"]), dict(slow.summary["migration"])
    assert mf.pop("mean_pause_s") == pytest.approx(ms.pop("mean_pause_s"), rel=1e-9)
    assert mf == ms  # moves, stages, aborts, bytes, fragmentation samples
    times = ["first_scheduled_s", "first_token_s", "completion_s", "ttft_s", "tpot_s", "e2e_s",
             "migration_pause_s"]
    pd.testing.assert_frame_equal(a.drop(columns=times), b.drop(columns=times))
    for col in times:
        np.testing.assert_allclose(a[col], b[col], rtol=1e-9, atol=1e-12)


def test_live_migration_stays_among_instances_of_one_model(tmp_path) -> None:
    # Before, llumnix balanced over every serving instance: a Llama-3.1-8B request went on
    # decoding on a Qwen2.5-14B instance of the other pool.
    res = simkv.simulate(simkv.compose([
        "output.plot=false", "output.progress=false", "workload.num_requests=300",
        "pools=two_models", "pools.chat.instances=2", "pools.gpt4.instances=2",
        "kv.prefix_caching=false", "migration=llumnix", "kv.num_gpu_blocks_override=200"]), tmp_path)
    moved = res.requests[res.requests["migrations"] > 0]
    assert len(moved) > 0, "the test needs moves"
    pool_of = pd.read_parquet(tmp_path / "instances.parquet").groupby("instance")["pool"].first()
    assert (moved["first_token_replica"].map(pool_of) == moved["pool"]).all()


def test_spot_migration_stays_in_a_pool_that_serves_the_request(tmp_path) -> None:
    # Two pools of one model serving different request models: the router picked any serving
    # instance, and ChatGPT requests went on in the pool that serves GPT-4 only.
    res = simkv.simulate(simkv.compose([
        "output.plot=false", "output.progress=false", "workload.num_requests=200",
        "pools=two_models", "pools.chat.instances=2", "pools.gpt4.model=llama3_8b",
        "kv.prefix_caching=false", "spot.pools=[chat]", "spot.times=[20]",
        "spot.on_preempt=migrate"]), tmp_path)
    moved = res.requests[res.requests["migrations"] > 0]
    assert len(moved) > 0, "the test needs moves"
    pool_of = pd.read_parquet(tmp_path / "instances.parquet").groupby("instance")["pool"].first()
    assert (moved["first_token_replica"].map(pool_of) == "chat").all()
    assert (moved["pool"] == "chat").all()


@pytest.mark.parametrize(("overrides", "words"), [
    # Both ran to exit 0 with nothing moved (a decode pool is not routed to, and a request
    # moves only within its own model's pools).
    (["pools=pd_split", "pools.decode.instances=2"], "migration=llumnix cannot act with prefill/decode pools"),
    (["pools=two_models", "kv.prefix_caching=false"], "migration=llumnix cannot act: a request moves only to an instance of its own model"),
])
def test_llumnix_that_cannot_move_anything_is_refused(tmp_path, overrides, words) -> None:
    with pytest.raises(ValueError, match=words) as exc:
        simkv.simulate(simkv.compose(["output.plot=false", "output.progress=false",
                                      "migration=llumnix", *overrides]), tmp_path)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(("overrides", "words"), [
    (["migration=llumnix", "migration.interval_s=0"], "migration.interval_s"),
    (["migration=llumnix", "scheduler=static"], "migration=llumnix moves requests between"),
    (["migration=llumnix", "cluster.replicas=1"], "migration=llumnix cannot act with one instance"),
])
def test_bad_or_idle_options_are_refused(tmp_path, overrides, words) -> None:
    with pytest.raises(ValueError, match=words.replace(".", r"\.")) as exc:
        simkv.simulate(small(overrides), tmp_path)
    assert "\n" not in str(exc.value)

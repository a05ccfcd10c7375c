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


def test_measure_only_changes_nothing_but_the_summary(tmp_path) -> None:
    _, plain = run(LOAD, tmp_path, "plain")
    res, measured = run([*LOAD, "migration=llumnix", "migration.migrate=false"], tmp_path, "m")
    pd.testing.assert_frame_equal(plain, measured)
    assert res.summary["migration"]["moved"] == 0
    assert 0 <= res.summary["migration"]["fragmented_share"] <= 1


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


@pytest.mark.parametrize(("overrides", "words"), [
    (["migration=llumnix", "migration.interval_s=0"], "migration.interval_s"),
    (["migration=llumnix", "scheduler=static"], "migration=llumnix moves requests between"),
    (["migration=llumnix", "cluster.replicas=1"], "migration=llumnix cannot act with one instance"),
])
def test_bad_or_idle_options_are_refused(tmp_path, overrides, words) -> None:
    with pytest.raises(ValueError, match=words.replace(".", r"\.")) as exc:
        simkv.simulate(small(overrides), tmp_path)
    assert "\n" not in str(exc.value)

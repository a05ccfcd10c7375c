"""Vertical scaling of dense models: a tensor-parallel range, resized in place (elastic_tp) or by
restart (vertical). Requests conserved, GPUs and capacity follow the degree, bytes moved."""

from __future__ import annotations

import pandas as pd
import pytest

import simkv
from simkv.config.bounds import ConfigError
from simkv.engine.lifecycle import ScaleEvent
from simkv.metrics.cluster import scaling_section

QUIET = ["output.plot=false", "output.progress=false"]
BASE = ["model=llama3_70b", "cluster.replicas=1", "cluster.tensor_parallel=2",
        "cluster.max_tensor_parallel=8", "workload=poisson", "workload.num_requests=1200",
        "workload.rate=10", "autoscaler.metric=arrival_rate", "autoscaler.target=2",
        "autoscaler.scale_down_stabilization_s=10", *QUIET]


@pytest.mark.parametrize("policy", ["elastic_tp", "vertical"])
def test_tp_resize_conserves_requests(tmp_path, policy: str) -> None:
    res = simkv.simulate(simkv.compose([*BASE, f"autoscaler={policy}"]), tmp_path / "run")
    req = res.requests
    assert len(req) == 1200
    assert req["request_id"].is_unique
    assert (req["status"] == "finished").all()
    rows = pd.read_parquet(tmp_path / "run" / "instances.parquet")
    # The instance grew from 2 GPUs (TP2) to 8 (TP8), one rank throughout.
    assert rows["gpus"].max() == 8
    assert rows["gpus"].iloc[0] == 2
    assert (rows["data_parallel"] == 1).all()
    scaling = res.summary["cluster"]["scaling"]
    up = next(e for e in scaling["events"] if e["kind"] == "scale_up")
    assert (up["gpus_before"], up["gpus_after"]) == (2, 8)
    if policy == "elastic_tp":
        # In place: the 6 new GPUs get their TP8 shard of the weights (and KV) from the two
        # already there, in about attach_s; a restart loads all 8 from the SSDs after
        # provisioning and warm-up.
        shard = 70.55e9 * 2 / 8
        assert up["moved_bytes"] >= 6 * shard * 0.99
        assert up["scale_up_latency_s"] < 5.0
    else:
        assert up["scale_up_latency_s"] > 30.0
    assert scaling["during_scaling"]["seconds"] >= 0.0


def test_the_degree_maps_to_tp_and_capacity_grows_without_more_seats() -> None:
    from simkv.engine.pool import Pool, pool_configs
    from simkv.kv.tiers import load_node_profile

    cfg = simkv.compose([*BASE, "autoscaler=elastic_tp"])
    cfg.validate()
    pc = pool_configs(cfg)["default"]
    pool = Pool(0, "default", pc, cfg, load_node_profile(cfg.memory.node, cfg.memory.node_path))
    assert pool.resize_tp
    assert pool.sizes() == [t for t in range(2, 9) if 64 % t == 0]
    assert str(pool.layout(4)) == "TP4"
    assert pool.layout(4).gpus == 4
    assert pool.layout(4).dp == 1
    assert pool.capacity(8).num_blocks > 2 * pool.capacity(4).num_blocks > 4 * pool.capacity(2).num_blocks


def test_a_decision_after_the_last_completion_counts_no_negative_scaling_time(tmp_path) -> None:
    # Regression: a scale-down decided after the run's last completion made the time "during
    # scaling" negative (its window was clipped at the end but not its start).
    path = tmp_path / "r.parquet"
    pd.DataFrame({"replica": [0], "status": ["finished"], "first_scheduled_s": [1.0],
                  "completion_s": [2.0], "output_tokens": [10], "slo_met": [True]}).to_parquet(path)
    late = ScaleEvent(0, "default", "scale_down", 5.0, 8, 4, [0], ready_s=5.5)
    out = scaling_section([late], path, end_s=2.0)
    assert out["during_scaling"]["seconds"] == 0.0
    assert out["outside_scaling"]["seconds"] == 2.0


@pytest.mark.parametrize(("overrides", "message"), [
    (["autoscaler=elastic_tp", "cluster.max_tensor_parallel=null"],
     "autoscaler=elastic_tp has no pool to scale: every pool has a fixed size (set "
     "cluster.max_replicas or cluster.max_tensor_parallel, or pools.<name>.max_instances / "
     "max_data_parallel / max_tensor_parallel)"),
    # elastic_tp never adds an instance: a replica range cannot act under it (refused
    # before the run since the adversarial campaign; the policy's own check came later).
    (["autoscaler=elastic_tp", "cluster.max_tensor_parallel=null", "cluster.max_replicas=3"],
     "cluster.max_replicas cannot act: autoscaler=elastic_tp resizes this pool's instances and "
     "never adds or removes one; use autoscaler=horizontal, or leave cluster.max_replicas unset"),
    (["autoscaler=elastic_tp", "cluster.max_tensor_parallel=1"],
     "cluster.tensor_parallel (2) must lie within cluster.min_tensor_parallel (2) and "
     "cluster.max_tensor_parallel (1), all >= 1"),
])
def test_bad_tp_ranges_are_refused(overrides: list[str], message: str) -> None:
    with pytest.raises(ValueError, match="tensor|elastic_tp") as err:
        simkv.simulate(simkv.compose([*BASE, *overrides]))
    assert str(err.value) == message


def test_one_resize_dimension_per_pool() -> None:
    # Checked by simulate() before the run, under the pool's own key (issue 18).
    with pytest.raises(ConfigError, match="pools.moe.max_tensor_parallel: a pool resizes one dimension"):
        simkv.simulate(simkv.compose(["model=qwen3_30b_a3b", "pools=moe_ep",
                                      "pools.moe.max_tensor_parallel=2", *QUIET]))

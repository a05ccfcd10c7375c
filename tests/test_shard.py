"""A cluster simulated as shards in several processes (simkv/shard.py) gives one dataset:
with round-robin routing the same rows, value for value, as one process, and the same
summary; with a router that reads load every request exactly once; what cannot be sharded is
refused in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

import simkv
from simkv.shard import simulate_sharded

COMMON = ["output.plot=false", "output.progress=false"]


def _flat(d: dict[str, Any], p: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{p}{k}.") if isinstance(v, dict) else {p + k: v})
    return out


@pytest.mark.parametrize(("overrides", "shards", "processes"), [
    # BurstGPT: failed calls rejected before routing, bursts; two processes.
    (["cluster.replicas=6", "workload.num_requests=1200"], 2, 2),
    # Uneven shards (7 instances in 3), small row groups (the merge streams them), a KV pool
    # small enough to preempt, requests longer than the context rejected before routing.
    (["cluster.replicas=7", "workload=poisson", "workload.num_requests=1500", "workload.rate=90",
      "kv.num_gpu_blocks_override=700", "model.max_model_len=1536", "output.row_group_size=256"],
     3, 1),
])
def test_round_robin_shards_equal_one_process(overrides: list[str], shards: int, processes: int,
                                              tmp_path: Path) -> None:
    cfg = simkv.compose([*overrides, *COMMON])
    one = simkv.simulate(cfg, tmp_path / "one")
    sharded = simulate_sharded(simkv.compose([*overrides, *COMMON]), tmp_path / "sharded",
                               shards=shards, processes=processes)
    a = pq.read_table(tmp_path / "one" / "requests.parquet").sort_by("request_id")
    b = pq.read_table(tmp_path / "sharded" / "requests.parquet").sort_by("request_id")
    assert a.num_rows == b.num_rows == cfg.workload.num_requests
    assert a.schema.names == b.schema.names
    for col in a.column_names:
        np.testing.assert_array_equal(a.column(col).to_numpy(zero_copy_only=False),
                                      b.column(col).to_numpy(zero_copy_only=False), err_msg=col)
    assert sharded.summary["sharding"] == {"shards": shards, "exact": True}
    fa, fb = _flat(one.summary), _flat({k: v for k, v in sharded.summary.items() if k != "sharding"})
    assert fa.keys() == fb.keys()
    # Percentiles, counts, GPU-hours and engine totals are equal; means are sums over rows,
    # whose order may differ (ties), so they are equal to rounding.
    for key, va in fa.items():
        if isinstance(va, float) and key.endswith(".mean"):
            assert fb[key] == pytest.approx(va, rel=1e-12), key
        else:
            assert fb[key] == va, key
    inst_a = pq.read_table(tmp_path / "one" / "instances.parquet").sort_by([("instance", "ascending")])
    inst_b = pq.read_table(tmp_path / "sharded" / "instances.parquet").sort_by([("instance", "ascending")])
    assert inst_a.to_pylist() == inst_b.to_pylist()


def test_a_load_reading_router_is_sharded_approximately_but_keeps_every_request(tmp_path: Path) -> None:
    cfg = simkv.compose(["cluster.replicas=6", "router=power_of_two", "workload.num_requests=900",
                         *COMMON])
    res = simulate_sharded(cfg, tmp_path, shards=2, processes=1)
    t = pq.read_table(tmp_path / "requests.parquet")
    assert sorted(t.column("request_id").to_pylist()) == list(range(900))
    assert res.summary["sharding"] == {"shards": 2, "exact": False}
    replicas = set(t.column("replica").to_pylist()) - {-1}
    assert replicas == set(range(6))  # both shards' instances served, with the cluster's ids


@pytest.mark.parametrize(("overrides", "key"), [
    (["autoscaler=horizontal"], "autoscaler=horizontal"),
    (["pools=pd_split"], "pools"),
    (["router=session_affinity", "workload=sharegpt", "workload.num_conversations=10"],
     "a closed loop"),
    (["offload=dram"], "offload=dram"),
    (["workload=near_duplicate", "workload.num_requests=20"], "workload=near_duplicate"),
])
def test_what_cannot_be_sharded_is_refused_in_one_line(overrides: list[str], key: str,
                                                        tmp_path: Path) -> None:
    cfg = simkv.compose([*overrides, "cluster.replicas=4", *COMMON])
    with pytest.raises(ValueError, match="cannot shard") as err:
        simulate_sharded(cfg, tmp_path, shards=2, processes=1)
    assert key in str(err.value)
    assert "\n" not in str(err.value)

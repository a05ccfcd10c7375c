"""Collectives on the fabric (perf/collectives.py, engine/collectives.py, kv/links.py
reservations): bandwidth held and released, bytes conserved, contention in both directions."""

from __future__ import annotations

import numpy as np
import pytest
import simpy

import simkv
from simkv.config.bounds import ConfigError
from simkv.engine.collectives import InstanceCollectives
from simkv.entities.hardware import load_profile
from simkv.kv.links import Fabric, Link
from simkv.perf.collectives import CollectiveLoad, iteration_load
from simkv.perf.roofline import CostModel
from tests import helpers  # noqa: F401  (registers workload=test_list)
from tests.test_expert_parallel import spec

QUIET = ["output.plot=false", "output.progress=false"]


def test_reserved_bandwidth_slows_transfers_and_comes_back() -> None:
    env = simpy.Environment()
    fabric = Fabric(env)
    link = Link("rdma0", 100.0)
    ends: list[float] = []
    fabric.start(100.0, [link], lambda t: ends.append(env.now))
    fabric.reserve([(link, 50.0)])  # a collective holds half from t = 0 ...
    env.run(until=1.0)
    fabric.reserve([(link, -50.0)])  # ... until t = 1: 50 bytes moved, 50 left at full speed
    env.run()
    assert ends == [pytest.approx(1.5)]
    assert link.reserved == 0.0
    assert link.requested == 0.0
    # Held reservations are capped: transfers keep a trickle.
    fabric.reserve([(link, 1e6)])
    assert link.reserved == pytest.approx(95.0)


def test_contention_factor_and_extra_time() -> None:
    load = CollectiveLoad(nvlink_s=1.0, rdma_s=2.0, a2a=(3.0, 0.1, 0.2))
    assert load.extra_s(1.0, 1.0) == 0.0
    # NVLink at half speed, RDMA at a third: 1 + 2 x 2 + 3 x (max(0.2, 0.6) - 0.2).
    assert load.extra_s(2.0, 3.0) == pytest.approx(1.0 + 4.0 + 1.2)
    free = Link("x", 10.0)
    assert InstanceCollectives._factor(free) == 1.0
    free.active = 1
    assert InstanceCollectives._factor(free) == 2.0  # one transfer: half the link
    free.reserved = 5.0
    assert InstanceCollectives._factor(free) == 4.0  # half of what others leave


def test_iteration_load_by_hand() -> None:
    m = spec("llama3_8b")
    hw = load_profile("h100_sxm_80gb")
    tp2 = CostModel(m, hw, 2, 1)
    load = iteration_load(tp2, 100, spans_nodes=False)
    # Two ring all-reduces per layer of 100 x 4096 bf16 values, each GPU sending 2(p-1)/p of it.
    assert load.nvlink_bytes == pytest.approx(2 * 32 * 100 * 4096 * 2 * 2 * 1 / 2)
    assert load.rdma_bytes == 0.0
    assert iteration_load(CostModel(m, hw, 1, 1), 100, False) == CollectiveLoad()
    moe = CostModel(spec("qwen3_30b_a3b"), hw, 1, 1, data_parallel=16, expert_parallel=16)
    two_nodes = iteration_load(moe, 256, spans_nodes=True)
    # 15 peers, 7 on the node: 8/15 of the all-to-all crosses the NICs.
    assert two_nodes.rdma_bytes / (two_nodes.rdma_bytes + two_nodes.nvlink_bytes) == pytest.approx(8 / 15)


def _one_request(on: bool) -> simkv.SimResult:
    cfg = simkv.compose(["cluster.replicas=1", "cluster.tensor_parallel=2", *QUIET,
                         f"collectives.on_fabric={str(on).lower()}", "workload=test_list",
                         "workload.arrival_s=[0.0]", "workload.prompt_tokens=[300]",
                         "workload.output_tokens=[40]"])
    return simkv.simulate(cfg)


def test_collective_bytes_are_conserved_and_every_reservation_released(monkeypatch) -> None:
    # (A subclass the run builds: compiled, Cluster is an extension type, whose methods
    # cannot be replaced on the class.)
    from simkv import runner
    from simkv.engine.cluster import Cluster

    seen: list = []

    class Kept(Cluster):
        def __init__(self, *a, **k) -> None:  # type: ignore[no-untyped-def]
            super().__init__(*a, **k)
            seen.append(self)

    monkeypatch.setattr(runner, "Cluster", Kept)
    res = _one_request(True)
    cluster = seen[-1]
    # One prefill of 300 tokens, then 39 decode iterations of one token, on 2 GPUs.
    cost = CostModel(spec("llama3_8b"), load_profile("h100_sxm_80gb"), 2, 1)
    per_gpu = iteration_load(cost, 300, False).nvlink_bytes + 39 * iteration_load(cost, 1, False).nvlink_bytes
    links = cluster.topology.links()
    assert sum(x.collective_bytes for x in links) == pytest.approx(2 * per_gpu)
    assert res.summary["cluster"]["collectives"]["bytes"]["nvlink"] == pytest.approx(2 * per_gpu)
    assert all(x.requested == 0.0 and x.reserved == 0.0 for x in links)
    # Nothing else on the links: no run was slowed, and the times are those of the plain run.
    plain = _one_request(False)
    assert res.summary["cluster"]["collectives"]["runs_slowed"] == 0
    assert res.requests["completion_s"].to_numpy() == pytest.approx(plain.requests["completion_s"].to_numpy())
    assert "collectives" not in plain.summary["cluster"]


DISAGG = ["model=qwen3_30b_a3b", "pools=pd_split", "pools.prefill.instances=4",
          "pools.prefill.tensor_parallel=2", "pools.decode.instances=1",
          "pools.decode.data_parallel_attention=16", "pools.decode.expert_parallel=16",
          "workload=poisson", "workload.num_requests=300", "workload.rate=20",
          "workload.prompt_median=2000", "workload.output_median=100", *QUIET]


@pytest.mark.slow  # among the quick subset's slowest (CONTRIBUTING.md)
def test_kv_transfers_and_all_to_all_slow_each_other(tmp_path) -> None:
    # A slow compute fabric (assumed 25 Gb/s per GPU) that the decode pool's all-to-all and
    # the KV hand-offs both cross.
    from importlib import resources

    import yaml

    node = yaml.safe_load(resources.files("simkv.hardware_profiles").joinpath(
        "nodes", "dgx_h100.yaml").read_text())
    node["gpu_network"]["bandwidth"]["value"] = 3.125
    path = tmp_path / "slow.yaml"
    path.write_text(yaml.safe_dump(node))
    off = simkv.simulate(simkv.compose([*DISAGG, f"memory.node_path={path}"]))
    on = simkv.simulate(simkv.compose([*DISAGG, f"memory.node_path={path}",
                                       "collectives.on_fabric=true"]))
    assert on.summary["requests"]["finished"] == off.summary["requests"]["finished"] == 300
    coll = on.summary["cluster"]["collectives"]
    assert coll["runs_slowed"] > 0
    assert coll["bytes"]["rdma"] > 0
    # KV traffic shows in TPOT, and the all-to-all's held bandwidth in the KV hand-offs.
    assert on.summary["tpot_s"]["mean"] > off.summary["tpot_s"]["mean"]
    kv = "kv_transfer_s"
    assert np.nanmean(on.requests[kv]) > np.nanmean(off.requests[kv])


def test_collectives_that_cannot_act_are_refused() -> None:
    with pytest.raises(ConfigError) as err:
        simkv.simulate(simkv.compose(["cluster.replicas=1", *QUIET, "collectives.on_fabric=true"]))
    assert str(err.value) == ("collectives.on_fabric cannot act: no pool runs a collective (every "
                              "pool has tensor_parallel, pipeline_parallel and expert_parallel 1)")

"""The living cluster: pools, lifecycle, autoscalers, heterogeneous routing (docs/CLUSTER.md)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import simkv
from simkv.config.schema import PoolConfig
from simkv.engine.lifecycle import STATES
from simkv.metrics.cluster import state_seconds
from tests.helpers import Checker, ListWorkloadConfig

BASE = ["output.plot=false", "output.progress=false"]


def burst(rate_hi: float = 60.0, hi_s: float = 90.0, rate_lo: float = 1.0, lo_s: float = 600.0,
          prompt: int = 600, output: int = 150, seed: int = 0) -> ListWorkloadConfig:
    """A burst of Poisson arrivals, then a long lull: capacity must rise, then fall."""
    rng = np.random.default_rng(seed)
    hi = np.cumsum(rng.exponential(1 / rate_hi, int(rate_hi * hi_s)))
    lo = hi[-1] + np.cumsum(rng.exponential(1 / rate_lo, int(rate_lo * lo_s)))
    t = np.concatenate([hi, lo])
    return ListWorkloadConfig(t.tolist(), [prompt] * len(t), [output] * len(t))


def run(overrides: list[str], tmp: Path, workload: ListWorkloadConfig | None = None,
        observer: Checker | None = None) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    cfg = simkv.compose([*BASE, *overrides])
    if workload is not None:
        cfg.workload = workload
    res = simkv.simulate(cfg, tmp, observer=observer)
    return res.requests, pd.read_parquet(tmp / "instances.parquet"), res.summary


def held_gpus_over_time(rows: pd.DataFrame, pool: str) -> np.ndarray:
    """GPUs held by the pool's instances after every transition (stopped ones hold none)."""
    rows = rows[rows["pool"] == pool].sort_values("time_s", kind="stable")
    held: dict[int, int] = {}
    out = []
    for r in rows.itertuples():
        held[r.instance] = 0 if r.to_state == "stopped" else r.gpus
        out.append(sum(held.values()))
    return np.array(out)


def check_conservation(df: pd.DataFrame, n: int) -> None:
    assert len(df) == n, "requests in = finished + rejected"
    assert df["request_id"].is_unique
    assert set(df["status"]) <= {"finished", "rejected"}


class LifecycleChecker(Checker):
    """Also: an instance runs iterations only while serving, scaling or draining."""

    def __call__(self, replica: object) -> None:
        super().__call__(replica)
        assert replica.state in ("serving", "scaling", "draining"), replica.state  # type: ignore[attr-defined]


def served_only_when_serving(df: pd.DataFrame, rows: pd.DataFrame) -> None:
    """No request starts on an instance before it serves, or after it stopped (requests
    preempted and moved by a restart started elsewhere, so they are left out)."""
    serving = rows[rows["to_state"] == "serving"].groupby("instance")["time_s"].min()
    stopped = rows[rows["to_state"] == "stopped"].groupby("instance")["time_s"].min()
    ok = df[(df["status"] == "finished") & (df["preemptions"] == 0)]
    start = serving.reindex(ok["replica"]).to_numpy()
    assert (ok["first_scheduled_s"].to_numpy() >= start - 1e-9).all()
    end = stopped.reindex(ok["replica"]).fillna(np.inf).to_numpy()
    assert (ok["completion_s"].to_numpy() <= end + 1e-9).all()


class KVSeen(Checker):
    """Also: every instance's KV manager, to read the node's stores after the run."""

    def __init__(self) -> None:
        super().__init__()
        self.kvs: dict[int, object] = {}

    def __call__(self, replica: object) -> None:
        super().__call__(replica)
        self.kvs[replica.index] = replica.kv  # type: ignore[attr-defined]


def test_a_stopped_instance_stops_reading_the_nodes_dram(tmp_path: Path) -> None:
    # Regression (a review, helper-37): instances that read the node's DRAM tier register a
    # callback with it (KVManager.watch_match); one that stopped kept it, so an autoscaled
    # run called every instance it ever started on every change there.
    seen = KVSeen()
    _, rows, _ = run(["cluster.replicas=1", "cluster.max_replicas=4", "autoscaler=horizontal",
                      "autoscaler.metric=outstanding", "autoscaler.target=8",
                      "autoscaler.scale_down_stabilization_s=60", "offload=dram"],
                     tmp_path, burst(hi_s=40.0, lo_s=200.0), seen)
    stopped = set(rows.loc[rows["to_state"] == "stopped", "instance"])
    assert stopped, "this case must stop instances"
    readers = [cb for kv in seen.kvs.values() for _, store in kv.lower  # type: ignore[attr-defined]
               for cb in store.readers]
    assert readers
    assert not {cb.__self__.index for cb in readers} & stopped


@pytest.mark.slow  # over 1 s of the quick subset's CPU (CONTRIBUTING.md)
def test_horizontal_scales_up_for_a_burst_and_down_after(tmp_path: Path) -> None:
    wl = burst()
    checker = LifecycleChecker()
    df, rows, s = run(["cluster.replicas=1", "cluster.max_replicas=4", "autoscaler=horizontal",
                       "autoscaler.metric=outstanding", "autoscaler.target=8",
                       "autoscaler.scale_down_stabilization_s=60", "output.transfers=true"],
                      tmp_path, wl, checker)
    check_conservation(df, len(wl.arrival_s))
    served_only_when_serving(df, rows)
    assert checker.runs > 0
    held = held_gpus_over_time(rows, "default")
    assert held.max() == 4  # up to max_replicas x 1 GPU, never above
    assert held[-1] == 1  # back to min_replicas once the lull sets in
    assert {"provisioning", "loading", "serving", "draining", "stopped"} <= set(rows["to_state"])
    sc = s["cluster"]["scaling"]
    ups = [e for e in sc["events"] if e["kind"] == "scale_up"]
    # Decision -> first request on the new instances: provisioning (30 s) + 16 GB of weights
    # at the loader's 2 GB/s (8 s) + warm-up (10 s), and the first request it gets.
    first = ups[0]
    assert first["ready_latency_s"] == pytest.approx(30 + 16.06e9 / 2e9 + 10, rel=0.02)
    assert first["scale_up_latency_s"] >= first["ready_latency_s"]
    # Weights loaded = bytes the weight transfers moved, all across the instances' loaders.
    tr = pd.read_parquet(tmp_path / "transfers.parquet")
    weights = tr[tr["what"] == "weights"]
    assert weights["bytes"].sum() == pytest.approx(s["cluster"]["weight_bytes_loaded"])
    assert s["cluster"]["links"]["loader"]["bytes"] == pytest.approx(weights["bytes"].sum())
    started = s["cluster"]["pools"]["default"]["instances_started"]
    assert weights["bytes"].sum() == pytest.approx((started - 1) * 16.06e9, rel=1e-3)


def test_gpu_hours_integrate_the_instance_rows(tmp_path: Path) -> None:
    rows = pd.DataFrame({
        "time_s": [0.0, 0.0, 10.0, 40.0, 50.0, 100.0],
        "instance": [0, 1, 1, 1, 1, 1],
        "pool": ["p"] * 6,
        "from_state": ["none", "none", "provisioning", "loading", "serving", "draining"],
        "to_state": ["serving", "provisioning", "loading", "serving", "draining", "stopped"],
        "gpus": [2, 4, 4, 4, 4, 4],
    })
    spans = pd.DataFrame(state_seconds(rows, 200.0))
    # Instance 0 serves 200 s on 2 GPUs; instance 1 holds 4 GPUs from 0 to 100 s.
    assert spans["gpu_seconds"].sum() == pytest.approx(2 * 200 + 4 * 100)
    per_state = spans.groupby("state")["seconds"].sum()
    assert per_state["provisioning"] == 10
    assert per_state["loading"] == 30
    assert per_state["serving"] == 200 + 10
    assert per_state["draining"] == 50


@pytest.mark.parametrize("policy", ["vertical", "elastic_moe"])
def test_moe_resizes_conserve_requests_and_gpus(policy: str, tmp_path: Path) -> None:
    wl = burst(rate_hi=30, hi_s=60, rate_lo=0.5, lo_s=900, prompt=800, output=100)
    checker = LifecycleChecker()
    df, rows, s = run(["model=qwen3_30b_a3b", "pools=moe_ep", f"autoscaler={policy}",
                       "autoscaler.metric=outstanding", "autoscaler.target=6",
                       "autoscaler.scale_down_stabilization_s=60"], tmp_path, wl, checker)
    check_conservation(df, len(wl.arrival_s))
    served_only_when_serving(df, rows)
    assert checker.runs > 0
    held = held_gpus_over_time(rows, "moe")
    assert held.max() <= 8
    assert held.max() > 2, "the burst grew the instance"
    assert held[-1] < held.max(), "the lull shrank it again"
    events = s["cluster"]["scaling"]["events"]
    assert {e["kind"] for e in events} == {"scale_up", "scale_down"}
    up = next(e for e in events if e["kind"] == "scale_up")
    if policy == "elastic_moe":
        # In place: serving throughout, ready after attaching (2 s) and peer-to-peer copies.
        assert "draining" not in set(rows["to_state"])
        assert up["ready_latency_s"] < 5
        assert rows["instance"].nunique() == 1
    else:
        # Cold restart: drain, provisioning (30 s), weights from SSD, warm-up (10 s).
        assert up["ready_latency_s"] > 40
        assert rows["instance"].nunique() >= 2
    assert all(state in STATES for state in rows["to_state"])


@pytest.mark.slow  # among the quick subset's slowest (CONTRIBUTING.md)
def test_elastic_scale_up_is_faster_than_horizontal_and_vertical(tmp_path: Path) -> None:
    wl = burst(rate_hi=30, hi_s=60, rate_lo=0.5, lo_s=200, prompt=800, output=100)
    lat = {}
    for policy, extra in (("elastic_moe", ["pools=moe_ep"]), ("vertical", ["pools=moe_ep"]),
                          ("horizontal", ["cluster.replicas=1", "cluster.max_replicas=4",
                                          "cluster.tensor_parallel=2"])):
        _, _, s = run(["model=qwen3_30b_a3b", f"autoscaler={policy}", "autoscaler.metric=outstanding",
                       "autoscaler.target=6", *extra], tmp_path / policy, wl)
        lat[policy] = s["cluster"]["scaling"]["scale_up_latency_s_mean"]
    assert lat["elastic_moe"] < lat["horizontal"] / 5
    assert lat["elastic_moe"] < lat["vertical"] / 5


def test_least_work_router_favours_the_faster_pool(tmp_path: Path) -> None:
    wl = burst(rate_hi=40, hi_s=60, rate_lo=0.0001, lo_s=1)
    df, _rows, s = run(["pools=h100_a100", "router=least_work"], tmp_path, wl)
    check_conservation(df, len(wl.arrival_s))
    per_pool = df[df["status"] == "finished"].groupby("pool").size()
    assert per_pool["h100"] > 1.2 * per_pool["a100"]
    pools = s["cluster"]["pools"]
    assert pools["h100"]["hardware"].startswith("H100")
    assert pools["a100"]["hardware"].startswith("A100")
    rr, _, _ = run(["pools=h100_a100", "router=round_robin"], tmp_path / "rr", wl)
    assert rr["e2e_s"].mean() > df["e2e_s"].mean()


@pytest.mark.slow  # over 1 s of the quick subset's CPU (CONTRIBUTING.md)
def test_pool_config_errors_name_the_key(tmp_path: Path) -> None:
    cfg = simkv.compose([*BASE, "pools=h100_a100", "cluster.replicas=3"])
    with pytest.raises(ValueError, match="cluster.replicas has no effect when pools are given"):
        simkv.simulate(cfg, tmp_path / "a")
    cfg = simkv.compose([*BASE, "autoscaler=horizontal"])
    with pytest.raises(ValueError, match="has no pool to scale"):
        simkv.simulate(cfg, tmp_path / "b")
    cfg = simkv.compose([*BASE, "pools=moe_ep", "autoscaler=elastic_moe"])
    with pytest.raises(ValueError, match="pools.moe: data_parallel_attention > 1 applies to MoE"):
        simkv.simulate(cfg, tmp_path / "c")
    # A pool built by hand is checked by simulate(), under the key it is set with.
    cfg = simkv.compose([*BASE, "pools=h100_a100"])
    cfg.pools["a100"] = PoolConfig(weight_source="tape")
    with pytest.raises(ValueError, match="^pools.a100.weight_source: expected one of ssd, network, "
                                         "peer, dram, got 'tape'$"):
        simkv.simulate(cfg, tmp_path / "e")
    cfg = simkv.compose([*BASE, "pools=h100_a100"])
    cfg.pools["h100"].model = "gpt5"
    with pytest.raises(ValueError, match="unknown model 'gpt5'"):
        simkv.simulate(cfg, tmp_path / "d")


def test_one_pool_runs_write_the_initial_instances(tmp_path: Path) -> None:
    _, rows, s = run(["cluster.replicas=3", "workload.num_requests=50"], tmp_path)
    assert rows["to_state"].tolist() == ["serving"] * 3
    assert rows["instance"].tolist() == [0, 1, 2]
    assert "scaling" not in s["cluster"]
    assert s["cluster"]["pools"]["default"]["instances_started"] == 3


@pytest.mark.slow
@settings(max_examples=12, deadline=None)
@given(policy=st.sampled_from(["horizontal", "vertical", "elastic_moe"]),
       rate=st.floats(5, 60), hi_s=st.floats(10, 90), output=st.integers(1, 400),
       target=st.floats(2, 20), seed=st.integers(0, 1000),
       source=st.sampled_from(["ssd", "network", "peer"]))
def test_scaling_never_loses_requests(policy: str, rate: float, hi_s: float, output: int,
                                      target: float, seed: int, source: str) -> None:
    wl = burst(rate_hi=rate, hi_s=hi_s, rate_lo=0.2, lo_s=400, prompt=500, output=output, seed=seed)
    extra = (["cluster.replicas=1", "cluster.max_replicas=3", "cluster.tensor_parallel=2"]
             if policy == "horizontal" else
             ["pools=moe_ep", f"pools.moe.weight_source={source}"])
    checker = LifecycleChecker()
    with tempfile.TemporaryDirectory() as d:
        df, rows, _ = run(["model=qwen3_30b_a3b", f"autoscaler={policy}", "autoscaler.metric=outstanding",
                           f"autoscaler.target={target}", "autoscaler.scale_down_stabilization_s=30",
                           *extra], Path(d), wl, checker)
    check_conservation(df, len(wl.arrival_s))
    assert (df["status"] == "finished").all()
    served_only_when_serving(df, rows)
    pool = rows["pool"].iloc[0]
    assert held_gpus_over_time(rows, pool).max() <= (6 if policy == "horizontal" else 8)


@pytest.mark.parametrize("metric", ["kv_utilization", "slo_attainment"])
def test_a_metric_blind_at_zero_still_starts_a_pool_requests_wait_for(tmp_path: Path,
                                                                      metric: str) -> None:
    # Every pool at zero instances: a KV utilisation or SLO attainment of nothing never asked
    # for an instance, the arrivals waited for ever and the run never ended. An instance
    # starts when requests wait for a pool at zero (KEDA's activation).
    zero = [f"pools.{p}.{k}={v}" for p in ("h100", "a100")
            for k, v in (("instances", 0), ("min_instances", 0), ("max_instances", 2))]
    res = simkv.simulate(simkv.compose([*BASE, "pools=h100_a100", *zero, "autoscaler=horizontal",
                                        f"autoscaler.metric={metric}", "workload=poisson",
                                        "workload.num_requests=40", "workload.rate=4"]), tmp_path)
    assert (res.requests["status"] == "finished").all()
    assert len(res.requests) == 40
    rows = pd.read_parquet(tmp_path / "instances.parquet")
    assert (rows["to_state"] == "serving").any()

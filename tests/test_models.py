"""Many models on one cluster (engine/models.py) and LoRA adapters (engine/lora.py)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import simkv
from simkv.config.bounds import ConfigError
from simkv.config.schema import PoolConfig
from simkv.registry import register
from simkv.workload.base import ArrivalBatch
from tests.helpers import Checker, ListWorkload, ListWorkloadConfig

BASE = ["output.plot=false", "output.progress=false", "kv.prefix_caching=false"]


def run(overrides: list[str], tmp: Path, pools: dict[str, PoolConfig] | None = None,
        workload: object | None = None, observer: object | None = None
        ) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    cfg = simkv.compose([*BASE, *overrides])
    if pools is not None:
        cfg.pools = pools
    if workload is not None:
        cfg.workload = workload
    res = simkv.simulate(cfg, tmp, observer=observer)
    return res.requests, pd.read_parquet(tmp / "instances.parquet"), res.summary


def held_gpus(rows: pd.DataFrame) -> np.ndarray:
    """GPUs held by all instances after each transition."""
    rows = rows.sort_values("time_s", kind="stable")
    held: dict[int, int] = {}
    out = []
    for r in rows.itertuples():
        held[r.instance] = 0 if r.to_state == "stopped" else r.gpus
        out.append(sum(held.values()))
    return np.array(out)


def test_requests_go_to_the_pools_that_serve_their_model(tmp_path: Path) -> None:
    df, _, _ = run(["pools=two_models", "workload.num_requests=400"], tmp_path)
    done = df[df["status"] == "finished"]
    assert set(done.loc[done["model"] == "ChatGPT", "pool"]) == {"chat"}
    assert set(done.loc[done["model"] == "GPT-4", "pool"]) == {"gpt4"}


def test_a_model_no_pool_serves_is_rejected(tmp_path: Path) -> None:
    pools = {"chat": PoolConfig(serves=["ChatGPT"])}
    df, _, s = run(["workload.num_requests=300"], tmp_path, pools)
    gpt4 = df[df["model"] == "GPT-4"]
    assert len(gpt4) > 0
    assert set(gpt4["reject_reason"]) <= {"unserved_model", "failed_in_trace"}
    assert (gpt4["reject_reason"] == "unserved_model").sum() == s["cluster"]["models"]["unserved_model"]


def shared(max_each: int, keep_alive: float = 60.0) -> dict[str, PoolConfig]:
    common = {"gpu_group": "g", "min_instances": 0, "max_instances": max_each,
              "weight_source": "dram", "provisioning_s": 2.0, "warmup_s": 1.0}
    return {"a": PoolConfig(model="llama3_8b", serves=["A"], instances=0, **common),
            "b": PoolConfig(model="qwen2_5_7b", serves=["B"], instances=0, **common)}


@dataclass(slots=True)
class ModelListConfig(ListWorkloadConfig):
    model: list[str] = field(default_factory=list)


@register("workload", "test_model_list", ModelListConfig)
class ModelList(ListWorkload):
    """Explicit requests with a model name each."""

    def arrivals(self, rng: np.random.Generator) -> Iterator[ArrivalBatch]:
        for b in super().arrivals(rng):
            b.model = list(self.cfg.model)  # type: ignore[attr-defined]
            yield b


def two_model_stream(n: int = 120, gap: float = 40.0) -> ModelListConfig:
    """Requests of model A, then a gap, then B, then A again: each phase a cold start."""
    t = [i * 0.2 for i in range(n)]
    t2 = [t[-1] + gap + i * 0.2 for i in range(n)]
    t3 = [t2[-1] + gap + i * 0.2 for i in range(n)]
    return ModelListConfig(t + t2 + t3, [300] * 3 * n, [60] * 3 * n, ["A"] * n + ["B"] * n + ["A"] * n)


def test_serverless_cold_starts_swaps_and_never_exceeds_its_gpus(tmp_path: Path) -> None:
    wl = two_model_stream()
    n = len(wl.arrival_s)
    df, rows, s = run(["autoscaler=serverless", "autoscaler.keep_alive_s=20"], tmp_path,
                      shared(1), wl, Checker())
    assert len(df) == n
    assert (df["status"] == "finished").all()
    assert held_gpus(rows).max() <= 1, "a group of one GPU holds one instance at a time"
    m = s["cluster"]["models"]
    assert m["cold_starts"] >= 3  # A at 0 s, B, A again
    # The first request of a phase waited for a cold start: provisioning, load, warm-up.
    first = df.sort_values("arrival_s").iloc[0]
    load_s = 16.06e9 / 2e9  # Llama-3.1-8B's bf16 weights through a 2 GB/s loader
    assert first["ttft_s"] >= 2.0 + 1.0 + load_s * 0.9
    assert set(df.loc[df["model"] == "B", "pool"]) == {"b"}


def test_keep_alive_stops_an_idle_instance(tmp_path: Path) -> None:
    wl = ListWorkloadConfig([0.0, 1.0, 200.0], [100] * 3, [10] * 3)
    pools = {"a": PoolConfig(serves=[""], gpu_group="g", instances=1, min_instances=0,
                             max_instances=1, weight_source="dram", provisioning_s=1.0,
                             warmup_s=1.0)}
    df, rows, s = run(["autoscaler=serverless", "autoscaler.keep_alive_s=30"], tmp_path, pools, wl)
    assert (df["status"] == "finished").all()
    stops = rows[rows["reason"] == "serverless: keep-alive expired"]
    assert len(stops) == 1
    assert 30.0 <= stops["time_s"].iloc[0] <= 33.0
    assert s["cluster"]["models"]["cold_starts"] == 1  # the request at 200 s
    assert df.iloc[-1]["ttft_s"] > 1.0 + 1.0


@pytest.mark.parametrize("metric", ["outstanding", "arrival_rate"])
def test_horizontal_scaling_brings_a_model_back_from_zero(tmp_path: Path, metric: str) -> None:
    # Two models sharing two GPUs, scaled by autoscaler=horizontal: GPT-4's pool starts at 0
    # and its requests wait in the model router, which no metric counted: the pool never
    # started and the run never ended (with the arrival rate, even once counted: the window
    # passes while the other model holds the GPUs).
    df, rows, _ = run(["pools=shared_models", "autoscaler=horizontal", f"autoscaler.metric={metric}",
                       "autoscaler.target=0.5", "workload.num_requests=100"], tmp_path)
    assert len(df) == 100
    assert set(df["status"]) == {"finished", "rejected"}
    assert set(df.loc[df["status"] == "rejected", "reject_reason"]) == {"failed_in_trace"}
    gpt4 = df[(df["model"] == "GPT-4") & (df["status"] == "finished")]
    assert len(gpt4) > 0
    assert (gpt4["pool"] == "gpt4").all()
    assert (held_gpus(rows) <= 2).all()  # never more than the group's GPUs


def test_weights_from_dram_load_at_the_slowest_link(tmp_path: Path) -> None:
    wl = ListWorkloadConfig([0.0], [100], [10])
    pools = {"a": PoolConfig(serves=[""], gpu_group="g", instances=0, min_instances=0,
                             max_instances=1, weight_source="dram", provisioning_s=0.0,
                             warmup_s=0.0, loader_gb_s_per_gpu=1000.0)}
    _, rows, _ = run(["autoscaler=serverless"], tmp_path, pools, wl)
    load = rows[rows["to_state"] == "loading"]["time_s"].iloc[0]
    ready = rows[rows["to_state"] == "serving"]["time_s"].iloc[0]
    from simkv.entities.hardware import load_profile
    from simkv.kv.tiers import load_node_profile

    node = load_node_profile("dgx_h100", None)
    hw = load_profile("h100_sxm_80gb", None)
    rate = min(node.tiers["dram"].read_bandwidth, hw.pcie_bandwidth)
    weights = simkv.compose(BASE).model.weight_bytes
    assert ready - load == pytest.approx(weights / rate, rel=0.05)


# --- LoRA --------------------------------------------------------------------------------------
class SlotChecker(Checker):
    """The batch never holds more distinct adapters than an instance's slots."""

    def __init__(self, slots: int) -> None:
        super().__init__()
        self.slots = slots
        self.max_seen = 0

    def __call__(self, replica: object) -> None:
        super().__call__(replica)
        sched = replica.scheduler  # type: ignore[attr-defined]
        a = {r.adapter for r in [*sched.running.values(), *sched.waiting] if r.adapter >= 0}
        self.max_seen = max(self.max_seen, len(a))
        assert len(a) <= self.slots


def test_lora_slots_bound_the_batch_and_every_request_finishes(tmp_path: Path) -> None:
    checker = SlotChecker(4)
    df, _, s = run(["workload=poisson", "workload.num_requests=600", "workload.rate=20",
                    "lora.adapters=50", "lora.gpu_slots=4"], tmp_path, observer=checker)
    assert (df["status"] == "finished").all()
    assert checker.max_seen == 4
    lo = s["cluster"]["lora"]
    assert lo["loads"] >= 50 - 4
    assert lo["evictions"] == lo["loads"] - 4 * 2  # 2 instances fill 4 slots each first
    assert lo["waited_for_slot"] > 0


@pytest.mark.slow  # over 1 s of the quick subset's CPU (CONTRIBUTING.md)
def test_lora_cost_grows_with_distinct_adapters_and_shrinks_the_kv_cache(tmp_path: Path) -> None:
    ov = ["workload=poisson", "workload.num_requests=500", "workload.rate=15",
          "cluster.replicas=1"]
    caps = []
    for i, extra in enumerate(([], ["lora.adapters=1"], ["lora.adapters=64", "lora.gpu_slots=64"])):
        checker = Checker()
        _, _, summ = run([*ov, *extra], tmp_path / str(i), observer=checker)
        caps.append((summ["tpot_s"]["p50"], checker.replicas[0].scheduler.pool.capacity))
    (t0, c0), (t1, c1), (t2, c2) = caps
    assert t0 < t1 < t2
    # 8 slots of a rank-16 adapter (~27 MiB each) off the KV cache; 64 slots take 8x as much.
    assert c0 > c1 > c2
    assert (c0 - c2) == pytest.approx(8 * (c0 - c1), rel=0.02)


def test_lora_extra_time_by_hand() -> None:
    """One iteration's adapter kernels priced by hand for Llama-3.1-8B (q 4096, kv 1024)."""
    from simkv.config.models import LoRAConfig
    from simkv.engine.lora import LoRA
    from simkv.entities.hardware import load_profile
    from simkv.perf.roofline import CostModel

    cfg = simkv.compose(BASE)
    m = cfg.model
    cost = CostModel(m, load_profile("h100_sxm_80gb", None), 1, 1, cfg.engine)
    lora = LoRA(None, LoRAConfig(adapters=8, rank=16, kernel_overhead_us=0.0),
                np.random.default_rng(0))
    proj = [(4096, 4096), (4096, 1024), (4096, 1024), (4096, 4096)]
    assert lora.projections(m) == proj
    per_adapter = 16 * sum(a + b for a, b in proj) * 32 * 2
    assert lora.adapter_bytes(m) == per_adapter
    # 32 decode tokens, 8 adapters: memory-bound; weights dominate the bytes.
    t = lora.extra_s(cost, m, 32, 8)
    weights = 8 * per_adapter
    assert t > weights / cost.bw_peak
    assert t < 3 * weights / cost.bw_peak
    assert lora.extra_s(cost, m, 32, 0) == 0.0


def test_lora_sessions_keep_their_adapter_and_popularity_is_zipf() -> None:
    from simkv.config.models import LoRAConfig
    from simkv.engine.lora import LoRA
    from simkv.entities.request import Request

    lora = LoRA(None, LoRAConfig(adapters=10, popularity="zipf", zipf_alpha=1.0),
                np.random.default_rng(1))
    reqs = [Request(i, 0.0, 10, 10, session=i % 7) for i in range(70)]
    for r in reqs:
        lora.assign(r)
    for k in range(7):
        assert len({r.adapter for r in reqs if r.session == k}) == 1
    counts = np.bincount([lora.assign(r) or r.adapter for r in
                          (Request(i, 0.0, 10, 10) for i in range(20000))], minlength=10)
    share = counts / counts.sum()
    expect = (1 / np.arange(1, 11)) / (1 / np.arange(1, 11)).sum()
    np.testing.assert_allclose(share, expect, atol=0.01)


def test_lora_runs_are_reproducible(tmp_path: Path) -> None:
    ov = ["workload=sharegpt", "workload.num_conversations=20", "lora.adapters=100",
          "lora.gpu_slots=4"]
    a, _, _ = run(ov, tmp_path / "a")
    b, _, _ = run(ov, tmp_path / "b")
    pd.testing.assert_frame_equal(a, b)


def test_models_and_lora_settings_that_cannot_act_are_refused(tmp_path: Path) -> None:
    for overrides, msg in [
        (["lora.rank=8"], "lora.rank cannot act: no adapters"),
        (["lora.adapters=4", "lora.zipf_alpha=2"], "lora.zipf_alpha cannot act"),
        (["lora.adapters=4", "scheduler=static"], "continuous-batching scheduler"),
        (["autoscaler=serverless", "cluster.max_replicas=3"], "autoscaler=serverless places models"),
    ]:
        with pytest.raises((ConfigError, ValueError), match=msg):
            run(overrides, tmp_path / str(abs(hash(msg))))


def test_lora_requests_waiting_for_an_adapter_survive_a_failure(tmp_path: Path) -> None:
    """Requests held for an adapter load are handed back with the instance's others."""
    from simkv.config.faults import FaultEvent

    cfg = simkv.compose([*BASE, "workload=poisson", "workload.num_requests=400",
                         "workload.rate=20", "lora.adapters=200", "lora.gpu_slots=2",
                         "lora.source=ssd"])
    cfg.faults.events = [FaultEvent(time_s=5.0, kind="gpu", target=0)]
    res = simkv.simulate(cfg, tmp_path)
    df = res.requests
    assert len(df) == 400
    assert (df["status"] == "finished").all()
    assert res.summary["cluster"]["faults"]["requests_requeued"] > 0

"""Cost from one source: every GPU-hour figure is the integral of instances.parquet (issue 18,
item 1). Before, summary.json's top-level ``gpu_hours`` (what the terminal prints) was the
GPUs serving at t = 0 times the makespan, blind to every instance an autoscaler started."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import simkv
from simkv.metrics.summary import format_table
from tests.helpers import ListWorkloadConfig

BASE = ["output.plot=false", "output.progress=false"]


def burst(rate_hi: float = 30.0, hi_s: float = 40.0, rate_lo: float = 0.5, lo_s: float = 200.0,
          prompt: int = 600, output: int = 120, seed: int = 0) -> ListWorkloadConfig:
    """A burst, then a lull: an autoscaler grows the cluster, then shrinks it."""
    rng = np.random.default_rng(seed)
    hi = np.cumsum(rng.exponential(1 / rate_hi, int(rate_hi * hi_s)))
    lo = hi[-1] + np.cumsum(rng.exponential(1 / rate_lo, int(rate_lo * lo_s)))
    t = np.concatenate([hi, lo])
    return ListWorkloadConfig(t.tolist(), [prompt] * len(t), [output] * len(t))


def integral_gpu_hours(rows: pd.DataFrame, end_s: float) -> dict[str, float]:
    """GPU-hours per pool, integrated here row by row (independently of simkv's code): an
    instance holds its row's GPUs from the transition to its next one, none once stopped."""
    out: dict[str, float] = {}
    for _, inst in rows.groupby("instance"):
        inst = inst.sort_values("time_s", kind="stable")
        times = [*inst["time_s"], end_s]
        for k, r in enumerate(inst.itertuples()):
            if r.to_state == "stopped":
                continue
            t0, t1 = min(times[k], end_s), min(times[k + 1], end_s)
            out[r.pool] = out.get(r.pool, 0.0) + r.gpus * max(t1 - t0, 0.0) / 3600.0
    return out


MOE = ["model=qwen3_30b_a3b", "pools=moe_ep", "autoscaler.metric=outstanding",
       "autoscaler.target=6", "autoscaler.scale_down_stabilization_s=60"]
CASES = {
    "none": ["pools=h100_a100"],
    "horizontal": ["cluster.replicas=1", "cluster.max_replicas=4", "autoscaler=horizontal",
                   "autoscaler.metric=outstanding", "autoscaler.target=8",
                   "autoscaler.scale_down_stabilization_s=60"],
    "vertical": [*MOE, "autoscaler=vertical"],
    "elastic_moe": [*MOE, "autoscaler=elastic_moe"],
    "elastic_tp": ["model=llama3_70b", "cluster.replicas=1", "cluster.tensor_parallel=2",
                   "cluster.max_tensor_parallel=8", "autoscaler=elastic_tp",
                   "autoscaler.metric=outstanding", "autoscaler.target=4",
                   "autoscaler.scale_down_stabilization_s=60"],
    "disaggregated": ["pools=pd_split", "pools.prefill.instances=1", "pools.decode.instances=1"],
    # Both pools start empty: arrivals wait in the cluster's backlog until instances serve.
    "pool_from_zero": ["pools=h100_a100", "pools.h100.instances=0", "pools.h100.max_instances=2",
                       "pools.a100.instances=0", "pools.a100.max_instances=2",
                       "autoscaler=horizontal", "autoscaler.metric=outstanding",
                       "autoscaler.target=4"],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_summary_gpu_hours_are_the_integral_of_the_instances(case: str, tmp_path: Path) -> None:
    cfg = simkv.compose([*BASE, *CASES[case]])
    cfg.workload = burst()
    res = simkv.simulate(cfg, tmp_path)
    s, df = res.summary, res.requests
    rows = pd.read_parquet(tmp_path / "instances.parquet")
    # The window: from t = 0 (the initial instances serve) to the last request's end.
    end = float(df["completion_s"].max())
    want = integral_gpu_hours(rows, end)
    pools = s["cluster"]["pools"]
    assert set(want) <= set(pools)
    for name, p in pools.items():
        assert p["gpu_hours"] == pytest.approx(want.get(name, 0.0), rel=1e-12, abs=1e-15), name
    total = math.fsum(want.values())
    # One figure everywhere: the top level (the terminal's line), the cluster section, the pools.
    assert s["gpu_hours"] == pytest.approx(total, rel=1e-12)
    assert s["cluster"]["gpu_hours"] == s["gpu_hours"]
    assert s["cluster"]["window_s"] == [0.0, end]
    assert f"{s['gpu_hours']:.3f} GPU-hours" in format_table(s)
    if case != "none" and case != "disaggregated":
        # The cluster changed size: the GPUs at t = 0 times the makespan is not the cost.
        at_start = rows[(rows["from_state"] == "none") & (rows["time_s"] == 0)]["gpus"].sum()
        assert not math.isclose(s["gpu_hours"], at_start * s["makespan_s"] / 3600, rel_tol=1e-3)


def test_a_pool_scaled_from_zero_is_paid_for(tmp_path: Path) -> None:
    cfg = simkv.compose([*BASE, *CASES["pool_from_zero"]])
    cfg.workload = burst()
    s = simkv.simulate(cfg, tmp_path).summary
    for pool in ("h100", "a100"):
        assert s["cluster"]["pools"][pool]["instances_started"] > 0
        assert s["cluster"]["pools"][pool]["gpu_hours"] > 0
    assert s["gpu_hours"] > 0

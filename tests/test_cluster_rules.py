"""The living cluster's defects of issue 18 that ran (to a wrong result or an internal
error) rather than being refused: each test fails on the code before its fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import simkv
from simkv.metrics.compare import plot_metric
from tests.helpers import ListWorkloadConfig
from tests.test_cost_accounting import BASE, CASES, burst


def test_leoam_serves_one_token_outputs(tmp_path: Path) -> None:
    """Item 3: a one-token output never decodes; LeoAM charged its join to a decode step
    that does not exist (IndexError, reported as an internal error)."""
    cfg = simkv.compose([*BASE, "kv_policy=leoam", "kv.prefix_caching=false", "cluster.replicas=1"])
    cfg.workload = ListWorkloadConfig([0.0, 0.1, 0.2], [3000, 500, 8000], [1, 40, 1])
    df = simkv.simulate(cfg, tmp_path).requests
    assert (df["status"] == "finished").all()
    one = df[df["output_tokens"] == 1]
    assert (one["completion_s"] == one["first_token_s"]).all()


def test_disaggregated_pools_borrow_kv_across_decode_instances(tmp_path: Path) -> None:
    """Item 4: a prompt longer than a decode instance's KV was let in on its peers' memory
    (kv_pool=distattention) but the decode admission never borrowed: it waited forever ("the
    event queue ran dry with work left")."""
    cfg = simkv.compose([*BASE, "model=llama2_7b", "model.max_model_len=8000000",
                         "hardware=a100_80gb", "pools=pd_split", "kv_pool=distattention"])
    # One instance holds 120,096 tokens of KV: 150,000 need a peer's blocks on both sides.
    cfg.workload = ListWorkloadConfig([0.0, 1.0, 2.0], [20000, 150000, 3000], [10, 10, 10])
    s = simkv.simulate(cfg, tmp_path).summary
    assert s["requests"]["finished"] == 3
    kv = s["cluster"]["kv_pool"]
    assert kv["peak_borrowed_blocks"] > 0
    assert kv["borrowed_at_end"] == 0  # the prefill side gave back what its held KV needed


def test_same_model_pools_hand_kv_over(tmp_path: Path) -> None:
    """Item 2's other side: naming the run's own model for a pool is one KV format."""
    cfg = simkv.compose([*BASE, "pools=pd_split", "pools.decode.model=llama3_8b"])
    cfg.workload = ListWorkloadConfig([0.0, 0.5], [700, 900], [20, 20])
    s = simkv.simulate(cfg, tmp_path).summary
    assert s["cluster"]["disaggregation"]["transfers"] == 2


def test_a_restart_names_the_instance_that_produced_the_first_token(tmp_path: Path) -> None:
    """Item 10: a vertical restart moves running requests to an instance started later;
    requests.parquet then named that instance as the one that served a first token it had
    produced before existing. first_token_replica names the instance that did."""
    cfg = simkv.compose([*BASE, *CASES["vertical"]])
    cfg.workload = burst()
    df = simkv.simulate(cfg, tmp_path).requests
    rows = pd.read_parquet(tmp_path / "instances.parquet")
    serving = rows[rows["to_state"] == "serving"].groupby("instance")["time_s"].min()
    stopped = rows[rows["to_state"] == "stopped"].groupby("instance")["time_s"].min()
    ok = df[df["status"] == "finished"]
    moved = ok[ok["first_token_replica"] != ok["replica"]]
    assert len(moved) > 0, "the restart moved requests after their first token"
    # The instance that produced each first token was serving then, and not yet stopped.
    src = ok["first_token_replica"]
    assert (ok["first_token_s"].to_numpy() >= serving.reindex(src).to_numpy()).all()
    assert (ok["first_token_s"].to_numpy() <= stopped.reindex(src).fillna(np.inf).to_numpy()).all()
    # The instance that finished each request was serving when it did.
    assert (ok["completion_s"].to_numpy() >= serving.reindex(ok["replica"]).to_numpy()).all()


@pytest.mark.slow
def test_a_sweep_over_pools_labels_its_jobs(tmp_path: Path) -> None:
    """Item 5: `pools` (a group whose choice is no config field) was null in the dataset,
    missing from compare.csv, and `simkv-compare --x pools` drew empty axes and exited 0."""
    exe = Path(sys.executable).parent / "simkv"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "simkv.cli"]
    sweep = tmp_path / "sweep"
    p = subprocess.run([*cmd, "-m", "pools=single,pd_split", "workload.num_requests=20",
                        *BASE, f"hydra.sweep.dir={sweep}"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    compare = [str(Path(sys.executable).parent / "simkv-compare")]
    p = subprocess.run([*compare, str(sweep), "--no-plot", "--x", "pools", "--y", "ttft_s.p99"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    summary = pd.read_parquet(sweep / "dataset" / "summary").sort_values("job")
    assert summary["pools"].tolist() == ["single", "pd_split"]
    assert pd.read_csv(sweep / "compare.csv")["pools"].tolist() == ["single", "pd_split"]
    requests = pd.read_parquet(sweep / "dataset" / "requests")
    assert set(requests["pools"]) == {"single", "pd_split"}
    assert (sweep / "compare_ttft_s.p99_vs_pools.png").is_file()


def test_compare_refuses_an_empty_axis(tmp_path: Path) -> None:
    df = pd.DataFrame({"status": ["ok", "ok"], "pools": [None, None], "ttft_s.p99": [0.1, 0.2]})
    with pytest.raises(ValueError, match="--x pools: the column is empty in every completed job"):
        plot_metric(df, "pools", "ttft_s.p99", [], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()

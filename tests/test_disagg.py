"""Disaggregated prefill/decode: KV handoff over links, backpressure, conservation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import simkv
from simkv.engine.pool import load_model
from tests.helpers import Checker, ListWorkloadConfig

BASE = ["output.plot=false", "output.progress=false", "pools=pd_split", "output.transfers=true"]


def workload(n: int = 300, rate: float = 20.0, prompt: int = 2000, output: int = 50,
             seed: int = 0) -> ListWorkloadConfig:
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(1 / rate, n))
    p = rng.integers(prompt // 2, prompt * 3 // 2, n)
    return ListWorkloadConfig(t.tolist(), p.tolist(), [output] * n)


def run(tmp: Path, overrides: list[str], wl: ListWorkloadConfig,
        checker: Checker | None = None) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    cfg = simkv.compose([*BASE, *overrides])
    cfg.workload = wl
    res = simkv.simulate(cfg, tmp, observer=checker)
    return res.requests, res.summary, pd.read_parquet(tmp / "transfers.parquet")


def test_every_request_is_prefilled_then_decoded_elsewhere(tmp_path: Path) -> None:
    wl = workload()
    checker = Checker()
    df, _, tr = run(tmp_path, [], wl, checker)
    assert len(df) == len(wl.arrival_s)
    assert (df["status"] == "finished").all()
    assert checker.runs > 0
    # Prefilled on the prefill pool's instances (0, 1), decoded on the decode pool's (2, 3).
    assert set(df["prefill_replica"]) <= {0, 1}
    assert set(df["replica"]) <= {2, 3}
    assert set(df["pool"]) == {"decode"}
    # KV bytes sent = bytes the decode side receives = (prompt - 1) tokens of KV each.
    per_token = load_model("llama3_8b").kv_bytes_per_token
    handoff = tr[tr["what"] == "kv handoff"]
    expected = ((df["prompt_tokens"] - 1) * per_token).sum()
    assert handoff["bytes"].sum() == pytest.approx(expected)
    # Pools sit on different nodes: the KV crosses the nodes' RDMA NICs.
    assert handoff["links"].str.startswith("rdma").all()
    # TTFT includes the transfer: the first token comes after prefill, wait and landing.
    assert (df["kv_transfer_s"] > 0).all()
    assert (df["first_token_s"] - df["first_scheduled_s"] > df["kv_transfer_s"]).all()


def test_slower_links_move_kv_slower(tmp_path: Path) -> None:
    wl = workload(n=60, rate=2.0, prompt=8000)
    fast, _, _ = run(tmp_path / "fast", [], wl)
    # A node profile whose GPU network is 20x slower (2.5 GB/s per GPU).
    node = Path(simkv.__file__).parent.parent / "hardware_profiles" / "nodes" / "dgx_h100.yaml"
    slow = tmp_path / "slow_net.yaml"
    slow.write_text(node.read_text().replace("bandwidth: {value: 50, unit: GB/s, source: \"DGX H100 datasheet: 8x single",
                                             "bandwidth: {value: 2.5, unit: GB/s, source: \"slow: 8x single"))
    slow_df, _, _ = run(tmp_path / "slow", [f"memory.node_path={slow}"], wl)
    ratio = slow_df["kv_transfer_s"].median() / fast["kv_transfer_s"].median()
    assert ratio > 5
    # The transfer is what changed: TTFT grows by about the added transfer time.
    extra = (slow_df["kv_transfer_s"] - fast["kv_transfer_s"]).median()
    assert (slow_df["ttft_s"] - fast["ttft_s"]).median() == pytest.approx(extra, rel=0.2)


def test_backpressure_holds_kv_on_the_prefill_instance(tmp_path: Path) -> None:
    wl = workload(n=200, rate=40.0, prompt=3000, output=300)
    checker = Checker()
    # A decode pool with room for ~4 sequences: prefilled KV waits for decode slots.
    df, _, _ = run(tmp_path, ["pools.decode.instances=1", "kv.num_gpu_blocks_override=1200"], wl,
                   checker)
    assert (df["status"] == "finished").all()
    assert len(df) == len(wl.arrival_s)
    # Waiting for a decode slot dominates the handoff time.
    assert df["kv_transfer_s"].median() > 1.0
    # The held KV was counted in the prefill instances' pools all along (Checker recounts).
    assert checker.runs > 0


def test_roles_must_come_in_pairs(tmp_path: Path) -> None:
    cfg = simkv.compose([*BASE, "pools.decode.role=colocated"])
    with pytest.raises(ValueError, match="needs pools with role prefill and pools with role decode"):
        simkv.simulate(cfg, tmp_path)
    cfg = simkv.compose([*BASE, "scheduler=static"])
    with pytest.raises(ValueError, match="continuous-batching scheduler"):
        simkv.simulate(cfg, tmp_path / "b")
    cfg = simkv.compose([*BASE, "disagg.decode_router=nearest"])
    with pytest.raises(ValueError, match="disagg.decode_router: unknown router 'nearest'"):
        simkv.simulate(cfg, tmp_path / "c")


@pytest.mark.slow  # among the quick subset's slowest (CONTRIBUTING.md)
def test_streaming_overlaps_the_transfer_with_prefill(tmp_path: Path) -> None:
    wl = workload(n=60, rate=2.0, prompt=8000)
    plain, s1, _ = run(tmp_path / "a", [], wl)
    streamed, s2, _ = run(tmp_path / "b", ["disagg.kv_streaming=true"], wl)
    assert streamed["kv_transfer_s"].median() < plain["kv_transfer_s"].median()
    assert s2["cluster"]["disaggregation"]["streamed_bytes"] > 0
    assert s1["cluster"]["disaggregation"]["bytes"] == pytest.approx(s2["cluster"]["disaggregation"]["bytes"])


@pytest.mark.parametrize("sched", [["scheduler.chunked_prefill=false"], ["scheduler=lightllm"],
                                   ["scheduler=batchllm"]])
def test_a_landed_hand_off_is_decoded_without_chunked_prefill(tmp_path: Path, sched: list[str]) -> None:
    # Without chunked prefill a request whose KV had landed on its decode instance was never
    # planned again ("the event queue ran dry with work left (an engine bug)").
    cfg = simkv.compose(["output.plot=false", "output.progress=false", "pools=pd_split",
                         "pools.prefill.instances=1", "pools.decode.instances=1", *sched])
    cfg.workload = workload(n=20)
    df = simkv.simulate(cfg, tmp_path).requests
    assert (df["status"] == "finished").all()
    assert len(df) == 20
    assert (df["prefill_replica"] != df["replica"]).all()  # prefilled on one, decoded on the other


def test_no_plan_is_spent_on_kv_in_flight(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Per request, a prefill instance emptied by its KV's landing replanned for nothing (a
    # poke at an idle, empty instance), and a decode instance handed a request planned its
    # admission through a SimPy wake-up of its own; the landing now skips the first (the
    # plan provably changes nothing) and the prefill's run end plans the second at once
    # (PlanNow). Counted by a subclass of the engine's replica that the cluster builds instead
    # (the compiled build's Replica is an extension type: its methods cannot be patched on
    # the class, and its run loop calls the overrides of a subclass): same outputs, fewer plans.
    from simkv.engine import cluster as cluster_module
    from simkv.engine.replica import Replica

    counts = {"idle prefill plans": 0, "decode wake-ups": 0, "decode plans": 0}
    ending: list[Replica] = []

    class CountedReplica(Replica):
        def _plan(self, now: float) -> None:
            role = self.pool.cfg.role
            if role == "decode":
                counts["decode plans"] += 1
            elif self not in ending and self.scheduler.plans_nothing():
                counts["idle prefill plans"] += 1  # not its own run's end: a poke for nothing
            super()._plan(now)

        def _run_ended(self, event: object) -> None:
            ending.append(self)
            try:
                super()._run_ended(event)
            finally:
                ending.pop()

        def _plan_now(self, event: object) -> None:
            if self.pool.cfg.role == "decode":
                counts["decode wake-ups"] += 1
            super()._plan_now(event)

    monkeypatch.setattr(cluster_module, "Replica", CountedReplica)
    wl = workload(n=100, rate=5.0)
    df, summary, _ = run(tmp_path, [], wl)
    assert (df["status"] == "finished").all()
    assert summary["cluster"]["disaggregation"]["transfers"] == 100  # every KV moved and landed
    assert counts["decode plans"] >= 200  # each request: its admission and its landing
    assert counts["idle prefill plans"] == 0  # one per request before
    assert counts["decode wake-ups"] == 0  # one per request before

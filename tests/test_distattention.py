"""DistAttention's cluster-wide KV pool: borrowing, returning, lenders' bounds (Infinite-LLM)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import simkv
from tests.helpers import Checker, ListWorkloadConfig

BASE = ["output.plot=false", "output.progress=false", "model=llama2_7b", "model.max_model_len=4000000",
        "hardware=a100_80gb", "router=least_outstanding"]


def long_mix(n: int = 30, longest: int = 300_000, seed: int = 0) -> ListWorkloadConfig:
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(4.0, n))
    p = np.exp(rng.uniform(np.log(8000), np.log(longest), n)).astype(int)
    return ListWorkloadConfig(t.tolist(), p.tolist(), [64] * n)


class PoolChecker(Checker):
    """After every run: capacity only moves between instances (the sum is constant), no
    instance lends more than its share, and no pool holds more than its capacity."""

    def __init__(self, reserve: float) -> None:
        super().__init__()
        self.reserve = reserve
        self.original: dict[int, int] = {}
        self.peak_lent = 0

    def __call__(self, replica: object) -> None:
        super().__call__(replica)
        for r in self.replicas.values():
            pool = r.scheduler.pool
            self.original.setdefault(r.index, pool.capacity - pool.borrowed + pool.lent)
            assert pool.capacity - pool.borrowed + pool.lent == self.original[r.index]
            assert pool.lent <= self.original[r.index] * (1 - self.reserve) + 1
            assert pool.used + pool.pinned <= pool.capacity
            self.peak_lent = max(self.peak_lent, pool.lent)
        pools = [r.scheduler.pool for r in self.replicas.values()]
        assert sum(p.borrowed for p in pools) == sum(p.lent for p in pools)


def run(tmp: Path, overrides: list[str], wl: ListWorkloadConfig, checker: Checker | None = None
        ) -> tuple[pd.DataFrame, dict]:
    cfg = simkv.compose([*BASE, *overrides])
    cfg.workload = wl
    res = simkv.simulate(cfg, tmp, observer=checker)
    return res.requests, res.summary


@pytest.mark.parametrize("lender", ["greedy", "planned"])
def test_borrowing_serves_sequences_longer_than_one_instance(lender: str, tmp_path: Path) -> None:
    wl = long_mix()
    alone, _ = run(tmp_path / "none", ["cluster.replicas=4"], wl)
    checker = PoolChecker(0.1)
    pooled, s = run(tmp_path / "dist", ["cluster.replicas=4", "kv_pool=distattention",
                                        f"kv_pool.lender={lender}"], wl, checker)
    # One A100 holds ~110k tokens of Llama-2-7B's KV: longer requests are rejected alone.
    assert (alone["reject_reason"] == "kv_capacity").sum() > 0
    assert alone.loc[alone["status"] == "finished", "prompt_tokens"].max() < 120_000
    assert (pooled["status"] == "finished").all()
    assert pooled["prompt_tokens"].max() > 2 * alone.loc[alone["status"] == "finished", "prompt_tokens"].max()
    assert checker.runs > 0
    assert checker.peak_lent > 0
    kv = s["cluster"]["kv_pool"]
    assert kv["borrow_events"] > 0
    assert kv["borrowed_at_end"] == 0  # every borrowed block went back when its requests ended


@pytest.mark.slow  # among the quick subset's slowest (CONTRIBUTING.md)
@pytest.mark.parametrize("lender", ["greedy", "planned"])
def test_pooling_changes_nothing_when_every_request_fits(lender: str, tmp_path: Path) -> None:
    wl = long_mix(n=40, longest=60_000)
    a, _ = run(tmp_path / "a", ["cluster.replicas=3"], wl)
    b, s = run(tmp_path / "b", ["cluster.replicas=3", "kv_pool=distattention",
                                f"kv_pool.lender={lender}"], wl)
    assert s["cluster"]["kv_pool"]["borrow_events"] == 0
    for col in ("replica", "preemptions"):
        np.testing.assert_array_equal(a[col].to_numpy(), b[col].to_numpy())
    for col in ("first_token_s", "completion_s"):
        # The same iterations, summed one at a time under the pool (kv_pool/): equal to rounding.
        np.testing.assert_allclose(a[col].to_numpy(), b[col].to_numpy(), rtol=1e-9, atol=1e-12)


def test_a_longer_sequence_needs_more_instances(tmp_path: Path) -> None:
    wl = ListWorkloadConfig([0.0], [400_000], [16])
    two, _ = run(tmp_path / "two", ["cluster.replicas=2", "kv_pool=distattention"], wl)
    eight, _ = run(tmp_path / "eight", ["cluster.replicas=8", "kv_pool=distattention"], wl)
    assert two["reject_reason"].tolist() == ["kv_capacity"]
    assert eight["status"].tolist() == ["finished"]


@pytest.mark.parametrize("reserve", [0.0, 0.5])
def test_lenders_keep_their_reserve(reserve: float, tmp_path: Path) -> None:
    checker = PoolChecker(reserve)
    df, _ = run(tmp_path, ["cluster.replicas=4", "kv_pool=distattention",
                           f"kv_pool.reserve={reserve}"], long_mix(n=20), checker)
    assert len(df) == 20
    assert checker.peak_lent > 0


def test_one_iteration_at_a_time_whatever_max_fast_forward(tmp_path: Path) -> None:
    """Lending reads a busy instance's spare blocks and its costs read the pool's state, both
    of which change every iteration: the answer must not depend on engine.max_fast_forward
    (it did: a run planned ahead held every block it would need, so lenders lent less)."""
    rng = np.random.default_rng(4)
    n = 24
    wl = ListWorkloadConfig((np.arange(n) * 0.05).tolist(),
                            np.exp(rng.uniform(np.log(8000), np.log(150_000), n)).astype(int).tolist(),
                            [256] * n)
    frames, summaries = [], []
    for ff in (4096, 1):
        df, s = run(tmp_path / str(ff), ["cluster.replicas=2", "kv_pool=distattention",
                                         f"engine.max_fast_forward={ff}"], wl)
        frames.append(df.sort_values("request_id").reset_index(drop=True))
        summaries.append(s)
    fast, slow = frames
    assert summaries[1]["cluster"]["kv_pool"]["borrow_events"] > 0
    assert slow["preemptions"].sum() > 0, "this case must exercise lending under pressure"
    times = ["first_scheduled_s", "first_token_s", "completion_s", "ttft_s", "tpot_s", "e2e_s"]
    pd.testing.assert_frame_equal(fast.drop(columns=times), slow.drop(columns=times))
    for col in times:
        np.testing.assert_allclose(fast[col], slow[col], rtol=1e-9, atol=1e-12)
    assert summaries[0]["cluster"]["kv_pool"] == summaries[1]["cluster"]["kv_pool"]


def test_the_planned_lender_preempts_less_than_the_greedy_one(tmp_path: Path) -> None:
    """A burst whose longest prompts need more than one instance (the throughput mix of
    experiments/infinite_llm.py, small): a greedy creditor lends memory its own admitted
    prompts will take chunk by chunk, and preempts them; the planned one lends only what its
    requests' predicted demand leaves, and a debtor borrows a request's whole demand or none."""
    rng = np.random.default_rng(4)
    n = 32
    wl = ListWorkloadConfig((np.arange(n) * 0.05).tolist(),
                            np.exp(rng.uniform(np.log(8000), np.log(150_000), n)).astype(int).tolist(),
                            [256] * n)
    preempted, makespan = {}, {}
    for lender in ("greedy", "planned"):
        checker = PoolChecker(0.1)
        df, s = run(tmp_path / lender, ["cluster.replicas=4", "kv_pool=distattention",
                                        f"kv_pool.lender={lender}"], wl, checker)
        assert (df["status"] == "finished").all()
        assert s["cluster"]["kv_pool"]["borrow_events"] > 0
        assert s["cluster"]["kv_pool"]["borrowed_at_end"] == 0
        assert checker.peak_lent > 0
        preempted[lender] = int(df["preemptions"].sum())
        makespan[lender] = s["makespan_s"]
    assert preempted["greedy"] > 0, "this case must exercise lending under pressure"
    assert preempted["planned"] < preempted["greedy"]
    assert makespan["planned"] < makespan["greedy"]

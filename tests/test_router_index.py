"""Routers over indexed serving lists choose exactly as their scans (policies/router/index.py).

Random states: instances of a few work rates with random (often tied) outstanding and
pending tokens, random cached prefixes, members added and removed, loads changed with the
instances telling their indexes as engine/replica.py does; every router's choice over the
ServingList is compared with its choice over a plain copy of the list (a scan). Then whole
runs with and without the indexes give identical requests.
"""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

import simkv
from simkv.entities.request import Request
from simkv.policies.predictor import FixedPredictor, FixedPredictorConfig
from simkv.policies.router import (
    LeastOutstanding,
    LeastOutstandingConfig,
    LeastWork,
    LeastWorkConfig,
    PrefixAffinity,
    PrefixAffinityConfig,
    SessionAffinity,
    SessionAffinityConfig,
    SLOAware,
    SLOAwareConfig,
)
from simkv.policies.router.index import PrefixHolders, ServingList, scan_only

G = 16  # tokens per granule of the fake caches


class FakeHBM:
    def __init__(self) -> None:
        self.refs: dict[int, int] = {}
        self.holders: Any = None
        self.owner = -1

    def add(self, key: int) -> None:
        if key not in self.refs:
            self.refs[key] = 0
            if self.holders is not None:
                self.holders.add(key, self.owner)

    def remove(self, key: int) -> None:
        if key in self.refs:
            del self.refs[key]
            if self.holders is not None:
                self.holders.remove(key, self.owner)


class FakeInstance:
    """What a router reads of an instance, telling its watchers like engine/replica.py."""

    def __init__(self, index: int, rate: float) -> None:
        self.index = index
        self.work_rate = rate
        self.outstanding_tokens = 0
        self.outstanding_requests = 0
        self.pending = 0
        self.watchers: list[set[Any]] = []
        self.kv = SimpleNamespace(hbm=FakeHBM(), replica=index)

    def touch(self) -> None:
        for w in self.watchers:
            w.add(self)

    def cached_tokens(self, req: Request) -> int:
        n = 0
        for key in req.prefix or ():
            if key not in self.kv.hbm.refs:
                break
            n += 1
        return min(n * G, max(req.prompt_tokens - 1, 0))

    def pending_prefill_tokens(self) -> int:
        return self.pending


def routers() -> list[Any]:
    pred = FixedPredictor(FixedPredictorConfig())
    return [LeastOutstanding(LeastOutstandingConfig()), LeastWork(LeastWorkConfig(), predictor=pred),
            PrefixAffinity(PrefixAffinityConfig()), PrefixAffinity(PrefixAffinityConfig(load_weight=0.0)),
            PrefixAffinity(PrefixAffinityConfig(load_weight=3.0)), SLOAware(SLOAwareConfig()),
            SessionAffinity(SessionAffinityConfig())]


@pytest.mark.parametrize("seed", range(12))
def test_indexed_routers_choose_as_their_scans(seed: int) -> None:
    rnd = random.Random(seed)
    rates = [1000.0, 2500.0, 4000.0][: rnd.randint(1, 3)]
    kvs: list[Any] = []
    holders = PrefixHolders(kvs, G)
    every: list[FakeInstance] = []

    def new() -> FakeInstance:
        r = FakeInstance(len(every), rnd.choice(rates))
        every.append(r)
        kvs.append(r.kv)
        if holders.active:
            holders.watch(r.kv)
        return r

    serving = ServingList([new() for _ in range(rnd.randint(1, 40))], holders=holders)
    indexed, scanned = routers(), routers()
    granules = list(range(12))
    for step in range(300):
        op = rnd.random()
        if op < 0.05 and len(serving) > 1:
            serving.remove(rnd.choice(serving))
        elif op < 0.10:
            serving.insert(rnd.randint(0, len(serving)), new()) if rnd.random() < 0.3 \
                else serving.append(new())
        for r in rnd.sample(serving, min(len(serving), rnd.randint(0, 6))):
            # Small values so that ties are common (ties go to the earliest position).
            r.outstanding_tokens = rnd.choice([0, 0, 10, 20, 30, rnd.randint(0, 200)])
            r.pending = rnd.choice([0, 5, 5, rnd.randint(0, 100)])
            if rnd.random() < 0.1:
                r.work_rate = rnd.choice(rates)
            for _ in range(rnd.randint(0, 3)):
                key = rnd.choice(granules)
                (r.kv.hbm.add if rnd.random() < 0.6 else r.kv.hbm.remove)(key)
            r.touch()
        prefix = tuple(rnd.sample(granules, rnd.randint(1, 4))) if rnd.random() < 0.7 else None
        req = Request(step, 0.0, rnd.randint(1, 100), rnd.randint(1, 50), rnd.randint(-1, 5), 0,
                      prefix=prefix)
        for a, b in zip(indexed, scanned, strict=True):
            got = a.route(req, serving, 0.0)
            want = b.route(req, list(serving), 0.0)
            assert got == want, (type(a).__name__, step)


@pytest.mark.parametrize("overrides", [
    ["cluster.replicas=9", "router=least_work", "workload=near_duplicate",
     "workload.num_requests=300", "workload.rate=6"],
    ["cluster.replicas=9", "router=prefix_affinity", "workload=near_duplicate",
     "workload.num_requests=300", "workload.rate=6"],
    ["pools=h100_a100", "pools.h100.instances=2", "pools.a100.instances=2",
     "pools.h100.max_instances=6", "pools.a100.max_instances=6", "autoscaler=horizontal",
     "router=slo_aware", "workload=near_duplicate", "workload.num_requests=300",
     "workload.rate=4"],
    ["pools=pd_split", "pools.prefill.instances=2", "pools.decode.instances=3",
     "disagg.decode_router=least_work", "router=prefix_affinity", "workload=sharegpt",
     "workload.num_conversations=40", "workload.conversation_rate=2"],
])
def test_runs_with_and_without_indexes_are_identical(overrides: list[str], tmp_path: Path) -> None:
    tables = []
    try:
        for scan in (True, False):
            scan_only(scan)
            out = tmp_path / str(scan)
            simkv.simulate(simkv.compose([*overrides, "output.plot=false", "output.progress=false"]), out)
            tables.append(pq.read_table(out / "requests.parquet"))
    finally:
        scan_only(False)
    a, b = tables
    assert a.num_rows == b.num_rows > 0
    for col in a.column_names:
        np.testing.assert_array_equal(a.column(col).to_numpy(zero_copy_only=False),
                                      b.column(col).to_numpy(zero_copy_only=False), err_msg=col)

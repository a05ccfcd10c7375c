"""Invariants over random small workloads and configs (hypothesis).

After every engine run: the KV pool's count equals the blocks requests hold (recounted one
by one), never exceeds capacity, queues are consistent, and time never goes back. At the
end: every request finished exactly once or was rejected with a reason, TTFT <= E2E, output
tokens generated equal those requested, and every block is free again.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from unittest.mock import patch

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import simkv
from simkv import registry, runner
from simkv.config.schema import ClusterConfig, EngineConfig, KVConfig, OutputConfig, SimConfig
from simkv.entities.request import State
from simkv.policies.router import LeastOutstandingConfig, RoundRobinConfig
from simkv.policies.scheduler import StaticSchedulerConfig, VLLMSchedulerConfig
from tests.helpers import Checker, ListWorkloadConfig, SeenListWorkload, SeenListWorkloadConfig

requests = st.lists(
    # Many requests at the same instant stress planning (a batch admitted at once).
    st.tuples(st.one_of(st.just(0.0), st.floats(0.0, 2.0)), st.integers(1, 600),
              st.integers(1, 120)),
    min_size=1, max_size=40,
)
schedulers = st.one_of(
    st.builds(VLLMSchedulerConfig, max_num_seqs=st.integers(1, 16),
              max_num_batched_tokens=st.sampled_from([16, 64, 512, 2048]),
              chunked_prefill=st.booleans()),
    st.builds(StaticSchedulerConfig, max_batch_size=st.integers(1, 8)),
)


@pytest.mark.slow
@settings(max_examples=int(os.environ.get("SIMKV_HYPOTHESIS_EXAMPLES", 60)), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reqs=requests, sched=schedulers, blocks=st.integers(8, 400),
       block_size=st.sampled_from([1, 4, 16]), replicas=st.integers(1, 3),
       least=st.booleans(), ff=st.sampled_from([1, 3, 4096]))
def test_invariants_hold(reqs, sched, blocks, block_size, replicas, least, ff) -> None:
    if isinstance(sched, VLLMSchedulerConfig) and sched.max_num_batched_tokens < sched.max_num_seqs:
        sched = dataclasses.replace(sched, max_num_seqs=sched.max_num_batched_tokens)
    reqs = sorted(reqs)
    wl = ListWorkloadConfig([r[0] for r in reqs], [r[1] for r in reqs], [r[2] for r in reqs])
    cfg = SimConfig(
        cluster=ClusterConfig(replicas=replicas),
        kv=KVConfig(block_size=block_size, num_gpu_blocks_override=blocks),
        scheduler=sched,
        router=LeastOutstandingConfig() if least else RoundRobinConfig(),
        workload=wl,
        # A small livelock guard: a policy that stops making progress fails fast.
        engine=EngineConfig(max_fast_forward=ff, livelock_iterations=20_000),
        output=OutputConfig(plot=False, progress=False),
    )
    checker = Checker()
    with tempfile.TemporaryDirectory() as d:
        res = simkv.simulate(cfg, d, observer=checker)
        df = res.requests
    assert len(df) == len(reqs)
    assert df["request_id"].is_unique
    assert set(df["status"]) <= {"finished", "rejected"}
    rejected = df[df["status"] == "rejected"]
    assert (rejected["reject_reason"] != "").all()
    done = df[df["status"] == "finished"]
    assert (done["first_scheduled_s"] >= done["arrival_s"] - 1e-12).all()
    assert (done["first_token_s"] > done["first_scheduled_s"]).all()
    assert (done["ttft_s"] <= done["e2e_s"] + 1e-12).all()
    assert (done["completion_s"] >= done["first_token_s"]).all()
    # Only requests that could never fit alone are rejected.
    longest = rejected["prompt_tokens"] + rejected["output_tokens"] - 1
    never_fits = np.ceil(longest / block_size) > blocks
    assert (never_fits | (rejected["reject_reason"] == "token_budget")).all()
    assert checker.runs > 0 or done.empty
    for replica in checker.replicas.values():
        assert replica.scheduler.pool.used == 0, "blocks still held at the end"
        assert replica.scheduler.num_unfinished() == 0
        assert replica.outstanding_requests == 0


@pytest.mark.slow
@settings(max_examples=40, deadline=None)
@given(reqs=requests, blocks=st.integers(40, 200), chunked=st.booleans(), ff=st.sampled_from([1, 4096]))
def test_every_token_is_generated_and_every_block_returned(reqs, blocks, chunked, ff) -> None:
    reqs = sorted(reqs)
    wl = SeenListWorkloadConfig([r[0] for r in reqs], [r[1] for r in reqs], [r[2] for r in reqs])
    cfg = SimConfig(kv=KVConfig(block_size=4, num_gpu_blocks_override=blocks),
                    cluster=ClusterConfig(replicas=1),
                    scheduler=VLLMSchedulerConfig(max_num_seqs=8, max_num_batched_tokens=2048,
                                                  chunked_prefill=chunked),
                    router=RoundRobinConfig(), workload=wl,
                    engine=EngineConfig(livelock_iterations=20_000, max_fast_forward=ff),
                    output=OutputConfig(plot=False, progress=False))
    seen: list = []
    build = registry.build

    def keep(c, **deps):  # type: ignore[no-untyped-def]
        obj = build(c, **deps)
        if isinstance(obj, SeenListWorkload):
            seen.append(obj)
        return obj

    checker = Checker()
    with tempfile.TemporaryDirectory() as d, patch.object(runner, "build", keep):
        res = simkv.simulate(cfg, d, observer=checker)
        df = res.requests
    (workload,) = seen
    # Every request the workload sent came back exactly once, as the table says.
    assert sorted(r.id for r in workload.seen) == sorted(df["request_id"]) == list(range(len(reqs)))
    finished = [r for r in workload.seen if r.state is State.FINISHED]
    assert len(finished) == int((df["status"] == "finished").sum())
    assert len(finished) + sum(r.state is State.REJECTED for r in workload.seen) == len(reqs)
    for req in finished:
        assert req.generated == req.output_tokens
        assert req.computed == req.prompt_tokens + req.output_tokens - 1 or req.output_tokens == 1
    for replica in checker.replicas.values():
        assert replica.scheduler.pool.used == 0, "every block is free at the end"
        assert replica.scheduler.num_unfinished() == 0

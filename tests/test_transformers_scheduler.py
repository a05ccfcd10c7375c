"""scheduler=transformers: transformers 5.17's continuous batching rules, one by one, and the
step-by-step check against the engine's own profiled steps (issue 19)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from simkv.entities.request import Request, State
from simkv.kv.block_pool import BlockPool
from simkv.policies.scheduler.transformers_cb import (
    TransformersScheduler,
    TransformersSchedulerConfig,
    pad_to_interval,
    pad_to_pow2,
)
from simkv.validation import schedule as S  # noqa: N812 - read as a namespace

ROOT = Path(__file__).resolve().parents[1] / "validation" / "hf_h200_2026-11-30"


def sched(blocks: int, bs: int = 16, budget: int = 64, **kw: object) -> TransformersScheduler:
    return TransformersScheduler(TransformersSchedulerConfig(max_batch_tokens=budget, **kw),
                                 pool=BlockPool(blocks, bs))


def step(s: TransformersScheduler, t: float = 0.0) -> list[tuple[int, int]]:
    """Plan and commit one step; the (request id, query tokens) it ran."""
    out = s.schedule(t)
    assert out is not None
    ran = [(r.id, 1) for r in s._step_decodes] + [(r.id, n) for r, n in out.prefills]
    s.update(out, 1, (t + 1.0,))
    s.check_invariants()
    return ran


def test_block_rule_reserves_one_block_more_at_a_boundary() -> None:
    # transformers: blocks_needed = (tokens - room + 1) // block_size + 1
    s = sched(blocks=100, bs=16, budget=64)
    a, b = Request(0, 0.0, 14, 6), Request(1, 0.0, 15, 6)
    s.add_request(a)
    s.add_request(b)
    step(s)
    assert (a.blocks, b.blocks) == (1, 2)  # 14 + 1 < 16: one block; 15 + 1 = 16: two
    step(s)  # a's room 2, b's 17: no allocation
    step(s)  # a's room 1
    assert (a.blocks, b.blocks) == (1, 2)
    step(s)  # a holds 16 tokens: its next token takes a block
    assert a.blocks == 2


def test_a_waiting_request_that_does_not_fit_is_skipped_not_blocking() -> None:
    # vLLM's queue head blocks the rest; transformers skips it and admits a later one.
    s = sched(blocks=4, bs=16, budget=200)
    big, small = Request(0, 0.0, 100, 2), Request(1, 0.0, 10, 2)
    s.add_request(big)
    s.add_request(small)
    assert step(s) == [(1, 10)]
    assert big.state is State.WAITING


def test_chunked_prefill_decodes_first_then_chunks_then_waiting() -> None:
    s = sched(blocks=100, bs=16, budget=32, safety_margin=0.0)
    r0, r1, r2 = Request(0, 0.0, 8, 5), Request(1, 0.0, 50, 3), Request(2, 0.0, 4, 3)
    for r in (r0, r1, r2):
        s.add_request(r)
    assert step(s) == [(0, 8), (1, 24)]  # budget 32: r1 split, r2 waits
    assert step(s, 1.0) == [(0, 1), (1, 26), (2, 4)]  # decode first, the chunk, the queue
    assert r1.first_token == 2.0
    assert r0.first_token == 1.0


def test_prefill_first_puts_chunks_before_decodes() -> None:
    s = sched(blocks=100, bs=16, budget=32, scheduler_type="prefill_first")
    r0, r1 = Request(0, 0.0, 8, 5), Request(1, 0.0, 60, 3)
    s.add_request(r0)
    s.add_request(r1)
    assert step(s) == [(0, 8), (1, 24)]
    assert step(s) == [(1, 32)]  # the split prefill takes the whole budget: no decode
    assert step(s) == [(0, 1), (1, 4)]
    f = sched(blocks=100, bs=16, budget=32)  # FIFO: the decode goes first
    f.add_request(Request(0, 0.0, 8, 5))
    f.add_request(Request(1, 0.0, 60, 3))
    step(f)
    assert step(f) == [(0, 1), (1, 31)]


def test_safety_margin_holds_new_prefills_not_decodes() -> None:
    # 10 blocks, FIFO margin 0.15 -> 1.5 blocks: with one block free no second request starts
    s = sched(blocks=10, bs=16, budget=200)
    a = Request(0, 0.0, 130, 40)  # 9 blocks by the rule: (130 + 1) // 16 + 1
    s.add_request(a)
    step(s)
    assert s.pool.free == 1
    s.add_request(Request(1, 0.0, 4, 2))
    assert step(s) == [(0, 1)]  # the decode runs, the new prefill waits (1 < 1.5 free)
    s2 = sched(blocks=10, bs=16, budget=200, safety_margin=0.0)
    s2.add_request(Request(0, 0.0, 130, 40))
    step(s2)
    s2.add_request(Request(1, 0.0, 4, 2))
    assert step(s2) == [(0, 1), (1, 4)]


def test_starved_decode_evicts_the_newest_by_soft_reset() -> None:
    s = sched(blocks=4, bs=16, budget=64, safety_margin=0.0)
    a, b = Request(0, 0.0, 14, 30), Request(1, 0.0, 14, 30)
    s.add_request(a)
    s.add_request(b)
    step(s)  # one block each (14 + 1 <= 16): 2 free
    for _ in range(40):
        if s.evictions:
            break
        step(s)
    assert s.evictions == 1
    assert b.preemptions == 1
    assert a.preemptions == 0
    assert b.state is State.WAITING
    assert b.computed == 0
    assert b.generated > 0
    assert s.block_new  # no waiting request is offered until one finishes
    while a.state is not State.FINISHED:
        step(s)
    assert not s.block_new
    while b.state is not State.FINISHED:
        step(s)
    assert b.generated == 30  # it re-prefilled prompt and output so far, then finished


def test_padding_helpers_match_transformers_utils() -> None:
    assert pad_to_interval(0, 64, 2048) == 64
    assert pad_to_interval(65, 64, 2048) == 128
    assert pad_to_interval(5000, 64, 2048) == 2048
    assert pad_to_pow2(1, 262144, 1024) == 1024
    assert pad_to_pow2(1025, 262144, 1024) == 2048


def test_bad_scheduler_type_is_refused_naming_the_key() -> None:
    with pytest.raises(ValueError, match="scheduler_type"):
        TransformersSchedulerConfig(scheduler_type="lifo").validate()
    with pytest.raises(ValueError, match="precaptured cannot act"):
        TransformersSchedulerConfig(precaptured=["64/16384/1024"]).validate()


def stream(shape: str, tag: str) -> tuple[pd.DataFrame, pd.DataFrame, S.Limits]:
    folder = ROOT / shape
    lim = S.limits(json.loads((folder / "engine.json").read_text()))
    return (pd.read_csv(folder / f"requests_{tag}.csv"), pd.read_csv(folder / f"iterations_{tag}.csv"),
            lim)


@pytest.mark.parametrize(("shape", "tag"), [("llama3_8b", "code-1.5-a"), ("qwen2_5_7b", "conv-2-b"),
                                            ("llama3_70b_tp2", "conv-1.5-a")])
def test_engine_steps_reproduced_step_by_step(shape: str, tag: str) -> None:
    """Fed the engine's arrivals at its own step times, every step's sequences, query tokens,
    KV tokens read and CUDA-graph key equal the engine's (measured: all 19,762 steps of
    hf_h200_2026-11-30)."""
    req, steps, lim = stream(shape, tag)
    d = S.teacher_forced(req, steps, lim)
    assert S.agreement(d)["agree"] == 100.0
    assert (d["kv_read"] == d["sim_kv_read"]).all()
    keys = (steps["q_padded"].astype(str) + "/" + steps["kv_padded"].astype(str) + "/"
            + steps["seqlen_k"].astype(str))
    assert (keys == d["sim_key"]).all()


def test_vllm_rules_would_not_reproduce_the_engine_block_rule() -> None:
    """The check can fail: with the block rule of simkv's vllm scheduler (exact ceil) in its
    place, the KV pool would hold fewer blocks than the engine's, visible in free blocks."""
    s = sched(blocks=100, bs=256, budget=2048)
    s.add_request(Request(0, 0.0, 256, 2))
    step(s)
    assert s.pool.used == 2  # ceil(256 / 256) would be 1


def test_free_running_times_equal_a_full_simkv_run() -> None:
    """The step loop of ``free_running`` is the replica's: same request times as simulate()."""
    import dataclasses

    from simkv.validation import holdout as H  # noqa: N812

    run = H.load_run(ROOT / "qwen2_5_7b")
    tag = "conv-0.3-a"
    req = run.requests[tag].iloc[:12].reset_index(drop=True)
    engine = H.engine_base(run)
    cfg = H.sim_config(run, "h200_calibrated", engine)
    from simkv.validation.compare import predict

    full = predict(req, cfg)
    cost = H.cost_model(run, "h200_calibrated", engine)
    _, mine = S.free_running(req, S.limits(run.engine), cost, cfg.scheduler)
    for m in ("ttft", "tpot", "e2e"):
        assert mine[m].to_numpy() == pytest.approx(full[m].to_numpy(), rel=1e-9, abs=1e-12)
    assert dataclasses.is_dataclass(cfg.scheduler)


def test_requests_a_cut_replay_did_not_finish_are_still_scheduled() -> None:
    """Regression: a replay cut by its deadline (H100, 2026-12-07, llama3_8b_rerun: 356 of 400
    finished) left its 44 unfinished requests out of the replayed schedule, which then agreed
    with the engine on 8% of steps; they are in the engine's queue from the step that first
    saw them (queued_step), and out of every error."""
    from simkv.validation.campaign import load_run
    from simkv.validation.compare import errors

    run = load_run(ROOT.parent / "hf_h100_2026-12-07" / "llama3_8b_rerun")
    tag = "burst-sustained-2x-400-a"
    req = run.requests[tag]
    assert (~req["measured"]).sum() == 44
    d = S.teacher_forced(req, run.steps[tag], S.limits(run.engine))
    assert S.agreement(d)["agree"] == 100.0
    e = errors(req, req.assign(ttft=req["ttft"] * 1.1, tpot=req["tpot"], e2e=req["e2e"]))
    assert e["ttft"]["median_ape"] == pytest.approx(10.0)  # NaN rows left out

"""What an instance's own requests will still need: the demand a planned lender keeps.

Infinite-LLM's gManager keeps a global view of every instance's memory and decides which
creditors lend to a debtor (docs/CLUSTER.md, "DistAttention"). The greedy lender of
``kv_pool=distattention`` reads only what a creditor has free *now*; with chunked prefill a
prompt takes its blocks chunk by chunk and a decode one block at a time, so memory that looks
free is already promised to the creditor's own admitted requests, and lending it makes the
creditor preempt them a few iterations later. ``kv_pool.lender=planned`` lends only what the
creditor's own demand leaves free, and reads what a real gManager can know:

* each admitted request's prompt length and the tokens generated so far;
* the output length it will reach: the cluster's output predictor (``predictor``: the
  running mean of finished requests by default), never the trace's true length, and at
  least one token more than already generated;
* the queue: a queued request's demand is protected only against a debtor whose own
  oldest queued request arrived later (the cluster's requests get memory in arrival order:
  two instances each waiting to borrow for their head request cannot block each other).
"""

from __future__ import annotations

from typing import Any

from simkv.entities.request import DECODING, Request
from simkv.kv.block_pool import blocks_for

# No queued request is protected: the debtor asks for its admitted requests' growth.
RUNNING_ONLY: tuple[float, int] = (float("-inf"), -1)


def _generated(req: Request, sched: Any) -> int:
    """Output tokens generated so far (a decoding request's count is kept lazily)."""
    if req.state is DECODING:
        return req.gen_base + sched.decode.ticks
    return req.generated


def expected_blocks(req: Request, sched: Any, predictor: Any) -> int:
    """Blocks ``req`` will hold at its predicted end: its prompt plus the larger of the
    predicted output and one more token than it has generated (the last token's KV is never
    written, as in admission_error's longest sequence)."""
    gen = _generated(req, sched)
    out = max(predictor.predict(req), gen + 1)
    return blocks_for(req.prompt_tokens + out - 1, sched.block_size)


def claim_key(instance: Any) -> tuple[float, int]:
    """A debtor's place in the cluster's queue: its oldest queued request (arrival, id), or
    ``RUNNING_ONLY`` where nothing waits (it borrows for its admitted requests)."""
    waiting = instance.scheduler.waiting
    if not waiting:
        return RUNNING_ONLY
    head = min(waiting, key=lambda r: (r.arrival, r.id))
    return (head.arrival, head.id)


def room_after_demand(instance: Any, before: tuple[float, int]) -> int:
    """Blocks of ``instance``'s capacity its own requests will not need (``own_demand``, or
    the blocks in use now where they hold more): what a planned lender may give."""
    pool = instance.scheduler.pool
    return pool.capacity - max(own_demand(instance, before), pool.used + pool.pinned)


def own_demand(instance: Any, before: tuple[float, int]) -> int:
    """Blocks ``instance``'s own requests will need: every admitted request at its predicted
    end, plus the queued ones that arrived before ``before`` (a debtor's claim_key)."""
    sched = instance.scheduler
    predictor = instance.predictor
    total = 0
    for req in sched.running.values():
        total += expected_blocks(req, sched, predictor)
    for req in sched.held.values():  # KV held for a decode instance: still in use here
        total += req.blocks
    if before is not RUNNING_ONLY:
        for req in sched.waiting:
            if (req.arrival, req.id) < before:
                total += expected_blocks(req, sched, predictor)
    return total

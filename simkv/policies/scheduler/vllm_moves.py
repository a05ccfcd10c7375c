"""vLLM's scheduler as the cluster moves requests and KV between instances.

A base class of ``VLLMScheduler`` (vllm.py), split from it along this seam: a running request
detached to continue elsewhere with its KV and attached on arrival (engine/migration.py,
with Llumnix's reservation of blocks on the destination), a disaggregated request admitted
with KV computed on a prefill instance and the prefill side's blocks released once that KV
has left (engine/disagg.py), blocks borrowed from peer instances (kv_pool=distattention),
and an instance that restarts between iterations handing back all it holds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from simkv.entities.request import DECODING, LOADING, WAITING, Request
from simkv.kv.block_pool import BlockPool, blocks_for
from simkv.kv.manager import KVManager, may_hit
from simkv.policies.scheduler.interface import SchedulerOutput

if TYPE_CHECKING:
    from collections import deque


class InstanceMoves:
    """Moves of requests and KV between instances (methods of ``VLLMScheduler``)."""

    # Set by VLLMScheduler.__init__ (vllm.py), which also provides ``_preempt_last``,
    # ``_requeue`` and ``_seat``.
    pool: BlockPool
    block_size: int
    kv: KVManager | None
    decode: Any
    waiting: deque[Request]
    running: dict[int, Request]
    prefilling: dict[int, Request]
    loading: dict[int, Request]
    held: dict[int, Request]
    reserved_in: int
    prefill_in_flight: int
    on_remote: Callable[[Request], None] | None
    _plain: bool

    def evacuate(self, now: float) -> list[Request]:
        """Preempt everything running (recompute: no KV is kept or swapped) and hand back
        every queued request: an instance that restarts at once (between iterations)."""
        while self.running:
            self._preempt_last(now, may_swap=False)
        self.prefill_in_flight = 0  # a plan lost with the instance: its chunks are pending again
        out = list(self.waiting)
        self._requeue([])
        return out

    def detach_running(self, req: Request, now: float) -> int:
        """Take running ``req`` out (between iterations) to continue elsewhere with its KV:
        its progress stays, its blocks here are freed (a prefix cache keeps what it can, as
        for a preemption); returns the KV tokens it had, which the other instance receives."""
        del self.running[req.id]
        if req.state is DECODING:
            self.decode.leave(req)
            req.blocks = blocks_for(req.computed, self.block_size) - req.shared
        else:
            del self.prefilling[req.id]
        tokens = req.computed
        kv = self.kv
        self.pool.release(kv.release(req, now, finished=False, may_swap=False)
                          if kv is not None else req.blocks)
        req.blocks = req.shared = req.pinned_g = 0
        req.computed = 0
        req.state = WAITING
        return tokens

    def reserve_incoming(self, blocks: int) -> bool:
        """Hold ``blocks`` for a request whose KV is being copied here while it still runs
        elsewhere (Llumnix's pre-allocation on the destination); False if they are not free
        beside what the decodes here need next."""
        need = self.decode.need_next() if self.decode.members else 0
        if blocks > self.pool.free - need:
            return False
        self.pool.allocate(blocks)
        self.reserved_in += blocks
        return True

    def release_incoming(self, blocks: int) -> None:
        self.pool.release(blocks)
        self.reserved_in -= blocks

    def attach_running(self, req: Request) -> None:
        """Queue a request moved here first in line (it was running elsewhere); with
        ``remote_kv`` set it is admitted with that KV to receive (``on_remote``)."""
        req.state = WAITING
        self.waiting.appendleft(req)

    def planned_need(self, out: SchedulerOutput) -> int:
        """Blocks the run in flight will still take when it ends (its decodes' new blocks are
        allocated in ``update``): what another instance may not borrow from this one now."""
        if not self._plain:
            return self.pool.free  # shaped steps: keep everything
        return self.need_by(out, out.num_iterations)

    def need_by(self, out: SchedulerOutput, done: int) -> int:
        """Blocks the first ``done`` iterations of the run in flight take when committed (its
        decodes' new blocks; shaped steps: none counted)."""
        if not self._plain or not done or not (out.num_decodes or out.tail_decodes):
            return 0
        dec = self.decode
        if out.prefills:
            return out.first_need + (dec.need_over(done - 1, skip=1) if done > 1 else 0)
        return dec.need_over(done)

    def _admit_remote(self, req: Request, need: int, now: float) -> bool:
        """Admit the queue's head, whose KV was computed on a prefill instance: take its seat
        and the blocks of that KV now, wait in LOADING until it lands (the cluster moves it)."""
        blocks = blocks_for(req.remote_kv, self.block_size)
        # NOTE: borrow like any admission (kv_pool=distattention): admission_error let a KV
        # longer than this instance in on its peers' memory, and without borrowing here it
        # waited forever (the event queue ran dry: issue 18, item 4).
        pool = self.pool
        if blocks > pool.free - need and not self._borrow(blocks, need):
            return False  # backpressure: the prefill instance keeps holding the KV
        self.waiting.popleft()
        pool.allocate(blocks)
        req.blocks = blocks
        req.computed = req.remote_kv
        req.load_epoch += 1
        self._seat(req, now)
        req.state = LOADING
        self.loading[req.id] = req
        assert self.on_remote is not None, "a request with remote KV on an instance without a handoff"
        self.on_remote(req)
        return True

    def release_held(self, req: Request, now: float) -> None:
        """A finished prefill's KV has reached its decode instance: free its blocks here."""
        del self.held[req.id]
        kv = self.kv
        self.pool.release(kv.release(req, now, True) if kv is not None and may_hit(req)
                          else req.blocks)
        req.blocks = 0

    def _borrow(self, blocks: int, need: int) -> bool:
        """Whether ``blocks`` fit beside ``need`` once other instances lent what they can
        (kv_pool=distattention; False at once without a KV pool)."""
        pool = self.pool
        if pool.borrow is None:
            return False
        pool.borrow(blocks - (pool.free - need))
        return blocks <= pool.free - need

"""DistAttention with a cluster-wide KV pool (Infinite-LLM, arXiv 2401.02669).

An instance whose KV blocks run short **borrows** blocks from other instances of its pool
(same model and layout, so the KV format matches), the creditors with the most unused memory
first: the lender's pool shrinks by the blocks it lends and the debtor's grows by as much.
Attention over the borrowed blocks is computed where they live: per decode step and layer the
debtor sends its queries and gets partial results back (small vectors, a round trip on the
link between them), the lender spends the attention time on its own GPU. So:

* the debtor's attention takes max(its local part, the largest lender's part) plus one round
  trip per layer: the KV of one long sequence is read by several GPUs at once;
* each lender's iterations take longer by the attention over the KV it holds for others;
* a lender keeps ``reserve`` of its blocks unlent for its own requests and, when its own
  blocks run short, first recalls blocks it lent that the debtor is not using (its requests
  have priority; a debtor's blocks in use are never taken away);
* borrowed blocks go back to their lenders as soon as the debtor no longer needs them
  (unused blocks after requests end).

A request is admitted if its longest sequence fits its instance's pool plus what the other
instances could lend (``reach``): sequences longer than any one instance become possible.

``lender`` says how much a creditor lends: ``greedy`` (the default) whatever it has unused
above ``reserve``; ``planned`` only what its own requests' demand leaves (planner.py: their
prompts and predicted outputs, its queue in the cluster's arrival order), plus ``reserve``
as headroom, and a debtor asks the creditors with the most room after their own demand first.
Left out (docs/CLUSTER.md): lending from the lenders' DRAM, migration of a debtor's blocks,
the planner's own messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from simkv.config.bounds import bounded
from simkv.policies.kv_pool.planner import (
    RUNNING_ONLY,
    claim_key,
    expected_blocks,
    own_demand,
    room_after_demand,
)
from simkv.registry import register


@dataclass(slots=True)
class DistAttentionConfig:
    # Share of each instance's blocks it never lends (kept for its own requests).
    reserve: float = bounded(0.1, ge=0, lt=1)
    # How much a creditor lends: greedy (whatever it has unused above the reserve) or
    # planned (what its own requests' predicted demand leaves, plus the reserve; planner.py).
    lender: str = bounded("greedy", choices=("greedy", "planned"))


class BorrowedKVCost:
    """An instance's cost model while it borrows or lends KV blocks (see the module doc)."""

    def __init__(self, inner: Any, replica: Any, planner: DistAttention) -> None:
        self.inner = inner
        self.replica = replica
        self.planner = planner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def run_times(self, out: Any) -> Any:
        inner = self.inner
        t = inner.run_times(out)
        pool = self.replica.scheduler.pool
        extra = 0.0
        if pool.lent:  # attention over the KV it holds for others, each of its iterations
            extra += self.planner.lent_attention_s(self.replica)
        if pool.borrowed and (out.num_decodes or out.tail_decodes):
            lenders = self.planner.ledger.get(self.replica.index, {})
            remote = min(pool.borrowed, pool.used)
            f = remote / pool.used if pool.used else 0.0
            scale = max(1.0 - f, f / max(len(lenders), 1))
            rtt = inner.layers * self.planner.round_trip_s(self.replica)
            return self._scaled(out, t, scale, rtt + extra)
        if extra:
            return self._add(t, extra)
        return t

    def _scaled(self, out: Any, t: Any, scale: float, add: float) -> Any:
        """Attention part of each iteration times ``scale``, plus ``add``: the attention part
        is what the iteration costs beyond its linear layers and sampling."""
        inner = self.inner
        if out.num_iterations == 1:
            base = inner.linear_s(out.prefill_tokens + out.num_decodes) + inner.sample_s(out.num_sampled)
            return base + (t - base) * scale + add
        times = list(t)
        start = 0
        if out.prefill_tokens:
            base = inner.linear_s(out.prefill_tokens + out.num_decodes) + inner.sample_s(out.num_sampled)
            times[0] = base + (times[0] - base) * scale + add
            start = 1
            b = out.tail_decodes
        else:
            b = out.num_decodes
        base = inner.linear_s(b) + inner.sample_s(b)
        for i in range(start, len(times)):
            times[i] = base + (times[i] - base) * scale + add
        return times

    @staticmethod
    def _add(t: Any, add: float) -> Any:
        if isinstance(t, float):
            return t + add
        return [x + add for x in t]


@register("kv_pool", "distattention", DistAttentionConfig)
class DistAttention:
    # NOTE: one iteration at a time. A run planned ahead holds every block it will need
    # (spare_blocks), so a busy lender would lend less than it can; its cost would keep the
    # lent attention and the debtor's remote share of its plan. Fast-forwarded, the Infinite-LLM
    # experiment's 4-GPU mix ran at 8,957 tokens/s against 7,193 step by step (19 preemptions
    # against 102): the answer depended on engine.max_fast_forward (docs/ARCHITECTURE.md).
    per_iteration = True

    def __init__(self, cfg: DistAttentionConfig, **_: object) -> None:
        self.cfg = cfg
        self.planned = cfg.lender == "planned"
        self.instances: list[Any] = []
        # debtor index -> {lender index: blocks}
        self.ledger: dict[int, dict[int, int]] = {}
        self.by_index: dict[int, Any] = {}
        self.capacity0: dict[int, int] = {}
        self.borrows = 0
        self.peak_borrowed = 0
        self.blocks_lent_total = 0

    # --- membership -----------------------------------------------------------------------
    def attach(self, r: Any) -> None:
        pool = r.scheduler.pool
        self.instances.append(r)
        self.by_index[r.index] = r
        self.capacity0[r.index] = pool.capacity
        pool.borrow = lambda n, r=r: self.borrow(r, n)
        pool.give_back = lambda r=r: self.give_back(r)
        r.cost = BorrowedKVCost(r.cost, r, self)
        self._update_reach()

    def detach(self, r: Any) -> None:
        self.give_back(r)
        self.instances.remove(r)
        self._update_reach()

    def _peers(self, r: Any) -> list[Any]:
        return [x for x in self.instances if x is not r and x.pool is r.pool]

    def _update_reach(self) -> None:
        for r in self.instances:
            r.scheduler.pool.reach = sum(int(self.capacity0[x.index] * (1 - self.cfg.reserve))
                                         for x in self._peers(r))

    # --- lending ------------------------------------------------------------------------
    @staticmethod
    def _unused(r: Any) -> int:
        """Blocks that can change hands: never used, or cached but evictable (the prefix cache
        gives them up, as it would to an allocation), less what a run in flight will take."""
        return r.spare_blocks()

    def _surplus(self, debtor: Any) -> int:
        """Borrowed capacity ``debtor`` can give back: its unused blocks (greedy) or those its
        admitted requests will not need at their predicted ends (planned)."""
        free = self._unused(debtor)
        if not self.planned:
            return free
        return min(free, room_after_demand(debtor, RUNNING_ONLY))

    def _lendable(self, r: Any, key: tuple[float, int] = RUNNING_ONLY) -> int:
        pool = r.scheduler.pool
        if pool.borrowed:
            return 0  # a debtor lends nothing
        reserve = int(self.capacity0[r.index] * self.cfg.reserve)
        own_free = self._unused(r)
        if self.planned:
            # Only what its own requests will not need (planner.py), the reserve kept above it.
            own_free = min(own_free, room_after_demand(r, key))
        # A lender lends out of its own capacity only, never out of what it borrowed.
        return max(0, min(own_free - reserve, self.capacity0[r.index] - pool.lent - reserve))

    def borrow(self, debtor: Any, n: int) -> int:
        """Up to ``n`` more blocks for ``debtor``: its own lent blocks back first, then from
        the creditors with the most unused memory. Returns the blocks granted."""
        if self.planned:
            return self._borrow_planned(debtor, n)
        got = self._recall(debtor, n)
        if got < n:
            self._return_others(debtor)
        got += self._lend(debtor, n - got, RUNNING_ONLY)
        if got:
            self.borrows += 1
        return got

    def _return_others(self, debtor: Any) -> None:
        """Capacity other debtors borrowed but do not use goes back to its lenders first."""
        for other in self._peers(debtor):
            if other.index in self.ledger:
                self._return_free(other)

    def _lend(self, debtor: Any, n: int, key: tuple[float, int], all_or_none: bool = False) -> int:
        """Move up to ``n`` blocks to ``debtor`` from the creditors with the most room first
        (none unless all ``n`` can come, with ``all_or_none``); returns the blocks moved."""
        if n <= 0:
            return 0
        peers = self._peers(debtor)
        room = {x.index: self._lendable(x, key) for x in peers}
        if all_or_none and sum(room.values()) < n:
            return 0
        got = 0
        for lender in sorted(peers, key=lambda x: (-room[x.index], x.index)):
            if got >= n:
                break
            k = min(n - got, room[lender.index])
            if k <= 0:
                break
            self._move(lender, debtor, k)
            got += k
        return got

    def _borrow_planned(self, debtor: Any, n: int) -> int:
        """The planned lender (planner.py): ``debtor`` asks for what its admitted requests and
        the head of its queue will need at their predicted ends, all of it or nothing; short
        of that, only what its admitted requests lack (their growth, not a new admission).
        A request is then admitted only with its whole predicted demand in hand, instead of
        chunk by chunk on memory its lenders' own requests will take back."""
        pool = debtor.scheduler.pool
        waiting = debtor.scheduler.waiting
        running = own_demand(debtor, RUNNING_ONLY)
        head = expected_blocks(waiting[0], debtor.scheduler, debtor.predictor) if waiting else 0
        want = max(running, pool.used + pool.pinned) + head - pool.capacity
        # Never more than the peers could ever lend (a prediction may exceed the request's
        # true length, which admission checked against ``reach``).
        want = max(n, min(want, pool.reach - pool.borrowed))
        got = self._recall(debtor, want)
        key = claim_key(debtor)
        if got < want:
            self._return_others(debtor)
            got += self._lend(debtor, want - got, key, all_or_none=True)
        if got < n and running > pool.capacity:
            got += self._lend(debtor, min(n - got, running - pool.capacity), key)
        if got:
            self.borrows += 1
        if got < n:
            # An idle peer whose head request is older may borrow now (memory here may have
            # been freed since it last tried): wake it. Only older ones, so two instances
            # cannot wake each other for ever at one instant.
            for peer in self._peers(debtor):
                if not peer.busy and peer.scheduler.waiting and claim_key(peer) < key:
                    peer.poke()
        return got

    def _recall(self, lender: Any, n: int) -> int:
        got = 0
        for d_index, owed in list(self.ledger.items()):
            k = min(n - got, owed.get(lender.index, 0), self._surplus(self.by_index[d_index]))
            if k > 0:
                self._move_back(self.by_index[d_index], lender, k)
                got += k
            if got >= n:
                break
        return got

    def _move(self, lender: Any, debtor: Any, k: int) -> None:
        lp, dp = lender.scheduler.pool, debtor.scheduler.pool
        lp.resize(lp.capacity - k)  # evicts cached blocks beyond the new size
        lp.lent += k
        dp.capacity += k
        dp.borrowed += k
        row = self.ledger.setdefault(debtor.index, {})
        row[lender.index] = row.get(lender.index, 0) + k
        self.blocks_lent_total += k
        self.peak_borrowed = max(self.peak_borrowed, dp.borrowed)

    def _move_back(self, debtor: Any, lender: Any, k: int) -> None:
        lp, dp = lender.scheduler.pool, debtor.scheduler.pool
        dp.resize(dp.capacity - k)
        dp.borrowed -= k
        lp.capacity += k
        lp.lent -= k
        row = self.ledger[debtor.index]
        row[lender.index] -= k
        if not row[lender.index]:
            del row[lender.index]
        if not row:
            del self.ledger[debtor.index]
        lender.poke()  # its queue may fit now

    def _return_free(self, debtor: Any) -> None:
        """Return the borrowed blocks ``debtor`` is not using, largest lenders first."""
        row = self.ledger.get(debtor.index)
        while row:
            free = self._surplus(debtor)
            if free <= 0:
                return
            lender_index, owed = max(row.items(), key=lambda kv: (kv[1], -kv[0]))
            self._move_back(debtor, self.by_index[lender_index], min(free, owed))
            row = self.ledger.get(debtor.index)

    def give_back(self, debtor: Any) -> None:
        """Requests ended on ``debtor``: return what it borrowed and no longer uses, and wake
        idle peers whose queues wait for memory that may be free now."""
        self._return_free(debtor)
        for peer in self._peers(debtor):
            if not peer.busy and peer.scheduler.num_unfinished():
                peer.poke()

    # --- costs ----------------------------------------------------------------------------
    def lent_attention_s(self, lender: Any) -> float:
        """Per iteration: attention over the KV this lender holds for others (all layers)."""
        pool = lender.scheduler.pool
        tokens = pool.lent * pool.block_size
        cost = lender.cost.inner if isinstance(lender.cost, BorrowedKVCost) else lender.cost
        return cost.layers * cost._decode_attention(1, float(tokens)).seconds

    def round_trip_s(self, debtor: Any) -> float:
        """One layer's query out and partial results back: a link latency each way."""
        hw = debtor.pool.hw
        node = debtor.pool.node
        lenders = self.ledger.get(debtor.index, {})
        topo_nodes = {self.by_index[i].slots.gpus[0] // node.gpus_per_node for i in lenders}
        here = debtor.slots.gpus[0] // node.gpus_per_node
        latency = (hw.nvlink_latency_s if topo_nodes <= {here}
                   else node.gpu_network_latency_s)
        return 2 * latency

    def summary(self) -> dict[str, Any]:
        return {"borrow_events": self.borrows, "blocks_lent_total": self.blocks_lent_total,
                "peak_borrowed_blocks": self.peak_borrowed,
                "borrowed_at_end": sum(sum(v.values()) for v in self.ledger.values())}

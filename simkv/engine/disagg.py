"""Disaggregated prefill and decode: a request's KV moves from a prefill instance to a decode
instance over the cluster's links.

1. The router sends an arriving request to a **prefill** instance, as a prefill-only copy
   (one output token, as vLLM's disaggregated proxy does with ``max_tokens=1``) that keeps
   its KV blocks when it finishes (``hold_kv``).
2. At its first token the **handoff** picks a decode instance (the decode router among the
   serving decode instances, those on the prefill instance's node first) and queues the
   request there with ``remote_kv`` = prompt - 1 tokens of KV to receive.
3. The decode instance's scheduler admits it like any request, FCFS, when a seat and the KV's
   blocks are free (**backpressure**: until then the prefill instance keeps holding the KV
   and its memory), and calls back: the KV moves GPU to GPU (NVLink on one node, the nodes'
   RDMA NICs otherwise), one transfer per GPU pair, on the shared fabric.
4. When it lands the prefill instance frees its blocks; the decode instance computes the last
   prompt token (logits for the first output token, as a prefix-cache hit leaves one token to
   compute) and decodes. TTFT therefore includes the prefill, the wait for a decode slot and
   the transfer.

``kv_streaming`` (DistServe, Mooncake: layers sent as they are computed): the bytes the path
could carry during the prefill are taken as already sent (an estimate at the path's
uncontended bandwidth; at least the last layer's share moves after the prefill). Those bytes
are counted but do not occupy the links (documented in docs/CLUSTER.md).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from simkv.config.schema import DisaggConfig
from simkv.entities.request import Request
from simkv.kv.links import Transfer
from simkv.policies.router.index import ServingList
from simkv.registry import build, config_for


@dataclass(slots=True)
class HandoffStats:
    transfers: int = 0
    bytes: float = 0.0
    streamed_bytes: float = 0.0
    rejected: int = 0


class Handoff:
    def __init__(self, cfg: DisaggConfig, topology: Any, rng: np.random.Generator,
                 submit: Callable[[Any, Request], None],
                 reject: Callable[[Request, str], None], predictor: Any = None) -> None:
        self.cfg = cfg
        self.topology = topology
        try:
            router_cfg = config_for("router", cfg.decode_router)
        except KeyError as exc:
            raise ValueError(f"disagg.decode_router: {exc.args[0]}") from None
        self.router = build(router_cfg, rng=rng, predictor=predictor)
        # Lists that keep the decode router's indexes (policies/router/index.py); ``holders``
        # is the cluster's index of cached granules (set by the cluster).
        self.holders: Any = None
        self.decoding: list[Any] = ServingList()
        # Serving decode instances per node, for the same-node preference in O(1).
        self.by_node: dict[int, list[Any]] = {}
        self.backlog: deque[Request] = deque()
        self._submit = submit
        self._reject = reject
        self.stats = HandoffStats()
        # Request id -> its prefill copy (holding the KV) and the instance that holds it.
        self.children: dict[int, Request] = {}
        self.source: dict[int, Any] = {}
        # Decode pool -> its model's KV bytes per token (admitted reads it per request).
        self._per_token: dict[Any, int] = {}

    # --- stage 1 ------------------------------------------------------------------------
    @staticmethod
    def prefill_copy(req: Request) -> Request:
        """The copy a prefill instance runs: the prompt, one output token, KV held."""
        child = Request(req.id, req.arrival, req.prompt_tokens, 1, req.session, req.turn,
                        req.model, req.log_type, req.prefix)
        child.hold_kv = True
        child.parent = req
        child.priority = req.priority
        return child

    def prefilled(self, child: Request, prefill: Any, now: float) -> None:
        """A prefill copy produced its first token: hand its request to a decode instance."""
        req = child.parent
        assert req is not None
        req.first_scheduled = child.first_scheduled
        req.preemptions += child.preemptions
        req.prefill_replica = prefill.index
        req.cached_hbm, req.cached_dram = child.cached_hbm, child.cached_dram
        req.cached_disk, req.cached_remote = child.cached_disk, child.cached_remote
        req.kv_wait += child.kv_wait
        req.remote_kv = req.prompt_tokens - 1
        req.handoff_at = now
        self.children[req.id] = child
        self.source[req.id] = prefill
        if req.remote_kv == 0:
            self._release(req, now)  # a one-token prompt: nothing to move
        self.route(req)

    # --- stage 2 ------------------------------------------------------------------------
    def route(self, req: Request) -> None:
        if not self.decoding:
            self.backlog.append(req)
            return
        cands = self.decoding
        src = self.source.get(req.id)
        if self.cfg.prefer_same_node and src is not None:
            cands = self.by_node.get(self.topology.replica_node[src.index]) or cands
        target = cands[self.router.route(req, cands, 0.0)]
        reason = target.scheduler.admission_error(req)
        if reason:
            self.stats.rejected += 1
            req.replica = target.index
            req.pool = target.pool.index
            self._release(req, req.handoff_at)
            self._reject(req, reason)
            return
        self._submit(target, req)

    def start_serving(self, r: Any) -> None:
        self.decoding.holders = self.holders
        self.decoding.append(r)
        node = self.topology.replica_node[r.index]
        if node not in self.by_node:
            self.by_node[node] = ServingList(holders=self.holders)
        self.by_node[node].append(r)
        while self.backlog:
            self.route(self.backlog.popleft())

    def stop_serving(self, r: Any) -> None:
        self.decoding.remove(r)
        node = self.topology.replica_node[r.index]
        self.by_node[node].remove(r)
        if not self.by_node[node]:
            del self.by_node[node]

    # --- the transfer -------------------------------------------------------------------
    def admitted(self, req: Request, dst: Any, env_now: float) -> None:
        """The decode instance took the request: move its KV (called by its scheduler)."""
        src = self.source[req.id]
        pool = dst.pool
        model = pool.model
        # (a pool's model is fixed: its KV bytes per token, a chain of properties, read once)
        per_token = self._per_token.get(pool)
        if per_token is None:
            per_token = self._per_token[pool] = model.kv_bytes_per_token
        nbytes = req.remote_kv * per_token * self.cfg.wire_fraction
        hw = pool.hw
        between, bw, lat = self.topology.path_between_gpus, hw.nvlink_bandwidth, hw.nvlink_latency_s
        paths = [between(s, d, bw, lat)
                 for s, d in zip(src.slots.gpus, dst.slots.gpus, strict=False)]
        self.stats.transfers += 1
        self.stats.bytes += nbytes
        if self.cfg.kv_streaming:
            child = self.children[req.id]
            overlap = child.finish - child.first_scheduled
            rate = min(link.bandwidth for link in paths[0]) * len(paths)
            after = max(nbytes / model.num_layers, nbytes - rate * overlap)
            self.stats.streamed_bytes += nbytes - after
            nbytes = after
        epoch = req.load_epoch
        left = [len(paths)]

        def one(t: Transfer) -> None:
            left[0] -= 1
            if left[0]:
                return
            now = t.end
            self._release(req, now, landed=True)
            if req.load_epoch != epoch:
                return  # preempted while the KV was on the way: it recomputes there
            req.remote_kv = 0  # landed: a later preemption recomputes on the decode instance
            req.kv_transfer = now - req.handoff_at
            dst.scheduler._loaded(req)
            dst.poke()

        fabric = self.topology.fabric
        for path in paths:
            fabric.start(nbytes / len(paths), path, one, "kv handoff")

    def _release(self, req: Request, now: float, landed: bool = False) -> None:
        child = self.children.pop(req.id, None)
        src = self.source.pop(req.id, None)
        if child is not None and src is not None:
            src.scheduler.release_held(child, now)
            give_back = src.scheduler.pool.give_back
            if give_back is not None:
                give_back()  # borrowed memory the held KV needed goes back (kv_pool=distattention)
            if landed and _plans_nothing_next(src):
                for w in src.watchers:  # what poke tells routers' indexes
                    w.add(src)
                return
            src.poke()  # memory freed; a draining instance may now stop


def _plans_nothing_next(src: Any) -> bool:
    """Whether poking ``src`` (a prefill instance whose held KV just landed) would only make
    it plan nothing, as the next thing to happen: then the poke is skipped (once per request
    in a disaggregated run: the instance is idle and empty by then).

    Called from a landing's callback (``one`` in ``Handoff.admitted``: kv/links.Fabric._landed
    holds ``plan_now`` open around it; a transfer landing without latency, from Fabric._tick,
    leaves it closed and is not skipped). Its poke would reserve the first event id in
    ``plan_now`` (nothing reserved yet), and the rest of the callback only marks the request
    loaded on its decode instance and pokes that (a reservation, or a cut that schedules a
    NORMAL wake-up): nothing gives ``src`` work or schedules an URGENT event. So with no event
    due at this instant, PlanNow.flush plans ``src`` first, at once, or (a cut's wake-up due
    now) as the very next event; either way in the state it has now. Idle, with no
    ``on_idle`` and a scheduler that ``plans_nothing``, that plan leaves ``busy`` False and
    changes nothing, and dropping its reserved id leaves every other event's order as it was.
    """
    if src.busy or src.on_idle is not None:
        return False
    held = src.plan_now
    if held is None or not held.open or held.items:
        return False
    env = src.env
    queue = env._queue
    if queue and not queue[0][0] > env._now:
        return False
    quiet = getattr(src.scheduler, "plans_nothing", None)
    return quiet is not None and quiet()

"""LoRA adapters served on one base model: assignment, loading, residency, batching cost.

After S-LoRA (arXiv 2311.03285) and Punica (arXiv 2310.18547): every instance of the base
model serves every adapter, requests of different adapters batch together, and the
adapters' low-rank products run as separate kernels over the batch (Punica's SGMV, vLLM's
punica kernels). Per instance:

* **Residency.** ``lora.gpu_slots`` adapters fit in HBM (reserved off the KV cache). A
  request whose adapter is resident goes straight to the scheduler; otherwise its adapter is
  loaded from host DRAM (or the node's SSD) over the instance's PCIe, a transfer on the
  fabric, and the request waits for it. With every slot taken by adapters that requests on
  the instance still use, it waits for one to be free (vLLM's ``max_loras`` bound on the
  batch). The least recently used unused adapter leaves first.
* **Cost.** An iteration of T tokens whose batch holds A distinct adapters pays, per layer
  and adapted projection d_in -> d_out, a shrink and an expand: 2 T r (d_in + d_out) FLOPs
  and A r (d_in + d_out) weights read (each distinct adapter once), priced by the GPU's GEMM
  roofline, plus ``kernel_overhead_us`` per kernel (two per projection group: q/k/v fused,
  o; and the MLP's gate/up and down with ``targets=all``), split by tensor parallelism.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import numpy as np

from simkv.config.models import LoRAConfig
from simkv.entities.request import Request
from simkv.kv.links import Transfer

ACT_BYTES = 2


class LoRA:
    """The cluster's adapters: who gets which, and each instance's cache and cost."""

    def __init__(self, cluster: Any, cfg: LoRAConfig, rng: np.random.Generator) -> None:
        self.cluster = cluster
        self.cfg = cfg
        self.rng = rng
        n = cfg.adapters
        w = (np.ones(n) if cfg.popularity == "uniform"
             else 1.0 / np.arange(1, n + 1) ** cfg.zipf_alpha)
        self.cdf = np.cumsum(w / w.sum())
        self.sessions: dict[int, int] = {}
        self.stats = {"loads": 0, "load_bytes": 0.0, "evictions": 0, "waited_for_load": 0,
                      "waited_for_slot": 0, "distinct_adapters_per_run_mean": 0.0}
        self._runs = 0
        self._distinct = 0
        self.caches: list[AdapterCache] = []

    def busy(self) -> bool:
        """Requests waiting at an instance for their adapter."""
        return any(c.blocked or any(c.loading.values()) for c in self.caches)

    # --- who gets which ----------------------------------------------------------------------
    def assign(self, req: Request) -> None:
        if req.session >= 0 and req.session in self.sessions:
            req.adapter = self.sessions[req.session]
            return
        req.adapter = int(np.searchsorted(self.cdf, self.rng.random(), side="right"))
        req.adapter = min(req.adapter, self.cfg.adapters - 1)
        if req.session >= 0:
            self.sessions[req.session] = req.adapter

    def wrap_dispatch(self, dispatch: Callable[[Request], None]) -> Callable[[Request], None]:
        def with_adapter(req: Request) -> None:
            self.assign(req)
            dispatch(req)

        return with_adapter

    # --- per instance ---------------------------------------------------------------------
    def adapter_bytes(self, model: Any) -> float:
        """Weights of one adapter (A and B of every adapted projection, all layers)."""
        return self.cfg.rank * sum(a + b for a, b in self.projections(model)) \
            * model.num_layers * model.weight_bytes_per_param

    def projections(self, model: Any) -> list[tuple[int, int]]:
        h = model.hidden_size
        out = [(h, model.q_dim), (h, model.kv_dim), (h, model.kv_dim), (model.q_dim, h)]
        if self.cfg.targets == "all":
            f = model.ffn_size
            out += [(h, f), (h, f), (f, h)]
        return out

    def attach(self, replica: Any) -> None:
        """A new instance serves adapters: its cache, its KV room, its iteration cost."""
        cost = replica.cost
        model = replica.pool.model
        per_gpu = self.adapter_bytes(model) / cost.tp
        block = cost.kv_bytes_per_token_per_gpu() * replica.scheduler.pool.block_size
        reserve = math.ceil(self.cfg.gpu_slots * per_gpu / block)
        pool = replica.scheduler.pool
        if reserve >= pool.capacity:
            raise ValueError(f"lora.gpu_slots: {self.cfg.gpu_slots} adapters of "
                             f"{per_gpu / 2**20:.0f} MiB per GPU leave no KV cache on pool "
                             f"'{replica.pool.name}'; lower lora.gpu_slots or lora.rank")
        pool.resize(pool.capacity - reserve)
        cache = AdapterCache(self, replica, self.adapter_bytes(model))
        self.caches.append(cache)
        replica.submit = cache.submit
        inner_finish, inner_back = replica.on_finish, replica.hand_back

        def on_finish(req: Request, now: float) -> None:
            inner_finish(req, now)
            cache.retry()

        def hand_back(everything: bool = False) -> list[Request]:
            return inner_back(everything) + cache.take_held()

        replica.on_finish = on_finish
        replica.hand_back = hand_back
        replica.cost = LoRACost(cost, replica, self)

    def extra_s(self, cost: Any, model: Any, tokens: int, adapters: int) -> float:
        """Seconds one iteration of ``tokens`` tokens with ``adapters`` distinct adapters adds."""
        if not tokens or not adapters:
            return 0.0
        r, tp = self.cfg.rank, cost.tp
        t = 0.0
        for d_in, d_out in self.projections(model):
            flops = 2.0 * tokens * r * (d_in + d_out) / tp
            nbytes = (adapters * r * (d_in + d_out) * model.weight_bytes_per_param
                      + tokens * (d_in + 2 * r + d_out) * ACT_BYTES) / tp
            t += cost._roof("lora", flops, nbytes, tokens, "gemm_compute", "gemm_memory").seconds
        kernels = 2 * (2 if self.cfg.targets == "attention" else 4)
        return model.num_layers * (t + kernels * self.cfg.kernel_overhead_us * 1e-6)

    def extra_work(self, model: Any, tp: int, pp: int, tokens: int,
                   adapters: int) -> tuple[float, float]:
        """(FLOPs, HBM bytes) per GPU that the adapters' kernels add to one iteration, for the
        energy model (their time is ``extra_s``'s; uncounted, a run with adapters drew the
        same dynamic energy over a longer time)."""
        if not tokens or not adapters:
            return 0.0, 0.0
        r = self.cfg.rank
        flops = nbytes = 0.0
        for d_in, d_out in self.projections(model):
            flops += 2.0 * tokens * r * (d_in + d_out) / tp
            nbytes += (adapters * r * (d_in + d_out) * model.weight_bytes_per_param
                       + tokens * (d_in + 2 * r + d_out) * ACT_BYTES) / tp
        layers = model.num_layers / pp  # a GPU's share, as energy/work.py averages stages
        return flops * layers, nbytes * layers

    def summary(self) -> dict[str, Any]:
        out = dict(self.stats)
        out["distinct_adapters_per_run_mean"] = self._distinct / self._runs if self._runs else 0.0
        out["adapters"] = self.cfg.adapters
        return out


class AdapterCache:
    """One instance's resident adapters and the requests waiting for theirs."""

    def __init__(self, lora: LoRA, replica: Any, nbytes: float) -> None:
        self.lora = lora
        self.replica = replica
        self.nbytes = nbytes
        self.slots = lora.cfg.gpu_slots
        self.resident: OrderedDict[int, None] = OrderedDict()  # least recently used first
        self.loading: dict[int, list[Request]] = {}
        self.blocked: deque[Request] = deque()

    def submit(self, req: Request) -> None:
        r = self.replica
        req.replica = r.index
        req.pool = r.pool.index
        r._charge(req)
        self._place(req)

    def _place(self, req: Request) -> None:
        a = req.adapter
        if a < 0 or a in self.resident:
            if a >= 0:
                self.resident.move_to_end(a)
            self._release(req)
        elif a in self.loading:
            self.loading[a].append(req)
            self.lora.stats["waited_for_load"] += 1
        elif self._room():
            self._load(a, [req])
        else:
            self.blocked.append(req)
            self.lora.stats["waited_for_slot"] += 1

    def _release(self, req: Request) -> None:
        self.replica.scheduler.add_request(req)
        self.replica.poke()

    def _in_use(self) -> set[int]:
        sched = self.replica.scheduler
        return ({q.adapter for q in sched.running.values()}
                | {q.adapter for q in sched.waiting})

    def _room(self) -> bool:
        if len(self.resident) + len(self.loading) < self.slots:
            return True
        used = self._in_use()
        for a in self.resident:
            if a not in used:
                del self.resident[a]
                self.lora.stats["evictions"] += 1
                return True
        return False

    def _load(self, adapter: int, reqs: list[Request]) -> None:
        self.loading[adapter] = reqs
        self.lora.stats["loads"] += 1
        self.lora.stats["load_bytes"] += self.nbytes
        self.lora.stats["waited_for_load"] += len(reqs)
        topo = self.lora.cluster.topology
        i = self.replica.index
        path = [topo.read[self.lora.cfg.source, topo.replica_node[i]], topo.pcie[i]]

        def landed(_: Transfer) -> None:
            waiting = self.loading.pop(adapter, [])
            self.resident[adapter] = None
            for req in waiting:
                self._release(req)

        topo.fabric.start(self.nbytes, path, landed, "lora load")

    def retry(self) -> None:
        """A request finished: a slot may be free for the ones waiting."""
        while self.blocked:
            req = self.blocked[0]
            if req.adapter in self.resident or req.adapter in self.loading or self._room():
                self.blocked.popleft()
                self._place(req)
            else:
                return

    def take_held(self) -> list[Request]:
        """Requests waiting here for an adapter, handed back with the instance's others."""
        held = list(self.blocked) + [q for reqs in self.loading.values() for q in reqs]
        self.blocked.clear()
        for reqs in self.loading.values():
            reqs.clear()
        for req in held:
            self.replica._discharge(req)
        return held


class LoRACost:
    """The instance's cost model plus the adapters' kernels on every iteration."""

    def __init__(self, inner: Any, replica: Any, lora: LoRA) -> None:
        self.inner = inner
        self.replica = replica
        self.lora = lora
        self.model = replica.pool.model
        self._last: tuple[Any, int] | None = None

    def lora_work(self, out: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Per iteration of the run ``out`` priced last (its first ``k``): the adapters'
        FLOPs and HBM bytes per GPU (energy/accounting.py adds them to the step's work)."""
        adapters = self._last[1] if self._last is not None and self._last[0] is out else 0
        lora, inner = self.lora, self.inner
        first = out.prefill_tokens + out.num_decodes
        rest = out.tail_decodes if out.prefills else out.num_decodes
        f0, b0 = lora.extra_work(self.model, inner.tp, inner.pp, first, adapters)
        f1, b1 = lora.extra_work(self.model, inner.tp, inner.pp, rest, adapters)
        flops, nbytes = np.full(k, f1), np.full(k, b1)
        if k:
            flops[0], nbytes[0] = f0, b0
        return flops, nbytes

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def run_times(self, out: Any) -> Any:
        t = self.inner.run_times(out)
        adapters = len({r.adapter for r in self.replica.scheduler.running.values()
                        if r.adapter >= 0})
        self._last = (out, adapters)  # what the energy model prices for this run
        lora = self.lora
        lora._runs += 1
        lora._distinct += adapters
        if not adapters:
            return t
        first = lora.extra_s(self.inner, self.model, out.prefill_tokens + out.num_decodes, adapters)
        rest = lora.extra_s(self.inner, self.model,
                            out.tail_decodes if out.prefills else out.num_decodes, adapters)
        if isinstance(t, float | int):
            return t + first
        if isinstance(t, list):
            return [t[0] + first, *(x + rest for x in t[1:])]
        arr = np.array(t, dtype=float)
        arr[0] += first
        arr[1:] += rest
        return arr

"""The step profiler of the GPU replays: every step of transformers' continuous batching timed
and described, by patching the engine's classes before its manager starts.

Split from ``hf_replay.py`` (the replay of a stream), because the profiler is the part that
knows transformers' internals class by class, and ``hf_campaign`` and the tests use it alone;
``hf_replay`` re-exports ``StepProfiler`` for the scripts and notes that import it from there.
"""

from __future__ import annotations

import time
from typing import Any


class StepProfiler:
    """Times every step of the engine's generation loop and records its batch and scheduler state.

    Patches transformers' continuous batching (5.x) at class level, before the manager starts:

    * every scheduler's ``schedule_batch`` (FIFO and prefill-first): the step's start, its batch
      (sequences, query tokens before padding, KV tokens read), and the scheduler's state at
      entry: free KV blocks, waiting and active requests; at exit: free blocks, the requests
      that could not get blocks (``starved``) and the prefill entries (``rid:query:past``);
    * the batch processor's ``_generation_step`` (forward, sampling; a CUDA-graph replay when
      graphs are on) and its ``update_batch`` (the host reads the new tokens, which waits for
      the GPU, and updates every request);
    * ``ModelRunner._capture_graph``: a step that records a CUDA graph, its wall time and key;
    * ``OffloadingManager.offload_requests``: the engine's preemptions (victims evicted to the
      CPU pool, ``:c``, or soft reset to be prefilled again, ``:s``), with the tokens each had;
    * ``Scheduler.add_waiting_request``: when each request entered the waiting queue, as the
      index of the next step (``queued_step``) and a time.

    Hooking the loop rather than ``model.forward`` sees graph replays too, and splits a step
    into host preparation, launch and GPU, and host update. Names of the columns are the ones
    agreed with the model side (/work/coord/19.md, issue 19).
    """

    def __init__(self) -> None:
        from transformers.generation.continuous_batching import scheduler as sched_mod
        from transformers.generation.continuous_batching.continuous_api import (
            ContinuousBatchProcessor,
        )
        from transformers.generation.continuous_batching.input_outputs import (
            ContinuousBatchingIOs,
        )

        self.rows: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None
        self._pending_evicted: list[str] = []
        self.evictions: list[dict[str, Any]] = []
        self.queued: dict[str, list[tuple[int, float]]] = {}
        prof = self
        step, update = ContinuousBatchProcessor._generation_step, ContinuousBatchProcessor.update_batch
        classes = [c for c in vars(sched_mod).values()
                   if isinstance(c, type) and "schedule_batch" in vars(c)
                   and not getattr(vars(c)["schedule_batch"], "__isabstractmethod__", False)]

        def wrap_schedule(original: Any) -> Any:
            def schedule_batch(sched: Any, *args: Any, **kwargs: Any) -> Any:
                t = time.perf_counter()
                cache = getattr(sched, "cache", None)
                free = _call(cache, "get_num_free_blocks")
                active = getattr(sched, "active_requests", {}) or {}
                decoding = {rid for rid, st in active.items()
                            if getattr(getattr(st, "status", None), "name", "") == "DECODING"}
                waiting = len(getattr(sched, "waiting_requests", {}) or {})
                n_active = len(active)
                res = original(sched, *args, **kwargs)
                reqs, _fast, q_tokens, kv_read = res
                if reqs:
                    prefill = []
                    for fs in reqs:
                        st = getattr(fs, "state", None)
                        rid = getattr(st, "request_id", None)
                        if st is not None and rid not in decoding:
                            prefill.append(f"{rid}:{getattr(fs, 'query_length', -1)}:"
                                           f"{getattr(st, 'position_offset', -1)}")
                    starved = getattr(sched, "starved_requests", []) or []
                    prof._open = {
                        "schedule_t": t, "sequences": len(reqs), "tokens": q_tokens,
                        "kv_read": kv_read, "free_blocks": free, "waiting": waiting,
                        "active": n_active, "free_after": _call(cache, "get_num_free_blocks"),
                        "prefill": " ".join(prefill),
                        "starved": " ".join(str(getattr(s[0], "request_id", s[0])) for s in starved),
                        "capture_s": 0.0,
                    }
                return res

            return schedule_batch

        def generation_step(bp: Any, *args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            out = step(bp, *args, **kwargs)
            if prof._open is not None:
                prof._open.update(compute_t=t0, launched_t=time.perf_counter())
                # The shapes the step ran at (padded under CUDA graphs): its graph key.
                io = getattr(bp, "inputs_and_outputs", None)
                seqlen_k = getattr(io, "max_seqlen_k", None)
                if io is not None:
                    prof._open.update(
                        q_padded=getattr(io, "num_q_tokens", -1),
                        kv_padded=getattr(io, "max_kv_read", -1),
                        seqlen_k=max(seqlen_k.values()) if isinstance(seqlen_k, dict) and seqlen_k
                        else -1)
            return out

        def update_batch(bp: Any, *args: Any, **kwargs: Any) -> Any:
            out = update(bp, *args, **kwargs)
            row, prof._open = prof._open, None
            if row is not None and "compute_t" in row:
                row["updated_t"] = time.perf_counter()
                row["evicted"] = " ".join(prof._pending_evicted)
                prof._pending_evicted = []
                prof.rows.append(row)
            return out

        set_graph = ContinuousBatchingIOs.set_graph

        def set_graph_marked(io: Any, *args: Any, **kwargs: Any) -> Any:
            if prof._open is not None:  # this step recorded a CUDA graph: not a steady step
                prof._open["captured"] = 1
                key = _call(io, "_get_graph_key")
                if key is not None:
                    prof._open["graph_key"] = "/".join(str(k) for k in key)
            return set_graph(io, *args, **kwargs)

        ContinuousBatchingIOs.set_graph = set_graph_marked
        for cls in classes:
            cls.schedule_batch = wrap_schedule(vars(cls)["schedule_batch"])
        ContinuousBatchProcessor._generation_step = generation_step
        ContinuousBatchProcessor.update_batch = update_batch
        self._patch_optional(sched_mod)

    def _patch_optional(self, sched_mod: Any) -> None:
        """Hooks on classes that older transformers lack: captures, evictions, queueing."""
        prof = self
        base = getattr(sched_mod, "Scheduler", None)
        if base is not None and hasattr(base, "add_waiting_request"):
            add = base.add_waiting_request

            def add_waiting_request(sched: Any, state: Any, *args: Any, **kwargs: Any) -> Any:
                rid = str(getattr(state, "request_id", ""))
                prof.queued.setdefault(rid, []).append((len(prof.rows), time.perf_counter()))
                return add(sched, state, *args, **kwargs)

            base.add_waiting_request = add_waiting_request
        try:
            from transformers.generation.continuous_batching.model_runner import ModelRunner
        except ImportError:
            ModelRunner = None  # noqa: N806
        if ModelRunner is not None and hasattr(ModelRunner, "_capture_graph"):
            capture = ModelRunner._capture_graph

            def capture_graph(runner: Any, *args: Any, **kwargs: Any) -> Any:
                t0 = time.perf_counter()
                out = capture(runner, *args, **kwargs)
                _synchronize()
                if prof._open is not None:
                    prof._open["capture_s"] = time.perf_counter() - t0
                return out

            ModelRunner._capture_graph = capture_graph
        try:
            from transformers.generation.continuous_batching.offloading_manager import (
                OffloadingManager,
            )
        except ImportError:
            OffloadingManager = None  # noqa: N806
        if OffloadingManager is not None:
            offload = OffloadingManager.offload_requests

            def offload_requests(om: Any, *args: Any, **kwargs: Any) -> Any:
                sched = om.scheduler
                before = dict(sched.active_requests)
                snap = {rid: (list(getattr(st, "_timestamps", []) or []), _generated(st),
                              int(getattr(st, "position_offset", -1))) for rid, st in before.items()}
                out = offload(om, *args, **kwargs)
                t = time.perf_counter()
                for rid in before:
                    if rid in sched.active_requests or rid not in sched.waiting_requests:
                        continue
                    kind = "c" if getattr(sched.waiting_requests[rid], "is_cpu_offloaded", False) else "s"
                    stamps, gen, pos = snap[rid]
                    prof._pending_evicted.append(f"{rid}:{kind}")
                    prof.evictions.append({"t": t, "step": len(prof.rows), "rid": str(rid),
                                           "kind": kind, "generated_before": gen,
                                           "position_offset": pos,
                                           # a soft reset starts a new request state whose
                                           # token times start empty: keep these
                                           "stamps": stamps if kind == "s" else []})
                return out

            OffloadingManager.offload_requests = offload_requests

    def take(self, t0: float) -> list[dict[str, Any]]:
        """The steps recorded since the last take, with times relative to ``t0``.

        ``start_s`` is when the step's forward was launched; ``prepare_s`` the host work
        before it (scheduling, input tensors), ``forward_s`` launch to updated requests;
        within it ``step_call_s`` is the engine's step call (forward and sampling; it waits
        for the GPU when the engine runs on a CUDA stream, with graphs) and the rest is the
        host reading the tokens and updating every request.
        """
        rows, self.rows = self.rows, []
        keys = ("free_blocks", "free_after", "waiting", "active", "prefill", "starved", "evicted",
                "capture_s", "graph_key")
        return [{"start_s": r["compute_t"] - t0, "prepare_s": r["compute_t"] - r["schedule_t"],
                 "forward_s": r["updated_t"] - r["compute_t"],
                 "step_call_s": r["launched_t"] - r["compute_t"], "tokens": int(r["tokens"]),
                 "sequences": int(r["sequences"]), "kv_read": int(r["kv_read"]),
                 "captured": int(r.get("captured", 0)),
                 **{k: int(r[k]) for k in ("q_padded", "kv_padded", "seqlen_k") if k in r},
                 **{k: r.get(k, "") for k in keys}}
                for r in rows]

    def take_events(self) -> tuple[dict[str, list[tuple[int, float]]], list[dict[str, Any]]]:
        """Queue entries (request id -> [(step index, perf_counter)]) and evictions since the
        last call; ``take`` and this are called together at a stream's start and end."""
        queued, self.queued = self.queued, {}
        evictions, self.evictions = self.evictions, []
        return queued, evictions


def _generated(state: Any) -> int:
    """Tokens a request has generated, counting those a soft reset folded into its prompt."""
    gen = len(getattr(state, "generated_tokens", []) or [])
    true_initial = getattr(state, "_true_initial_tokens", 0) or 0
    if true_initial:
        gen += max(0, len(getattr(state, "initial_tokens", []) or []) - true_initial)
    return gen


def _call(obj: Any, name: str) -> Any:
    fn = getattr(obj, name, None)
    try:
        return fn() if callable(fn) else None
    except Exception:  # a probe of the engine's state must never break its loop
        return None


def _synchronize() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
    except ImportError:
        pass

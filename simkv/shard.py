"""One cluster simulated in several processes: shards of instances, one dataset out.

``simulate_sharded(cfg, out, shards=k)`` splits a cluster into k shards, each a sub-cluster of
the same shape and 1/k of its size: every pool keeps its instances g with g mod k = s in shard
s (and the autoscaler's bounds likewise: shard s of a pool scaling between 20 and 100
instances scales between its share of each). Each shard is simulated in its own process (the
ordinary ``simulate()`` on that shard's requests, ending with a report of its counters and
scaling events instead of a summary: ``_report``) and the parent merges what they wrote into
one folder: requests.parquet and instances.parquet with the requests' ids of the whole run and
unique instance ids (shard s's instance i is the cluster's s + k * i), summary.json computed
from the merged tables as ``simulate()`` computes it, the scaling events merged in order of
decision and counted over whole pools. Each shard draws the whole request stream itself, from
the same config and seed as one process, and keeps its share (simkv/shard_stream.py): nothing
is written between processes, and every shard simulates from the moment its process has
started. The parent's serial work is the merge (simkv/shard_merge.py) and the summary.

When it gives the same answer as one process (docs/PERFORMANCE.md measures the rest):

* **Exact** for ``router=round_robin`` on one pool without an autoscaler: routing reads no
  instance state, so each shard keeps the requests the one-process router would send to its
  instances (the j-th routed request to instance j mod N; requests rejected before routing,
  failed in the trace or longer than the model's context, go to shard 0 unrouted) and each
  shard's own round robin over its instances reproduces those choices. Every request then has
  the same row, value for value (checked by tests/test_shard.py), and the percentiles of
  summary.json are the same.
* **Approximate** otherwise: the routers that read load or caches (power_of_two,
  least_outstanding, least_work, session_affinity, prefix_affinity, slo_aware), several
  pools, a disaggregated cluster (prefill and decode pools: a request's prefill and decode
  instances are in one shard) and horizontal autoscaling. Shard s receives every k-th routed
  request and routes it among its own instances only: within a shard the router is exact;
  across shards the loads are those of a round-robin split of the stream, so an instance's
  queue can differ from one process's by what one shard's share of a burst adds. Each
  shard's autoscaler reads its own shard's metric and rounds its desired instances up, so the
  cluster can hold up to k - 1 instances a pool more than one process would for the same load
  (tests/test_shard_cluster.py; at 1,000 GPUs, docs/PERFORMANCE.md). The links are each
  shard's own nodes' (which instances share a node differs). No state is exchanged between
  shards. Which requests are rejected before routing, and which hand their KV over and how
  many bytes, are exact.
* Rows are in order of completion time (arrival for rejected requests), ties by request id;
  one process writes them in the order its engine reports them (a run's end reports the
  requests that finished inside it), so the row order, and the last bits of summary.json's
  means (sums in another order), may differ. Compare runs by request id.

What is refused, with one line naming the key: more shards than a pool's instances, bounds
that leave some shard no instance to scale by (a minimum of 1 stays 1 in every shard), a
shard's part of the cluster that its own run would refuse; autoscalers other than horizontal, faults or
spot preemption, live migration, a KV pool, many models or LoRA adapters, speculative
decoding, closed-loop workloads (follow-ups depend on completions elsewhere), tiers below HBM
or peer reads (shared by instances of a node), collectives on the fabric, energy accounting,
the iterations, transfers and trace tables, and priority classes (drawn in arrival order).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import multiprocessing
import os
import resource
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from simkv import __version__
from simkv.command import one_blas_thread_env
from simkv.config.schema import PoolConfig, SimConfig
from simkv.engine.disagg import HandoffStats
from simkv.engine.lifecycle import ScaleEvent
from simkv.engine.pool import pool_configs, pool_key
from simkv.metrics import schema
from simkv.output import RunFolder, one_line, write_json
from simkv.registry import build, name_of
from simkv.results import SimResult

log = logging.getLogger(__name__)
# Start methods whose spawned children can find their parent's method again: a joblib (loky)
# worker of a sweep sets "loky", which a child started by multiprocessing cannot look up, and
# every shard process then dies at start (seen with hydra/launcher=joblib, 2026-12-07).
_SPAWNABLE = (None, "spawn", "fork", "forkserver")

EXACT_ROUTERS = ("round_robin",)
SCALERS = ("none", "horizontal")
APPROXIMATE_ROUTERS = ("power_of_two", "least_outstanding", "least_work", "session_affinity",
                       "prefix_affinity", "slo_aware")


def refusal(cfg: SimConfig) -> str:
    """Why ``cfg`` cannot be sharded (one line naming the key), or ''."""
    router = name_of(cfg.router)
    if router not in EXACT_ROUTERS + APPROXIMATE_ROUTERS:
        return f"router={router}: sharding knows round_robin (exact) and {', '.join(APPROXIMATE_ROUTERS)}"
    auto, mig, pool, off = (name_of(cfg.autoscaler), name_of(cfg.migration), name_of(cfg.kv_pool),
                            name_of(cfg.offload))
    checks = [
        (auto not in SCALERS, f"autoscaler={auto}: sharding knows {', '.join(SCALERS)}"),
        (cfg.faults.active() or cfg.spot.active(), "faults / spot: instances lost are not sharded"),
        (mig != "none", f"migration={mig}: moves requests between shards"),
        (pool != "none", f"kv_pool={pool}: lends memory between shards"),
        (bool(cfg.lora.adapters), "lora.adapters: not sharded"),
        (off != "none", f"offload={off}: tiers below HBM are shared by a node's instances"),
        (cfg.memory.peer_hbm, "memory.peer_hbm: reads other instances' HBM"),
        (cfg.collectives.on_fabric, "collectives.on_fabric: shares links between instances"),
        (cfg.energy.enabled, "energy.enabled: not merged across shards"),
        (cfg.output.iterations or cfg.output.transfers or cfg.output.trace,
         "output.iterations / transfers / trace: not merged across shards"),
        (cfg.priority.high_fraction > 0, "priority.high_fraction: classes are drawn in arrival order"),
        (name_of(cfg.speculative) != "none",
         f"speculative={name_of(cfg.speculative)}: its acceptance draws are one process's sequence"),
    ]
    for p in cfg.pools.values():
        checks.append((bool(p.serves or p.gpu_group), "pools: many models are not sharded"))
    for bad, why in checks:
        if bad:
            return why
    workload = build(cfg.workload, granule_tokens=cfg.kv.prefix_block_tokens)
    if getattr(workload, "closed_loop", False) or hasattr(workload, "sessions_done"):
        return (f"workload={name_of(cfg.workload)}: a closed loop is not sharded (follow-ups "
                "depend on completions in other shards)")
    return ""


def is_exact(cfg: SimConfig) -> bool:
    """Whether a sharded run of ``cfg`` gives one process's rows (the module's docstring)."""
    return (name_of(cfg.router) in EXACT_ROUTERS and len(pool_configs(cfg)) == 1
            and name_of(cfg.autoscaler) == "none")


def shards_refusal(cfg: SimConfig) -> str:
    """Why ``cfg.shards`` cannot act on ``cfg``, in one line naming the key and what would
    make it valid, or '' (SimConfig.validate refuses the run with it)."""
    k = cfg.shards
    if k <= 1:
        return ""
    why = refusal(cfg)
    if why:
        return f"shards={k}: {why}; set shards=1 to simulate it in one process"
    scaled = name_of(cfg.autoscaler) != "none"
    for name, p in pool_configs(cfg).items():
        key = pool_key(name, "instances")
        if p.instances == 0:
            return (f"shards={k}: {key}=0: every shard starts with its share of each pool; set "
                    f"{key} >= {k}, or shards=1")
        if k > p.instances:
            return (f"shards={k}: more shards than the {p.instances} instances of {key} (every "
                    f"shard needs one of each pool); set shards <= {p.instances}")
        lo, hi = _bounds(p)
        if scaled and lo < hi:
            # Each shard scales between its own shares (a minimum of 1 stays 1): it needs room.
            fits = [j for j in range(1, k + 1)
                    if all(_min_share(lo, t, j) < (_share(hi, t, j) or 0) for t in range(j))]
            if fits[-1] != k:
                return (f"shards={k}: {pool_key(name, 'min_instances')}={lo} and "
                        f"{pool_key(name, 'max_instances')}={hi} leave some shard no instance to "
                        f"scale by (each scales its own share); set shards <= {fits[-1]}")
    from simkv.config.bounds import check

    for t in range(k):  # what a shard's own run would refuse, before any shard runs
        try:
            check(_shard_config(cfg, t, k))
        except ValueError as exc:
            return (f"shards={k}: shard {t}'s part of the cluster is refused ({one_line(exc)}); "
                    f"set fewer shards, or shards=1")
    return ""


def _min_share(n: int | None, s: int, k: int) -> int | None:
    """Shard ``s``'s part of a minimum of ``n`` instances: its share, and at least 1 where the
    minimum is (a shard scaled to zero would change what the cluster can do)."""
    share = _share(n, s, k)
    return share if not n or share is None else max(share, 1)


def _bounds(p: PoolConfig) -> tuple[int, int]:
    """A pool's (min, max) instances, unset bounds being its starting count."""
    lo = p.instances if p.min_instances is None else p.min_instances
    hi = p.instances if p.max_instances is None else p.max_instances
    return lo, hi


def _share(n: int | None, s: int, k: int) -> int | None:
    """Shard ``s``'s part of ``n`` instances: those g < n with g mod k = s."""
    return None if n is None else len(range(s, n, k))


def _shard_config(cfg: SimConfig, s: int, k: int) -> SimConfig:
    """Shard ``s`` of ``k``: every pool with its share of the instances and of the
    autoscaler's bounds (a sub-cluster of the same shape, 1/k of its size)."""
    sub = copy.deepcopy(cfg)
    sub.shards = 1
    # Shard 0's bar stands for the run's (the shards advance at about one pace): one bar on
    # the terminal, not k overwriting each other.
    sub.output = replace(sub.output, plot=False, progress=cfg.output.progress and s == 0)
    if sub.pools:
        for name, p in sub.pools.items():
            sub.pools[name] = replace(p, instances=_share(p.instances, s, k),
                                      min_instances=_min_share(p.min_instances, s, k),
                                      max_instances=_share(p.max_instances, s, k))
    else:
        c = sub.cluster
        sub.cluster = replace(c, replicas=_share(c.replicas, s, k),
                              min_replicas=_min_share(c.min_replicas, s, k),
                              max_replicas=_share(c.max_replicas, s, k))
    return sub


@contextlib.contextmanager
def _one_blas_thread_each() -> Iterator[None]:
    """Shards' processes start with one OpenBLAS thread each (simkv/command.py
    ``one_blas_thread_env``: the spare threads' spinning took cores the shards fill), unless
    the user chose a number; this process's environment is put back."""
    added = one_blas_thread_env()
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def _run_shard(job: tuple[SimConfig, str, int, int, int, bool]) -> dict[str, Any]:
    """Shard ``s`` of ``shards``: draw the stream, keep its share, simulate it (the ordinary
    ``simulate()`` on its instances, ending with its report instead of a summary), write its
    rows' sort keys for the merge. Returns what it cost: CPU before it (the process's start:
    interpreter, imports), CPU and wall time of the run, peak RSS, and when it began (epoch
    seconds: the parent sees how long the start took)."""
    from simkv.runner import simulate
    from simkv.shard_merge import write_keys
    from simkv.shard_stream import ShardStream

    cfg, out, s, shards, n, exact = job
    began, c0, w0 = time.time(), time.process_time(), time.perf_counter()
    stream = ShardStream(build(cfg.workload, granule_tokens=cfg.kv.prefix_block_tokens),
                         instances=n, shards=shards, shard=s, instance_routing=exact,
                         max_model_len=cfg.model.max_model_len)
    simulate(cfg, out, workload=stream, report=_report)
    write_keys(Path(out) / "requests.parquet", stream.ids(), Path(out))
    return {"cpu_s": time.process_time() - c0, "start_cpu_s": c0, "began": began,
            "wall_s": time.perf_counter() - w0,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _report(cluster: Any, out: Path) -> None:
    """``out/shard.json``: what the merge needs of a shard's cluster and cannot read from its
    tables (counters, the links, the scaling events), in place of the summary a shard would
    compute and the parent throw away (8-15 s a shard at 10.31M requests)."""
    from simkv.runner import engine_section, memory_summary, scheduler_summary

    doc: dict[str, Any] = {
        "end_s": cluster.last_done_s,
        "engine": engine_section(cluster),
        "weight_bytes_loaded": cluster.lifecycle.weight_bytes_loaded,
        "links": cluster.topology.link_stats(),
        "prefixed": int(cluster.prefixed),
        "peak_link_share": int(cluster.topology.fabric.peak_link_share),
        "scheduler": scheduler_summary(cluster.replicas),
        "events": [asdict(e) for e in cluster.lifecycle.events if e.kind != "recover"],
    }
    if cluster.memory:
        doc["memory"] = memory_summary(cluster)
    if cluster.handoff is not None:
        doc["handoff"] = asdict(cluster.handoff.stats)
    write_json(out / "shard.json", doc)


def _sum(sections: list[Any]) -> Any:
    """The shards' sections summed leaf by leaf (``_add``)."""
    return functools.reduce(_add, sections)


def _add(acc: Any, x: Any) -> Any:
    """Sum the numbers of two summary sections leaf by leaf (counters and byte totals)."""
    if isinstance(acc, dict):
        return {k: _add(acc.get(k), x.get(k)) for k in acc}
    if isinstance(acc, bool) or not isinstance(acc, int | float):
        return acc
    return acc + x


def simulate_sharded(cfg: SimConfig, out_dir: str | Path, shards: int | None = None,
                     processes: int | None = None) -> SimResult:
    """Simulate ``cfg`` as ``shards`` shards (default: ``cfg.shards``; ``simulate()`` comes
    here when that is above 1) in up to ``processes`` processes (default: one per shard) and
    merge them into ``out_dir`` (see the module's docstring for when the result equals one
    process's). What cannot be sharded is refused before anything runs, in one line."""
    from simkv.config import bounds
    from simkv.inert import facts_of, inert_options
    from simkv.metrics.cluster import cluster_summary
    from simkv.metrics.summary import summarise
    from simkv.runner import _memory_defaults, as_sim_config, config_dict, config_hash, draw_latency
    from simkv.shard_merge import merge_instances, merge_requests

    cfg = as_sim_config(cfg)
    _memory_defaults(cfg)
    if shards is not None:
        cfg = replace(cfg, shards=shards)
    shards = cfg.shards
    bounds.check(cfg)  # refuses what sharding cannot do (shards_refusal), naming the key
    n = next(iter(pool_configs(cfg).values())).instances  # for exact routing: one pool
    out = Path(out_dir)
    doc = config_dict(cfg)
    digest = config_hash(doc)
    folder = RunFolder(out)
    folder.begin(doc, digest)
    stats: dict[str, Any] = {"shards": shards}
    work = out / ".shards"
    try:
        wall0 = time.perf_counter()
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        phases: dict[str, float] = {}
        t, began = time.perf_counter(), time.time()
        exact = is_exact(cfg)
        folders = [work / f"out_{s}" for s in range(shards)]
        jobs = [(_shard_config(cfg, s, shards), str(folders[s]), s, shards, n, exact)
                for s in range(shards)]
        procs = min(processes or shards, shards)
        method = multiprocessing.get_start_method(allow_none=True)
        if procs > 1 and method not in _SPAWNABLE:
            # The same files either way (tested): only the speed-up is lost, so say it, in
            # run.json and the log, not in summary.json (which must not depend on the launcher).
            stats["serial_because"] = (f"shards ran one after another in this process: its "
                                       f"start method is {method!r} (a joblib sweep's worker), "
                                       f"whose children cannot start")
            log.warning("simkv: %s", stats["serial_because"])
            procs = 1
        if procs > 1:
            with _one_blas_thread_each(), multiprocessing.get_context("spawn").Pool(procs) as workers:
                runs = workers.map(_run_shard, jobs, chunksize=1)
        else:
            runs = [_run_shard(j) for j in jobs]
        phases["shards_s"] = time.perf_counter() - t
        t = time.perf_counter()
        reports = [json.loads((f / "shard.json").read_text()) for f in folders]
        stand = _Stand(cfg, reports)
        metadata = schema.file_metadata(doc, digest, cfg.seed)
        requests = out / "requests.parquet"
        merge_requests(folders, requests, metadata, cfg.output.row_group_size)
        phases["merge_requests_s"] = time.perf_counter() - t
        t = time.perf_counter()
        instances = out / "instances.parquet"
        merge_instances(folders, instances, metadata, stand.actions)
        phases["merge_instances_s"] = time.perf_counter() - t
        t = time.perf_counter()
        end_s = max(r["end_s"] for r in reports)
        section = cluster_summary(stand, instances, requests, end_s)
        engine = dict(reports[0]["engine"])
        for key in ("iterations", "runs"):
            engine[key] = sum(r["engine"][key] for r in reports)
        extra_sections: dict[str, Any] = {"engine": engine}
        if "memory" in reports[0]:
            mem = _sum([r["memory"] for r in reports])
            mem["granule_bytes"] = reports[0]["memory"]["granule_bytes"]
            extra_sections["memory"] = mem
        # Counters some schedulers keep (runner.scheduler_summary), each a sum over instances.
        extra_sections.update(_sum([r["scheduler"] for r in reports]))
        summary = summarise(requests, gpu_hours=section["gpu_hours"],
                            slo={"ttft_s": cfg.slo.ttft_s, "tpot_s": cfg.slo.tpot_s},
                            extra={"simkv_version": __version__, "config_hash": digest,
                                   "seed": cfg.seed, **extra_sections, "cluster": section,
                                   "sharding": {"shards": shards, "exact": exact}})
        notes = inert_options(cfg, facts_of(
            requests, prefixed=sum(r["prefixed"] for r in reports),
            peak_link_share=max(r["peak_link_share"] for r in reports)))
        if notes:
            summary["warnings"] = stats["warnings"] = notes
            for line in notes:
                logging.getLogger("simkv.inert").warning("%s", line)
        write_json(out / "summary.json", summary)
        phases["summary_s"] = time.perf_counter() - t
        if cfg.output.plot:
            t = time.perf_counter()
            draw_latency(out, summary, doc)
            phases["figure_s"] = time.perf_counter() - t
        shutil.rmtree(work, ignore_errors=True)
        wall = time.perf_counter() - wall0
        recorded = summary["requests"]["total"]
        stats.update({"wall_s": wall, "requests_recorded": recorded,
                      "requests_per_wall_s": recorded / max(wall, 1e-9),
                      "shard_cpu_s": [r["cpu_s"] for r in runs], "phases": phases,
                      "shard_runs": [{**r, "began": r["began"] - began} for r in runs],
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    except BaseException as exc:
        folder.end(exc, stats)
        raise
    folder.end(None, stats)
    return SimResult(out, summary, doc)


def _merged_events(cfg: SimConfig, pools: dict[str, Any], reports: list[dict[str, Any]]
                   ) -> tuple[list[ScaleEvent], list[np.ndarray]]:
    """The shards' scaling events as the cluster's: in order of decision (ties by shard, then
    the shard's order), numbered in that order, their instances renumbered as the merge
    numbers them (shard s's instance i is the cluster's s + k * i), and the GPUs before and
    after each counted over the whole pool: the deciding shard's own count, plus every other
    shard's pool as its last event left it (its starting instances before any). Also, per
    shard, its action numbers -> the cluster's (for instances.parquet's action column)."""
    k = len(reports)
    held = [{name: (_share(p.cfg.instances, s, k) or 0) * p.base.gpus
             for name, p in pools.items()} for s in range(k)]
    rows = sorted(((e["decided_s"], s, j, e) for s, r in enumerate(reports)
                   for j, e in enumerate(r["events"])), key=lambda x: x[:3])
    actions = [np.full(max((e["action"] for e in r["events"]), default=-1) + 1, -1, np.int32)
               for r in reports]
    events = []
    for number, (_, s, _, e) in enumerate(rows):
        others = sum(held[t][e["pool"]] for t in range(k) if t != s)
        held[s][e["pool"]] = e["gpus_after"]
        actions[s][e["action"]] = number
        events.append(ScaleEvent(**{**e, "action": number,
                                    "instances": [s + k * i for i in e["instances"]],
                                    "gpus_before": others + e["gpus_before"],
                                    "gpus_after": others + e["gpus_after"]}))
    return events, actions


class _Stand:
    """What ``cluster_summary`` reads of a cluster, for the merged run: the pools as built
    from the config, the shards' counters summed (weight loads, links by kind, the KV
    handoff), their scaling events merged (``_merged_events``; ``actions`` maps each shard's
    action numbers to the cluster's)."""

    def __init__(self, cfg: SimConfig, reports: list[dict[str, Any]]) -> None:
        from types import SimpleNamespace

        from simkv.engine.pool import Pool
        from simkv.kv.tiers import load_node_profile

        node = load_node_profile(cfg.memory.node, cfg.memory.node_path)
        self.cfg = cfg
        self.pools = {name: Pool(i, name, pcfg, cfg, node)
                      for i, (name, pcfg) in enumerate(pool_configs(cfg).items())}
        links: dict[str, Any] = {}
        for r in reports:
            for name, v in r["links"].items():
                links[name] = _add(links[name], v) if name in links else v
        events, self.actions = _merged_events(cfg, self.pools, reports)
        self.lifecycle = SimpleNamespace(
            weight_bytes_loaded=sum(r["weight_bytes_loaded"] for r in reports), events=events)
        self.topology = SimpleNamespace(link_stats=lambda: links)
        self.handoff = None
        if "handoff" in reports[0]:
            self.handoff = SimpleNamespace(
                stats=HandoffStats(**_sum([r["handoff"] for r in reports])))
        self.kv_pool = None
        self.models = None
        self.lora = None
        self.faults = None

"""One cluster simulated in several processes: shards of instances, one dataset out.

``simulate_sharded(cfg, out, shards=k)`` splits a one-pool cluster of N instances into k
shards (instance g goes to shard g mod k), simulates each shard in its own process (the
ordinary ``simulate()`` on that shard's requests) and merges what they wrote into one folder:
requests.parquet and instances.parquet with the instances' and requests' ids of the whole
cluster, and summary.json computed from the merged tables as ``simulate()`` computes it.
Each shard draws the whole request stream itself, from the same config and seed as one
process, and keeps its share (simkv/shard_stream.py): nothing is written between processes,
and every shard simulates from the moment its process has started. The parent's serial work
is the merge (simkv/shard_merge.py) and the summary.

When it gives the same answer as one process (docs/PERFORMANCE.md):

* **Exact** for ``router=round_robin``: routing reads no instance state, so each shard keeps
  the requests the one-process router would send to its instances (the j-th routed request to instance j mod
  N; requests rejected before routing, failed in the trace or longer than the model's
  context, go to shard 0 unrouted) and each shard's own round robin over its instances
  reproduces those choices. Every request then has the same row, value for value (checked by
  tests/test_shard.py), and the percentiles of summary.json are the same.
* **Approximate** for the routers that read load or caches (power_of_two, least_outstanding,
  least_work, session_affinity, prefix_affinity, slo_aware): shard s receives every k-th
  routed request and routes it among its own instances only. Within a shard the router is
  exact; across shards the loads are those of a round-robin split of the stream, so an
  instance's queue can differ from one process's by what one shard's share of a burst adds.
  No state is exchanged between shards.
* Rows are in order of completion time (arrival for rejected requests), ties by request id;
  one process writes them in the order its engine reports them (a run's end reports the
  requests that finished inside it), so the row order, and the last bits of summary.json's
  means (sums in another order), may differ. Compare runs by request id.

What is refused, with one line naming the key: more than one pool, an autoscaler, faults or
spot preemption, live migration, a KV pool, disaggregation, many models or LoRA adapters,
closed-loop workloads (follow-ups depend on completions elsewhere), tiers below HBM or peer
reads (shared by instances of a node), collectives on the fabric, energy accounting, the
iterations, transfers and trace tables, and priority classes (drawn in arrival order).
"""

from __future__ import annotations

import copy
import json
import logging
import multiprocessing
import resource
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from simkv import __version__
from simkv.config.schema import SimConfig
from simkv.metrics import schema
from simkv.output import RunFolder, write_json
from simkv.registry import build, name_of
from simkv.results import SimResult

log = logging.getLogger(__name__)
# Start methods whose spawned children can find their parent's method again: a joblib (loky)
# worker of a sweep sets "loky", which a child started by multiprocessing cannot look up, and
# every shard process then dies at start (seen with hydra/launcher=joblib, 2026-12-07).
_SPAWNABLE = (None, "spawn", "fork", "forkserver")

EXACT_ROUTERS = ("round_robin",)
APPROXIMATE_ROUTERS = ("power_of_two", "least_outstanding", "least_work", "session_affinity",
                       "prefix_affinity", "slo_aware")
# Top-level sections of a shard's summary.json that the merge knows how to combine; any other
# means the run used something sharding does not support.
_RECOMPUTED = {"busy", "e2e_s", "goodput", "gpu_hours", "makespan_s", "prefix_cache",
               "requests", "schema_version", "sessions", "throughput", "tpot_s", "ttft_s",
               "simkv_version", "config_hash", "seed", "engine", "cluster", "memory", "warnings"}


def refusal(cfg: SimConfig) -> str:
    """Why ``cfg`` cannot be sharded (one line naming the key), or ''."""
    router = name_of(cfg.router)
    if router not in EXACT_ROUTERS + APPROXIMATE_ROUTERS:
        return f"router={router}: sharding knows round_robin (exact) and {', '.join(APPROXIMATE_ROUTERS)}"
    if len(cfg.pools) > 1:
        return "pools: sharding needs one pool (instances of one model on one GPU kind)"
    auto, mig, pool, off = (name_of(cfg.autoscaler), name_of(cfg.migration), name_of(cfg.kv_pool),
                            name_of(cfg.offload))
    checks = [
        (auto != "none", f"autoscaler={auto}: a sharded cluster has a fixed size"),
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
    ]
    for p in cfg.pools.values():
        checks.append((p.role != "colocated", f"pools: role {p.role}: disaggregated serving is not sharded"))
        checks.append((bool(p.serves or p.gpu_group), "pools: many models are not sharded"))
    for bad, why in checks:
        if bad:
            return why
    workload = build(cfg.workload, granule_tokens=cfg.kv.prefix_block_tokens)
    if getattr(workload, "closed_loop", False) or hasattr(workload, "sessions_done"):
        return (f"workload={name_of(cfg.workload)}: a closed loop is not sharded (follow-ups "
                "depend on completions in other shards)")
    return ""


def shards_refusal(cfg: SimConfig) -> str:
    """Why ``cfg.shards`` cannot act on ``cfg``, in one line naming the key and what would
    make it valid, or '' (SimConfig.validate refuses the run with it)."""
    k = cfg.shards
    if k <= 1:
        return ""
    why = refusal(cfg)
    if why:
        return f"shards={k}: {why}; set shards=1 to simulate it in one process"
    n = _pool_size(cfg)
    if k > n:
        return f"shards={k}: more shards than the pool's {n} instances; set shards <= {n}"
    return ""


def _pool_size(cfg: SimConfig) -> int:
    if cfg.pools:
        return next(iter(cfg.pools.values())).instances
    return cfg.cluster.replicas


def _shard_config(cfg: SimConfig, instances: int) -> SimConfig:
    sub = copy.deepcopy(cfg)
    sub.shards = 1
    sub.output = replace(sub.output, plot=False, progress=False)
    if sub.pools:
        name = next(iter(sub.pools))
        sub.pools[name] = replace(sub.pools[name], instances=instances,
                                  min_instances=min(sub.pools[name].min_instances, instances),
                                  max_instances=max(instances, 1))
    else:
        sub.cluster = replace(sub.cluster, replicas=instances)
    return sub


def _run_shard(job: tuple[SimConfig, str, int, int, int, bool]) -> dict[str, Any]:
    """Shard ``s`` of ``shards``: draw the stream, keep its share, simulate it (the ordinary
    ``simulate()`` on its instances), write its rows' sort keys for the merge. Returns what
    it cost: CPU before it (the process's start: interpreter, imports), CPU and wall time of
    the run, peak RSS, and when it began (epoch seconds: the parent sees how long the start
    took)."""
    from simkv.runner import simulate
    from simkv.shard_merge import write_keys
    from simkv.shard_stream import ShardStream

    cfg, out, s, shards, n, exact = job
    began, c0, w0 = time.time(), time.process_time(), time.perf_counter()
    stream = ShardStream(build(cfg.workload, granule_tokens=cfg.kv.prefix_block_tokens),
                         instances=n, shards=shards, shard=s, instance_routing=exact,
                         max_model_len=cfg.model.max_model_len)
    simulate(cfg, out, workload=stream)
    write_keys(Path(out) / "requests.parquet", stream.ids(), Path(out))
    return {"cpu_s": time.process_time() - c0, "start_cpu_s": c0, "began": began,
            "wall_s": time.perf_counter() - w0,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


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
    n = _pool_size(cfg)
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
        exact = name_of(cfg.router) in EXACT_ROUTERS
        folders = [work / f"out_{s}" for s in range(shards)]
        jobs = [(_shard_config(cfg, len(range(s, n, shards))), str(folders[s]), s, shards, n, exact)
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
            with multiprocessing.get_context("spawn").Pool(procs) as workers:
                runs = workers.map(_run_shard, jobs, chunksize=1)
        else:
            runs = [_run_shard(j) for j in jobs]
        phases["shards_s"] = time.perf_counter() - t
        t = time.perf_counter()
        summaries = [json.loads((f / "summary.json").read_text()) for f in folders]
        for s, summ in enumerate(summaries):
            extra = set(summ) - _RECOMPUTED
            if extra:
                raise ValueError(f"cannot shard: shard {s} reported {', '.join(sorted(extra))}, "
                                 "which sharding does not merge")
        metadata = schema.file_metadata(doc, digest, cfg.seed)
        requests = out / "requests.parquet"
        merge_requests(folders, requests, metadata, cfg.output.row_group_size)
        phases["merge_requests_s"] = time.perf_counter() - t
        t = time.perf_counter()
        instances = out / "instances.parquet"
        merge_instances(folders, instances, metadata)
        phases["merge_instances_s"] = time.perf_counter() - t
        t = time.perf_counter()
        end_s = max(su["cluster"]["window_s"][1] for su in summaries)
        section = cluster_summary(_Stand(cfg, summaries), instances, requests, end_s)
        engine = dict(summaries[0]["engine"])
        for key in ("iterations", "runs"):
            engine[key] = sum(su["engine"][key] for su in summaries)
        extra_sections: dict[str, Any] = {"engine": engine}
        if "memory" in summaries[0]:
            mem = summaries[0]["memory"]
            for su in summaries[1:]:
                mem = _add(mem, su["memory"])
            mem["granule_bytes"] = summaries[0]["memory"]["granule_bytes"]
            extra_sections["memory"] = mem
        summary = summarise(requests, gpu_hours=section["gpu_hours"],
                            slo={"ttft_s": cfg.slo.ttft_s, "tpot_s": cfg.slo.tpot_s},
                            extra={"simkv_version": __version__, "config_hash": digest,
                                   "seed": cfg.seed, **extra_sections, "cluster": section,
                                   "sharding": {"shards": shards, "exact": exact}})
        notes = list(dict.fromkeys(w for su in summaries for w in su.get("warnings", [])))
        if notes:
            summary["warnings"] = stats["warnings"] = notes
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


class _Stand:
    """What ``cluster_summary`` reads of a cluster, for the merged run: the pool as built
    from the config, the shards' weight loads summed, nothing on the links (refused
    features are the ones that use them)."""

    def __init__(self, cfg: SimConfig, summaries: list[dict[str, Any]]) -> None:
        from types import SimpleNamespace

        from simkv.engine.pool import Pool, pool_configs
        from simkv.kv.tiers import load_node_profile

        node = load_node_profile(cfg.memory.node, cfg.memory.node_path)
        self.cfg = cfg
        self.pools = {name: Pool(i, name, pcfg, cfg, node)
                      for i, (name, pcfg) in enumerate(pool_configs(cfg).items())}
        loaded = sum(su["cluster"]["weight_bytes_loaded"] for su in summaries)
        links: dict[str, Any] = {}
        for su in summaries:
            for name, v in su["cluster"]["links"].items():
                links[name] = _add(links[name], v) if name in links else v
        self.lifecycle = SimpleNamespace(weight_bytes_loaded=loaded, events=[])
        self.topology = SimpleNamespace(link_stats=lambda: links)
        self.handoff = None
        self.kv_pool = None
        self.models = None
        self.lora = None
        self.faults = None

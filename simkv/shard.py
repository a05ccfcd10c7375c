"""One cluster simulated in several processes: shards of instances, one dataset out.

``simulate_sharded(cfg, out, shards=k)`` splits a one-pool cluster of N instances into k
shards (instance g goes to shard g mod k), simulates each shard in its own process (the
ordinary ``simulate()`` on a trace of that shard's requests) and merges what they wrote into
one folder: requests.parquet and instances.parquet with the instances' and requests' ids of
the whole cluster, and summary.json computed from the merged tables as ``simulate()``
computes it. The request stream is generated once, here, as one process would generate it.

When it gives the same answer as one process (docs/PERFORMANCE.md):

* **Exact** for ``router=round_robin``: routing reads no instance state, so the parent routes
  every request as the one-process router would (the j-th routed request to instance j mod
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
import multiprocessing
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from simkv import __version__
from simkv.config.schema import SimConfig
from simkv.metrics import schema
from simkv.output import RunFolder, write_json
from simkv.registry import build, config_for, name_of
from simkv.results import SimResult

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
    return ""


def _pool_size(cfg: SimConfig) -> int:
    if cfg.pools:
        return next(iter(cfg.pools.values())).instances
    return cfg.cluster.replicas


def _shard_config(cfg: SimConfig, trace: Path, instances: int) -> SimConfig:
    sub = copy.deepcopy(cfg)
    sub.workload = replace(config_for("workload", "trace"), path=str(trace), rebase=False)
    sub.output = replace(sub.output, plot=False, progress=False)
    if sub.pools:
        name = next(iter(sub.pools))
        sub.pools[name] = replace(sub.pools[name], instances=instances,
                                  min_instances=min(sub.pools[name].min_instances, instances),
                                  max_instances=max(instances, 1))
    else:
        sub.cluster = replace(sub.cluster, replicas=instances)
    return sub


def _run_shard(args: tuple[SimConfig, str]) -> dict[str, Any]:
    from simkv.runner import simulate

    cfg, out = args
    t0 = time.process_time()
    simulate(cfg, out)
    return {"cpu_s": time.process_time() - t0}


def split_stream(cfg: SimConfig, shards: int, folder: Path) -> list[np.ndarray]:
    """Write shard s's requests to ``folder/trace_s.parquet``; return each shard's global
    request ids (in its order). Routed request j goes to shard (j mod N) mod k for the exact
    router (its instance's shard), j mod k otherwise."""
    from simkv.workload.native import SCHEMA, batch_table
    from simkv.workload.readers import MAX_ID

    n = _pool_size(cfg)
    exact = name_of(cfg.router) in EXACT_ROUTERS
    workload = build(cfg.workload, granule_tokens=cfg.kv.prefix_block_tokens)
    if getattr(workload, "closed_loop", False) or hasattr(workload, "sessions_done"):
        raise ValueError(f"cannot shard: workload={name_of(cfg.workload)}: a closed loop is not sharded "
                         "(follow-ups depend on completions in other shards)")
    seeds = np.random.SeedSequence(cfg.seed).spawn(2)
    rng = np.random.default_rng(seeds[0])
    writers = [pq.ParquetWriter(folder / f"trace_{s}.parquet", SCHEMA, compression="zstd")
               for s in range(shards)]
    ids: list[list[np.ndarray]] = [[] for _ in range(shards)]
    next_id = 0
    routed = 0
    max_len = cfg.model.max_model_len
    try:
        for batch in workload.arrivals(rng):
            m = len(batch)
            if not m:
                continue
            gid = np.arange(next_id, next_id + m, dtype=np.int64)
            next_id += m
            unrouted = batch.prompt_tokens + batch.output_tokens > max_len
            if batch.failed is not None:
                unrouted = unrouted | batch.failed.astype(bool)
            j = routed + np.cumsum(~unrouted) - 1  # index among routed requests
            routed += int((~unrouted).sum())
            shard = ((j % n) % shards) if exact else (j % shards)
            shard = np.where(unrouted, 0, shard)
            if batch.prefix is not None and any(p and max(p) >= MAX_ID for p in batch.prefix):
                raise ValueError(f"cannot shard: workload={name_of(cfg.workload)} names prefixes by "
                                 f"ids beyond 2^53, which a trace file cannot carry exactly")
            for s in range(shards):
                idx = np.flatnonzero(shard == s)
                if idx.size:
                    writers[s].write_table(batch_table(batch.take(idx)))
                    ids[s].append(gid[idx])
    finally:
        for w in writers:
            w.close()
    return [np.concatenate(x) if x else np.empty(0, np.int64) for x in ids]


def _remap(t: pa.Table, ids: np.ndarray, s: int, shards: int) -> pa.Table:
    """A shard's rows with the whole cluster's request and instance ids."""
    local = t.column("request_id").to_numpy()
    t = t.set_column(t.schema.get_field_index("request_id"), "request_id",
                     pa.array(ids[local], pa.int64()))
    for col in ("replica", "prefill_replica", "first_token_replica"):
        v = t.column(col).to_numpy()
        t = t.set_column(t.schema.get_field_index(col), col,
                         pa.array(np.where(v >= 0, s + shards * v, v).astype(np.int32)))
    return t


def _merge_requests(parts: list[tuple[Path, np.ndarray, int]], shards: int, out: Path,
                    metadata: dict[bytes, bytes], row_group: int) -> None:
    """Shard tables -> one, ids of the whole cluster, in (record time, request id) order.

    Streamed: the order is computed from three key columns (about 30 bytes a row), then each
    output row group gathers its rows from the few row groups of each shard that hold them
    (a shard's rows are almost in time order already), so memory stays a few row groups
    beside the keys."""
    files = [pq.ParquetFile(path) for path, _, _ in parts]
    whens, gids, shard_of, local = [], [], [], []
    for f, (_, ids, s) in zip(files, parts, strict=True):
        t = f.read(columns=["status", "completion_s", "arrival_s", "request_id"])
        done = pc.equal(t.column("status"), "finished").to_numpy(zero_copy_only=False)
        whens.append(np.where(done, t.column("completion_s").to_numpy(),
                              t.column("arrival_s").to_numpy()))
        gids.append(ids[t.column("request_id").to_numpy()])
        shard_of.append(np.full(t.num_rows, s, np.int16))
        local.append(np.arange(t.num_rows, dtype=np.int64))
    when, gid = np.concatenate(whens), np.concatenate(gids)
    order = np.lexsort((gid, when))
    del when, gid, whens, gids
    shard_all, local_all = np.concatenate(shard_of)[order], np.concatenate(local)[order]
    starts = [np.cumsum([0] + [f.metadata.row_group(i).num_rows
                               for i in range(f.num_row_groups)]) for f in files]
    cache: dict[tuple[int, int], pa.Table] = {}
    out_schema = schema.REQUESTS.with_metadata(metadata)
    rows = 0
    with pq.ParquetWriter(out, out_schema, compression="zstd") as w:
        for c in range(0, len(order), row_group):
            sh, lo = shard_all[c:c + row_group], local_all[c:c + row_group]
            pieces, where = [], []
            for s in np.unique(sh):
                pos = np.flatnonzero(sh == s)
                idx = lo[pos]
                first = int(np.searchsorted(starts[s], idx.min(), side="right")) - 1
                last = int(np.searchsorted(starts[s], idx.max(), side="right")) - 1
                groups = []
                for g in range(first, last + 1):
                    if (s, g) not in cache:
                        cache[(s, g)] = files[s].read_row_group(g)
                    groups.append(cache[(s, g)])
                for key in [k for k in cache if k[0] == s and k[1] < first]:
                    del cache[key]
                part = pa.concat_tables(groups).take(pa.array(idx - starts[s][first]))
                pieces.append(_remap(part, parts[s][1], int(s), shards))
                where.append(pos)
            table = pa.concat_tables(pieces).take(pa.array(np.argsort(np.concatenate(where))))
            w.write_table(table.cast(out_schema), row_group_size=row_group)
            rows += table.num_rows
        w.add_key_value_metadata({"simkv.status": "complete", "simkv.rows": str(rows)})


def _merge_instances(paths: list[tuple[Path, int]], shards: int, out: Path,
                     metadata: dict[bytes, bytes]) -> None:
    tables = []
    for path, s in paths:
        t = pq.read_table(path)
        v = t.column("instance").to_numpy()
        tables.append(t.set_column(t.schema.get_field_index("instance"), "instance",
                                   pa.array((s + shards * v).astype(np.int32))))
    table = pa.concat_tables(tables)
    order = np.lexsort((table.column("instance").to_numpy(), table.column("time_s").to_numpy()))
    table = table.take(pa.array(order)).replace_schema_metadata(
        schema.INSTANCES.with_metadata(metadata).metadata)
    with pq.ParquetWriter(out, table.schema, compression="zstd") as w:
        w.write_table(table)
        w.add_key_value_metadata({"simkv.status": "complete", "simkv.rows": str(table.num_rows)})


def _add(acc: Any, x: Any) -> Any:
    """Sum the numbers of two summary sections leaf by leaf (counters and byte totals)."""
    if isinstance(acc, dict):
        return {k: _add(acc.get(k), x.get(k)) for k in acc}
    if isinstance(acc, bool) or not isinstance(acc, int | float):
        return acc
    return acc + x


def simulate_sharded(cfg: SimConfig, out_dir: str | Path, shards: int = 2,
                     processes: int | None = None) -> SimResult:
    """Simulate ``cfg`` as ``shards`` shards in up to ``processes`` processes (default: one
    per shard) and merge them into ``out_dir`` (see the module's docstring for when the
    result equals one process's)."""
    from simkv.metrics.cluster import cluster_summary
    from simkv.metrics.summary import summarise
    from simkv.runner import _memory_defaults, as_sim_config, config_dict, config_hash

    cfg = as_sim_config(cfg)
    _memory_defaults(cfg)
    why = refusal(cfg)
    if why:
        raise ValueError(f"cannot shard: {why}")
    n = _pool_size(cfg)
    if not 1 <= shards <= n:
        raise ValueError(f"shards ({shards}) must be between 1 and the pool's {n} instances")
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
        ids = split_stream(cfg, shards, work)
        jobs = [(_shard_config(cfg, work / f"trace_{s}.parquet", len(range(s, n, shards))),
                 str(work / f"out_{s}")) for s in range(shards)]
        procs = min(processes or shards, shards)
        if procs > 1:
            with multiprocessing.get_context("spawn").Pool(procs) as workers:
                runs = workers.map(_run_shard, jobs, chunksize=1)
        else:
            runs = [_run_shard(j) for j in jobs]
        summaries = [json.loads((work / f"out_{s}" / "summary.json").read_text())
                     for s in range(shards)]
        for s, summ in enumerate(summaries):
            extra = set(summ) - _RECOMPUTED
            if extra:
                raise ValueError(f"cannot shard: shard {s} reported {', '.join(sorted(extra))}, "
                                 "which sharding does not merge")
        metadata = schema.file_metadata(doc, digest, cfg.seed)
        requests = out / "requests.parquet"
        _merge_requests([(work / f"out_{s}" / "requests.parquet", ids[s], s) for s in range(shards)],
                        shards, requests, metadata, cfg.output.row_group_size)
        instances = out / "instances.parquet"
        _merge_instances([(work / f"out_{s}" / "instances.parquet", s) for s in range(shards)],
                         shards, instances, metadata)
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
                                   "sharding": {"shards": shards,
                                                "exact": name_of(cfg.router) in EXACT_ROUTERS}})
        notes = list(dict.fromkeys(w for su in summaries for w in su.get("warnings", [])))
        if notes:
            summary["warnings"] = stats["warnings"] = notes
        write_json(out / "summary.json", summary)
        shutil.rmtree(work, ignore_errors=True)
        wall = time.perf_counter() - wall0
        recorded = summary["requests"]["total"]
        stats.update({"wall_s": wall, "requests_recorded": recorded,
                      "requests_per_wall_s": recorded / max(wall, 1e-9),
                      "shard_cpu_s": [r["cpu_s"] for r in runs]})
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

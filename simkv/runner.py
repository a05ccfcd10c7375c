"""``simulate(cfg)``: one run from config to result files, always leaving evidence.

The config (and its hash) and run.json (running) are written before anything runs; tables
are renamed into place only when complete, and run.json records the status and any
exception last, so a failed or killed run still says what it was and keeps every request it
finished, under names no one can take for a complete run's (simkv/output.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import simpy

from simkv import __version__
from simkv.config import bounds
from simkv.config.schema import SimConfig
from simkv.energy.summary import energy_summary
from simkv.engine.cluster import Cluster
from simkv.engine.controller import build_controller
from simkv.engine.events import run as run_events
from simkv.engine.replica import Replica
from simkv.metrics.cluster import cluster_summary
from simkv.metrics.recorder import Recorder
from simkv.metrics.schema import file_metadata
from simkv.metrics.summary import summarise
from simkv.output import RunFolder, check_interrupt, held_signals, sigterm_interrupts, write_json
from simkv.registry import build, name_of
from simkv.results import SimResult

log = logging.getLogger("simkv")

POLICY_SECTIONS = ("scheduler", "router", "workload", "eviction", "offload", "tool_kv", "autoscaler",
                   "kv_policy", "kv_pool", "predictor", "speculative", "migration")


def _memory_defaults(cfg: SimConfig) -> None:
    """Configs built by hand (tests, scripts) may leave the memory policies out: LRU, no
    offload, drop, full KV (the packaged defaults)."""
    from simkv.policies.autoscaler import NoAutoscalerConfig
    from simkv.policies.eviction import LRUConfig
    from simkv.policies.kv_policy import FullKVConfig
    from simkv.policies.offload.placements import NoOffloadConfig
    from simkv.policies.tool_kv import DropConfig

    if cfg.autoscaler is None:
        cfg.autoscaler = NoAutoscalerConfig()
    if cfg.eviction is None:
        cfg.eviction = LRUConfig()
    if cfg.offload is None:
        cfg.offload = NoOffloadConfig()
    if cfg.tool_kv is None:
        cfg.tool_kv = DropConfig()
    if cfg.kv_policy is None:
        cfg.kv_policy = FullKVConfig()
    if cfg.kv_pool is None:
        from simkv.policies.kv_pool import NoKVPoolConfig

        cfg.kv_pool = NoKVPoolConfig()
    if cfg.predictor is None:
        from simkv.policies.predictor import RunningMeanPredictorConfig

        cfg.predictor = RunningMeanPredictorConfig()
    if cfg.speculative is None:
        from simkv.policies.speculative import NoSpeculationConfig

        cfg.speculative = NoSpeculationConfig()
    if cfg.migration is None:
        from simkv.policies.migration import NoMigrationConfig

        cfg.migration = NoMigrationConfig()


def memory_summary(cluster: Cluster) -> dict[str, Any]:
    """Counters of the memory hierarchy: bytes per tier and link, pins, swaps."""
    assert cluster.memory is not None
    kvs = [kv for kv in cluster.kvs if kv is not None]
    totals: dict[str, Any] = {}
    for kv in kvs:
        for key, val in dataclasses.asdict(kv.stats).items():
            if isinstance(val, dict):
                sub = totals.setdefault(key, {})
                for k, v in val.items():
                    sub[k] = sub.get(k, 0) + v
            else:
                totals[key] = totals.get(key, 0) + val
    hbm_written = sum(kv.hbm.stats.written for kv in kvs)
    hbm_evicted = sum(kv.hbm.stats.evicted for kv in kvs)
    gb = cluster.memory.granule_bytes
    tiers = {"hbm_cache": {"bytes_written": hbm_written * gb, "bytes_evicted": hbm_evicted * gb,
                           "bytes_resident_end": sum(len(kv.hbm) for kv in kvs) * gb},
             **cluster.memory.tier_stats()}
    out = {"granule_bytes": gb, "counters": totals, "tiers": tiers,
           "links": cluster.memory.link_stats(), "transfers": cluster.memory.fabric.transfers}
    prefetch = [kv.prefetch_stats for kv in kvs if kv.prefetch_stats is not None]
    if prefetch:  # tool_kv=prefetch: what became of each finished call's KV
        out["prefetch"] = {k: sum(p[k] for p in prefetch) for k in prefetch[0]}
    if cluster.memory.nvlink is not None:  # memory.peer_hbm: reads of other instances' HBM
        out["peer_hbm"] = {"hit_tokens": sum(kv.peer_tokens for kv in kvs),
                           "bytes": sum(kv.peer_bytes for kv in kvs)}
    return out


def engine_section(cluster: Cluster) -> dict[str, Any]:
    """summary.json's ``engine``: iterations and runs over every instance, the first pool's
    KV capacity per instance, the trace rows the workload skipped (a shard reports it too:
    simkv/shard.py)."""
    first = next(iter(cluster.pools.values()))
    capacity = first.capacity(first.base_degree)
    return {"iterations": sum(r.iterations_run for r in cluster.replicas),
            "runs": sum(r.runs for r in cluster.replicas),
            "kv_blocks_per_replica": capacity.num_blocks,
            "kv_tokens_per_replica": capacity.tokens,
            "skipped_trace_rows": int(getattr(cluster.workload, "skipped_rows", 0))}


def scheduler_summary(replicas: list[Replica]) -> dict[str, Any]:
    """Counters some schedulers keep (``share_stats``: kvshare; ``batch_stats``: batchllm),
    summed over instances; nothing for the others."""
    out: dict[str, Any] = {}
    for attr, key in (("share_stats", "kvshare"), ("batch_stats", "batchllm")):
        stats = [getattr(r.scheduler, attr) for r in replicas if hasattr(r.scheduler, attr)]
        if stats:
            out[key] = {k: sum(s[k] for s in stats) for k in stats[0]}
    return out


def config_dict(cfg: SimConfig) -> dict[str, Any]:
    """The config as plain JSON data, with each policy section's registered name."""
    doc = dataclasses.asdict(cfg)
    for key in POLICY_SECTIONS:
        section = getattr(cfg, key)
        doc[key] = {"name": name_of(section), **dataclasses.asdict(section)}
    return doc


def config_hash(doc: dict[str, Any]) -> str:
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def as_sim_config(cfg: Any) -> SimConfig:
    """Accept a SimConfig, a Hydra/OmegaConf config, or None (the packaged defaults)."""
    if cfg is None:
        from simkv.config.store import compose

        return compose()
    if isinstance(cfg, SimConfig):
        return cfg
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        obj = OmegaConf.to_object(cfg)
        if isinstance(obj, SimConfig):
            return obj
    raise TypeError(f"simulate() needs a SimConfig or a composed simkv config, got {type(cfg).__name__}")


class _Progress:
    """tqdm on an interactive terminal (auto-disabled elsewhere) plus a log line per 10%.

    Counts requests when the workload knows their number up front; a closed loop (agent
    programs, conversations) does not, so it counts sessions that ended out of sessions,
    which gives the bar a total and an ETA.
    """

    def __init__(self, workload: Any, enabled: bool) -> None:
        total = workload.expected_requests()
        self.sessions = None
        if total is None and hasattr(workload, "sessions_done"):
            self.sessions = workload
            total = workload.expected_sessions()
        self.unit = "session" if self.sessions is not None else "request"
        self.total = total
        self.bar = None
        # NOTE: tqdm disables itself where stderr is not a terminal (disable=None); asked the
        # same question first, a script's or a sweep's run never imports it (30 ms).
        if enabled and not (hasattr(sys.stderr, "isatty") and not sys.stderr.isatty()):
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit=self.unit[:4], disable=None, dynamic_ncols=True,
                            desc="simkv", file=sys.stderr)
        self.next_log = 0.1
        self.last = 0

    def __call__(self, done: int, now: float) -> None:
        check_interrupt()  # a Ctrl-C or SIGTERM that garbage collection swallowed
        if self.sessions is not None:
            done = self.sessions.sessions_done()
        if self.bar is not None:
            self.bar.update(done - self.last)
            self.bar.set_postfix_str(f"sim {now:,.0f} s", refresh=False)
        self.last = done
        if self.total and done >= self.next_log * self.total:
            log.info("%d/%d %ss done, simulated time %.1f s", done, self.total, self.unit, now)
            self.next_log += 0.1

    def close(self, done: int) -> None:
        if self.sessions is not None:
            done = self.sessions.sessions_done()
        if self.bar is not None:
            self.bar.update(done - self.last)
            self.bar.close()


def simulate(cfg: Any = None, out_dir: str | Path | None = None,
             observer: Any = None, *, workload: Any = None,
             report: Callable[[Cluster, Path], None] | None = None) -> SimResult:
    """Run one simulation; results go to ``out_dir`` (a new temporary folder if None).

    The folder follows the output protocol of simkv/output.py: claimed for this run alone,
    config.json and run.json (running) first, tables renamed into place only when complete,
    run.json (ok, error or interrupted) last. SIGTERM ends the run like Ctrl-C.

    Args:
        cfg: a SimConfig (``simkv.compose([...])`` builds one), or None for the defaults.
        out_dir: where requests.parquet, summary.json, config.json, run.json and
            latency.png (and .pdf) are written; files of an earlier run there are replaced.
        observer: optional ``f(replica)`` called after every run of iterations (tests use
            it to check invariants).
        workload: a workload object to simulate instead of building ``cfg.workload`` (a
            shard's share of the stream: simkv/shard_stream.py).
        report: instead of summary.json and the figure, ``report(cluster, out_dir)`` once
            the tables are complete (a shard reports what the merge needs: simkv/shard.py;
            its own summary would be computed and thrown away). The result's summary is
            then empty.

    With ``cfg.shards`` above 1 the run is sharded (simkv/shard.py: one process per shard,
    merged into one dataset); an observer or a workload object needs one process, so with
    them such a run is refused.

    Returns:
        A SimResult with the summary and the per-request table.
    """
    cfg = as_sim_config(cfg)
    for key in ("scheduler", "router", "workload"):
        if getattr(cfg, key) is None:
            raise ValueError(f"config has no {key}; compose one with simkv.compose()")
    _memory_defaults(cfg)
    out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="simkv-"))
    if cfg.shards > 1:
        if observer is not None or workload is not None or report is not None:
            raise ValueError(f"shards={cfg.shards}: an observer, a workload or a report sees one "
                             "process's run; set shards=1")
        from simkv.shard import simulate_sharded

        return simulate_sharded(cfg, out)
    doc = config_dict(cfg)
    digest = config_hash(doc)
    folder = RunFolder(out)
    folder.begin(doc, digest)
    stats: dict[str, Any] = {}
    try:
        with sigterm_interrupts():
            bounds.check(cfg)
            result = _simulate(cfg, out, doc, digest, observer, stats, workload, report)
    except BaseException as exc:
        folder.end(exc, stats)
        raise
    stats["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    folder.end(None, stats)
    return result


def _simulate(cfg: SimConfig, out: Path, doc: dict[str, Any], digest: str, observer: Any,
              stats: dict[str, Any], workload: Any = None,
              report: Callable[[Cluster, Path], None] | None = None) -> SimResult:
    metadata = file_metadata(doc, digest, cfg.seed)

    if not cfg.pools and cfg.cluster.replicas < 1:
        raise ValueError("cluster.replicas must be >= 1")
    if workload is None:
        workload = build(cfg.workload, granule_tokens=cfg.kv.prefix_block_tokens)
    seeds = np.random.SeedSequence(cfg.seed).spawn(2)
    rng = np.random.default_rng(seeds[0])

    env = simpy.Environment()
    recorder = Recorder(out, metadata, cfg.output.row_group_size, cfg.output.iterations or cfg.output.trace,
                        cfg.slo.ttft_s, cfg.slo.tpot_s,
                        transfers=cfg.output.transfers or cfg.output.trace)
    progress = _Progress(workload, cfg.output.progress)
    wall0 = time.perf_counter()
    cluster: Cluster | None = None
    try:
        cluster = Cluster(cfg, env, workload, rng, np.random.default_rng(seeds[1]), recorder,
                          progress, observer)
        controller = build_controller(cfg, cluster)
        cluster.start()
        if controller is not None:
            controller.start()
        run_events(env)
        if cluster.busy():
            raise RuntimeError("the event queue ran dry with work left (an engine bug)")
        if recorder.finished + recorder.rejected == 0:
            raise ValueError("the workload produced no requests: nothing to simulate")
        recorder.close(complete=True)
    except BaseException:
        # Keep what was recorded, readable, under the partial names (the protocol).
        with contextlib.suppress(Exception), held_signals():
            recorder.close(complete=False)
        raise
    finally:
        progress.close(cluster.completed if cluster else 0)
        wall = time.perf_counter() - wall0
        recorded = recorder.finished + recorder.rejected
        stats.update({"wall_s": wall, "requests_recorded": recorded,
                      "requests_per_wall_s": recorded / max(wall, 1e-9),
                      "peak_rss_mib_after_loop":
                          resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    if report is not None:
        report(cluster, out)
        return SimResult(out, {}, doc)
    replicas: list[Replica] = cluster.replicas
    # GPU-hours from the instances' transitions over the run (metrics/cluster.gpu_seconds).
    section = cluster_summary(cluster, out / "instances.parquet", out / "requests.parquet",
                              cluster.last_done_s)
    summary = summarise(out / "requests.parquet", gpu_hours=section["gpu_hours"],
                        slo={"ttft_s": cfg.slo.ttft_s, "tpot_s": cfg.slo.tpot_s},
                        extra={
                            "simkv_version": __version__, "config_hash": digest,
                            "seed": cfg.seed,
                            "engine": engine_section(cluster),
                            **({"memory": memory_summary(cluster)} if cluster.memory else {}),
                            **scheduler_summary(replicas),
                            **({"speculative": cluster.speculation.summary()}
                               if cluster.speculation.active else {}),
                            **({"migration": cluster.migration.summary()}
                               if cluster.migration.summary() is not None else {}),
                            "cluster": section,
                            **({"energy": energy_summary(cluster, out / "instances.parquet",
                                                         out / "requests.parquet", cluster.last_done_s)}
                               if cluster.energy is not None else {}),
                        })
    # Options the workload or cluster gave nothing to act on: one line each (simkv/inert.py).
    from simkv.inert import facts, inert_options

    notes = inert_options(cfg, facts(cluster, out / "requests.parquet"))
    if notes:
        summary["warnings"] = stats["warnings"] = notes
        for line in notes:
            logging.getLogger("simkv.inert").warning("%s", line)
    write_json(out / "summary.json", summary)
    if cfg.output.trace:
        from simkv.metrics.trace import write_trace

        end_s = summary.get("cluster", {}).get("window_s", [0.0, env.now])[1]
        write_trace(out, end_s, {"simkv_version": __version__, "config_hash": digest})
    result = SimResult(out, summary, doc)
    if cfg.output.plot:
        draw_latency(out, summary, doc)
    return result


def draw_latency(out: Path, summary: dict[str, Any], doc: dict[str, Any]) -> None:
    """latency.png and latency.pdf (the PDF for papers) from a finished run's tables, drawn
    without matplotlib (metrics/latency_canvas.py: its import and drawing were most of a small
    run's CPU); ``SimResult.figure()`` gives the same panels as a matplotlib Figure."""
    from simkv.metrics import latency_canvas
    from simkv.metrics.figure_data import run_title

    latency_canvas.write(out / "requests.parquet", summary, run_title(doc), out / "latency")

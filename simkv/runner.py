"""``simulate(cfg)``: one run from config to result files, always leaving evidence.

The config (and its hash) is written before anything runs; the Parquet writers are closed
and run.json records the status and any exception in a ``finally`` block, so a failed run
still says what it was and keeps every request it finished.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import resource
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import simpy

from simkv import __version__
from simkv.config.schema import SimConfig
from simkv.engine.capacity import kv_capacity
from simkv.engine.cluster import Cluster
from simkv.engine.replica import Replica
from simkv.entities.hardware import load_profile
from simkv.metrics.recorder import Recorder
from simkv.metrics.summary import summarise, write_json
from simkv.perf.roofline import CostModel
from simkv.registry import build, name_of
from simkv.results import SimResult

log = logging.getLogger("simkv")

POLICY_SECTIONS = ("scheduler", "router", "workload", "eviction", "offload", "tool_kv")


def _memory_defaults(cfg: SimConfig) -> None:
    """Configs built by hand (tests, scripts) may leave the memory policies out: LRU, no
    offload, drop (the packaged defaults)."""
    from simkv.policies.eviction import LRUConfig
    from simkv.policies.offload.placements import NoOffloadConfig
    from simkv.policies.tool_kv import DropConfig

    if cfg.eviction is None:
        cfg.eviction = LRUConfig()
    if cfg.offload is None:
        cfg.offload = NoOffloadConfig()
    if cfg.tool_kv is None:
        cfg.tool_kv = DropConfig()


def _kv_on_drives(cfg: SimConfig, hw: Any, hbm: Any, tier: str) -> tuple[Any, Any]:
    """The KV pool on the node's drives: CSDs computing decode attention (InstInfer), or
    SSDs streaming the KV to the GPU every step (FlexGen-style)."""
    from simkv.engine.capacity import drive_capacity
    from simkv.kv.tiers import load_node_profile
    from simkv.perf.in_storage import InStorageAttentionCost, StreamedAttentionCost

    node = load_node_profile(cfg.memory.node, cfg.memory.node_path)
    spec = node.tiers.get(tier)
    if spec is None:
        raise ValueError(f"offload={name_of(cfg.offload)} needs a '{tier}' tier in node profile {node.path}")
    c = cfg.cluster
    per_node = max(1, min(c.replicas, node.gpus_per_node // (c.tensor_parallel * c.pipeline_parallel)))
    kind = InStorageAttentionCost if tier == "csd" else StreamedAttentionCost
    cost = kind(cfg.model, hw, spec, 1.0 / per_node, c.tensor_parallel, c.pipeline_parallel, cfg.engine)
    gib = cfg.memory.csd_gib if tier == "csd" else cfg.memory.ssd_gib
    size = spec.capacity if gib is None else gib * 2**30
    return cost, drive_capacity(cost, c, cfg.kv, hbm, size, node.gpus_per_node)


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
    return {"granule_bytes": gb, "counters": totals, "tiers": tiers,
            "links": cluster.memory.link_stats(), "transfers": cluster.memory.fabric.transfers}


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
    """tqdm on an interactive terminal (auto-disabled elsewhere) plus a log line per 10%."""

    def __init__(self, total: int | None, enabled: bool) -> None:
        self.total = total
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="req", disable=None, dynamic_ncols=True,
                            desc="simkv", file=sys.stderr)
        self.next_log = 0.1
        self.last = 0

    def __call__(self, done: int, now: float) -> None:
        if self.bar is not None:
            self.bar.update(done - self.last)
            self.bar.set_postfix_str(f"sim {now:,.0f} s", refresh=False)
        self.last = done
        if self.total and done >= self.next_log * self.total:
            log.info("%d/%d requests done, simulated time %.1f s", done, self.total, now)
            self.next_log += 0.1

    def close(self, done: int) -> None:
        if self.bar is not None:
            self.bar.update(done - self.last)
            self.bar.close()


def simulate(cfg: Any = None, out_dir: str | Path | None = None,
             observer: Any = None) -> SimResult:
    """Run one simulation; results go to ``out_dir`` (a new temporary folder if None).

    Args:
        cfg: a SimConfig (``simkv.compose([...])`` builds one), or None for the defaults.
        out_dir: where requests.parquet, summary.json, config.json, run.json and
            latency.png are written.
        observer: optional ``f(replica)`` called after every run of iterations (tests use
            it to check invariants).

    Returns:
        A SimResult with the summary and the per-request table.
    """
    cfg = as_sim_config(cfg)
    for key in ("scheduler", "router", "workload"):
        if getattr(cfg, key) is None:
            raise ValueError(f"config has no {key}; compose one with simkv.compose()")
    _memory_defaults(cfg)
    out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="simkv-"))
    out.mkdir(parents=True, exist_ok=True)
    doc = config_dict(cfg)
    digest = config_hash(doc)
    write_json(out / "config.json", doc)
    metadata = {
        b"simkv.schema_version": b"1",
        b"simkv.version": __version__.encode(),
        b"simkv.config": json.dumps(doc, sort_keys=True, separators=(",", ":")).encode(),
        b"simkv.config_hash": digest.encode(),
        b"simkv.seed": str(cfg.seed).encode(),
    }

    hw = load_profile(cfg.hardware.profile, cfg.hardware.path)
    cost = CostModel(cfg.model, hw, cfg.cluster.tensor_parallel, cfg.cluster.pipeline_parallel,
                     cfg.engine)
    if cfg.cluster.replicas < 1:
        raise ValueError("cluster.replicas must be >= 1")
    sched = cfg.scheduler
    capacity = kv_capacity(cost, hw, cfg.cluster, cfg.kv,
                           getattr(sched, "max_num_batched_tokens", 8192),
                           getattr(sched, "max_num_seqs", getattr(sched, "max_batch_size", 256)))
    placement = build(cfg.offload)
    if placement.attention_in_storage or placement.kv_on_ssd:
        cost, capacity = _kv_on_drives(cfg, hw, capacity, "csd" if placement.attention_in_storage else "ssd")
    workload = build(cfg.workload)
    seeds = np.random.SeedSequence(cfg.seed).spawn(2)
    rng = np.random.default_rng(seeds[0])

    env = simpy.Environment()
    recorder = Recorder(out, metadata, cfg.output.row_group_size, cfg.output.iterations,
                        cfg.slo.ttft_s, cfg.slo.tpot_s,
                        transfers=cfg.output.transfers and cfg.kv.prefix_caching)
    progress = _Progress(workload.expected_requests(), cfg.output.progress)
    status, error = "ok", ""
    wall0 = time.perf_counter()
    cluster: Cluster | None = None
    try:
        cluster = Cluster(cfg, env, workload, rng, cost, capacity, recorder, progress, observer)
        cluster.start()
        env.run()
        if cluster.busy():
            raise RuntimeError("the event queue ran dry with work left (an engine bug)")
    except BaseException as exc:
        status, error = "error", "".join(traceback.format_exception(exc))
        raise
    finally:
        recorder.close()
        progress.close(cluster.completed if cluster else 0)
        wall = time.perf_counter() - wall0
        peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        write_json(out / "run.json", {
            "status": status, "error": error, "wall_s": wall,
            "requests_recorded": recorder.finished + recorder.rejected,
            "requests_per_wall_s": (recorder.finished + recorder.rejected) / max(wall, 1e-9),
            "simkv_version": __version__, "config_hash": digest,
            "python": sys.version.split()[0],
            "peak_rss_mib_after_loop": peak_rss_mib,
        })
    replicas: list[Replica] = cluster.replicas
    gpus = cfg.cluster.replicas * cfg.cluster.tensor_parallel * cfg.cluster.pipeline_parallel
    summary = summarise(out / "requests.parquet", gpus=gpus,
                        slo={"ttft_s": cfg.slo.ttft_s, "tpot_s": cfg.slo.tpot_s},
                        extra={
                            "simkv_version": __version__, "config_hash": digest,
                            "seed": cfg.seed,
                            "engine": {
                                "iterations": sum(r.iterations_run for r in replicas),
                                "runs": sum(r.runs for r in replicas),
                                "kv_blocks_per_replica": capacity.num_blocks,
                                "kv_tokens_per_replica": capacity.tokens,
                                "skipped_trace_rows": int(getattr(workload, "skipped_rows", 0)),
                            },
                            **({"memory": memory_summary(cluster)} if cluster.memory else {}),
                        })
    write_json(out / "summary.json", summary)
    result = SimResult(out, summary, doc)
    if cfg.output.plot:
        from simkv.metrics.plots import plot_run

        plot_run(result.requests, out / "latency.png",
                 f"{cfg.model.name} on {cfg.cluster.replicas} x {hw.name} "
                 f"(TP{cfg.cluster.tensor_parallel}), {name_of(cfg.scheduler)} scheduler, "
                 f"{name_of(cfg.router)} router")
    return result

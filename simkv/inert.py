"""Options that could not act on this run's workload or cluster, said in one line each.

A policy for the agent's KV during a tool call changes nothing on a workload without tool
calls; a KV store below HBM changes nothing when no two requests share KV. Such a run prints
numbers identical to the default run's, and without a word a newcomer concludes the feature
does nothing. Whether an option could act is known only once the workload has run (a trace
file may or may not carry sessions and prefix hashes), so each check reads the run's facts:
one function per option, given the resolved config and the facts, returning its line or None.

Settings that can never act whatever the workload (``memory.dram_gib`` without a DRAM tier,
``tool_kv=ttl_pin`` with the prefix cache off) are refused before the run instead
(``SimConfig.validate``). Each line here is a warning: logged (``simkv`` logger), printed by
the ``simkv`` command after its table, and kept in summary.json and run.json (``warnings``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simkv.registry import implementation, name_of


@dataclass(frozen=True, slots=True)
class RunFacts:
    """What the run showed about its workload and cluster."""

    # Requests with a session id, and calls that followed an earlier call of their session
    # (a tool's or a user's return: what tool_kv acts on).
    session_requests: int
    followup_calls: int
    # Requests that carried prefix ids (trace hashes, the context a follow-up repeats).
    # Without any, every KV granule is private to its request: nothing can be shared.
    prefixed_requests: int
    # Most transfers one link carried at once (1 or 0: no link was ever shared).
    peak_link_share: int
    # Power caps and locked clocks (energy.*, pools.<name>.*) under which no step ran slower:
    # (the setting as key=value, pool) pairs.
    unslowed_power: tuple[tuple[str, str], ...] = ()


def facts(cluster: Any, requests_path: Path) -> RunFacts:
    """The facts of a finished run, from its cluster and requests.parquet."""
    return facts_of(requests_path, prefixed=int(cluster.prefixed),
                    peak_link_share=int(cluster.topology.fabric.peak_link_share),
                    unslowed_power=_unslowed_power(cluster))


def facts_of(requests_path: Path, *, prefixed: int, peak_link_share: int,
             unslowed_power: tuple[tuple[str, str], ...] = ()) -> RunFacts:
    """The facts of a run from its requests.parquet and the cluster's counters (a sharded
    run sums its shards' counters: simkv/shard.py)."""
    import numpy as np
    import pyarrow.parquet as pq

    from simkv.columns import to_numpy

    # NOTE: ParquetFile and simkv.columns, not read_table and Arrow compute with Python
    # scalars: those import pandas (simkv/columns.py).
    table = pq.ParquetFile(requests_path).read(columns=["session", "turn"], use_threads=False)
    in_session = to_numpy(table.column("session")) >= 0
    followups = in_session & (to_numpy(table.column("turn")) > 0)
    return RunFacts(
        session_requests=int(np.count_nonzero(in_session)),
        followup_calls=int(np.count_nonzero(followups)),
        prefixed_requests=prefixed,
        peak_link_share=peak_link_share,
        unslowed_power=unslowed_power,
    )


def _unslowed_power(cluster: Any) -> tuple[tuple[str, str], ...]:
    energy = getattr(cluster, "energy", None)
    if energy is None:
        return ()
    from simkv.engine.pool import pool_key

    out = []
    for name, pp in energy.pools.items():
        if pp.slowed or pp.clock_changes:
            continue
        pc = pp.pool.cfg
        for key in ("power_cap_w", "sm_clock_mhz"):
            value = getattr(pc, key)
            where = pool_key(name, key) if value is not None else f"energy.{key}"
            value = value if value is not None else getattr(cluster.cfg.energy, key)
            if value is not None:
                out.append((f"{where}={value:g}", name))
    return tuple(out)


NO_SHARING = "no two requests share KV (no prefix ids, no session follow-ups)"


def tool_kv(cfg: Any, f: RunFacts) -> str | None:
    name = name_of(cfg.tool_kv)
    if name != "drop" and f.followup_calls == 0:
        return (f"tool_kv={name}: the workload has no tool calls (no call of a session follows "
                f"another), so it changes nothing")
    return None


def scheduler(cfg: Any, f: RunFacts) -> str | None:
    name = name_of(cfg.scheduler)
    if name == "continuum" and f.followup_calls == 0:
        return ("scheduler=continuum: the workload has no multi-call programs, so it orders "
                "requests as scheduler=vllm does")
    return None


def offload(cfg: Any, f: RunFacts) -> str | None:
    placement = implementation(cfg.offload)
    name = name_of(cfg.offload)
    # Placements whose tiers hold cached prefixes; swap (preemption), and placements that keep
    # the KV pool itself below HBM, act whatever is shared.
    if placement.tiers and not placement.swap and f.prefixed_requests == 0:
        return (f"offload={name}: {NO_SHARING}, so KV written below HBM is never read back: "
                f"it changes nothing")
    return None


def eviction(cfg: Any, f: RunFacts) -> str | None:
    name = name_of(cfg.eviction)
    if name != "lru" and f.prefixed_requests == 0:
        return f"eviction={name}: {NO_SHARING}, so which cached KV leaves first changes nothing"
    return None


def peer_hbm(cfg: Any, f: RunFacts) -> str | None:
    # (One instance is refused before the run: SimConfig.validate.)
    if not cfg.memory.peer_hbm:
        return None
    if f.prefixed_requests == 0:
        return f"memory.peer_hbm=true: {NO_SHARING}, so no instance reads another's cache"
    return None


def link_sharing(cfg: Any, f: RunFacts) -> str | None:
    if cfg.memory.link_sharing == "max_min" and f.peak_link_share <= 1:
        return ("memory.link_sharing=max_min: no link ever carried two transfers at once, so "
                "how links are shared changes nothing")
    return None


def router(cfg: Any, f: RunFacts) -> str | None:
    name = name_of(cfg.router)
    if name == "session_affinity" and f.session_requests == 0:
        return ("router=session_affinity: the workload has no sessions, so it routes every "
                "request as router=least_outstanding does")
    if name == "prefix_affinity" and f.prefixed_requests == 0:
        return (f"router=prefix_affinity: {NO_SHARING}, so its cache term is always 0 and it "
                f"routes by load alone")
    return None


def power(cfg: Any, f: RunFacts) -> str | None:
    if not f.unslowed_power:
        return None
    setting, pool = f.unslowed_power[0]
    return (f"{setting}: no step of pool {pool} drew more power or ran faster than it allows, "
            f"so it changed nothing")


CHECKS: tuple[Callable[[Any, RunFacts], str | None], ...] = (
    scheduler, router, eviction, offload, tool_kv, peer_hbm, link_sharing, power)


def inert_options(cfg: Any, f: RunFacts) -> list[str]:
    """One line per chosen option that could not act on this run, in a fixed order."""
    return [line for check in CHECKS if (line := check(cfg, f)) is not None]

"""Lost instances: failures (GPU, node, link, engine process) and spot preemption.

Both are one event of the lifecycle, an instance lost, with or without notice
(engine/faults.py): what it held in HBM is gone, the requests it had are retried elsewhere or
fail with a reason, and capacity returns through the lifecycle's own start-up. This module
holds their settings and the rules that tie them to the rest of the run; the parameters'
sources are in docs/FAULTS.md.

Rates are per unit (a GPU, a node) so that one figure holds for any cluster size. The
``faults=llama3`` preset carries the Llama 3 paper's fleet figures (arXiv 2407.21783,
Table 5: 419 unexpected interruptions in 54 days on 16,384 H100s), split by what each cause
takes down.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from simkv.config.bounds import ConfigError, bounded, check, meta, require

KINDS = ("gpu", "node", "link", "process")
EVENT_KINDS = (*KINDS, "preempt")
ON_LOSS = ("resume", "restart", "fail")
REPLACE = ("spare", "repair", "none")
ON_PREEMPT = ("finish", "migrate")


@dataclass(slots=True)
class FaultEvent:
    """One loss at a given time: ``gpu`` (a global GPU index), ``node`` or ``link`` (a node
    index: every instance on it), ``process`` or ``preempt`` (an instance id; ``preempt``
    gives it the spot notice of ``spot.grace_s``)."""

    time_s: float = bounded(0.0, ge=0)
    kind: str = bounded("gpu", choices=EVENT_KINDS)
    target: int = bounded(0, ge=0)


@dataclass(slots=True)
class FaultsConfig:
    """Failures injected at rates (per unit, exponential times between them) or at times.

    A failure is noticed ``detect_s`` later (a health check); until then the router still
    sends requests to the dead instance. At detection its requests are handed back
    (``on_loss``) and a replacement starts (``replace``) through provisioning, weight
    loading and warm-up. A failed GPU or node is out of service for its repair time; a
    failed link cuts the node's instances off until it is repaired, after which they serve
    again without reloading (their engines kept their weights).
    """

    # Mean time between failures per unit, in hours (None: that kind never fails at random).
    # gpu: per GPU (the instance holding it is lost); node: per node (every instance on it,
    # and the node's DRAM/SSD KV store); link: per node's network (its instances are cut
    # off); process: per GPU, an engine crash (the instance restarts on the same GPUs).
    gpu_mtbf_h: float | None = bounded(None, gt=0)
    node_mtbf_h: float | None = bounded(None, gt=0)
    link_mtbf_h: float | None = bounded(None, gt=0)
    process_mtbf_h: float | None = bounded(None, gt=0)
    # Seconds a failed GPU, node or link stays out of service (assumed: docs/FAULTS.md).
    gpu_repair_s: float = bounded(3600.0, ge=0)
    node_repair_s: float = bounded(1800.0, ge=0)
    link_repair_s: float = bounded(600.0, ge=0)
    # Failure to detection: the router's health check (assumed: docs/FAULTS.md).
    detect_s: float = bounded(10.0, ge=0)
    # Failures at given times (any kind, plus spot preemption notices).
    events: list[FaultEvent] = field(default_factory=list)
    # Pools whose instances fail at random (empty: every pool).
    pools: list[str] = field(default_factory=list)
    # A lost instance's requests: resume elsewhere with the tokens already streamed
    # (prompt + generated re-prefilled, or restored from a lower tier where its KV was
    # written), restart from scratch (the client re-sends it), or fail with the reason.
    on_loss: str = bounded("resume", choices=ON_LOSS)
    # A request lost more often than this fails (reason retries_exhausted).
    max_retries: int = bounded(3, ge=0)
    # The replacement: spare (at detection on free healthy GPUs of the pool, else once the
    # failed ones are repaired), repair (only on the repaired GPUs), none (capacity lost).
    replace: str = bounded("spare", choices=REPLACE)

    def __post_init__(self) -> None:
        check(self, "faults.")

    def rates(self) -> dict[str, float]:
        """Failures per unit-hour of each kind that fails at random."""
        return {k: 1.0 / v for k in KINDS if (v := getattr(self, f"{k}_mtbf_h")) is not None}

    def active(self) -> bool:
        return bool(self.rates() or self.events)


@dataclass(slots=True)
class SpotConfig:
    """Spot (preemptible) pools: instances taken back by the provider after a notice.

    At a notice the instance stops taking requests (its queued ones go back to the router)
    and has ``grace_s`` until it is gone: its running requests finish there (``finish``) or
    have their KV moved to other instances (``migrate``, SpotServe's stateful recovery);
    whatever is still there at the end is lost like a failed instance's (``faults.on_loss``).
    Prices per pool: ``pools.<name>.gpu_hour_cost``.
    """

    # Pools of spot instances (empty: none).
    pools: list[str] = field(default_factory=list)
    # Preemption notices per instance-hour (exponential times between them; 0: none).
    preemptions_per_h: float = bounded(0.0, ge=0)
    # Notice times (seconds), each taking the oldest serving spot instance.
    times: list[float] = field(default_factory=list, metadata=meta(ge=0))
    # Notice to loss (AWS: 120 s; GCP and Azure: 30 s).
    grace_s: float = bounded(30.0, ge=0)
    on_preempt: str = bounded("finish", choices=ON_PREEMPT)
    # A preempted instance is replaced by a new spot instance after this many seconds
    # (then provisioning, loading, warm-up); None: not replaced.
    reacquire_s: float | None = bounded(None, ge=0)

    def __post_init__(self) -> None:
        check(self, "spot.")

    def active(self) -> bool:
        return bool(self.pools)


def _changed(cfg: Any, keys: tuple[str, ...]) -> str | None:
    """The first of ``keys`` whose value differs from the dataclass default."""
    default = type(cfg)()
    for k in keys:
        if getattr(cfg, k) != getattr(default, k):
            return k
    return None


def validate_against(sim: Any) -> None:
    """Rules tying faults and spot to the rest of the run (called by SimConfig.validate):
    settings that could not act are refused, and combinations whose loss is not modelled."""
    from simkv.registry import name_of

    f: FaultsConfig = sim.faults
    s: SpotConfig = sim.spot
    kinds = {e.kind for e in f.events} | set(f.rates())
    for k in ("gpu", "node", "link"):
        require(k in kinds or getattr(f, f"{k}_repair_s") == getattr(FaultsConfig(), f"{k}_repair_s"),
                f"faults.{k}_repair_s cannot act: no {k} fails (set faults.{k}_mtbf_h or a "
                f"faults.events entry of kind {k})")
    require(s.active() or "preempt" not in kinds,
            "faults.events: a 'preempt' event needs spot pools (spot.pools)")
    if s.active():
        require(s.preemptions_per_h > 0 or s.times or "preempt" in kinds,
                "spot.pools cannot act: no preemption comes (set spot.preemptions_per_h, "
                "spot.times or a faults.events entry of kind preempt)")
    else:
        key = _changed(s, ("preemptions_per_h", "times", "grace_s", "on_preempt", "reacquire_s"))
        require(key is None, f"spot.{key} cannot act: no pool is spot (set spot.pools)")
    lossy = f.active() or s.active()
    if not lossy:
        key = _changed(f, ("detect_s", "pools", "on_loss", "max_retries", "replace"))
        require(key is None, f"faults.{key} cannot act: nothing fails (set faults.*_mtbf_h, "
                             f"faults.events or spot.pools)")
        return
    require(f.rates() or not f.pools,
            "faults.pools cannot act: it selects the pools that fail at random, and no "
            "faults.*_mtbf_h is set")
    # Settings of the failure path that the losses configured never reach (each ran unread).
    default = FaultsConfig()
    require(kinds - {"preempt"} or f.detect_s == default.detect_s,
            "faults.detect_s cannot act: only spot notices lose instances, and a notice needs "
            "no detection; set a failure (faults.*_mtbf_h, or a faults.events entry of another "
            "kind) or leave faults.detect_s unset")
    why = [w for k, w in (("link", "a link failure reconnects"),
                          ("preempt", "a spot instance comes back with spot.reacquire_s"))
           if k in kinds or (k == "preempt" and s.active())]
    require(kinds & {"gpu", "node", "process"} or f.replace == default.replace,
            f"faults.replace cannot act: no failure here takes an instance for good "
            f"({'; '.join(why)}); set a gpu, node or process failure, or leave faults.replace "
            f"unset")
    require(f.on_loss != "fail" or f.max_retries == default.max_retries,
            "faults.max_retries cannot act with faults.on_loss=fail: a request fails at its "
            "first loss; set faults.on_loss=resume or restart, or leave faults.max_retries unset")
    why = []
    if sim.scheduler is not None and not hasattr(_impl(sim.scheduler), "evacuate"):
        why.append(f"scheduler={name_of(sim.scheduler)} (it cannot hand running requests back)")
    if sim.kv_pool is not None and name_of(sim.kv_pool) != "none":
        why.append(f"kv_pool={name_of(sim.kv_pool)} (blocks lent to a lost instance)")
    if sim.memory.peer_hbm:
        why.append("memory.peer_hbm (reads of a lost instance's HBM)")
    if sim.autoscaler is not None and name_of(sim.autoscaler) in ("vertical", "elastic_moe", "elastic_tp"):
        why.append(f"autoscaler={name_of(sim.autoscaler)} (a loss during a restart or resize)")
    roles = {p.role for p in sim.pools.values()}
    if roles - {"colocated"}:
        why.append("prefill/decode pools (KV in flight between them)")
    if why:
        what = "faults" if f.active() else "spot"
        raise ConfigError(f"{what}: losing instances is not modelled with {why[0]}; "
                          f"use the colocated default or turn {what} off")
    require(not (s.active() and s.on_preempt == "migrate" and s.grace_s == 0),
            "spot.on_preempt=migrate cannot act with spot.grace_s=0: the instance is gone "
            "before any KV can leave it (the run equals on_preempt=finish); set spot.grace_s "
            "> 0, or leave spot.on_preempt unset")
    if (s.active() and s.on_preempt == "migrate" and sim.scheduler is not None
            and not hasattr(_impl(sim.scheduler), "detach_running")):
        raise ConfigError(f"spot.on_preempt=migrate moves running requests with their KV, which "
                          f"scheduler={name_of(sim.scheduler)} cannot hand over; use "
                          f"spot.on_preempt=finish, or a continuous-batching scheduler "
                          f"(scheduler=vllm)")
    names = set(sim.pools) if sim.pools else {"default"}
    for key, pools in (("faults.pools", f.pools), ("spot.pools", s.pools)):
        for p in pools:
            require(p in names, f"{key}: unknown pool '{p}'; the pools are {', '.join(sorted(names))}")
            # A pool named twice counted its instances (or GPUs) twice: twice the loss rate.
            require(pools.count(p) == 1, f"{key}: pool '{p}' is listed {pools.count(p)} times; "
                                         f"name each pool once")


def _impl(section: Any) -> Any:
    from simkv.registry import implementation

    return implementation(section)

"""The memory hierarchy's open ends (issue 13): max-min fair links, one eviction policy per
tier, KV read from another GPU's HBM over NVLink, and the tool-call prefetch. Times are
checked against the bytes and bandwidths that should set them."""

from __future__ import annotations

import tempfile

import pytest
import simpy

import simkv
from simkv.config.bounds import ConfigError
from simkv.config.schema import ClusterConfig, EngineConfig, KVConfig, MemoryConfig, OutputConfig, SimConfig
from simkv.kv.links import Fabric, Link
from simkv.policies.offload.placements import DramConfig, SsdConfig
from simkv.policies.router import RoundRobinConfig
from simkv.policies.scheduler import VLLMSchedulerConfig
from simkv.policies.tool_kv import OffloadConfig, PrefetchConfig
from tests.helpers import Checker, ScriptWorkloadConfig

GRANULE_BYTES = 512 * 131072  # Llama-3.1-8B
PCIE = 64e9


# --- links: max-min fairness ----------------------------------------------------------------------
def _ends(max_min: bool, starts: list[tuple[float, list[Link]]]) -> list[float]:
    env = simpy.Environment()
    fabric = Fabric(env, max_min=max_min)
    ends = [0.0] * len(starts)
    for i, (nbytes, links) in enumerate(starts):
        fabric.start(nbytes, links, lambda t, i=i: ends.__setitem__(i, env.now))
    env.run()
    return ends


def _case() -> list[tuple[float, list[Link]]]:
    # A (2 GB/s) carries flows 1 and 2, B (1 GB/s) flows 1 and 3: B is flow 1's bottleneck.
    a, b = Link("a", 2e9), Link("b", 1e9)
    return [(1e9, [a, b]), (3e9, [a]), (1e9, [b])]


def test_min_of_shares_leaves_a_links_bandwidth_unused() -> None:
    # Flows 1 and 3 share B at 0.5 each (done at 2 s); flow 2 gets A's equal share, 1 GB/s,
    # though flow 1 uses only 0.5 of A: 2 GB by 2 s, then 2 GB/s alone for its last GB.
    assert _ends(False, _case()) == [pytest.approx(2.0), pytest.approx(2.5), pytest.approx(2.0)]


def test_max_min_fairness_is_work_conserving() -> None:
    # Max-min: B's 0.5 each is fixed first; flow 2 takes A's remaining 1.5 GB/s: 3 GB by 2 s.
    assert _ends(True, _case()) == [pytest.approx(2.0), pytest.approx(2.0), pytest.approx(2.0)]


def test_both_sharings_agree_on_one_link_and_identical_paths() -> None:
    def one_link() -> list[tuple[float, list[Link]]]:
        link = Link("l", 10e9)
        return [(1e9, [link]), (2e9, [link])]

    def same_path() -> list[tuple[float, list[Link]]]:
        a, b = Link("a", 10e9), Link("b", 5e9)
        return [(1e9, [a, b]), (1e9, [a, b])]

    assert _ends(True, one_link()) == _ends(False, one_link()) == [pytest.approx(0.2), pytest.approx(0.3)]
    assert _ends(True, same_path()) == _ends(False, same_path()) == [pytest.approx(0.4)] * 2


def test_link_sharing_is_a_config_choice(tmp_path) -> None:
    seen = {}

    def spy(replica) -> None:  # type: ignore[no-untyped-def]
        seen["max_min"] = replica.scheduler.kv.mem.fabric.max_min

    run(_evicting(), blocks=300, offload=DramConfig(), memory=MemoryConfig(link_sharing="max_min"),
        observer=spy)
    assert seen["max_min"] is True
    with pytest.raises(ConfigError, match="memory.link_sharing: expected one of min_share, max_min"):
        run(_evicting(), memory=MemoryConfig(link_sharing="fair"))


# --- runs ----------------------------------------------------------------------------------------
def run(wl: ScriptWorkloadConfig, *, blocks: int = 3000, offload=None, tool_kv=None,
        replicas: int = 1, memory: MemoryConfig | None = None, observer=None):
    cfg = SimConfig(
        cluster=ClusterConfig(replicas=replicas),
        kv=KVConfig(num_gpu_blocks_override=blocks),
        scheduler=VLLMSchedulerConfig(max_num_seqs=16, max_num_batched_tokens=8192),
        router=RoundRobinConfig(), workload=wl,
        offload=offload, tool_kv=tool_kv,
        memory=memory or MemoryConfig(),
        engine=EngineConfig(livelock_iterations=100_000),
        output=OutputConfig(plot=False, progress=False),
    )
    with tempfile.TemporaryDirectory() as d:
        res = simkv.simulate(cfg, d, observer=observer or Checker())
        return res.requests.sort_values("request_id").reset_index(drop=True), res.summary


PREFIX_A = [1, 2, 3, 4]


def _evicting() -> ScriptWorkloadConfig:
    return ScriptWorkloadConfig([0.0, 5.0, 10.0], [2100, 4400, 2100], [10, 10, 10],
                                prefix=[[*PREFIX_A, 100], [300 + i for i in range(9)],
                                        [*PREFIX_A, 200]])


# --- one eviction policy per tier ------------------------------------------------------------------
def test_each_lower_tier_can_evict_by_its_own_policy() -> None:
    from simkv.policies.eviction import FIFO, LFU, LRU

    seen = {}

    def spy(replica) -> None:  # type: ignore[no-untyped-def]
        mem = replica.scheduler.kv.mem
        seen.update(hbm=type(replica.scheduler.kv.hbm.policy), dram=type(mem.store("dram", 0).policy),
                    ssd=type(mem.store("ssd", 0).policy))

    run(_evicting(), blocks=300, offload=SsdConfig(),
        memory=MemoryConfig(lower_eviction="fifo", ssd_eviction="lfu"), observer=spy)
    assert seen == {"hbm": LRU, "dram": FIFO, "ssd": LFU}
    run(_evicting(), blocks=300, offload=SsdConfig(), memory=MemoryConfig(dram_eviction="lfu"), observer=spy)
    assert seen == {"hbm": LRU, "dram": LFU, "ssd": LRU}
    with pytest.raises(ConfigError, match="memory.ssd_eviction cannot act: offload=dram has no ssd tier"):
        run(_evicting(), blocks=300, offload=DramConfig(), memory=MemoryConfig(ssd_eviction="lfu"))
    with pytest.raises(ConfigError, match="memory.dram_eviction: unknown eviction 'mru'"):
        run(_evicting(), blocks=300, offload=DramConfig(), memory=MemoryConfig(dram_eviction="mru"))


# --- KV over NVLink from another instance's HBM ------------------------------------------------------
def test_a_replica_reads_a_peers_cached_prefix_over_nvlink() -> None:
    wl = ScriptWorkloadConfig([0.0, 5.0], [2100, 2100], [10, 10], prefix=[[*PREFIX_A, 100], [*PREFIX_A, 200]])
    alone, _ = run(wl, replicas=2)
    df, s = run(wl, replicas=2, memory=MemoryConfig(peer_hbm=True))
    assert df["replica"].tolist() == [0, 1]
    assert alone["cached_tokens"].tolist() == [0, 0]  # without: replica 1 recomputes A
    assert df["cached_hbm_tokens"].tolist() == [0, 2048]
    # 4 granules over both GPUs' NVLink (H100 datasheet: 450 GB/s a direction) plus its latency.
    assert df["kv_wait_s"][1] == pytest.approx(4 * GRANULE_BYTES / 450e9 + 10e-6, rel=1e-9)
    assert df["ttft_s"][1] < 0.5 * alone["ttft_s"][1]
    assert s["memory"]["peer_hbm"] == {"hit_tokens": 2048, "bytes": 4 * GRANULE_BYTES}
    assert s["memory"]["links"]["nvlink"]["bytes"] == 2 * 4 * GRANULE_BYTES  # out of one GPU, into the other
    assert "pcie" not in s["memory"]["links"]


def test_peer_reads_need_the_prefix_cache_and_a_fixed_cluster() -> None:
    base = ["output.plot=false", "output.progress=false", "memory.peer_hbm=true"]
    with pytest.raises(ConfigError, match="memory.peer_hbm cannot act with kv.prefix_caching=false"):
        simkv.simulate(simkv.compose([*base, "kv.prefix_caching=false"]))
    with pytest.raises(ConfigError, match="memory.peer_hbm reads the HBM of the instances serving from the start"):
        simkv.simulate(simkv.compose([*base, "autoscaler=horizontal"]))


# --- tool-call prefetch ----------------------------------------------------------------------------
def _tool(gap: float = 4.0) -> ScriptWorkloadConfig:
    # As tests/test_memory.py: session 0's call, a tool of `gap` s, its next call repeats the
    # 2,110-token context (4 granules), while two open-loop requests press on HBM.
    return ScriptWorkloadConfig([0.0, 1.0, 1.5], [2100, 2400, 2080], [10, 200, 10],
                                prefix=[[], [], []], session=[0, -1, -1], followups=[[0, gap, 100, 10]])


LOAD = 4 * GRANULE_BYTES / PCIE + 10e-6  # the 4 granules back from DRAM alone


def test_prefetch_lands_before_the_tool_returns() -> None:
    offload, _ = run(_tool(), blocks=300, offload=DramConfig(), tool_kv=OffloadConfig(tier="dram"))
    df, s = run(_tool(), blocks=300, offload=DramConfig(), tool_kv=PrefetchConfig(initial_s=3.0))
    before, after = offload[offload["turn"] == 1].iloc[0], df[df["turn"] == 1].iloc[0]
    assert before["kv_wait_s"] == pytest.approx(LOAD, rel=1e-9)
    assert after["kv_wait_s"] == 0
    assert after["cached_hbm_tokens"] == 2048
    assert before["ttft_s"] - after["ttft_s"] == pytest.approx(LOAD, rel=1e-6)
    pf = s["memory"]["prefetch"]
    assert pf["started"] == pf["landed"] == 1
    assert pf["offloaded"] == 2
    # Landed KV is pinned for the call from landing to its arrival (its own pin counts).
    assert s["memory"]["counters"]["pins_taken_over"] == 1


def test_a_call_arriving_mid_prefetch_waits_only_for_the_rest() -> None:
    # Predicted at 4.002 s after the finish: the load starts 4.2 ms before that, the call comes
    # at 4.0 s: 2 ms of it are left.
    df, s = run(_tool(), blocks=300, offload=DramConfig(), tool_kv=PrefetchConfig(initial_s=4.002))
    follow = df[df["turn"] == 1].iloc[0]
    assert follow["kv_wait_s"] == pytest.approx(0.002, abs=1e-6)
    assert follow["cached_dram_tokens"] == 2048
    assert s["memory"]["prefetch"]["arrived_in_flight"] == 1
    assert s["memory"]["counters"]["load_bytes"] == 4 * GRANULE_BYTES  # loaded once, not twice


def test_a_prediction_too_late_loads_on_arrival_and_one_too_short_pins() -> None:
    late, s = run(_tool(), blocks=300, offload=DramConfig(), tool_kv=PrefetchConfig(initial_s=6.0))
    assert late[late["turn"] == 1].iloc[0]["kv_wait_s"] == pytest.approx(LOAD, rel=1e-9)
    assert s["memory"]["prefetch"]["arrived_before_start"] == 1
    # Back sooner than the KV could be written out and read in: keep it pinned (Continuum).
    _, s = run(_tool(), blocks=300, offload=DramConfig(), tool_kv=PrefetchConfig(initial_s=0.005))
    assert s["memory"]["prefetch"]["pinned"] >= 1
    assert s["memory"]["counters"]["pins"] >= 1


def test_prefetch_predicts_from_the_observed_tool_times() -> None:
    from simkv.policies.tool_kv import PrefetchBeforeReturn

    p = PrefetchBeforeReturn(PrefetchConfig(quantile=0.5, hold_quantile=1.0, min_samples=3, initial_s=7.0))
    assert p.prediction() == (7.0, 14.0)
    for gap in (1.0, 2.0, 30.0):
        p.observe_gap(gap)
    assert p.prediction() == (2.0, 30.0)
    with pytest.raises(ConfigError, match=r"tool_kv.quantile \(0.9\) must be <= tool_kv.hold_quantile"):
        PrefetchConfig(quantile=0.9, hold_quantile=0.8)


def _prefetches_keep_every_invariant(overrides: list[str]) -> None:
    """Agents with tool_kv=prefetch run to the end with the pools' invariants checked after
    every run, prefetches started, and none landed or handed over that did not start."""
    cfg = simkv.compose(["output.plot=false", "output.progress=false", "workload=swebench",
                         "offload=dram", "tool_kv=prefetch", "tool_kv.quantile=0.5", *overrides])
    with tempfile.TemporaryDirectory() as d:
        res = simkv.simulate(cfg, d, observer=Checker())
        finished = (res.requests["status"] == "finished").all()
    pf = res.summary["memory"]["prefetch"]
    assert pf["started"] > 0
    assert pf["landed"] + pf["arrived_in_flight"] <= pf["started"]
    assert finished


def test_prefetches_under_pressure_keep_every_invariant() -> None:
    # Regression: a prefetch starting mid-run took blocks a planned decode run counted on
    # (OutOfBlocksError at the run's end); prefetches now start when the scheduler plans.
    _prefetches_keep_every_invariant(["cluster.replicas=1", "workload.num_programs=6",
                                      "workload.program_rate=1", "kv.num_gpu_blocks_override=6000",
                                      "hardware=a100_80gb", "tool_kv.initial_s=2"])


def test_a_prefetch_whose_granules_its_own_allocation_evicts_loads_the_rest() -> None:
    # Regression: with a small DRAM tier, the HBM room a prefetch allocates demoted cached
    # granules into DRAM, whose own room evicted granules of the prefetch there: it then read
    # their home from the store and failed (KeyError, an internal error). Only the granules
    # still below are loaded now, and the blocks of the others go back.
    _prefetches_keep_every_invariant(["cluster.replicas=2", "workload.num_programs=8",
                                      "workload.program_rate=2", "kv.num_gpu_blocks_override=4000",
                                      "router=session_affinity", "memory.dram_gib=8"])

"""The memory hierarchy: links, eviction orders, prefix hits by tier, offload, swap, tool-call
KV policies, the cluster-wide store, and the invariants that make bytes add up."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import pytest
import simpy

import simkv
from simkv.config.schema import (
    ClusterConfig,
    EngineConfig,
    KVConfig,
    MemoryConfig,
    OutputConfig,
    SimConfig,
)
from simkv.entities.hardware import ProfileError
from simkv.kv.links import Fabric, Link
from simkv.kv.tiers import load_node_profile
from simkv.policies.eviction import FIFO, LFU, LRU, CostAware
from simkv.policies.offload.placements import (
    ClusterStoreConfig,
    DramConfig,
    NoOffloadConfig,
    SsdConfig,
    SwapConfig,
    WriteThroughConfig,
)
from simkv.policies.router import RoundRobinConfig, SessionAffinityConfig
from simkv.policies.scheduler import VLLMSchedulerConfig
from simkv.policies.tool_kv import DropConfig, OffloadConfig, TTLPinConfig
from tests.helpers import ScriptWorkloadConfig

GRANULE_BYTES = 512 * 131072  # Llama-3.1-8B: 128 KiB of KV per token, 512 tokens a granule
PCIE = 64e9  # H100 datasheet profile, one GPU


def run(wl: ScriptWorkloadConfig, *, blocks: int = 3000, offload=None, tool_kv=None,
        replicas: int = 1, router=None, memory: MemoryConfig | None = None, observer=None,
        out: Path | None = None):
    cfg = SimConfig(
        cluster=ClusterConfig(replicas=replicas),
        kv=KVConfig(num_gpu_blocks_override=blocks),
        scheduler=VLLMSchedulerConfig(max_num_seqs=16, max_num_batched_tokens=8192),
        router=router or RoundRobinConfig(), workload=wl,
        offload=offload or NoOffloadConfig(), tool_kv=tool_kv or DropConfig(),
        memory=memory or MemoryConfig(),
        engine=EngineConfig(livelock_iterations=100_000),
        output=OutputConfig(plot=False, progress=False),
    )
    with tempfile.TemporaryDirectory() as d:
        res = simkv.simulate(cfg, out or d, observer=observer)
        return res.requests.sort_values("request_id").reset_index(drop=True), res.summary


PREFIX_A = [1, 2, 3, 4]  # 4 granules = 2,048 shared tokens


# --- links ---------------------------------------------------------------------------------
def _fabric_ends(starts: list[tuple[float, float, list[Link]]]) -> list[float]:
    env = simpy.Environment()
    fabric = Fabric(env)
    ends: list[float] = [0.0] * len(starts)

    def launch(i: int, nbytes: float, links: list[Link]) -> None:
        fabric.start(nbytes, links, lambda t: ends.__setitem__(i, env.now))

    for i, (t0, nbytes, links) in enumerate(starts):
        env.process(_later(env, t0, lambda i=i, n=nbytes, lk=links: launch(i, n, lk)))
    env.run()
    return ends


def _later(env, t0, fn):
    yield env.timeout(t0)
    fn()


def test_two_transfers_on_one_link_take_twice_as_long() -> None:
    link = Link("pcie0", 10e9)
    solo = _fabric_ends([(0.0, 1e9, [link])])
    both = _fabric_ends([(0.0, 1e9, [Link("a", 10e9)]), (0.0, 1e9, [Link("b", 10e9)])])
    shared = Link("pcie0", 10e9)
    together = _fabric_ends([(0.0, 1e9, [shared]), (0.0, 1e9, [shared])])
    assert solo == [pytest.approx(0.1)]
    assert both == [pytest.approx(0.1), pytest.approx(0.1)]  # separate links do not share
    assert together == [pytest.approx(0.2), pytest.approx(0.2)]


def test_a_transfer_moves_at_its_slowest_link_and_shares_only_while_overlapping() -> None:
    assert _fabric_ends([(0.0, 1e9, [Link("ssd", 10e9), Link("pcie", 5e9)])]) == [pytest.approx(0.2)]
    link = Link("l", 10e9)
    # 0.5 GB alone, then both at 5 GB/s: the first ends at 0.15 s, the second at 0.2 s.
    assert _fabric_ends([(0.0, 1e9, [link]), (0.05, 1e9, [link])]) == [pytest.approx(0.15),
                                                                       pytest.approx(0.2)]
    assert link.bytes_moved == 2e9
    assert link.busy_s == pytest.approx(0.2)


def test_latency_delays_the_landing() -> None:
    assert _fabric_ends([(0.0, 1e9, [Link("l", 10e9, latency_s=0.01)])]) == [pytest.approx(0.11)]


# --- eviction orders -----------------------------------------------------------------------
def _drain(policy) -> list[int]:
    out = []
    while (k := policy.victim()) is not None:
        out.append(k)
    return out


def test_lru_order_follows_release_and_hits() -> None:
    p = LRU()
    for k in (1, 2, 3):
        p.admit(k, 0.0, 1.0)
    p.access(1, 1.0)
    p.pin(3)
    assert _drain(p) == [2, 1]
    p.admit(3, 2.0, 1.0)
    assert _drain(p) == [3]


def test_fifo_keeps_first_insertion_order_across_pins() -> None:
    p = FIFO()
    for k in (1, 2, 3):
        p.admit(k, 0.0, 1.0)
    p.pin(1)
    p.admit(1, 5.0, 1.0)  # released again later: still the oldest
    p.access(2, 6.0)
    assert _drain(p) == [1, 2, 3]


def test_lfu_evicts_the_least_hit_first() -> None:
    p = LFU()
    for k in (1, 2, 3):
        p.admit(k, 0.0, 1.0)
    p.access(1, 1.0)
    p.access(1, 2.0)
    p.access(3, 3.0)
    assert _drain(p) == [2, 3, 1]


def test_cost_aware_weighs_recompute_cost_and_ages() -> None:
    p = CostAware()
    p.admit(1, 0.0, 1.0)
    p.admit(2, 0.0, 5.0)
    p.admit(3, 0.0, 2.0)
    assert p.victim() == 1  # the cheapest to recompute; the aging floor becomes 1
    p.admit(4, 1.0, 1.0)  # priority 1 + 1 = 2: ties with 3, which was there first
    assert _drain(p) == [3, 4, 2]


# --- prefix hits by tier -------------------------------------------------------------------
def test_a_shared_prefix_is_served_from_hbm() -> None:
    wl = ScriptWorkloadConfig([0.0, 5.0], [2100, 2100], [10, 10],
                              prefix=[[*PREFIX_A, 100], [*PREFIX_A, 200]])
    df, s = run(wl)
    assert df["cached_tokens"].tolist() == [0, 2048]
    assert df["cached_hbm_tokens"].tolist() == [0, 2048]
    assert df["ttft_s"][1] < 0.5 * df["ttft_s"][0]
    assert s["prefix_cache"]["hit_rate_hbm"] == pytest.approx(2048 / 4200)


def test_without_prefix_caching_nothing_is_cached() -> None:
    wl = ScriptWorkloadConfig([0.0, 5.0], [2100, 2100], [10, 10],
                              prefix=[[*PREFIX_A, 100], [*PREFIX_A, 200]])
    cfg = SimConfig(kv=KVConfig(prefix_caching=False), cluster=ClusterConfig(replicas=1),
                    scheduler=VLLMSchedulerConfig(), router=RoundRobinConfig(), workload=wl,
                    output=OutputConfig(plot=False, progress=False))
    with tempfile.TemporaryDirectory() as d:
        df = simkv.simulate(cfg, d).requests
    assert df["cached_tokens"].sum() == 0


def _evicting_workload() -> ScriptWorkloadConfig:
    # 300 blocks of 16 tokens: request 1 caches prefix A (4 granules, 128 blocks); request 2
    # (4,400 tokens, its own prefix) needs 276 blocks and evicts all of A; request 3 wants A.
    return ScriptWorkloadConfig([0.0, 5.0, 10.0], [2100, 4400, 2100], [10, 10, 10],
                                prefix=[[*PREFIX_A, 100], [300 + i for i in range(9)],
                                        [*PREFIX_A, 200]])


def test_evicted_prefix_is_recomputed_without_offload() -> None:
    df, s = run(_evicting_workload(), blocks=300)
    assert df["cached_tokens"].tolist() == [0, 0, 0]
    assert s["memory"]["tiers"]["hbm_cache"]["bytes_evicted"] > 0


def test_evicted_prefix_is_demoted_to_dram_and_loaded_back_over_pcie() -> None:
    df, s = run(_evicting_workload(), blocks=300, offload=DramConfig())
    assert df["cached_dram_tokens"].tolist() == [0, 0, 2048]
    assert df["cached_hbm_tokens"].tolist() == [0, 0, 0]
    # 4 granules over PCIe (the slowest link of DRAM read -> PCIe) plus the PCIe latency; the
    # allocation for them evicts request 2's granules, whose demotion shares the PCIe link.
    mem = s["memory"]
    solo = 4 * GRANULE_BYTES / PCIE + 10e-6
    concurrent = mem["counters"]["demote_bytes"] - 4 * GRANULE_BYTES
    assert concurrent > 0
    assert solo < df["kv_wait_s"][2] <= solo + concurrent / PCIE + 1e-9
    assert mem["counters"]["demote_bytes"] >= 4 * GRANULE_BYTES
    assert mem["tiers"]["dram"]["bytes_read"] == 4 * GRANULE_BYTES
    assert mem["links"]["pcie"]["bytes"] == mem["counters"]["demote_bytes"] + 4 * GRANULE_BYTES


def test_a_full_dram_demotes_to_ssd() -> None:
    # DRAM holds 2 granules: A's evicted granules fall through to the SSD (deepest first).
    df, s = run(_evicting_workload(), blocks=300, offload=SsdConfig(),
                memory=MemoryConfig(dram_gib=2 * GRANULE_BYTES / 2**30))
    assert df["cached_tokens"][2] == 2048
    assert df["cached_disk_tokens"][2] >= 1024
    assert df["cached_dram_tokens"][2] + df["cached_disk_tokens"][2] == 2048
    tiers = s["memory"]["tiers"]
    assert tiers["ssd"]["bytes_written"] >= 2 * GRANULE_BYTES
    assert tiers["dram"]["peak_bytes"] <= 2 * GRANULE_BYTES


def test_write_through_stores_at_prefill_and_eviction_drops() -> None:
    df, s = run(_evicting_workload(), blocks=300, offload=WriteThroughConfig())
    assert df["cached_dram_tokens"][2] == 2048
    tiers = s["memory"]["tiers"]
    # Every published granule (A's 4 and request 2's 8 full ones) went to DRAM and SSD.
    assert tiers["dram"]["bytes_written"] == tiers["ssd"]["bytes_written"] == 12 * GRANULE_BYTES
    assert s["memory"]["counters"]["demote_bytes"] == 0


def test_the_cluster_store_serves_another_node_over_the_network(tmp_path: Path) -> None:
    src = Path(simkv.__file__).parent.parent / "hardware_profiles" / "nodes" / "dgx_h100.yaml"
    one_gpu = tmp_path / "one_gpu.yaml"
    one_gpu.write_text(src.read_text().replace("gpus_per_node: 8", "gpus_per_node: 1"))
    wl = ScriptWorkloadConfig([0.0, 5.0], [2100, 2100], [10, 10],
                              prefix=[[*PREFIX_A, 100], [*PREFIX_A, 200]])
    mem = MemoryConfig(node_path=str(one_gpu))
    df, s = run(wl, replicas=2, offload=ClusterStoreConfig(), memory=mem)
    assert df["replica"].tolist() == [0, 1]
    assert df["cached_dram_tokens"][1] == 2048
    assert df["cached_remote_tokens"][1] == 2048
    assert s["memory"]["links"]["nic"]["bytes"] == 2 * 4 * GRANULE_BYTES  # out of node 0, into 1
    # Per-node stores (write-through without sharing): node 1 has nothing of A.
    df2, _ = run(wl, replicas=2, offload=WriteThroughConfig(), memory=mem)
    assert df2["cached_tokens"][1] == 0


# --- preemption: swap vs recompute -----------------------------------------------------------
def test_swap_moves_a_preempted_request_to_dram_and_back() -> None:
    # Two 2,000-token prompts with long outputs in 260 blocks: the second is preempted.
    wl = ScriptWorkloadConfig([0.0, 0.0], [2000, 2000], [600, 600])
    df_none, _s_none = run(wl, blocks=260)
    df_swap, s_swap = run(wl, blocks=260, offload=SwapConfig())
    assert df_none["preemptions"].sum() > 0
    assert df_swap["preemptions"].sum() > 0
    assert df_none["kv_wait_s"].sum() == 0
    c = s_swap["memory"]["counters"]
    assert c["swaps"] == df_swap["preemptions"].sum()
    assert c["swap_in_bytes"] == c["swap_out_bytes"] > 0
    assert df_swap["kv_wait_s"].max() > 0
    assert (df_swap["status"] == "finished").all()


# --- the agent's KV during a tool call ---------------------------------------------------------
def _tool_call_workload(gap: float = 4.0) -> ScriptWorkloadConfig:
    # Session 0: a 2,100-token call, a tool call of `gap` s, then the next call repeats its
    # 2,110-token context (4 full granules = 128 of the 300 blocks) plus 100 tokens. During
    # the tool call two open-loop requests need 151 (from t = 1, decoding 200 tokens) and 131
    # blocks (from t = 1.5): together more than the 172 blocks A's KV leaves.
    return ScriptWorkloadConfig([0.0, 1.0, 1.5], [2100, 2400, 2080], [10, 200, 10],
                                prefix=[[], [], []], session=[0, -1, -1],
                                followups=[[0, gap, 100, 10]])


def test_drop_loses_the_kv_to_memory_pressure_during_the_tool_call() -> None:
    df, s = run(_tool_call_workload(), blocks=300)
    follow = df[df["turn"] == 1].iloc[0]
    assert follow["cached_tokens"] == 0
    assert s["memory"]["counters"]["pins"] == 0


def test_ttl_pin_keeps_the_kv_for_the_next_call() -> None:
    df, s = run(_tool_call_workload(), blocks=300, tool_kv=TTLPinConfig(ttl_s=10.0))
    follow = df[df["turn"] == 1].iloc[0]
    assert follow["cached_hbm_tokens"] == 2048
    c = s["memory"]["counters"]
    assert c["pins"] == 2
    assert c["pins_taken_over"] == 1
    assert c["pins_expired"] == 0
    # The price: the 131-block request waited for memory the pin held (admitted only when
    # the 151-block one finished), where dropping let it in at once.
    waited = df[df["prompt_tokens"] == 2080].iloc[0]
    first = df[df["prompt_tokens"] == 2400].iloc[0]
    assert waited["first_scheduled_s"] >= first["completion_s"]
    df_drop, _ = run(_tool_call_workload(), blocks=300)
    assert df_drop[df_drop["prompt_tokens"] == 2080].iloc[0]["first_scheduled_s"] == pytest.approx(1.5, abs=0.1)
    assert c["pin_block_s"] == pytest.approx(128 * (follow["first_scheduled_s"] - df["completion_s"][0]))


def test_a_short_ttl_expires_before_the_pressure_comes() -> None:
    df, s = run(_tool_call_workload(gap=4.0), blocks=300, tool_kv=TTLPinConfig(ttl_s=1.0))
    assert df[df["turn"] == 1].iloc[0]["cached_tokens"] == 0
    assert s["memory"]["counters"]["pins_expired"] == 1


def test_the_ttl_is_derived_from_observed_tool_times() -> None:
    from simkv.policies.tool_kv import TTLPin

    pin = TTLPin(TTLPinConfig(quantile=0.5, min_samples=3, initial_ttl_s=7.0))
    assert pin.ttl() == 7.0
    for gap in (1.0, 2.0, 30.0):
        pin.observe_gap(gap)
    assert pin.ttl() == 2.0


def test_offload_during_the_tool_call_loads_the_kv_back_from_dram() -> None:
    df, s = run(_tool_call_workload(), blocks=300, offload=DramConfig(),
                tool_kv=OffloadConfig(tier="dram"))
    follow = df[df["turn"] == 1].iloc[0]
    assert follow["cached_dram_tokens"] == 2048
    # Nothing else moves at that moment: 4 granules over PCIe plus its latency.
    assert follow["kv_wait_s"] == pytest.approx(4 * GRANULE_BYTES / PCIE + 10e-6, rel=1e-9)
    assert s["memory"]["counters"]["offload_bytes"] == 4 * GRANULE_BYTES
    # The offloaded KV left HBM as soon as it was written: the 131-block request got in at once.
    assert df[df["prompt_tokens"] == 2080].iloc[0]["first_scheduled_s"] == pytest.approx(1.5, abs=0.1)


def test_offload_to_a_tier_the_placement_lacks_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="tool_kv=offload to 'ssd' needs that tier, which offload=dram does not have"):
        run(_tool_call_workload(), blocks=300, offload=DramConfig(), tool_kv=OffloadConfig(tier="ssd"))


# --- profiles ----------------------------------------------------------------------------------
def test_node_profile_errors_name_the_file_and_key(tmp_path: Path) -> None:
    src = Path(simkv.__file__).parent.parent / "hardware_profiles" / "nodes" / "dgx_h100.yaml"
    bad = tmp_path / "bad.yaml"
    bad.write_text(src.read_text().replace("unit: GiB", "unit: GB/s", 1))
    with pytest.raises(ProfileError, match=r"bad.yaml: dram.capacity: unit 'GB/s' is not a bytes unit"):
        load_node_profile(path=str(bad))
    node = load_node_profile()
    assert node.tiers["csd"].internal_bandwidth > node.tiers["csd"].read_bandwidth
    assert node.gpus_per_node == 8


def test_prefix_block_tokens_must_be_a_multiple_of_the_block_size() -> None:
    wl = ScriptWorkloadConfig([0.0], [100], [5])
    cfg = SimConfig(kv=KVConfig(block_size=16, prefix_block_tokens=500), scheduler=VLLMSchedulerConfig(),
                    router=RoundRobinConfig(), workload=wl, output=OutputConfig(plot=False, progress=False))
    with pytest.raises(ValueError, match=r"prefix_block_tokens \(500\) must be a multiple of kv.block_size \(16\)"):
        simkv.simulate(cfg)


def test_session_affinity_keeps_a_session_on_one_replica() -> None:
    wl = ScriptWorkloadConfig([0.0, 0.1], [2100, 2100], [10, 10], prefix=[[], []], session=[0, 1],
                              followups=[[0, 1.0, 100, 10], [1, 1.0, 100, 10], [0, 1.0, 100, 10]])
    df, _ = run(wl, replicas=2, router=SessionAffinityConfig())
    for _, g in df.groupby("session"):
        assert g["replica"].nunique() == 1
    assert (df[df["turn"] > 0]["cached_hbm_tokens"] >= 2048).all()


def test_memory_summary_is_deterministic(tmp_path: Path) -> None:
    wl = _evicting_workload()
    run(wl, blocks=300, offload=SsdConfig(), out=tmp_path / "a")
    run(dataclasses.replace(wl), blocks=300, offload=SsdConfig(), out=tmp_path / "b")
    for f in ("requests.parquet", "summary.json"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()


@pytest.mark.slow  # among the quick subset's slowest (CONTRIBUTING.md)
def test_session_contents_do_not_depend_on_the_policies_compared(tmp_path: Path) -> None:
    # Each session draws from its own stream: faster or slower service changes when calls
    # arrive, never what they are, so policies are compared on the same programs.
    base = ["cluster.replicas=1", "output.plot=false", "output.progress=false", "workload=swebench",
            "workload.num_programs=6", "workload.program_rate=1.0", "router=session_affinity"]
    cols = ["session", "turn", "prompt_tokens", "output_tokens"]
    runs = []
    for extra in (["kv.num_gpu_blocks_override=12000"], ["tool_kv=ttl_pin", "scheduler=continuum"]):
        df = simkv.simulate(simkv.compose(base + extra), tmp_path / str(len(runs))).requests
        runs.append(df[cols].sort_values(cols).reset_index(drop=True))
    assert runs[0].equals(runs[1])


def test_continuum_orders_the_queue_by_program_start() -> None:
    from simkv.entities.request import Request
    from simkv.kv.block_pool import BlockPool
    from simkv.policies.scheduler import ContinuumScheduler, ContinuumSchedulerConfig

    sched = ContinuumScheduler(ContinuumSchedulerConfig(), pool=BlockPool(100, 16), max_fast_forward=1)
    sched.add_request(Request(0, 0.0, 10, 5, session=7))  # program 7 starts at 0
    sched.add_request(Request(1, 1.0, 10, 5, session=8))  # program 8 starts at 1
    sched.add_request(Request(2, 1.5, 10, 5))  # open loop
    sched.add_request(Request(3, 2.0, 10, 5, session=7, turn=1))  # program 7's next call
    assert [r.id for r in sched.waiting] == [0, 3, 1, 2]


@pytest.mark.slow  # over 1 s of the quick subset's CPU (CONTRIBUTING.md)
def test_simkv_compare_tables_a_sweep(tmp_path: Path, capsys) -> None:
    from simkv.metrics.compare import main as compare

    base = ["cluster.replicas=1", "output.plot=false", "output.progress=false", "workload=swebench",
            "workload.num_programs=3", "router=session_affinity"]
    for tool in ("drop", "ttl_pin"):
        simkv.simulate(simkv.compose([*base, f"tool_kv={tool}"]), tmp_path / "sweep" / tool)
    assert compare([str(tmp_path / "sweep")]) == 0
    table = (tmp_path / "sweep" / "compare.csv").read_text().splitlines()
    header = table[0].split(",")
    assert header[0] == "tool_kv"
    assert {"jct_mean_s", "hit_hbm"} <= set(header)
    assert [line.split(",")[0] for line in table[1:]] == ["drop", "ttl_pin"]
    assert (tmp_path / "sweep" / "compare.png").stat().st_size > 0
    assert compare([str(tmp_path / "empty")]) == 2
    assert "no run" in capsys.readouterr().err


# --- in-storage attention (InstInfer) ----------------------------------------------------------
def test_in_storage_attention_prices_decode_attention_on_the_csds() -> None:
    from simkv.entities.hardware import load_profile
    from simkv.perf.in_storage import InStorageAttentionCost
    from simkv.perf.roofline import CostModel
    from simkv.policies.scheduler.interface import SchedulerOutput

    cfg = simkv.compose([])
    hw = load_profile("h100_sxm_80gb")
    csd = load_node_profile().tiers["csd"]
    gpu = CostModel(cfg.model, hw)
    inst = InStorageAttentionCost(cfg.model, hw, csd, share=0.5)
    out = SchedulerOutput(num_decodes=1, decode_context=(10_000,), num_sampled=1)
    # By hand, per layer: 10,000 tokens x 4 KiB of KV read at half of 96 GB/s (it beats the
    # 16,384-FLOP-per-token compute at 4 TFLOP/s), plus the query and output over PCIe; then
    # the new token's 128 KiB written at half of 16 GB/s.
    per_layer = 10_000 * 4096 / 48e9 + 2 * 32 * 128 * 2 / 64e9
    expected = gpu.linear_s(1) + gpu.sample_s(1) + 32 * per_layer + 131072 / 8e9
    assert inst.iteration_time(out) == pytest.approx(expected, rel=1e-12)
    assert list(inst.decode_run_times(1, range(10_000, 10_003), 1)) == pytest.approx(
        [expected + 32 * k * 4096 / 48e9 for k in range(3)], rel=1e-12)
    assert inst.iteration_time(out) > gpu.iteration_time(out)  # flash is slower than HBM


def test_instinfer_puts_the_kv_pool_on_the_drives(tmp_path: Path) -> None:
    base = ["cluster.replicas=2", "output.plot=false", "output.progress=false", "workload=poisson",
            "workload.num_requests=50"]
    hbm = simkv.simulate(simkv.compose(base), tmp_path / "hbm").summary
    csd = simkv.simulate(simkv.compose([*base, "offload=instinfer"]), tmp_path / "csd").summary
    # 30.72 TB of drives shared by the 2 replicas of the node, in 16-token blocks of 128 KiB/token.
    assert csd["engine"]["kv_blocks_per_replica"] == int(30.72e12 / 2 // (16 * 131072))
    assert csd["engine"]["kv_blocks_per_replica"] > 100 * hbm["engine"]["kv_blocks_per_replica"]
    assert csd["tpot_s"]["p50"] > hbm["tpot_s"]["p50"]


def test_streaming_kv_from_ssd_is_slower_than_in_storage_attention(tmp_path: Path) -> None:
    base = ["cluster.replicas=1", "output.plot=false", "output.progress=false", "workload=poisson",
            "workload.num_requests=20", "workload.prompt_median=8000", "workload.prompt_sigma=0"]
    tpot = {}
    for placement in ("instinfer", "ssd_stream"):
        tpot[placement] = simkv.simulate(simkv.compose([*base, f"offload={placement}"]),
                                         tmp_path / placement).summary["tpot_s"]["p50"]
    # Decode reads the KV at 96 GB/s inside the CSDs against 56 GB/s of NVMe reads (node profile).
    assert 1.2 < tpot["ssd_stream"] / tpot["instinfer"] < 96 / 56 + 0.05


def test_lower_tiers_can_evict_by_another_policy() -> None:
    from simkv.policies.eviction import FIFO, LRU

    wl = _evicting_workload()
    seen = {}

    def spy(replica) -> None:  # type: ignore[no-untyped-def]
        kv = replica.scheduler.kv
        seen["hbm"] = type(kv.hbm.policy)
        seen["dram"] = type(kv.mem.store("dram", 0).policy)

    run(wl, blocks=300, offload=DramConfig(), memory=MemoryConfig(lower_eviction="fifo"), observer=spy)
    assert seen == {"hbm": LRU, "dram": FIFO}
    with pytest.raises(ValueError, match="memory.lower_eviction: unknown eviction 'mru'; valid choices: cost_aware, fifo, lfu, lru"):
        run(wl, blocks=300, offload=DramConfig(), memory=MemoryConfig(lower_eviction="mru"))

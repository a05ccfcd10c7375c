"""Reusing and placing KV like the seed systems (issue 13): KVShare's partial recompute,
BatchLLM's global prefix tree, vAttention's allocator as a cost, FlexGen's weight offloading,
LeoAM's GPU-CPU-disk KV. What must hold: each reduces exactly to its baseline at its neutral
setting (0% recompute is an exact hit, 100% is no reuse; an allocator without overheads is
today's; all weights resident is no offload; LeoAM keeping everything is full KV), and each
moves its figures the way its model says, by the amounts it says."""

from __future__ import annotations

import dataclasses
import tempfile

import numpy as np
import pandas as pd
import pytest

import simkv
from simkv.config.bounds import ConfigError
from simkv.config.schema import ClusterConfig, KVConfig, OutputConfig, SimConfig
from simkv.engine.capacity import DoesNotFitError
from simkv.engine.pool import load_model
from simkv.entities.hardware import load_profile
from simkv.perf.options import page_tokens
from simkv.perf.roofline import CostModel
from simkv.policies.router import RoundRobinConfig
from simkv.policies.scheduler import KVShareSchedulerConfig, VLLMSchedulerConfig
from simkv.policies.scheduler.kvshare import CacheAwareQueue, Span
from simkv.workload.near_duplicate import CONTENT_BITS, NearDuplicateWorkloadConfig, chain_ids, content_of
from tests.conftest import small
from tests.helpers import Checker, ScriptWorkloadConfig

QUIET = ["output.plot=false", "output.progress=false", "cluster.replicas=1"]
TIME = ["first_scheduled_s", "first_token_s", "completion_s", "ttft_s", "tpot_s", "e2e_s"]


def _script(sched, prefixes: list[list[int]], prompts=(2600, 2600), outputs=(10, 10),
            arrivals=(0.0, 5.0)) -> tuple[pd.DataFrame, dict]:
    wl = ScriptWorkloadConfig(list(arrivals), list(prompts), list(outputs), prefix=prefixes)
    cfg = SimConfig(cluster=ClusterConfig(replicas=1), kv=KVConfig(num_gpu_blocks_override=3000),
                    scheduler=sched, router=RoundRobinConfig(), workload=wl,
                    output=OutputConfig(plot=False, progress=False))
    with tempfile.TemporaryDirectory() as d:
        res = simkv.simulate(cfg, d, observer=Checker())
        return res.requests.sort_values("request_id").reset_index(drop=True), res.summary


def _run(overrides: list[str], observer=None) -> tuple[pd.DataFrame, dict]:
    cfg = simkv.compose([*QUIET, *overrides])
    with tempfile.TemporaryDirectory() as d:
        res = simkv.simulate(cfg, d, observer=observer)
        return res.requests.sort_values("request_id").reset_index(drop=True), res.summary


# --- KVShare ----------------------------------------------------------------------------------
A = [1, 2, 3, 4]  # 4 granules = 2,048 tokens
NEAR = [[*A, 100], [a | (7 << CONTENT_BITS) for a in A] + [200]]  # same contents, other chain
EXACT = [[*A, 100], [*A, 200]]


def test_kvshare_at_0_percent_recompute_costs_an_exact_hit() -> None:
    share, s = _script(KVShareSchedulerConfig(recompute_fraction=0.0, cache_aware=False), NEAR)
    exact, _ = _script(VLLMSchedulerConfig(), EXACT)
    # The reused span is priced as if the prefix cache had hit it: every time is the same.
    pd.testing.assert_frame_equal(share[TIME], exact[TIME])
    assert exact["cached_tokens"].tolist() == [0, 2048]
    assert share["cached_tokens"].tolist() == [0, 0]  # no exact hit: the chains differ
    assert s["kvshare"] == {"requests": 1, "exact_tokens": 0, "similar_tokens": 2048, "saved_tokens": 2048}


def test_kvshare_at_100_percent_recompute_is_no_reuse() -> None:
    share, s = _script(KVShareSchedulerConfig(recompute_fraction=1.0, cache_aware=False), NEAR)
    vllm, _ = _script(VLLMSchedulerConfig(), NEAR)
    pd.testing.assert_frame_equal(share, vllm)
    assert s["kvshare"]["similar_tokens"] == 2048
    assert s["kvshare"]["saved_tokens"] == 0
    # In between, TTFT falls with the recompute fraction.
    ttft = [_script(KVShareSchedulerConfig(recompute_fraction=f, cache_aware=False), NEAR)[0]["ttft_s"][1]
            for f in (0.0, 0.3, 0.7, 1.0)]
    assert ttft == sorted(ttft)
    assert ttft[0] < ttft[-1]


def test_kvshare_recomputes_edited_granules_whole() -> None:
    # Granule 1 edited: its 512 tokens cost in full, granules 0, 2, 3 are similar.
    edited = [[*A, 100], [1 | (7 << CONTENT_BITS), 999, 3 | (8 << CONTENT_BITS), 4 | (9 << CONTENT_BITS), 200]]
    _, s = _script(KVShareSchedulerConfig(recompute_fraction=0.0, cache_aware=False), edited)
    assert s["kvshare"]["similar_tokens"] == 3 * 512
    assert s["kvshare"]["saved_tokens"] == 3 * 512


def test_span_chunks_never_charge_more_than_the_budget() -> None:
    span = Span((0, 1, 2, 3), 512, 0.25)  # 2,048 similar tokens at a quarter of the price
    n = span.chunk(0, 3000, 1000)
    skip, _ = span.discount(0, n)
    assert n - skip <= 1000 < (n + 1) - span.discount(0, n + 1)[0] + 1
    assert n == 2048 + (1000 - 512)  # the span costs 512, the rest at full price
    assert Span((), 512, 0.0).chunk(100, 50, 1000) == 50
    # 1 - f of each similar token's attended keys (p + 1) come off the pairs.
    assert span.discount(0, 512) == (384, 0.75 * 512 * 513 / 2)


def test_cache_aware_queue_serves_reuse_first_and_the_starved() -> None:
    from simkv.entities.request import Request

    q = CacheAwareQueue(max_wait_s=10.0)
    low, high, late = Request(0, 0.0, 10, 1), Request(1, 1.0, 10, 1), Request(2, 2.0, 10, 1)
    q.push(low, 0)
    q.push(high, 9)
    q.push(late, 9)
    q.now = 3.0
    assert [q.popleft().id, q.popleft().id, q.popleft().id] == [1, 2, 0]
    q.push(low, 0)
    q.push(high, 9)
    q.now = 12.0  # low has waited 12 s
    assert q[0] is low
    q.appendleft(late)  # a preempted request goes in front
    assert q.popleft() is late
    assert len(q) == 2


def test_near_duplicate_ids_are_exact_chains_with_content_below() -> None:
    a = chain_ids([1, 2, 3, 4])
    b = chain_ids([1, 9, 3, 4])  # one edit at granule 1
    assert a[0] == b[0]
    assert all(x != y for x, y in zip(a[1:], b[1:], strict=True))
    assert [content_of(x) for x in b] == [1, 9, 3, 4]
    assert content_of(-5) == -1
    wl = simkv.registry.build(NearDuplicateWorkloadConfig(num_requests=20, num_templates=2))
    batch = next(iter(wl.arrivals(np.random.default_rng(0))))
    assert len(batch) == 20
    g = 15518 // 512
    for p, prompt in zip(batch.prefix, batch.prompt_tokens, strict=True):
        assert len(p) == prompt // 512
        assert sum(content_of(k) > (1 << 20) for k in p[:g]) <= 2  # a tenant and a request edit


@pytest.mark.slow  # among the quick subset's slowest (CONTRIBUTING.md)
def test_kvshare_on_near_duplicates_beats_exact_prefix_caching() -> None:
    wl = ["workload=near_duplicate", "workload.num_requests=30", "workload.rate=0.5"]
    vllm, _ = _run(wl)
    share, s = _run([*wl, "scheduler=kvshare"], observer=Checker())
    assert (share["status"] == "finished").all()
    assert s["kvshare"]["similar_tokens"] > 0
    assert share["ttft_s"].mean() < 0.6 * vllm["ttft_s"].mean()


def test_kvshare_needs_the_prefix_cache() -> None:
    with pytest.raises(ValueError, match="scheduler=kvshare reuses cached KV: it needs kv.prefix_caching=true"):
        _run(["workload=near_duplicate", "workload.num_requests=2", "scheduler=kvshare",
              "kv.prefix_caching=false"])


# --- BatchLLM ---------------------------------------------------------------------------------
BATCH = ["workload=batchllm", "workload.num_requests=300"]


def test_batchllm_computes_each_shared_prefix_once() -> None:
    seen = {}

    def spy(replica) -> None:  # type: ignore[no-untyped-def]
        seen["computed"] = dict(replica.scheduler.computed_granules)

    df, s = _run([*BATCH, "scheduler=batchllm"], observer=spy)
    vllm, _ = _run(BATCH)
    # Every shared granule (the root and each group's prefix) was computed exactly once...
    assert seen["computed"]
    assert set(seen["computed"].values()) == {1}
    assert s["batchllm"]["shared_granules_recomputed"] == 0
    # ...so the prompt tokens computed are the prompts minus every repeat of a shared granule
    # (a granule id that two or more requests' prefixes name).
    count: dict[int, int] = {}
    for prefix in _prefixes():
        for k in prefix:
            count[k] = count.get(k, 0) + 1
    repeats = sum(n - 1 for n in count.values() if n > 1) * 512
    assert (df["prompt_tokens"] - df["cached_tokens"]).sum() == df["prompt_tokens"].sum() - repeats
    # vLLM, in arrival order, computes some of them again (admitted together, before cached).
    assert (vllm["prompt_tokens"] - vllm["cached_tokens"]).sum() > df["prompt_tokens"].sum() - repeats
    assert s["requests"]["preemptions"] == 0


def _prefixes() -> list[tuple[int, ...]]:
    """The batch's prefix ids, drawn as the run draws them (the run's first seed)."""
    cfg = simkv.compose([*QUIET, *BATCH])
    wl = simkv.registry.build(cfg.workload, granule_tokens=512)
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed).spawn(2)[0])
    return list(next(iter(wl.arrivals(rng))).prefix)


def test_batchllm_fused_prefix_attention_and_order_raise_throughput() -> None:
    _vllm, sv = _run(BATCH)
    _, sb = _run([*BATCH, "scheduler=batchllm"])
    _, nofuse = _run([*BATCH, "scheduler=batchllm", "scheduler.fused_prefix_attention=false"])
    assert sb["throughput"]["output_tokens_per_s"] > 1.2 * sv["throughput"]["output_tokens_per_s"]
    assert sb["batchllm"]["fused_tokens_saved"] > 0
    assert nofuse["batchllm"]["fused_tokens_saved"] == 0
    assert sb["makespan_s"] < nofuse["makespan_s"]


@pytest.mark.parametrize("sched", [["scheduler=batchllm"], ["scheduler=kvshare"]])
def test_new_schedulers_fast_forward_equals_step_by_step(sched: list[str]) -> None:
    wl = (["workload=batchllm", "workload.num_requests=120"] if "batchllm" in sched[0] else
          ["workload=near_duplicate", "workload.num_requests=40", "workload.rate=2"])
    fast, _ = _run([*wl, *sched, "engine.max_fast_forward=4096"], observer=Checker())
    slow, _ = _run([*wl, *sched, "engine.max_fast_forward=1"])
    for col in ("first_token_s", "completion_s"):
        np.testing.assert_allclose(fast[col], slow[col], rtol=1e-9, atol=1e-12)
    assert fast["cached_tokens"].tolist() == slow["cached_tokens"].tolist()


# --- the KV allocator (vAttention vs PagedAttention) -------------------------------------------
@pytest.mark.slow  # among the quick subset's slowest (CONTRIBUTING.md)
def test_an_allocator_without_overheads_equals_today(tmp_path) -> None:
    base = ["workload.num_requests=150", "workload.rate=30", "kv.prefix_caching=false"]
    tokens = page_tokens(CostModel(load_model("llama3_8b"), load_profile("h100_sxm_80gb")), 64)
    assert tokens == 32  # a 64 KiB page holds 32 tokens of one layer's keys
    paged = simkv.simulate(small([*base, f"kv.block_size={tokens}"]), tmp_path / "p")
    vattn = simkv.simulate(small([*base, "kv.allocator.kind=vattention", "kv.allocator.page_kib=64",
                                  "kv.allocator.map_latency_us=0", "kv.allocator.prefill_attention_time=1",
                                  "kv.allocator.decode_attention_time=1"]), tmp_path / "v")
    pd.testing.assert_frame_equal(paged.requests, vattn.requests)
    assert paged.summary["engine"]["kv_blocks_per_replica"] == vattn.summary["engine"]["kv_blocks_per_replica"]
    default = simkv.simulate(small(base), tmp_path / "d")
    explicit = simkv.simulate(small([*base, "kv.allocator.kind=paged", "kv.allocator.prefill_attention_time=1",
                                     "kv.allocator.decode_attention_time=1"]), tmp_path / "e")
    pd.testing.assert_frame_equal(default.requests, explicit.requests)


def test_synchronous_page_mapping_adds_its_driver_time(tmp_path) -> None:
    one = ["workload=test_list", "workload.arrival_s=[0.0]", "workload.prompt_tokens=[8192]",
           "workload.output_tokens=[1]", "kv.prefix_caching=false", "kv.allocator.kind=vattention"]
    free = simkv.simulate(small([*one, "kv.allocator.map_latency_us=0"]), tmp_path / "f").requests
    sync = simkv.simulate(small([*one, "kv.allocator.overlap=false"]), tmp_path / "s").requests
    hidden = simkv.simulate(small(one), tmp_path / "o").requests
    pages = 8192 * 2 * 32 / 1024  # 2 MiB pages of 1,024 tokens, keys and values of 32 layers
    assert sync["ttft_s"][0] - free["ttft_s"][0] == pytest.approx(pages * 46e-6, rel=1e-9)
    assert hidden["ttft_s"][0] == free["ttft_s"][0]  # 24 ms of mapping behind a longer prefill


def test_contiguous_kernels_speed_up_attention_only(tmp_path) -> None:
    one = ["workload=test_list", "workload.arrival_s=[0.0]", "workload.prompt_tokens=[32000]",
           "workload.output_tokens=[64]", "kv.prefix_caching=false", "scheduler.max_num_batched_tokens=32768"]
    paged = simkv.simulate(small([*one, "kv.allocator.prefill_attention_time=2",
                                  "kv.allocator.decode_attention_time=2"]), tmp_path / "p").requests
    base = simkv.simulate(small(one), tmp_path / "b").requests
    cost = CostModel(load_model("llama3_8b"), load_profile("h100_sxm_80gb"))
    attn = cost.layers * cost._prefill_attention_s(32000 * 32001 / 2, 32000, 32000)
    assert paged["ttft_s"][0] - base["ttft_s"][0] == pytest.approx(attn, rel=1e-6)
    assert paged["tpot_s"][0] > base["tpot_s"][0]


def test_allocator_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match="kv.allocator.page_kib: expected one of 64, 128, 256, 2048"):
        simkv.simulate(small(["kv.allocator.kind=vattention", "kv.allocator.page_kib=512",
                              "kv.prefix_caching=false"]))
    with pytest.raises(ConfigError, match="set kv.allocator.kind=vattention"):
        simkv.simulate(small(["kv.allocator.overlap=false"]))
    with pytest.raises(ConfigError, match="kv.allocator.kind=vattention keeps each request's KV"):
        simkv.simulate(small(["kv.allocator.kind=vattention"]))
    with pytest.raises(ConfigError, match="kv.allocator.kind: expected one of paged, vattention"):
        simkv.simulate(small(["kv.allocator.kind=buddy"]))


# --- FlexGen's weight offloading ----------------------------------------------------------------
ONE_DECODE = ["workload=test_list", "workload.arrival_s=[0.0]", "workload.prompt_tokens=[100]",
              "workload.output_tokens=[50]", "kv.prefix_caching=false"]


def test_weight_offload_with_every_weight_resident_is_no_offload(tmp_path) -> None:
    base = ["workload.num_requests=150", "workload.rate=30"]
    a = simkv.simulate(small(base), tmp_path / "a").requests
    b = simkv.simulate(small([*base, "weights.gpu_fraction=1.0"]), tmp_path / "b").requests
    pd.testing.assert_frame_equal(a, b)
    # Where the weights would stream from, and how, cannot act then: refused (issue 18).
    with pytest.raises(ValueError, match="^weights.overlap cannot act at weights.gpu_fraction=1"):
        simkv.simulate(small([*base, "weights.overlap=false"]), tmp_path / "c")


@pytest.mark.slow  # among the quick subset's slowest (CONTRIBUTING.md)
def test_streamed_weights_cost_their_bytes_over_pcie(tmp_path) -> None:
    base = simkv.simulate(small(ONE_DECODE), tmp_path / "b")
    serial = simkv.simulate(small([*ONE_DECODE, "weights.gpu_fraction=0.5", "weights.overlap=false"]),
                            tmp_path / "s")
    overlap = simkv.simulate(small([*ONE_DECODE, "weights.gpu_fraction=0.5"]), tmp_path / "o")
    cost = CostModel(load_model("llama3_8b"), load_profile("h100_sxm_80gb"))
    # Half the weights, at the node's DRAM share per GPU (200 GB/s for 8 GPUs, below PCIe Gen5).
    load = 0.5 * cost.weight_bytes_per_gpu() / 25e9 + 10e-6
    tpot = base.requests["tpot_s"][0]
    assert serial.requests["tpot_s"][0] == pytest.approx(tpot + load, rel=1e-9)
    assert overlap.requests["tpot_s"][0] == pytest.approx(max(tpot, load), rel=1e-9)
    # What stays resident is what HBM holds: the KV pool grows by the weights moved out.
    blocks = [r.summary["engine"]["kv_blocks_per_replica"] for r in (base, serial)]
    assert blocks[1] - blocks[0] == pytest.approx(0.5 * cost.weight_bytes_per_gpu() / (16 * 131072), abs=1)


def test_a_model_larger_than_hbm_runs_with_its_weights_offloaded(tmp_path) -> None:
    t4 = ["model=opt_30b", "hardware=t4_16gb", "memory.node=gcp_t4", *ONE_DECODE]
    with pytest.raises(DoesNotFitError, match="opt_30b on T4-16GB"):
        simkv.simulate(small(t4), tmp_path / "no")
    df = simkv.simulate(small([*t4, "weights.gpu_fraction=0.2"]), tmp_path / "yes").requests
    assert df["status"].tolist() == ["finished"]
    # Decode is bound by the 80% of 60 GB crossing PCIe 3.0 every step: ~3 s per token.
    assert 2.5 < df["tpot_s"][0] < 3.5


# --- LeoAM ----------------------------------------------------------------------------------------
def test_leoam_keeping_everything_is_full(tmp_path) -> None:
    base = ["workload.num_requests=100", "workload.rate=30", "kv.prefix_caching=false"]
    full = simkv.simulate(small(base), tmp_path / "f").requests
    leo = simkv.simulate(small([*base, "kv_policy=leoam", "kv_policy.importance_fraction=1",
                                "kv_policy.redundancy=1", "kv_policy.gpu_cache_fraction=1"]),
                         tmp_path / "l").requests
    pd.testing.assert_frame_equal(full, leo)


@pytest.mark.slow  # among the quick subset's slowest (CONTRIBUTING.md)
def test_leoam_pipelines_its_loads_and_beats_streaming_the_kv(tmp_path) -> None:
    pc = ["hardware=rtx4090_24gb", "memory.node=pc_nvme", "workload=test_list", "workload.arrival_s=[0,0]",
          "workload.prompt_tokens=[16000,16000]", "workload.output_tokens=[64,64]", "kv.prefix_caching=false"]
    stream = simkv.simulate(small([*pc, "offload=dram_stream"]), tmp_path / "s").requests
    leo = simkv.simulate(small([*pc, "kv_policy=leoam"]), tmp_path / "l").requests
    serial = simkv.simulate(small([*pc, "kv_policy=leoam", "kv_policy.overlap=false"]), tmp_path / "n").requests
    fixed = simkv.simulate(small([*pc, "kv_policy=leoam", "kv_policy.redundancy=1.6667"]), tmp_path / "x").requests
    assert (leo["tpot_s"] < serial["tpot_s"]).all()
    assert (leo["tpot_s"] <= fixed["tpot_s"]).all()
    assert (leo["tpot_s"] < fixed["tpot_s"]).any()
    assert leo["e2e_s"].mean() < 0.7 * stream["e2e_s"].mean()


def test_leoam_keeps_abstracts_and_a_cache_and_loads_the_rest() -> None:
    from simkv.policies.kv_policy import LeoAM, LeoAMConfig

    p = LeoAM(LeoAMConfig(importance_fraction=0.2, redundancy=1.0, gpu_hit=0.5, cpu_fraction=1.0))
    p.bind(CostModel(load_model("llama3_8b"), load_profile("h100_sxm_80gb")))
    ctx = np.asarray([32000.0])
    kept = p.kept(ctx)
    assert kept[0] == 64 + 3200 + 32000 / 16  # local + 10% cache + 2 key vectors per 16 tokens
    assert p.read(ctx, kept)[0] == 64 + 6400 + 2000
    # Half the 6,400 important tokens miss the GPU cache; 128 KiB each over 64 GB/s of PCIe.
    assert p.extra_s(ctx, kept)[0] == pytest.approx(3200 * 131072 / 64e9)
    assert dataclasses.replace(p.cfg).overlap

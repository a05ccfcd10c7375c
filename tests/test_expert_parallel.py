"""Expert parallelism: placement, expected loads, all-to-all bytes by hand, memory per GPU."""

from __future__ import annotations

from math import comb
from pathlib import Path

import numpy as np
import pytest
import yaml

import simkv
from simkv.entities.hardware import load_profile
from simkv.entities.model import ModelSpec
from simkv.perf.expert_parallel import (
    AllToAllLinks,
    MoEConfig,
    all_to_all_bytes,
    all_to_all_s,
    expert_load,
    place,
)
from simkv.perf.roofline import CostModel
from simkv.policies.scheduler.interface import SchedulerOutput

CONF = Path(simkv.__file__).parent / "conf" / "model"


def spec(name: str) -> ModelSpec:
    return ModelSpec(**yaml.safe_load((CONF / f"{name}.yaml").read_text()))


def test_all_to_all_bytes_by_hand() -> None:
    # 8 experts, 2 per token, 4 GPUs of 2 experts: a token misses a given GPU when both its
    # experts are among the other 6: C(6,2)/C(8,2) = 15/28, so it hits it with p = 13/28.
    load = expert_load(MoEConfig(), 8, 2, 4)
    assert load.gpu_hit_probability() == pytest.approx(np.full(4, 13 / 28))
    # 100 tokens spread over 4 GPUs; GPU g receives from the other 3 GPUs' 75 tokens those
    # that hit it: 75 x 13/28 hidden vectors of 16 values; bf16 dispatch and combine.
    dispatch, combine = all_to_all_bytes(load, 100, 16, 2.0)
    assert dispatch == pytest.approx(75 * 13 / 28 * 16 * 2)
    assert combine == pytest.approx(dispatch)
    fp8, _ = all_to_all_bytes(load, 100, 16, 1.0)
    assert fp8 == pytest.approx(dispatch / 2)
    # One GPU: nothing crosses a link.
    assert all_to_all_bytes(expert_load(MoEConfig(), 8, 2, 1), 100, 16, 2.0) == (0.0, 0.0)


def test_all_to_all_time_splits_nvlink_and_network() -> None:
    links = AllToAllLinks(400e9, 1e-5, 50e9, 5e-6, 8)
    # Inside one node: all 3 peers over NVLink.
    assert all_to_all_s(3e9, 4, links) == pytest.approx(1e-5 + 3e9 / 400e9)
    # 16 GPUs on 2 nodes: 7 peers over NVLink, 8 over the NIC; the NIC part decides.
    t = all_to_all_s(15e9, 16, links)
    assert t == pytest.approx(5e-6 + max(7e9 / 400e9, 8e9 / 50e9))


def test_uniform_one_gpu_equals_the_dense_formula() -> None:
    # ep=1, uniform: expected distinct experts = E (1 - (1 - k/E)^T), as without EP.
    load = expert_load(MoEConfig(), 8, 2, 1)
    for tokens in (1, 3, 40):
        assert load.touched(tokens)[0] == pytest.approx(8 * (1 - (1 - 2 / 8) ** tokens))
        assert load.routed(tokens)[0] == pytest.approx(2 * tokens)


def test_zipf_skews_the_busiest_gpu_and_balanced_placement_helps() -> None:
    uniform = expert_load(MoEConfig(), 64, 6, 8)
    zipf = expert_load(MoEConfig(routing="zipf", zipf_exponent=1.2), 64, 6, 8)
    balanced = expert_load(MoEConfig(routing="zipf", zipf_exponent=1.2, placement="balanced"), 64, 6, 8)
    t = 512
    assert uniform.routed(t).max() == pytest.approx(uniform.routed(t).mean())
    assert zipf.routed(t).max() > 1.3 * zipf.routed(t).mean()
    assert balanced.routed(t).max() < zipf.routed(t).max()
    # Every (token, expert) assignment lands somewhere: k per token, none lost to skew.
    assert zipf.routed(t).sum() == pytest.approx(t * 6)
    hot = expert_load(MoEConfig(routing="zipf", zipf_exponent=3.0), 64, 6, 8)
    assert hot.q.max() == pytest.approx(1.0)  # picked by every token, never more
    assert hot.q.sum() == pytest.approx(6)


def test_placement_gives_each_gpu_its_share() -> None:
    pop = np.random.default_rng(1).random(32)
    for how in ("contiguous", "balanced"):
        gpu = place(pop / pop.sum(), 8, how)
        assert np.bincount(gpu, minlength=8).tolist() == [4] * 8


def test_popularity_file_is_checked(tmp_path: Path) -> None:
    f = tmp_path / "pop.txt"
    f.write_text("1, 2, 3")
    with pytest.raises(ValueError, match="expected 8 popularity values"):
        expert_load(MoEConfig(routing="file", popularity_path=str(f)), 8, 2, 2)
    f.write_text(" ".join(["1"] * 7 + ["-1"]))
    with pytest.raises(ValueError, match=">= 0"):
        expert_load(MoEConfig(routing="file", popularity_path=str(f)), 8, 2, 2)
    f.write_text(" ".join(str(x) for x in range(1, 9)))
    load = expert_load(MoEConfig(routing="file", popularity_path=str(f)), 8, 2, 2)
    assert load.pop == pytest.approx(np.arange(1, 9) / 36)


def test_memory_per_gpu_counts_its_experts() -> None:
    m = spec("deepseek_v3")
    hw = load_profile("h200")
    experts = m.expert_params_total * m.weight_bytes_per_param
    ep = CostModel(m, hw, 1, 1, data_parallel=32, expert_parallel=32)
    # Each of 32 GPUs: a replica of everything but the routed experts, and 8 of 256 of those.
    assert ep.weight_bytes_per_gpu() == pytest.approx(m.weight_bytes - experts + experts / 32)
    assert ep.expert_bytes_per_gpu() == pytest.approx(experts / 32)
    tp = CostModel(m, hw, 8, 1)
    assert tp.weight_bytes_per_gpu() == pytest.approx(m.weight_bytes / 8)
    # MLA's latent is not split by TP: every rank keeps all 576 values per token and layer.
    assert tp.kv_bytes_per_token_per_gpu() == m.kv_bytes_per_token


def test_layout_errors_name_the_rule() -> None:
    hw = load_profile("h100_sxm_80gb")
    with pytest.raises(ValueError, match="expert_parallel"):
        CostModel(spec("mixtral_8x7b"), hw, 2, 1, expert_parallel=4)
    with pytest.raises(ValueError, match="MoE"):
        CostModel(spec("llama3_8b"), hw, 1, 1, data_parallel=2)
    with pytest.raises(ValueError, match="divide the model's 8 experts"):
        CostModel(spec("mixtral_8x7b"), hw, 1, 1, data_parallel=3, expert_parallel=3)


def decode(cost: CostModel, batch: int, context: int) -> float:
    return cost.iteration_time(SchedulerOutput(num_decodes=batch, decode_context=(context,),
                                               num_sampled=batch))


def test_expert_parallel_decode_is_faster_and_skew_slows_it() -> None:
    m = spec("qwen3_30b_a3b")
    hw = load_profile("h100_sxm_80gb")
    one = CostModel(m, hw, 1, 1)
    four = CostModel(m, hw, 1, 1, data_parallel=4, expert_parallel=4)
    skew = CostModel(m, hw, 1, 1, data_parallel=4, expert_parallel=4,
                     moe=MoEConfig(routing="zipf", zipf_exponent=1.5))
    # A large decode batch: each of 4 GPUs reads a quarter of the experts and attends a
    # quarter of the sequences, paying two all-to-alls per layer.
    assert decode(four, 256, 256 * 2000) < 0.5 * decode(one, 256, 256 * 2000)
    # Skew: a compute-bound prefill waits for the GPU of the hot experts; balanced placement
    # spreads them. (A small decode batch can get *faster* under skew: fewer distinct experts
    # are hit, so fewer weights are read.)
    balanced = CostModel(m, hw, 1, 1, data_parallel=4, expert_parallel=4,
                         moe=MoEConfig(routing="zipf", zipf_exponent=1.5, placement="balanced"))
    assert skew.linear_s(8192) > balanced.linear_s(8192) > four.linear_s(8192)
    assert skew.linear_s(16) < four.linear_s(16)
    ops = four.layer_operators(256)
    assert [o.name for o in ops if o.name.startswith("moe")] == [
        "moe_router", "moe_experts", "moe_all_to_all"]
    a2a = next(o for o in ops if o.name == "moe_all_to_all")
    p = 1 - comb(128 - 32, 8) / comb(128, 8)
    assert a2a.bytes == pytest.approx(256 * 3 / 4 * p * 2048 * (2 + 2))

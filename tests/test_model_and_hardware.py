"""Model specs derive published sizes; hardware profiles validate units and names."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import simkv
from simkv.entities.hardware import ProfileError, load_profile, parse_profile, shipped_profiles
from simkv.entities.model import ModelSpec

CONF = Path(simkv.__file__).parent / "conf" / "model"


@pytest.mark.parametrize(
    ("name", "billions", "active", "kv_kib"),
    [
        # Published parameter counts: Llama 3.1 model cards (8.03B, 70.6B), Mixtral paper
        # (46.7B total, 12.9B active), Qwen2.5-32B model card (32.5B; 32.8B with embeddings
        # counted twice as here, untied).
        ("llama3_8b", 8.03, 8.03, 128),
        ("llama3_70b", 70.55, 70.55, 320),
        ("mixtral_8x7b", 46.70, 12.88, 128),
        ("qwen2_5_32b", 32.76, 32.76, 256),
        # MoE specs of the elastic-scaling papers: model cards give DeepSeek-V2-Lite 15.7B
        # (2.4B active without embeddings), Qwen3-30B-A3B 30.5B / 3.3B, DeepSeek-V3 671B /
        # 37B. MLA's KV per token: layers x (512 + 64) x 2 bytes (vLLM: one latent per token).
        ("deepseek_v2_lite", 15.71, 2.66, 27 * 576 * 2 / 1024),
        ("qwen3_30b_a3b", 30.53, 3.35, 96),
        ("deepseek_v3", 671.03, 37.55, 61 * 576 * 2 / 1024),
        # Issue 23's comparisons: Mixtral-8x22B (MegaScale-Infer; 141B total, 39B active) and
        # Llama-2-70B (Vidur-Search; 70B, 68.98B derived: the card rounds).
        ("mixtral_8x22b", 140.63, 39.16, 56 * 8 * 128 * 2 * 2 / 1024),
        ("llama2_70b", 68.98, 68.98, 320),
    ],
)
def test_model_sizes_are_derived(name: str, billions: float, active: float, kv_kib: int) -> None:
    m = ModelSpec(**yaml.safe_load((CONF / f"{name}.yaml").read_text()))
    assert m.num_params / 1e9 == pytest.approx(billions, abs=0.01)
    assert m.active_params / 1e9 == pytest.approx(active, abs=0.01)
    assert m.kv_bytes_per_token == kv_kib * 1024
    assert m.weight_bytes == m.weight_bytes_per_param * m.num_params


def test_every_model_yaml_sets_every_field() -> None:
    # A field left out would silently inherit Llama-3.1-8B's value from the schema default.
    fields = set(ModelSpec.__dataclass_fields__)
    for path in CONF.glob("*.yaml"):
        assert set(yaml.safe_load(path.read_text())) == fields, path.name


def test_model_rejects_inconsistent_heads() -> None:
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        ModelSpec(num_heads=32, num_kv_heads=5)


def test_shipped_profiles_load_in_si_units() -> None:
    assert {"h100_sxm_80gb", "a100_80gb", "h200"} <= set(shipped_profiles())
    h100 = load_profile("h100_sxm_80gb")
    assert h100.hbm_bandwidth == pytest.approx(3.35e12)
    assert h100.bf16_flops == pytest.approx(989.4e12)
    assert h100.memory_bytes == 81559 * 2**20
    assert all(h100.sources[k] for k in h100.sources), "every value needs a source"


def _doc() -> dict:
    return yaml.safe_load((Path(simkv.__file__).parent.parent / "hardware_profiles"
                           / "h100_sxm_80gb.yaml").read_text())


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["gpu"]["hbm_bandwidth"].update(unit="TFLOP/s"), "gpu.hbm_bandwidth: unit 'TFLOP/s' is not a bandwidth unit"),
        (lambda d: d["gpu"]["memory"].update(unit="furlongs"), "gpu.memory: unit 'furlongs'"),
        (lambda d: d["gpu"].update(hbm_bandwith=d["gpu"]["hbm_bandwidth"]), "unknown keys in gpu: \\['hbm_bandwith'\\]"),
        (lambda d: d["gpu"].pop("bf16_flops"), "gpu is missing \\['bf16_flops'\\]"),
        (lambda d: d["gpu"]["bf16_flops"].update(value=-1), "gpu.bf16_flops: value must be a positive number"),
        (lambda d: d["efficiency"]["gemm_compute"].update(value=1.5), "efficiency.gemm_compute"),
        (lambda d: d.update(schema_version=7), "schema_version must be 1"),
    ],
)
def test_bad_profiles_name_file_and_key(mutate, message: str) -> None:
    doc = _doc()
    mutate(doc)
    with pytest.raises(ProfileError, match=message):
        parse_profile(doc, "my_gpu.yaml")
    with pytest.raises(ProfileError, match="my_gpu.yaml"):
        parse_profile(doc, "my_gpu.yaml")


def test_unknown_profile_lists_choices() -> None:
    with pytest.raises(ProfileError, match="valid choices: a100_80gb, a10_24gb, h100_sxm_80gb, h100_sxm_80gb_calibrated, h200"):
        load_profile("tpu_v9")


def test_efficiency_curve_interpolates_in_log_size() -> None:
    doc = _doc()
    doc["efficiency"]["gemm_compute"] = {"points": [[1, 0.1], [1024, 0.8]], "source": "test"}
    curve = parse_profile(doc, "x.yaml").eff("gemm_compute")
    assert curve.at(1) == pytest.approx(0.1)
    assert curve.at(32) == pytest.approx(0.45)  # halfway in log2
    assert curve.at(1 << 20) == pytest.approx(0.8)  # flat beyond the last point

"""simkv.calibration.published: the per-layer GEMM comparison with published per-operator
timings (Vidur's mlp.csv layout), on a synthetic folder of that layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simkv.calibration import published as P  # noqa: N812


def write_profile(root: Path, scale: float) -> None:
    """One model's mlp.csv whose four projections take ``scale`` x simkv's own price."""
    from simkv.entities.hardware import load_profile
    from simkv.entities.model import ModelSpec
    from simkv.perf.roofline import CostModel

    cost = CostModel(ModelSpec(), load_profile("h200_calibrated"))
    rows = []
    for tp in (1, 2):
        for t in (1, 64, 1024):
            row = {"n_head": 32, "n_kv_head": 8, "n_embd": 4096, "n_expanded_embd": 14336,
                   "vocab_size": 128256, "use_gated_mlp": True, "num_tokens": t,
                   "num_tensor_parallel_workers": tp}
            total = P.layer_gemm_s(pd.Series(row), cost) * scale * 1e3  # ms
            for i, g in enumerate(P.GEMMS):  # any split: only the sum is compared
                row[f"time_stats.{g}.median"] = total * (0.1, 0.2, 0.3, 0.4)[i]
            rows.append(row)
    d = root / "data" / "profiling" / "compute" / "h200" / "org" / "model"
    d.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(d / "mlp.csv", index=False)


@pytest.mark.parametrize("scale", [1.0, 1.25])
def test_error_is_what_the_timings_differ_by(tmp_path: Path, scale: float) -> None:
    write_profile(tmp_path, scale)
    d = P.compare(P.read_profiles(tmp_path, "h200"), "h200_calibrated")
    assert len(d) == 6
    assert np.allclose(d["ape"], abs(1 / scale - 1) * 100)


def test_missing_columns_are_named(tmp_path: Path) -> None:
    d = tmp_path / "data" / "profiling" / "compute" / "h100" / "o" / "m"
    d.mkdir(parents=True)
    pd.DataFrame({"n_head": [1]}).to_csv(d / "mlp.csv", index=False)
    with pytest.raises(ValueError, match="missing column"):
        P.read_profiles(tmp_path, "h100")
    with pytest.raises(FileNotFoundError, match="vidur"):
        P.read_profiles(tmp_path, "a100")

"""simkv's GEMM prices against published per-operator kernel timings (Vidur's profiles).

    python -m simkv.calibration.published --vidur PATH/TO/vidur --gpu h100 \
        --profile h100_sxm_80gb_calibrated [--csv out.csv]

Vidur (Agrawal et al., MLSys 2024; github.com/microsoft/vidur) publishes, per GPU and model,
``data/profiling/compute/<gpu>/<org>/<model>/mlp.csv``: each layer operator timed with CUDA
events over token counts 1-4,096 at tensor parallelism 1, 2, 4 and 8 (columns
``time_stats.<op>.median``, milliseconds). Its four projections are the layer's GEMMs:
``attn_pre_proj`` (QKV), ``attn_post_proj`` (output), ``mlp_up_proj`` (gate and up) and
``mlp_down_proj``. This compares their sum, per layer, with what simkv's cost model prices
for the same shapes (``CostModel._gemm``: the profile's shape GEMM model, or its token-count
curves), and reports the absolute percentage error per (model, TP, tokens) point.

Nothing of Vidur's is copied into simkv: the path is a local checkout, read at run time
(the figures docs/CALIBRATION.md quotes come from this script).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

GEMMS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")
SHAPE_COLUMNS = ("n_head", "n_kv_head", "n_embd", "n_expanded_embd", "use_gated_mlp",
                 "num_tokens", "num_tensor_parallel_workers")


def read_profiles(root: Path, gpu: str) -> pd.DataFrame:
    """Every ``mlp.csv`` of one GPU: one row per (model, TP, tokens), the layer's GEMM time."""
    files = sorted((root / "data" / "profiling" / "compute" / gpu).glob("*/*/mlp.csv"))
    if not files:
        raise FileNotFoundError(f"{root}: no data/profiling/compute/{gpu}/*/*/mlp.csv (a vidur "
                                "checkout?)")
    frames = []
    for f in files:
        d = pd.read_csv(f)
        missing = [c for c in (*SHAPE_COLUMNS, *(f"time_stats.{g}.median" for g in GEMMS))
                   if c not in d]
        if missing:
            raise ValueError(f"{f}: missing column(s) {', '.join(missing)}")
        d = d.groupby(list(SHAPE_COLUMNS), as_index=False)[
            [f"time_stats.{g}.median" for g in GEMMS]].median()
        d["model"] = f"{f.parent.parent.name}/{f.parent.name}"
        d["measured_s"] = d[[f"time_stats.{g}.median" for g in GEMMS]].sum(axis=1) / 1e3
        frames.append(d)
    return pd.concat(frames, ignore_index=True)


def layer_gemm_s(row: pd.Series, cost: object) -> float:
    """simkv's price of one layer's four projections for this shape, tokens and TP."""
    h, heads, kv = int(row["n_embd"]), int(row["n_head"]), int(row["n_kv_head"])
    d = h // heads
    tp = int(row["num_tensor_parallel_workers"])
    f = int(row["n_expanded_embd"])
    up = (2 if bool(row["use_gated_mlp"]) else 1) * f
    t = float(row["num_tokens"])
    g = cost._gemm  # type: ignore[attr-defined]
    return (g("qkv", t, h, (heads + 2 * kv) * d / tp).seconds
            + g("o", t, heads * d / tp, h).seconds
            + g("up", t, h, up / tp).seconds
            + g("down", t, f / tp, h).seconds)


def compare(d: pd.DataFrame, profile: str) -> pd.DataFrame:
    """Each point priced by ``profile``; adds ``simkv_s`` and ``ape`` (%)."""
    from simkv.entities.hardware import load_profile
    from simkv.entities.model import ModelSpec
    from simkv.perf.roofline import CostModel

    hw = load_profile(profile)
    cost = CostModel(ModelSpec(), hw)  # only _gemm is used: shapes come from each row
    d = d.copy()
    d["simkv_s"] = [layer_gemm_s(r, cost) for _, r in d.iterrows()]
    d["ape"] = np.abs(d["simkv_s"] / d["measured_s"] - 1) * 100
    d["signed"] = (d["simkv_s"] / d["measured_s"] - 1) * 100
    return d


def summary(d: pd.DataFrame) -> str:
    lines = [f"{len(d)} points ({d['model'].nunique()} models, TP "
             f"{sorted(d['num_tensor_parallel_workers'].unique().tolist())}): median APE "
             f"{d['ape'].median():.1f}%, P90 {d['ape'].quantile(0.9):.1f}%, signed median "
             f"{d['signed'].median():+.1f}%"]
    for name, g in d.groupby("model"):
        lines.append(f"  {name}: median {g['ape'].median():.1f}%, P90 {g['ape'].quantile(0.9):.1f}%")
    for lo, hi in ((1, 64), (65, 512), (513, 4096)):
        g = d[(d["num_tokens"] >= lo) & (d["num_tokens"] <= hi)]
        lines.append(f"  tokens {lo}-{hi}: median {g['ape'].median():.1f}%, signed "
                     f"{g['signed'].median():+.1f}%")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vidur", required=True, help="a local checkout of microsoft/vidur")
    ap.add_argument("--gpu", default="h100")
    ap.add_argument("--profile", nargs="+", default=["h100_sxm_80gb_calibrated"])
    ap.add_argument("--csv", default=None)
    args = ap.parse_args(argv)
    d = read_profiles(Path(args.vidur), args.gpu)
    out = []
    for p in args.profile:
        c = compare(d, p)
        print(f"{p}: {summary(c)}")
        out.append(c.assign(profile=p))
    if args.csv:
        pd.concat(out).to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()

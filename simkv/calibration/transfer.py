"""Does one GPU's calibration predict another GPU's kernels? (issue 14: H100 -> H200)

    python -m simkv.calibration.transfer --raw hardware_profiles/calibration/h200_2026-11-30 \
        --curves h100_sxm_80gb_calibrated --peaks h200

Each measured kernel of a calibration run (``--raw``) is priced the way ``fit`` reads it: a
GEMM as ``max(FLOPs / (peak x gemm_compute(M)), bytes / (HBM x gemm_memory(M)))``, prefill
attention from its causal FLOPs and ``attention_compute(chunk)``, paged decode attention from
its KV bytes and ``attention_memory(total context)``, RMSNorm from its bytes and
``elementwise_memory(tokens)``. The efficiencies come from the ``--curves`` profile, the peaks
(FLOP/s, HBM bandwidth) from the ``--peaks`` profile: a profile calibrated on one GPU, moved to
another by its datasheet peaks alone. The answer is the median absolute percentage error per
kernel family, beside the same for the target GPU's own calibrated profile (in-sample).
Also: the shape GEMM model (``simkv.perf.gemm``) fitted on the source GPU's GEMMs, moved by
peaks, on the target's GEMMs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from simkv.calibration.fit import KV_BYTES
from simkv.entities.hardware import HardwareProfile, load_profile


def kernel_predictions(raw: Path, curves: HardwareProfile, peaks: HardwareProfile) -> pd.DataFrame:
    """One row per measured kernel (best implementation per shape, as ``fit`` uses them):
    family, measured and predicted seconds."""
    fp, bw = peaks.bf16_flops, peaks.hbm_bandwidth
    eff = curves.efficiency
    rows = []
    g = pd.read_csv(raw / "gemm.csv")
    g = g.loc[g.groupby(["m", "n", "k"])["ms"].idxmin()]
    m, n, k = (g[c].to_numpy(float) for c in ("m", "n", "k"))
    pred = np.maximum(2 * m * n * k / (fp * eff["gemm_compute"].at_array(m)),
                      2 * (m * k + k * n + m * n) / (bw * eff["gemm_memory"].at_array(m)))
    rows.append(pd.DataFrame({"family": "gemm", "measured": g["ms"] / 1e3, "predicted": pred}))
    p = pd.read_csv(raw / "prefill_attention.csv")
    p = p[p["context_tokens"] == 0]
    p = p.loc[p.groupby("query_tokens")["ms"].idxmin()]
    sq = p["query_tokens"].to_numpy(float)
    flops = 4.0 * p["head_dim"] * p["heads"] * (sq * (sq + 1) / 2) * p["batch"]
    rows.append(pd.DataFrame({"family": "prefill_attention", "measured": p["ms"] / 1e3,
                              "predicted": flops / (fp * eff["attention_compute"].at_array(sq))}))
    d = pd.read_csv(raw / "decode_attention.csv")
    d = d[d["kernel"] == "triton"]
    total = (d["batch"] * d["context_tokens"]).to_numpy(float)
    nbytes = total * 2 * d["kv_heads"] * d["head_dim"] * KV_BYTES
    rows.append(pd.DataFrame({"family": "decode_attention", "measured": d["ms"] / 1e3,
                              "predicted": nbytes / (bw * eff["attention_memory"].at_array(total))}))
    r = pd.read_csv(raw / "rms_norm.csv")
    nbytes = 2 * r["tokens"] * r["hidden"] * KV_BYTES + r["hidden"] * KV_BYTES
    rows.append(pd.DataFrame({"family": "rms_norm", "measured": r["ms"] / 1e3,
                              "predicted": nbytes / (bw * eff["elementwise_memory"].at_array(
                                  r["tokens"].to_numpy(float)))}))
    return pd.concat(rows, ignore_index=True)


def summary(pred: pd.DataFrame) -> pd.DataFrame:
    """Median and P90 absolute percentage error, and the median signed error, per family."""
    pred = pred.assign(ape=(pred["predicted"] / pred["measured"] - 1).abs() * 100,
                       signed=(pred["predicted"] / pred["measured"] - 1) * 100)
    return pred.groupby("family").agg(kernels=("ape", "size"), median_ape=("ape", "median"),
                                      p90_ape=("ape", lambda x: float(np.percentile(x, 90))),
                                      median_signed=("signed", "median"))


def gemm_model_transfer(source_raw: Path, target_raw: Path, source: HardwareProfile,
                        target: HardwareProfile, sms: int = 132) -> dict[str, float]:
    """The shape GEMM model fitted on the source's cuBLAS GEMMs, with the target's peaks, on
    the target's GEMM shapes (``gemm_shapes.csv``, else its ``gemm.csv``)."""
    from simkv.perf.gemm import GemmModel, fit_gemm_model

    g = pd.read_csv(source_raw / "gemm.csv")
    g = g[g["kernel"] == "cublas"]
    fitted = fit_gemm_model(g["m"], g["n"], g["k"], g["ms"] / 1e3, source.bf16_flops,
                            source.hbm_bandwidth, sms)
    moved = GemmModel(target.bf16_flops, target.hbm_bandwidth, sms, fitted.fixed_s,
                      fitted.compute_eff, fitted.memory_eff)
    path = target_raw / "gemm_shapes.csv"
    t = pd.read_csv(path if path.is_file() else target_raw / "gemm.csv")
    ape = np.abs(moved.times(t["m"], t["n"], t["k"]) / (t["ms"] / 1e3) - 1) * 100
    return {"shapes": len(t), "median_ape": float(np.median(ape)),
            "p90_ape": float(np.percentile(ape, 90))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw", required=True, help="the target GPU's calibration CSVs")
    ap.add_argument("--curves", default="h100_sxm_80gb_calibrated")
    ap.add_argument("--peaks", default="h200")
    ap.add_argument("--own", default=None, help="the target's own calibrated profile, to compare")
    ap.add_argument("--source-raw", default=None, help="the source GPU's CSVs (GEMM model transfer)")
    args = ap.parse_args()
    raw = Path(args.raw)
    curves, peaks = load_profile(args.curves), load_profile(args.peaks)
    print(f"{args.curves} curves with {args.peaks} peaks on {raw.name}:")
    print(summary(kernel_predictions(raw, curves, peaks)).round(1).to_string())
    if args.own:
        print(f"\n{args.own} (in-sample):")
        print(summary(kernel_predictions(raw, load_profile(args.own), peaks)).round(1).to_string())
    if args.source_raw:
        print("\nshape GEMM model fitted on the source's GEMMs, moved by peaks:",
              gemm_model_transfer(Path(args.source_raw), raw, curves, peaks))


if __name__ == "__main__":
    main()

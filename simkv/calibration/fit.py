"""Fit efficiency curves from calibration CSVs and write a calibrated hardware profile.

    python -m simkv.calibration.fit --raw DIR --base h100_sxm_80gb --out FILE.yaml

For each measurement the roofline says which resource binds at the datasheet peaks; the
measured time then gives that resource's achieved efficiency:

* GEMM (best of this project's Triton kernel and cuBLAS, per shape): compute-bound shapes
  give ``gemm_compute``, memory-bound ones ``gemm_memory``, both as functions of the token
  count M (median over the layer shapes at each M);
* prefill attention (best of this project's Triton kernel and PyTorch SDPA):
  ``attention_compute`` against the chunk's tokens, from causal FLOPs;
* paged decode attention (Triton): ``attention_memory`` against the total context read by
  the batch (batch x context: small reads are latency-bound whatever their shape);
* RMSNorm: ``elementwise_memory`` against tokens;
* pinned host-to-device copies: the PCIe bandwidth.

Efficiencies are clipped to (0, 1]; NVLink keeps the base profile's value (one GPU here).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from simkv.entities.hardware import load_profile, parse_profile

KV_BYTES = 2  # bf16


def _points(sizes: np.ndarray, eff: np.ndarray) -> list[list[float]]:
    df = pd.DataFrame({"size": sizes, "eff": np.clip(eff, 1e-4, 1.0)})
    med = df.groupby("size")["eff"].median().sort_index()
    return [[float(s), round(float(e), 4)] for s, e in med.items()]


def gemm_curves(gemm: pd.DataFrame, flops_peak: float, bw_peak: float
                ) -> tuple[list[list[float]], list[list[float]], pd.DataFrame]:
    best = gemm.loc[gemm.groupby(["m", "n", "k"])["ms"].idxmin()].copy()
    t = best["ms"].to_numpy() / 1e3
    m, n, k = (best[c].to_numpy(dtype=float) for c in ("m", "n", "k"))
    flops = 2 * m * n * k
    nbytes = 2 * (m * k + k * n + m * n)
    compute_bound = flops / flops_peak > nbytes / bw_peak
    best["compute_eff"] = flops / (t * flops_peak)
    best["memory_eff"] = nbytes / (t * bw_peak)
    best["bound"] = np.where(compute_bound, "compute", "memory")
    comp = _points(m[compute_bound], best["compute_eff"].to_numpy()[compute_bound])
    mem = _points(m[~compute_bound], best["memory_eff"].to_numpy()[~compute_bound])
    return comp, mem, best


def attention_compute_curve(prefill: pd.DataFrame, flops_peak: float) -> list[list[float]]:
    fresh = prefill[prefill["context_tokens"] == 0]
    # Best of this project's kernel and PyTorch's SDPA (FlashAttention) per chunk size.
    tri = fresh.loc[fresh.groupby("query_tokens")["ms"].idxmin()]
    sq = tri["query_tokens"].to_numpy(dtype=float)
    ctx = tri["context_tokens"].to_numpy(dtype=float)
    pairs = sq * ctx + sq * (sq + 1) / 2
    flops = 4.0 * tri["head_dim"] * tri["heads"] * pairs * tri["batch"]
    return _points(sq, flops.to_numpy() / (tri["ms"].to_numpy() / 1e3 * flops_peak))


def attention_memory_curve(decode: pd.DataFrame, bw_peak: float) -> list[list[float]]:
    tri = decode[decode["kernel"] == "triton"]
    kv = 2 * tri["kv_heads"] * tri["head_dim"] * KV_BYTES  # K and V bytes per token
    nbytes = tri["batch"] * tri["context_tokens"] * kv
    eff = nbytes.to_numpy() / (tri["ms"].to_numpy() / 1e3 * bw_peak)
    total = (tri["batch"] * tri["context_tokens"]).to_numpy(dtype=float)
    return _points(total, eff)


def elementwise_curve(norm: pd.DataFrame, bw_peak: float) -> list[list[float]]:
    nbytes = 2 * norm["tokens"] * norm["hidden"] * KV_BYTES + norm["hidden"] * KV_BYTES
    return _points(norm["tokens"].to_numpy(dtype=float),
                   nbytes.to_numpy() / (norm["ms"].to_numpy() / 1e3 * bw_peak))


def gemm_model_section(gemm_shapes: pd.DataFrame, flops_peak: float, bw_peak: float, sms: int,
                       where: str, graph: pd.DataFrame | None = None) -> dict[str, Any]:
    """The shape GEMM model (simkv/perf/gemm.py) fitted on every timed shape; with launch-free
    timings (``graph``: gemm_graph.csv), its fixed cost is the kernel's own and the launch gap
    is reported apart (``fit_gemm_model_graphs``)."""
    from simkv.perf.gemm import fit_gemm_model, fit_gemm_model_graphs

    if graph is not None and len(graph):
        graph = graph[graph["kernel"] != "error"]
        g, launch = fit_gemm_model_graphs(gemm_shapes, graph, flops_peak, bw_peak, sms)
        machines = gemm_shapes["machine"].nunique() if "machine" in gemm_shapes else 1
        return {"multiprocessors": sms,
                "fixed": {"value": round(g.fixed_s * 1e6, 3), "unit": "us"},
                "launch": {"value": round(launch * 1e6, 3), "unit": "us"},
                "compute_eff": round(g.compute_eff, 4), "memory_eff": round(g.memory_eff, 4),
                "source": f"cuBLAS (torch linear): fixed cost and memory efficiency from "
                          f"{len(graph)} launch-free timings (M = {int(graph['m'].min())}-"
                          f"{int(graph['m'].max())}, back-to-back calls replayed from a CUDA "
                          f"graph, weights from HBM: gemm_graph.csv), compute efficiency from "
                          f"the launched timings at 256+ tokens ({machines} calibration run(s), "
                          f"each weighing alike); launch gap = eager minus graph at the fewest "
                          f"tokens; {where}"}
    g = fit_gemm_model(gemm_shapes["m"], gemm_shapes["n"], gemm_shapes["k"],
                       gemm_shapes["ms"] / 1e3, flops_peak, bw_peak, sms)
    return {"multiprocessors": sms,
            "fixed": {"value": round(g.fixed_s * 1e6, 3), "unit": "us"},
            "compute_eff": round(g.compute_eff, 4), "memory_eff": round(g.memory_eff, 4),
            "source": f"cuBLAS (torch linear), {len(gemm_shapes)} timings: "
                      f"{len(gemm_shapes.groupby(['n', 'k']))} projection shapes (N x K) at "
                      f"M = {int(gemm_shapes['m'].min())}-{int(gemm_shapes['m'].max())} tokens, "
                      f"least squares on log time; {where}"}


# Token counts from which a small operator is bandwidth-bound in a CUDA graph; below, the
# calibration's eager timings are launch-bound (a graph replay pays none of that: the engine
# fit's per-layer term carries what is left).
SMALL_OP_MIN_TOKENS = 1024


def small_ops_section(ops: pd.DataFrame, bw_peak: float, where: str) -> dict[str, Any]:
    """Each small operator's achieved fraction of HBM bandwidth on its floor bytes
    (``simkv.perf.gemm.small_op_bytes``: what it must read and write once), median over the
    hidden sizes and token counts where it is bandwidth-bound."""
    from simkv.perf.gemm import small_op_bytes

    big = ops[ops["tokens"] >= SMALL_OP_MIN_TOKENS]
    out: dict[str, Any] = {}
    for op, d in big.groupby("op"):
        h = d["hidden"].to_numpy(float)
        floor = small_op_bytes(d["tokens"].to_numpy(float), h, h // 128,
                               np.maximum(1, h // 1024), 128, np.floor(h * 3.5),
                               per_layer=False)[str(op)]
        out[str(op)] = round(float(np.median(floor / (d["ms"].to_numpy() / 1e3 * bw_peak))), 4)
    out["source"] = (f"as transformers runs them (eager PyTorch), {SMALL_OP_MIN_TOKENS}+ tokens, "
                     f"floor bytes over time; {where}")
    return out


def fit(raw: Path, base: str, gemm_raw: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The calibrated profile document (validated) from the CSVs in ``raw``."""
    hw = load_profile(base)
    doc = yaml.safe_load(Path(hw.path).read_text()) if Path(hw.path).is_file() else None
    if doc is None:
        from importlib import resources

        doc = yaml.safe_load(resources.files("simkv.hardware_profiles")
                             .joinpath(f"{base}.yaml").read_text())
    env = json.loads((raw / "environment.json").read_text())
    env["driver"] = str(env["driver"]).split("\n")[0]  # one line per GPU on multi-GPU hosts
    where = f"measured on {env['device']} (driver {env['driver']}, CUDA {env['cuda']}, torch " \
            f"{env['torch']}, Triton {env['triton']}) on {env['date']}; raw CSVs in {raw.name}/"
    fp, bw = hw.bf16_flops, hw.hbm_bandwidth
    comp, mem, _ = gemm_curves(pd.read_csv(raw / "gemm.csv"), fp, bw)
    eff = doc["efficiency"]
    eff["gemm_compute"] = {"points": comp, "source": f"GEMM, best of Triton and cuBLAS; {where}"}
    eff["gemm_memory"] = {"points": mem, "source": f"GEMM, memory-bound shapes; {where}"}
    eff["attention_compute"] = {
        "points": attention_compute_curve(pd.read_csv(raw / "prefill_attention.csv"), fp),
        "source": "causal prefill attention, best of Triton (this project) and SDPA, by chunk "
                  f"tokens; {where}"}
    eff["attention_memory"] = {
        "points": attention_memory_curve(pd.read_csv(raw / "decode_attention.csv"), bw),
        "source": f"paged decode attention (Triton, this project) by total context tokens; {where}"}
    eff["elementwise_memory"] = {
        "points": elementwise_curve(pd.read_csv(raw / "rms_norm.csv"), bw),
        "source": f"RMSNorm (Triton, this project) by tokens; {where}"}
    shapes, graphs = [], []
    for folder in (raw, *gemm_raw):
        if (folder / "gemm_shapes.csv").is_file():
            shapes.append(pd.read_csv(folder / "gemm_shapes.csv").assign(machine=folder.name))
        elif (folder / "gemm.csv").is_file():  # no shape grid (H100, 2026-11-25): cuBLAS rows
            g = pd.read_csv(folder / "gemm.csv")
            shapes.append(g[g["kernel"].astype(str).str.startswith("cublas")]
                          .assign(machine=folder.name))
        if (folder / "gemm_graph.csv").is_file():
            graphs.append(pd.read_csv(folder / "gemm_graph.csv").assign(machine=folder.name))
    if gemm_raw:
        where += f"; GEMMs also from {', '.join(f.name + '/' for f in gemm_raw)}"
    eager = pd.concat(shapes, ignore_index=True) if shapes else pd.DataFrame()
    graph = pd.concat(graphs, ignore_index=True) if graphs else None
    if len(eager) or graph is not None:
        doc["gemm_model"] = gemm_model_section(eager, fp, bw, int(env.get("multiprocessors", 132)),
                                               where, graph)
    if (raw / "small_ops.csv").is_file():
        doc["small_ops"] = small_ops_section(pd.read_csv(raw / "small_ops.csv"), bw, where)
    copies = pd.read_csv(raw / "copies.csv")
    h2d = copies[copies["kind"] == "host_to_device_pinned"]
    if len(h2d):
        best = float(h2d["gb_per_s"].max())
        doc["gpu"]["pcie_bandwidth"] = {
            "value": round(best, 2), "unit": "GB/s",
            "source": f"pinned host-to-device copy, best over 64 KiB to 1 GiB; {where}"}
    doc["name"] = f"{doc['name']} (calibrated)"
    doc["provenance"] = {
        "kind": "calibrated", "date": env["date"], "device": env["device"],
        "driver": env["driver"], "cuda": env["cuda"], "torch": env["torch"],
        "triton": env["triton"], "base_profile": base, "raw": raw.name,
        "copies_gb_per_s": {str(r.kind): round(float(r.gb_per_s), 2)
                            for r in copies.groupby("kind", as_index=False)["gb_per_s"].max()
                            .itertuples()},
    }
    parse_profile(doc, "calibrated profile")  # validate before anyone writes it
    return doc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--raw", required=True, help="folder with the CSVs of `run`")
    ap.add_argument("--base", default="h100_sxm_80gb", help="shipped profile to start from")
    ap.add_argument("--out", required=True)
    ap.add_argument("--gemm-raw", nargs="*", default=[],
                    help="more calibration folders of the same GPU whose GEMM timings the shape "
                         "model also fits (e.g. launch-free gemm_graph.csv)")
    args = ap.parse_args()
    doc = fit(Path(args.raw), args.base, tuple(Path(g) for g in args.gemm_raw))
    header = ("# Calibrated by `python -m simkv.calibration.fit`: efficiency curves measured on a\n"
              "# real GPU (docs/CALIBRATION.md). Peaks are the base profile's datasheet values.\n")
    Path(args.out).write_text(header + yaml.safe_dump(doc, sort_keys=False, width=100))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""transformers' MoE layers on the GPU, timed by tokens and by tokens per expert.

    python -m simkv.calibration.moe_bench --out DIR [--models mixtral_8x7b qwen3_30b_a3b]

Why (issue 19): simkv priced Mixtral's routed GEMMs as dense GEMMs on the touched experts and
its decode steps came out 9-11% short; transformers 5.17 runs the experts with
``grouped_mm_experts_forward`` (``integrations/moe.py``): a sort of the token-expert pairs, a
gather, ``histc`` and ``cumsum`` for the group offsets, two ``torch.nn.functional.grouped_mm``
over every expert (offsets pick the rows), SiLU x up, the routing weights and a sum back per
token. This times, for the MoE shapes of simkv's specs, one sparse MoE block of transformers'
own classes (random bf16 weights; the router's routing on random inputs):

* ``moe_block.csv``: the whole block (router + experts), the experts alone, and the dense
  GEMMs a dense layer of the same width would run, at T tokens, each as a CUDA-graph replay
  (launch-free, as the engine runs it), with the routing's tokens per expert;
* ``moe_routing.csv``: the experts alone under three routings at the same T: the router's,
  balanced (round robin) and skewed (every token on the same ``top_k`` experts), so the time
  can be read against the tokens per expert;
* ``moe_kernels.csv``: torch.profiler's kernel list of one block forward at a few T (kernel
  name, count, total us per forward): the sort, histc, cumsum, gathers, grouped GEMMs.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path
from typing import Any

from simkv.calibration.graph_timing import time_graph

TOKENS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
PROFILE_TOKENS = (1, 64, 512, 2048)


def build_block(shape: str, device: str, impl: str, small: bool = False) -> tuple[Any, Any]:
    """(block, config) of transformers' own sparse MoE block for one of simkv's MoE specs."""
    import torch

    from simkv.validation.hf_engine import model_spec

    spec = model_spec(shape)
    hidden, ffn = (64, 96) if small else (spec.hidden_size, spec.ffn_size)
    experts, top_k = spec.num_experts, spec.experts_per_token
    if shape.startswith("mixtral"):
        from transformers import MixtralConfig
        from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

        cfg = MixtralConfig(hidden_size=hidden, intermediate_size=ffn, num_local_experts=experts,
                            num_experts_per_tok=top_k)
        cls = MixtralSparseMoeBlock
    else:
        from transformers import Qwen3MoeConfig
        from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeSparseMoeBlock

        cfg = Qwen3MoeConfig(hidden_size=hidden, moe_intermediate_size=ffn, num_experts=experts,
                             num_experts_per_tok=top_k, norm_topk_prob=True)
        cls = Qwen3MoeSparseMoeBlock
    cfg._experts_implementation = impl
    with torch.device(device):
        block = cls(cfg).to(torch.bfloat16)
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0.0, 0.02)
    return block.eval(), cfg


def dense_gemms(hidden: int, ffn: int) -> list[tuple[str, int, int]]:
    """(name, N, K) of a dense SwiGLU MLP of the same width (transformers: unfused)."""
    return [("gate", ffn, hidden), ("up", ffn, hidden), ("down", hidden, ffn)]


def run(out: Path, shapes: list[str], tokens: tuple[int, ...], impl: str, deadline_s: float,
        small: bool) -> None:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    t_end = time.perf_counter() + deadline_s
    fb = (out / "moe_block.csv").open("w", newline="")
    fr = (out / "moe_routing.csv").open("w", newline="")
    fk = (out / "moe_kernels.csv").open("w", newline="")
    wb, wr, wk = csv.writer(fb), csv.writer(fr), csv.writer(fk)
    wb.writerow(["model", "impl", "tokens", "part", "ms", "method", "hidden", "ffn", "experts", "top_k",
                 "active_experts", "max_tokens_per_expert", "tokens_per_expert"])
    wr.writerow(["model", "impl", "tokens", "routing", "ms", "method", "active_experts",
                 "max_tokens_per_expert", "tokens_per_expert"])
    wk.writerow(["model", "impl", "tokens", "kernel", "count", "us_per_forward"])
    for shape in shapes:
        block, cfg = build_block(shape, device, impl, small)
        hidden = cfg.hidden_size
        ffn = getattr(cfg, "moe_intermediate_size", None) or cfg.intermediate_size
        experts = getattr(cfg, "num_local_experts", None) or cfg.num_experts
        top_k = cfg.num_experts_per_tok
        dense = {name: torch.randn(n, k, device=device, dtype=torch.bfloat16) for name, n, k in
                 dense_gemms(hidden, ffn)}
        for t in tokens:
            if time.perf_counter() > t_end:
                print(f"moe {shape}: deadline at T={t}", flush=True)
                break
            try:
                x = torch.randn(1, t, hidden, device=device, dtype=torch.bfloat16)
                flat = x.view(-1, hidden)
                with torch.no_grad():
                    _, weights, index = block.gate(flat)
                counts = torch.bincount(index.reshape(-1), minlength=experts).tolist()
                reps = 20 if t <= 256 else 5
                common = [hidden, ffn, experts, top_k, sum(c > 0 for c in counts), max(counts),
                          " ".join(map(str, counts))]
                b, xs, fl, ix, wg = block, x, flat, index, weights
                with torch.no_grad():
                    ms, method = time_graph(lambda i, b=b, xs=xs: b(xs), reps)
                    wb.writerow([shape, impl, t, "block", f"{ms:.6f}", method, *common])
                    ms, method = time_graph(lambda i, b=b, fl=fl, ix=ix, wg=wg: b.experts(fl, ix, wg), reps)
                    wb.writerow([shape, impl, t, "experts", f"{ms:.6f}", method, *common])
                    ms, method = time_graph(lambda i, b=b, fl=fl: b.gate(fl), reps)
                    wb.writerow([shape, impl, t, "router", f"{ms:.6f}", method, *common])
                    for name, wt in dense.items():
                        xin = torch.randn(t, wt.shape[1], device=device, dtype=torch.bfloat16)
                        ms, method = time_graph(
                            lambda i, xin=xin, wt=wt: torch.nn.functional.linear(xin, wt), reps)
                        wb.writerow([shape, impl, t, f"dense_{name}", f"{ms:.6f}", method, *common])
                    ar = torch.arange(t * top_k, device=device)
                    routings = {"router": index,
                                "balanced": (ar % experts).view(t, top_k),
                                "skewed": (ar % top_k).view(t, top_k)}
                    for rname, idx in routings.items():
                        idx = idx.to(index.dtype)
                        c = torch.bincount(idx.reshape(-1), minlength=experts).tolist()
                        ms, method = time_graph(
                            lambda i, b=b, fl=fl, idx=idx, wg=wg: b.experts(fl, idx, wg), reps)
                        wr.writerow([shape, impl, t, rname, f"{ms:.6f}", method, sum(v > 0 for v in c),
                                     max(c), " ".join(map(str, c))])
                if t in PROFILE_TOKENS:
                    profile(wk, block, x, shape, impl, t, device)
                fb.flush()
                fr.flush()
                fk.flush()
                print(f"moe {shape} T={t} done", flush=True)
            except Exception as exc:  # recorded; the other sizes go on
                wb.writerow([shape, impl, t, "error", "", f"{type(exc).__name__}: {exc}"[:200]])
                print(f"moe {shape} T={t}: {type(exc).__name__}: {exc}", flush=True)
        block = dense = None
        if device == "cuda":
            torch.cuda.empty_cache()
    for f in (fb, fr, fk):
        f.close()


def profile(w: Any, block: Any, x: Any, shape: str, impl: str, t: int, device: str, n: int = 5) -> None:
    """torch.profiler's kernels of ``n`` eager block forwards, per forward (CPU ops on a CPU)."""
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with torch.no_grad():
        block(x)
        if device == "cuda":
            torch.cuda.synchronize()
        with tprofile(activities=acts) as prof:
            for _ in range(n):
                block(x)
            if device == "cuda":
                torch.cuda.synchronize()
    want = torch.autograd.DeviceType.CUDA if device == "cuda" else torch.autograd.DeviceType.CPU
    for e in prof.key_averages():
        if getattr(e, "device_type", None) != want:
            continue
        us = getattr(e, "self_device_time_total", 0.0) if device == "cuda" else e.self_cpu_time_total
        if us <= 0:
            continue
        w.writerow([shape, impl, t, e.key[:160], e.count / n, f"{us / n:.3f}"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--models", nargs="*", default=["mixtral_8x7b", "qwen3_30b_a3b"])
    ap.add_argument("--tokens", type=int, nargs="*", default=list(TOKENS))
    ap.add_argument("--impl", default="grouped_mm", help="transformers' experts implementation")
    ap.add_argument("--deadline", type=float, default=60.0)
    ap.add_argument("--small", action="store_true", help="tiny widths (a CPU dry run)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run(out, args.models, tuple(args.tokens), args.impl, args.deadline, args.small)


if __name__ == "__main__":
    main()

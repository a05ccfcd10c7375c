"""Launch-free kernel timings: many back-to-back calls captured in one CUDA graph.

    python -m simkv.calibration.graph_timing --out gemm_graph.csv [--tokens 1 2 4 8 16 32 64]

Why (issue 19): a GEMM of a few tokens takes a few microseconds on the GPU, about what its
launch costs the host. ``triton.testing.do_bench`` launches one kernel at a time, so at small
M it measures launch gaps as well as the kernel; an engine that replays CUDA graphs does not
pay them per kernel. Here ``repeat`` calls (each on its own copy of the weights, so the
weights come from HBM, not the L2, when they are small) are captured in one graph; the graph's
replay time over ``repeat`` is the kernel's time as a graph replays it: a fixed cost per
kernel plus the weights' read. The same calls launched eagerly, timed the same way, give the
launch-bound time beside it. Every (N, K) of ``shapes.py`` (every projection of the shipped
model specs at TP 1-8) is timed at each token count.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

L2_BYTES = 64 << 20


def time_graph(fn: Callable[[int], Any], repeat: int, replays: int = 10) -> tuple[float, str]:
    """Milliseconds per call of ``fn(i)`` (i = 0 .. repeat-1) inside one CUDA graph: median of
    ``replays`` timed replays over ``repeat``. On a machine without CUDA, eager wall time."""
    import torch

    if not torch.cuda.is_available():
        for i in range(repeat):
            fn(i)
        t = time.perf_counter()
        for _ in range(max(1, replays // 5)):
            for i in range(repeat):
                fn(i)
        return (time.perf_counter() - t) * 1e3 / (repeat * max(1, replays // 5)), "cpu_eager"
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the capture (cuBLAS handles, workspaces)
        for i in range(min(repeat, 3)):
            fn(i)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            for i in range(repeat):
                fn(i)
    except Exception as exc:  # not capturable: eager timing, and say so
        del graph
        torch.cuda.synchronize()
        return time_eager(fn, repeat, replays), f"cuda_eager ({type(exc).__name__})"
    for _ in range(3):
        graph.replay()
    times = []
    for _ in range(replays):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        graph.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / repeat)
    del graph
    return statistics.median(times), "cuda_graph"


def time_eager(fn: Callable[[int], Any], repeat: int, replays: int = 10) -> float:
    """Milliseconds per call of the same ``repeat`` calls launched one by one (events around
    the whole sequence): launch-bound where the kernel is shorter than its launch."""
    import torch

    if not torch.cuda.is_available():
        return float("nan")
    for i in range(min(repeat, 3)):
        fn(i)
    times = []
    for _ in range(replays):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for i in range(repeat):
            fn(i)
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / repeat)
    return statistics.median(times)


def bench_gemm_graph(out: Path, tokens: tuple[int, ...], repeat: int, deadline_s: float,
                     nk: list[tuple[int, int]] | None = None) -> int:
    """One row per (M, N, K): graph-replayed and eager ms per GEMM; returns rows written."""
    import torch

    from simkv.calibration import shapes

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dt = torch.bfloat16
    pairs = nk if nk is not None else shapes.unique_nk(shapes.all_gemms())
    t_end = time.perf_counter() + deadline_s
    n_rows = 0
    with out.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["kernel", "m", "n", "k", "ms_graph", "ms_eager", "weight_copies", "repeat", "method"])
        for n, k in pairs:
            if time.perf_counter() > t_end:
                print(f"gemm graph: deadline after {n_rows} rows", flush=True)
                break
            copies = max(1, min(repeat, -(-4 * L2_BYTES // (2 * n * k))))
            try:
                weights = [torch.randn(n, k, device=device, dtype=dt) for _ in range(copies)]
                for m in tokens:
                    x = torch.randn(m, k, device=device, dtype=dt)

                    def call(i: int, x: torch.Tensor = x, ws: list = weights, c: int = copies) -> Any:
                        return torch.nn.functional.linear(x, ws[i % c])

                    ms_g, method = time_graph(call, repeat)
                    ms_e = time_eager(call, repeat)
                    w.writerow(["cublas_linear", m, n, k, f"{ms_g:.6f}", f"{ms_e:.6f}", copies, repeat,
                                method])
                    n_rows += 1
                weights = []
            except Exception as exc:  # recorded; the other shapes go on
                w.writerow(["error", -1, n, k, "", "", copies, repeat, f"{type(exc).__name__}: {exc}"[:200]])
            f.flush()
            if device == "cuda":
                torch.cuda.empty_cache()
    print(f"gemm graph: {n_rows} rows", flush=True)
    return n_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokens", type=int, nargs="*", default=[1, 2, 4, 8, 16, 32, 64])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--deadline", type=float, default=120.0, help="seconds; later shapes are skipped")
    ap.add_argument("--small", action="store_true", help="three small shapes (a CPU dry run)")
    args = ap.parse_args()
    nk = [(256, 128), (512, 256), (384, 128)] if args.small else None
    bench_gemm_graph(Path(args.out), tuple(args.tokens), args.repeat, args.deadline, nk)


if __name__ == "__main__":
    main()

"""Run the calibration microbenchmarks on a CUDA GPU and write raw CSVs.

    python -m simkv.calibration.run --out DIR [--quick]

Every kernel is first checked against its PyTorch reference on fresh random inputs (relative
error under 2e-2 for bf16, METHOD.md); a kernel that fails is reported and not timed. Timings
are medians of ``triton.testing.do_bench`` (CUDA events) after warm-up; inputs are rotated
among several copies when one set would fit in L2, so the numbers are HBM's, not the cache's.
Shapes are those of Llama-3.1-8B layers (hidden 4096, 32 heads, 8 KV heads, head dim 128).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import triton
from triton.testing import do_bench

from simkv.calibration import kernels as K  # noqa: N812

DT = torch.bfloat16
L2_BYTES = 64 << 20  # rotate inputs until a pass touches well over the L2 size
TOL = 2e-2


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    if not torch.isfinite(out).all():
        return float("inf")
    return float((out.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-30))


def timed(make: Callable[[], Any], run: Callable[[Any], Any], bytes_per_call: float,
          warmup_ms: int = 25, rep_ms: int = 100) -> float:
    """Median ms of run(inputs), cycling through enough input sets to defeat the L2 cache."""
    sets = max(1, min(8, int(4 * L2_BYTES // max(bytes_per_call, 1)) + 1))
    inputs = [make() for _ in range(sets)]
    state = {"i": 0}

    def call() -> None:
        state["i"] = (state["i"] + 1) % sets
        run(inputs[state["i"]])

    return float(do_bench(call, warmup=warmup_ms, rep=rep_ms, return_mode="median"))


class Writer:
    def __init__(self, path: Path, header: list[str]) -> None:
        self.f = path.open("w", newline="")
        self.w = csv.writer(self.f)
        self.w.writerow(header)

    def row(self, *values: object) -> None:
        self.w.writerow(values)
        self.f.flush()


def bench_gemm(out: Path, quick: bool) -> None:
    w = Writer(out / "gemm.csv", ["kernel", "m", "n", "k", "ms", "rel_err"])
    ms_ = [1, 16, 64, 256, 1024, 4096] if quick else [1, 4, 16, 32, 64, 128, 256, 512, 1024,
                                                       2048, 4096, 8192]
    for k, n in ((4096, 6144), (4096, 28672), (14336, 4096)):
        for m in ms_:
            a, b = torch.randn(m, k, device="cuda", dtype=DT), torch.randn(k, n, device="cuda", dtype=DT)
            err = rel_err(K.matmul(a, b), a.float() @ b.float())
            nbytes = 2 * (m * k + k * n + m * n)

            def make(m: int = m, k: int = k, n: int = n) -> tuple[torch.Tensor, torch.Tensor]:
                return (torch.randn(m, k, device="cuda", dtype=DT),
                        torch.randn(k, n, device="cuda", dtype=DT))

            if err < TOL:
                w.row("triton", m, n, k, timed(make, lambda x: K.matmul(*x), nbytes), err)
            else:
                print(f"gemm {m}x{n}x{k}: relative error {err:.2e}, not timed")
            w.row("cublas", m, n, k, timed(make, lambda x: torch.matmul(*x), nbytes), 0.0)
            print(f"gemm m={m:5} n={n:5} k={k:5} done")


def bench_gemm_shapes(out: Path, quick: bool) -> None:
    """cuBLAS through ``torch.nn.functional.linear`` (as the engines call it) on every
    projection shape of the shipped model specs at TP 1-8 (``shapes.py``), one row per
    (M, N, K), with a relative-error check on the first token count of each (N, K)."""
    from simkv.calibration import shapes

    w = Writer(out / "gemm_shapes.csv", ["kernel", "m", "n", "k", "ms", "rel_err"])
    tokens = shapes.QUICK_TOKENS if quick else shapes.TOKENS
    for n, k in shapes.unique_nk(shapes.all_gemms()):
        weight = torch.randn(n, k, device="cuda", dtype=DT)
        x = torch.randn(8, k, device="cuda", dtype=DT)
        err = rel_err(torch.nn.functional.linear(x, weight), x.double() @ weight.double().T)
        del weight, x
        for m in tokens:
            nbytes = 2 * (m * k + k * n + m * n)

            def make(m: int = m, k: int = k, n: int = n) -> tuple[torch.Tensor, torch.Tensor]:
                return (torch.randn(m, k, device="cuda", dtype=DT),
                        torch.randn(n, k, device="cuda", dtype=DT))

            ms = float(timed_fast(make, lambda x: torch.nn.functional.linear(*x), nbytes))
            w.row("cublas_linear", m, n, k, ms, err)
        torch.cuda.empty_cache()
    print(f"gemm shapes: {len(shapes.unique_nk(shapes.all_gemms()))} (N, K) x {len(tokens)} M")


def timed_fast(make: Callable[[], Any], run: Callable[[Any], Any], bytes_per_call: float) -> float:
    """``timed`` with a shorter warm-up and repeat: a thousand shapes in a device call."""
    return timed(make, run, bytes_per_call, warmup_ms=5, rep_ms=20)


def _rms_norm_op(x: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """transformers' RMSNorm: upcast, mean of squares, rsqrt, scale (several kernels)."""
    hs, weight = x
    var = hs.float().pow(2).mean(-1, keepdim=True)
    return weight * (hs.float() * torch.rsqrt(var + 1e-6)).to(DT)


def _rotate_half(v: torch.Tensor) -> torch.Tensor:
    half = v.shape[-1] // 2
    return torch.cat((-v[..., half:], v[..., :half]), dim=-1)


def _rope_op(x: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' apply_rotary_pos_emb on q and k."""
    q, k, cos, sin = x
    return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


def _silu_mul_op(x: tuple[torch.Tensor, ...]) -> torch.Tensor:
    gate, up = x
    return torch.nn.functional.silu(gate) * up


def _add_op(x: tuple[torch.Tensor, ...]) -> torch.Tensor:
    return x[0] + x[1]


def _small_op_inputs(op: str, t: int, h: int) -> tuple[torch.Tensor, ...]:
    heads, kv_heads, d, f = h // 128, max(1, h // 1024), 128, int(h * 3.5)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device="cuda", dtype=DT)

    return {"rms_norm": lambda: (r(t, h), r(h)),
            "rope": lambda: (r(1, heads, t, d), r(1, kv_heads, t, d), r(1, 1, t, d), r(1, 1, t, d)),
            "silu_mul": lambda: (r(t, f), r(t, f)),
            "residual_add": lambda: (r(t, h), r(t, h))}[op]()


SMALL_OPS = {"rms_norm": _rms_norm_op, "rope": _rope_op, "silu_mul": _silu_mul_op,
             "residual_add": _add_op}


def bench_ops(out: Path, quick: bool) -> None:
    """The small operators of a decoder layer as transformers runs them (eager PyTorch:
    several kernels each): RMSNorm, rotary embedding of q and k, SiLU(gate) x up, the
    residual add; at each hidden size of the shipped model specs and token counts 1-8k.
    ``bytes`` is what each reads and writes once (its HBM floor)."""
    from simkv.calibration import shapes

    w = Writer(out / "small_ops.csv", ["op", "tokens", "hidden", "bytes", "ms"])
    for h in shapes.hidden_sizes():
        for t in ([1, 256, 4096] if quick else [1, 16, 64, 256, 1024, 2048, 4096, 8192]):
            for op, fn in SMALL_OPS.items():
                x = _small_op_inputs(op, t, h)
                nbytes = 2 * sum(v.numel() for v in x) + 2 * x[0].numel()
                ms = timed_fast(lambda op=op, t=t, h=h: _small_op_inputs(op, t, h), fn, nbytes)
                w.row(op, t, h, nbytes, ms)
    print("small ops done")


def bench_prefill(out: Path, quick: bool) -> None:
    w = Writer(out / "prefill_attention.csv", ["kernel", "batch", "heads", "kv_heads", "head_dim",
                                               "query_tokens", "context_tokens", "ms", "rel_err"])
    h, hkv, d = 32, 8, 128
    cases = [(sq, 0) for sq in ([64, 512, 2048, 8192] if quick else [16, 64, 256, 512, 1024, 2048,
                                                                      4096, 8192])]
    cases += [(512, c) for c in ([4096] if quick else [1024, 8192, 32768])]
    for sq, ctx in cases:
        sk = sq + ctx

        def make(sq: int = sq, sk: int = sk) -> tuple[torch.Tensor, ...]:
            return (torch.randn(1, h, sq, d, device="cuda", dtype=DT),
                    torch.randn(1, hkv, sk, d, device="cuda", dtype=DT),
                    torch.randn(1, hkv, sk, d, device="cuda", dtype=DT))

        q, k, v = make()
        if sq * sk <= 16 << 20:
            err = rel_err(K.prefill_attention(q, k, v), K.prefill_attention_ref(q, k, v))
        else:  # a float64 reference of all scores would need >4 GB: check the last 256 queries
            tail = K.prefill_attention(q, k, v)[:, :, -256:]
            err = rel_err(tail, K.prefill_attention_ref(q[:, :, -256:], k, v))
        nbytes = 2 * (2 * h * sq * d + 2 * hkv * sk * d)
        if err < TOL:
            ms = timed(make, lambda x: K.prefill_attention(*x), nbytes)
            w.row("triton", 1, h, hkv, d, sq, ctx, ms, err)
        else:
            print(f"prefill sq={sq} ctx={ctx}: relative error {err:.2e}, not timed")
        if ctx == 0:
            def sdpa(x: tuple[torch.Tensor, ...]) -> torch.Tensor:
                q, k, v = x
                return torch.nn.functional.scaled_dot_product_attention(
                    q, k.repeat_interleave(h // hkv, 1), v.repeat_interleave(h // hkv, 1), is_causal=True)
            w.row("torch_sdpa", 1, h, hkv, d, sq, ctx, timed(make, sdpa, nbytes), 0.0)
        print(f"prefill sq={sq} ctx={ctx} done")


def bench_decode(out: Path, quick: bool) -> None:
    w = Writer(out / "decode_attention.csv", ["kernel", "batch", "heads", "kv_heads", "head_dim",
                                              "block_size", "context_tokens", "ms", "rel_err"])
    h, hkv, d, bs = 32, 8, 128, 16
    batches = [1, 32, 256] if quick else [1, 8, 32, 128, 256]
    contexts = [1024, 16384, 131072] if quick else [128, 1024, 4096, 16384, 65536, 131072]
    for b in batches:
        for ctx in contexts:
            if b * ctx > 2_200_000:
                continue
            nblk = b * (ctx // bs)

            def make(b: int = b, ctx: int = ctx, nblk: int = nblk) -> tuple[Any, ...]:
                kc = torch.randn(nblk, bs, hkv, d, device="cuda", dtype=DT)
                vc = torch.randn(nblk, bs, hkv, d, device="cuda", dtype=DT)
                bt = torch.randperm(nblk, device="cuda").reshape(b, -1).to(torch.int32)
                lens = torch.full((b,), ctx, device="cuda", dtype=torch.int32)
                q = torch.randn(b, h, d, device="cuda", dtype=DT)
                return q, kc, vc, bt, lens

            x = make()
            nbytes = 2 * b * ctx * hkv * d * 2
            if b * ctx <= 65536:
                err = rel_err(K.paged_decode_attention(*x, ctx),
                              K.paged_decode_attention_ref(*x))
            else:  # check two sequences of the batch against the reference
                q, kc, vc, bt, lens = x
                got = K.paged_decode_attention(q, kc, vc, bt, lens, ctx)[:2]
                err = rel_err(got, K.paged_decode_attention_ref(q[:2], kc, vc, bt[:2], lens[:2]))
            del x
            if err < TOL:
                w.row("triton", b, h, hkv, d, bs, ctx,
                      timed(make, lambda x, ctx=ctx: K.paged_decode_attention(*x, ctx), nbytes), err)
            else:
                print(f"decode b={b} ctx={ctx}: relative error {err:.2e}, not timed")
            torch.cuda.empty_cache()
            print(f"decode b={b} ctx={ctx} done")


def bench_norm(out: Path, quick: bool) -> None:
    w = Writer(out / "rms_norm.csv", ["kernel", "tokens", "hidden", "ms", "rel_err"])
    for t in ([1, 256, 16384] if quick else [1, 16, 256, 1024, 4096, 16384]):
        x, g = torch.randn(t, 4096, device="cuda", dtype=DT), torch.randn(4096, device="cuda", dtype=DT)
        err = rel_err(K.rms_norm(x, g), K.rms_norm_ref(x, g))

        def make(t: int = t, g: torch.Tensor = g) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.randn(t, 4096, device="cuda", dtype=DT), g

        if err < TOL:
            w.row("triton", t, 4096, timed(make, lambda x: K.rms_norm(*x), 4 * t * 4096), err)


def bench_copies(out: Path, quick: bool) -> None:
    w = Writer(out / "copies.csv", ["kind", "bytes", "ms", "gb_per_s"])
    block = (16, 8, 128)  # one layer's K for a 16-token block of Llama-3.1-8B: 32 KiB
    pool = torch.randn(40000, *block, device="cuda", dtype=DT)
    for n in ([256, 32768] if quick else [16, 256, 4096, 32768]):
        idx = torch.randperm(40000, device="cuda")[:n].to(torch.int32)
        g = K.gather_blocks(pool, idx)
        assert torch.equal(g, pool[idx.long()]), "gather_blocks is wrong"
        nbytes = 2 * n * pool[0].numel() * 2  # read + write
        ms = float(do_bench(lambda idx=idx: K.gather_blocks(pool, idx), warmup=25, rep=100,
                            return_mode="median"))
        w.row("gather_blocks", nbytes, ms, nbytes / ms / 1e6)
        src = torch.randn(n, *block, device="cuda", dtype=DT)
        K.scatter_blocks(pool, idx, src)
        assert torch.equal(pool[idx.long()], src), "scatter_blocks is wrong"
        ms = float(do_bench(lambda idx=idx, src=src: K.scatter_blocks(pool, idx, src), warmup=25,
                            rep=100, return_mode="median"))
        w.row("scatter_blocks", nbytes, ms, nbytes / ms / 1e6)
    big = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(big)
    ms = float(do_bench(lambda: dst.copy_(big), warmup=25, rep=100, return_mode="median"))
    w.row("device_to_device", 2 * big.numel(), ms, 2 * big.numel() / ms / 1e6)
    for size in ([1 << 20, 1 << 28] if quick else [1 << 16, 1 << 20, 1 << 24, 1 << 28, 1 << 30]):
        host = torch.empty(size, dtype=torch.uint8, pin_memory=True)
        dev = torch.empty(size, dtype=torch.uint8, device="cuda")
        ms = float(do_bench(lambda host=host, dev=dev: dev.copy_(host, non_blocking=True),
                            warmup=10, rep=50, return_mode="median"))
        w.row("host_to_device_pinned", size, ms, size / ms / 1e6)
        ms = float(do_bench(lambda host=host, dev=dev: host.copy_(dev, non_blocking=True),
                            warmup=10, rep=50, return_mode="median"))
        w.row("device_to_host_pinned", size, ms, size / ms / 1e6)
        del host, dev
    # File reads into pinned host memory: cold (page cache dropped for the file) and warm.
    path = Path(os.environ.get("TMPDIR", "/tmp")) / "simkv_calibration.bin"
    size = (1 << 28) if quick else (1 << 30)
    with path.open("wb") as f:
        f.write(os.urandom(1 << 20) * (size >> 20))
        f.flush()
        os.fsync(f.fileno())
    buf = torch.empty(size, dtype=torch.uint8, pin_memory=True).numpy()
    for kind in ("file_read_cold", "file_read_warm"):
        fd = os.open(path, os.O_RDONLY)
        if kind == "file_read_cold":
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        t0 = time.perf_counter()
        with os.fdopen(fd, "rb", buffering=0) as f:
            got = f.readinto(memoryview(buf))
        ms = (time.perf_counter() - t0) * 1e3
        w.row(kind, got, ms, got / ms / 1e6)
    path.unlink()


def environment() -> dict[str, Any]:
    def sh(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
        except OSError:
            return ""

    props = torch.cuda.get_device_properties(0)
    return {
        "device": torch.cuda.get_device_name(0),
        "multiprocessors": props.multi_processor_count,
        "memory_bytes": props.total_memory,
        # One line per GPU: the first one's (one driver serves them all).
        "driver": sh(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
        .split("\n")[0],
        "cuda": torch.version.cuda,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"),
        "kernel": platform.release(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true", help="fewer shapes (a smoke run)")
    ap.add_argument("--only", nargs="*", default=["gemm", "gemm_shapes", "ops", "prefill", "decode",
                                                   "norm", "copies"])
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("simkv-calibrate run needs a CUDA GPU")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "environment.json").write_text(json.dumps(environment(), indent=2) + "\n")
    steps = {"gemm": bench_gemm, "gemm_shapes": bench_gemm_shapes, "ops": bench_ops,
             "prefill": bench_prefill, "decode": bench_decode, "norm": bench_norm,
             "copies": bench_copies}
    for name in args.only:
        t0 = time.perf_counter()
        steps[name](out, args.quick)
        print(f"== {name}: {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()

"""Triton kernels whose timings calibrate the cost model (bf16 in, fp32 accumulate).

Written for this project, one per operator family of the roofline (perf/roofline.py):

* ``matmul``: tiled GEMM (the projections and MLPs);
* ``prefill_attention``: causal FlashAttention-style forward over a chunk of new queries
  after ``ctx`` cached tokens, grouped-query heads;
* ``paged_decode_attention``: one query per sequence over a paged KV cache addressed through
  a block table, split over the context (partial softmax per split, then combined);
* ``gather_blocks`` / ``scatter_blocks``: KV block copies between a paged pool and a
  contiguous buffer (swap, offload, prefix-cache transfers);
* ``rms_norm``: the elementwise/normalisation pass.

Each has a PyTorch reference (``*_ref``) that tests compare against, on the CPU through
Triton's interpreter (``TRITON_INTERPRET=1``) and on the GPU before any timing.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

# --- GEMM -----------------------------------------------------------------------------------


@triton.jit
def _matmul_kernel(a_ptr, b_ptr, c_ptr, M, N, K, s_am, s_ak, s_bk, s_bn, s_cm, s_cn,
                   BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr):
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BM)
    num_n = tl.cdiv(N, BN)
    in_group = GROUP_M * num_n
    group = pid // in_group
    first_m = group * GROUP_M
    size_m = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % in_group) % size_m
    pid_n = (pid % in_group) // size_m
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_n = pid_n * BN + tl.arange(0, BN)
    offs_k = tl.arange(0, BK)
    a_ptrs = a_ptr + offs_m[:, None] * s_am + offs_k[None, :] * s_ak
    b_ptrs = b_ptr + offs_k[:, None] * s_bk + offs_n[None, :] * s_bn
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k in range(tl.cdiv(K, BK)):
        k_left = K - k * BK
        a = tl.load(a_ptrs, mask=(offs_m[:, None] < M) & (offs_k[None, :] < k_left), other=0.0)
        b = tl.load(b_ptrs, mask=(offs_k[:, None] < k_left) & (offs_n[None, :] < N), other=0.0)
        acc = tl.dot(a, b, acc)
        a_ptrs += BK * s_ak
        b_ptrs += BK * s_bk
    c_ptrs = c_ptr + offs_m[:, None] * s_cm + offs_n[None, :] * s_cn
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


def _gemm_config(m: int) -> tuple[int, int, int, int, int]:
    """(BM, BN, BK, warps, stages): small tiles for decode-sized M, large ones for prefill."""
    if m <= 16:
        return 16, 128, 128, 4, 4
    if m <= 64:
        return 64, 128, 64, 4, 4
    if m <= 256:
        return 128, 128, 64, 8, 3
    return 128, 256, 64, 8, 3


def matmul(a: torch.Tensor, b: torch.Tensor, config: tuple[int, int, int, int, int] | None = None
           ) -> torch.Tensor:
    m, k = a.shape
    k2, n = b.shape
    assert k == k2, "inner dimensions differ"
    c = torch.empty((m, n), device=a.device, dtype=a.dtype)
    bm, bn, bk, warps, stages = config or _gemm_config(m)
    grid = (triton.cdiv(m, bm) * triton.cdiv(n, bn),)
    _matmul_kernel[grid](a, b, c, m, n, k, a.stride(0), a.stride(1), b.stride(0), b.stride(1),
                         c.stride(0), c.stride(1), BM=bm, BN=bn, BK=bk, GROUP_M=8,
                         num_warps=warps, num_stages=stages)
    return c


def matmul_ref(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.double() @ b.double()).to(a.dtype)


# --- prefill attention ------------------------------------------------------------------------


@triton.jit
def _prefill_kernel(Q, K, V, O, s_qb, s_qh, s_qs, s_kb, s_kh, s_ks, s_vb, s_vh, s_vs,
                    s_ob, s_oh, s_os, H, GROUP, SQ, CTX, scale,
                    D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    kvh = h // GROUP
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_n = tl.arange(0, BN)
    offs_d = tl.arange(0, D)
    q = tl.load(Q + b * s_qb + h * s_qh + offs_m[:, None] * s_qs + offs_d[None, :],
                mask=offs_m[:, None] < SQ, other=0.0)
    m_i = tl.full([BM], float("-inf"), tl.float32)
    l_i = tl.zeros([BM], tl.float32)
    acc = tl.zeros([BM, D], tl.float32)
    qk_scale = scale * 1.4426950408889634  # exp via exp2
    sk = CTX + SQ
    # Query i sits at position CTX + i and sees keys 0 .. CTX + i (causal).
    hi = tl.minimum(CTX + (pid_m + 1) * BM, sk)
    for start in range(0, hi, BN):
        offs = start + offs_n
        k = tl.load(K + b * s_kb + kvh * s_kh + offs[None, :] * s_ks + offs_d[:, None],
                    mask=offs[None, :] < sk, other=0.0)
        qk = tl.dot(q, k) * qk_scale
        keep = (CTX + offs_m[:, None] >= offs[None, :]) & (offs[None, :] < sk)
        qk = tl.where(keep, qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        p = tl.math.exp2(qk - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(V + b * s_vb + kvh * s_vh + offs[:, None] * s_vs + offs_d[None, :],
                    mask=offs[:, None] < sk, other=0.0)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc)
        m_i = m_new
    acc = acc / l_i[:, None]
    tl.store(O + b * s_ob + h * s_oh + offs_m[:, None] * s_os + offs_d[None, :],
             acc.to(O.dtype.element_ty), mask=offs_m[:, None] < SQ)


def prefill_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      block_m: int | None = None, block_n: int = 64) -> torch.Tensor:
    """q: [B, H, SQ, D]; k, v: [B, HKV, CTX + SQ, D] (the last SQ positions are q's)."""
    b, h, sq, d = q.shape
    hkv, sk = k.shape[1], k.shape[2]
    o = torch.empty_like(q)
    block_m = block_m or (128 if sq >= 128 else 64)
    grid = (triton.cdiv(sq, block_m), b * h)
    _prefill_kernel[grid](q, k, v, o, q.stride(0), q.stride(1), q.stride(2), k.stride(0),
                          k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2),
                          o.stride(0), o.stride(1), o.stride(2), h, h // hkv, sq, sk - sq,
                          1.0 / math.sqrt(d), D=d, BM=block_m, BN=block_n,
                          num_warps=8 if block_m >= 128 else 4, num_stages=3)
    return o


def prefill_attention_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    _, h, sq, d = q.shape
    group = h // k.shape[1]
    kk = k.double().repeat_interleave(group, dim=1)
    vv = v.double().repeat_interleave(group, dim=1)
    sk = kk.shape[2]
    s = q.double() @ kk.transpose(-1, -2) / math.sqrt(d)
    pos_q = torch.arange(sk - sq, sk, device=q.device)[:, None]
    pos_k = torch.arange(sk, device=q.device)[None, :]
    s = s.masked_fill(pos_k > pos_q, float("-inf"))
    return (torch.softmax(s, -1) @ vv).to(q.dtype)


# --- paged decode attention ----------------------------------------------------------------


@triton.jit
def _paged_decode_kernel(Q, KC, VC, BT, LENS, M_OUT, L_OUT, ACC, s_qb, s_qh, s_kb, s_ks, s_kh,
                         s_bt, s_mb, s_mh, s_ms, s_ab, s_ah, s_as, GROUP, blocks_per_split, scale,
                         D: tl.constexpr, BS: tl.constexpr, GP: tl.constexpr):
    b = tl.program_id(0)
    kvh = tl.program_id(1)
    split = tl.program_id(2)
    length = tl.load(LENS + b)
    offs_g = tl.arange(0, GP)
    offs_d = tl.arange(0, D)
    offs_s = tl.arange(0, BS)
    heads = kvh * GROUP + offs_g
    gmask = offs_g < GROUP
    q = tl.load(Q + b * s_qb + heads[:, None] * s_qh + offs_d[None, :], mask=gmask[:, None],
                other=0.0)
    m_i = tl.full([GP], float("-inf"), tl.float32)
    l_i = tl.zeros([GP], tl.float32)
    acc = tl.zeros([GP, D], tl.float32)
    n_blocks = tl.cdiv(length, BS)
    first = split * blocks_per_split
    last = tl.minimum(first + blocks_per_split, n_blocks)
    for i in range(first, last):
        blk = tl.load(BT + b * s_bt + i)
        pos = i * BS + offs_s
        valid = pos < length
        k = tl.load(KC + blk * s_kb + offs_s[None, :] * s_ks + kvh * s_kh + offs_d[:, None],
                    mask=valid[None, :], other=0.0)
        s = tl.dot(q, k) * scale
        s = tl.where(valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp(s - m_new[:, None])
        alpha = tl.exp(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(VC + blk * s_kb + offs_s[:, None] * s_ks + kvh * s_kh + offs_d[None, :],
                    mask=valid[:, None], other=0.0)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc)
        m_i = m_new
    tl.store(M_OUT + b * s_mb + heads * s_mh + split * s_ms, m_i, mask=gmask)
    tl.store(L_OUT + b * s_mb + heads * s_mh + split * s_ms, l_i, mask=gmask)
    tl.store(ACC + b * s_ab + heads[:, None] * s_ah + split * s_as + offs_d[None, :], acc,
             mask=gmask[:, None])


def paged_decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                           block_table: torch.Tensor, lengths: torch.Tensor, max_len: int,
                           splits: int | None = None) -> torch.Tensor:
    """q: [B, H, D]; caches: [num_blocks, BS, HKV, D]; block_table: [B, max_blocks] int32."""
    b, h, d = q.shape
    bs, hkv = k_cache.shape[1], k_cache.shape[2]
    group = h // hkv
    n_blocks = triton.cdiv(max_len, bs)
    if splits is None:
        # Enough programs to fill the GPU (132 SMs on an H100) even for one sequence.
        splits = max(1, min(n_blocks, triton.cdiv(264, max(1, b * hkv))))
    per_split = triton.cdiv(n_blocks, splits)
    m = torch.empty((b, h, splits), device=q.device, dtype=torch.float32)
    lse = torch.empty_like(m)
    acc = torch.empty((b, h, splits, d), device=q.device, dtype=torch.float32)
    gp = max(16, triton.next_power_of_2(group))
    _paged_decode_kernel[(b, hkv, splits)](
        q, k_cache, v_cache, block_table, lengths, m, lse, acc, q.stride(0), q.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), block_table.stride(0),
        m.stride(0), m.stride(1), m.stride(2), acc.stride(0), acc.stride(1), acc.stride(2),
        group, per_split, 1.0 / math.sqrt(d), D=d, BS=bs, GP=gp, num_warps=4, num_stages=2)
    out = torch.empty_like(q)
    _combine_splits_kernel[(b, h)](m, lse, acc, out, m.stride(0), m.stride(1), acc.stride(0),
                                   acc.stride(1), acc.stride(2), out.stride(0), out.stride(1),
                                   splits, D=d, SP=triton.next_power_of_2(splits), num_warps=4)
    return out


@triton.jit
def _combine_splits_kernel(M_IN, L_IN, ACC, OUT, s_mb, s_mh, s_ab, s_ah, s_as, s_ob, s_oh,
                           splits, D: tl.constexpr, SP: tl.constexpr):
    """Merge the splits' partial softmaxes (log-sum-exp); an empty split has l = 0."""
    b = tl.program_id(0)
    h = tl.program_id(1)
    offs_s = tl.arange(0, SP)
    offs_d = tl.arange(0, D)
    smask = offs_s < splits
    m = tl.load(M_IN + b * s_mb + h * s_mh + offs_s, mask=smask, other=float("-inf"))
    lsum = tl.load(L_IN + b * s_mb + h * s_mh + offs_s, mask=smask, other=0.0)
    live = smask & (lsum > 0)
    mx = tl.max(tl.where(live, m, float("-inf")), 0)
    w = tl.where(live, tl.exp(m - mx), 0.0)
    acc = tl.load(ACC + b * s_ab + h * s_ah + offs_s[:, None] * s_as + offs_d[None, :],
                  mask=live[:, None], other=0.0)
    out = tl.sum(acc * w[:, None], 0) / tl.sum(w * lsum, 0)
    tl.store(OUT + b * s_ob + h * s_oh + offs_d, out.to(OUT.dtype.element_ty))


def paged_decode_attention_ref(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                               block_table: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    b, h, d = q.shape
    bs, hkv = k_cache.shape[1], k_cache.shape[2]
    out = torch.empty_like(q)
    for i in range(b):
        n = int(lengths[i])
        blocks = block_table[i, : -(-n // bs)].long()
        k = k_cache[blocks].reshape(-1, hkv, d)[:n].double().repeat_interleave(h // hkv, 1)
        v = v_cache[blocks].reshape(-1, hkv, d)[:n].double().repeat_interleave(h // hkv, 1)
        s = torch.einsum("hd,nhd->hn", q[i].double(), k) / math.sqrt(d)
        out[i] = torch.einsum("hn,nhd->hd", torch.softmax(s, -1), v).to(q.dtype)
    return out


# --- KV block copies ------------------------------------------------------------------------


@triton.jit
def _copy_blocks_kernel(SRC, DST, IDX, n_elems, GATHER: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0)
    chunk = tl.program_id(1)
    blk = tl.load(IDX + i).to(tl.int64)
    offs = chunk * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_elems
    if GATHER:
        x = tl.load(SRC + blk * n_elems + offs, mask=mask)
        tl.store(DST + i.to(tl.int64) * n_elems + offs, x, mask=mask)
    else:
        x = tl.load(SRC + i.to(tl.int64) * n_elems + offs, mask=mask)
        tl.store(DST + blk * n_elems + offs, x, mask=mask)


def gather_blocks(pool: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """pool: [num_blocks, ...] -> pool[idx], contiguous."""
    n = pool[0].numel()
    out = torch.empty((len(idx), *pool.shape[1:]), device=pool.device, dtype=pool.dtype)
    block = min(4096, triton.next_power_of_2(n))
    _copy_blocks_kernel[(len(idx), triton.cdiv(n, block))](pool, out, idx, n, GATHER=True,
                                                          BLOCK=block, num_warps=4)
    return out


def scatter_blocks(pool: torch.Tensor, idx: torch.Tensor, src: torch.Tensor) -> None:
    """pool[idx] = src, in place."""
    n = pool[0].numel()
    block = min(4096, triton.next_power_of_2(n))
    _copy_blocks_kernel[(len(idx), triton.cdiv(n, block))](src, pool, idx, n, GATHER=False,
                                                          BLOCK=block, num_warps=4)


# --- RMSNorm --------------------------------------------------------------------------------


@triton.jit
def _rms_norm_kernel(X, W, Y, s_x, s_y, N, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    mask = offs < N
    x = tl.load(X + row * s_x + offs, mask=mask, other=0.0).to(tl.float32)
    w = tl.load(W + offs, mask=mask, other=0.0).to(tl.float32)
    rms = tl.sqrt(tl.sum(x * x, 0) / N + eps)
    tl.store(Y + row * s_y + offs, (x / rms * w).to(Y.dtype.element_ty), mask=mask)


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    y = torch.empty_like(x)
    n = x.shape[-1]
    _rms_norm_kernel[(x.shape[0],)](x, w, y, x.stride(0), y.stride(0), n, eps,
                                    BLOCK=triton.next_power_of_2(n), num_warps=8)
    return y


def rms_norm_ref(x: torch.Tensor, w: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    xd = x.double()
    return (xd / torch.sqrt((xd * xd).mean(-1, keepdim=True) + eps) * w.double()).to(x.dtype)

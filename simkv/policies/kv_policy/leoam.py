"""``leoam``: importance-aware GPU-CPU-disk KV with adaptive chunks, KV abstracts on the GPU
and lazy loads pipelined with compute (LeoAM, Sun et al., arXiv 2506.20187).

LeoAM runs long contexts on one commodity GPU whose HBM cannot hold the KV: the KV lives in
CPU DRAM and on disk, split into chunks whose size adapts to how skewed attention is in each
layer ("attention deserts": long runs of unimportant tokens make big chunks); a light
*abstract* of every chunk stays on the GPU and decides, each step, which chunks matter; only
those are loaded (lazily, from DRAM or disk), layer by layer, overlapped with the computation
of the previous layer (its three-tier pipeline). What simkv models, per sequence and step:

* **HBM** holds the recent ``local_tokens``, a cache of ``gpu_cache_fraction`` of the context's
  KV (chunks loaded recently), and the abstracts: ``abstract_vectors`` key vectors per chunk
  per KV head, so ``abstract_vectors / 2`` token-equivalents per ``chunk_tokens`` tokens;
* **attention** reads the abstracts and the important tokens: ``importance_fraction`` of the
  context, times ``redundancy`` (the unimportant tokens a chunk loads with its important
  ones: adaptive chunks keep it low; fixed chunks moved 40% redundant data in the paper's
  Figure 5, as a review of it reports: redundancy 1/0.6);
* **loads**: the important tokens not in the GPU cache (``1 - gpu_hit``) cross PCIe, the part
  on disk (``1 - cpu_fraction``) also its read bandwidth (``disk_gb_s``), at
  ``transfer_fraction`` of their bytes (its dynamic compression: 1 = none); with
  ``overlap`` a step takes the longer of its compute and its loads (the pipeline), else both;
* the prefill holds the whole prompt (LeoAM offloads after it) and writes its KV out once.

At ``importance_fraction`` 1, ``redundancy`` 1 and ``gpu_cache_fraction`` 1 nothing is left
below HBM: exactly ``full`` (tests). Parameters are assumptions unless marked: the paper's
method and evaluation sections could not be read from the stored sources (docs/KV_METHODS.md
lists what was). Left out: the importance evaluation's own compute beyond reading the
abstracts, the chunk boundaries' per-layer variation (one mean chunk size), and the loads'
contention with other PCIe traffic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from simkv.config.bounds import bounded, check
from simkv.policies.kv_policy.interface import AccuracyTable, KVPolicyBase, ceil_tokens
from simkv.registry import register

# Not transcribed (the paper's quality tables could not be read here).
ACCURACY: tuple[AccuracyTable, ...] = ()


@dataclass(slots=True)
class LeoAMConfig:
    importance_fraction: float = bounded(0.2, gt=0, le=1)
    redundancy: float = bounded(1.1, ge=1)
    chunk_tokens: float = bounded(16.0, ge=1)
    abstract_vectors: float = bounded(2.0, ge=0)
    local_tokens: int = bounded(64, ge=0)
    gpu_cache_fraction: float = bounded(0.1, ge=0, le=1)
    gpu_hit: float = bounded(0.5, ge=0, le=1)
    cpu_fraction: float = bounded(0.5, ge=0, le=1)
    disk_gb_s: float = bounded(7.0, gt=0)
    transfer_fraction: float = bounded(1.0, gt=0, le=1)
    overlap: bool = True

    def __post_init__(self) -> None:
        check(self, "kv_policy.")


@register("kv_policy", "leoam", LeoAMConfig)
class LeoAM(KVPolicyBase):
    def __init__(self, cfg: LeoAMConfig, **_: object) -> None:
        super().__init__(cfg)
        self.overlap_extra = cfg.overlap
        self._load_s = 0.0  # seconds to load one token's KV (all layers), DRAM/disk mix
        self._write_s = 0.0

    def bind(self, cost: Any) -> None:
        super().bind(cost)
        b = self.bound
        assert b is not None
        c = self.cfg
        disk = c.disk_gb_s * 1e9
        per_byte = max(1.0 / b.pcie_bandwidth, (1.0 - c.cpu_fraction) / disk)
        self._load_s = b.kv_bytes_per_token * c.transfer_fraction * per_byte
        self._write_s = b.kv_bytes_per_token * per_byte
        self.fetch_latency_s = b.layers * b.pcie_latency_s

    def _abstracts(self, ctx: np.ndarray) -> np.ndarray:
        c = self.cfg
        return ctx / c.chunk_tokens * (c.abstract_vectors / 2.0)

    def _important(self, ctx: np.ndarray) -> np.ndarray:
        c = self.cfg
        return np.minimum(ctx, c.local_tokens + ceil_tokens(c.importance_fraction * c.redundancy * ctx))

    def kept(self, ctx: np.ndarray) -> np.ndarray:
        c = self.cfg
        resident = c.local_tokens + c.gpu_cache_fraction * ctx + self._abstracts(ctx)
        return np.minimum(ctx, ceil_tokens(resident))

    def read(self, ctx: np.ndarray, kept: np.ndarray) -> np.ndarray:
        return np.where(kept < ctx, np.minimum(ctx, self._important(ctx) + self._abstracts(ctx)), kept)

    def extra_s(self, ctx: np.ndarray, kept: np.ndarray) -> np.ndarray | None:
        loaded = np.maximum(self._important(ctx) - self.cfg.local_tokens, 0.0) * (1.0 - self.cfg.gpu_hit)
        return np.where(kept < ctx, loaded * self._load_s, 0.0)

    def join_s(self, ctx: int, kept: float) -> float:
        return 0.0 if kept >= ctx else ctx * self._write_s

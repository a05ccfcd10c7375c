"""All-to-all backends of expert parallelism: what each sends and how fast (per MoE layer).

``moe.all_to_all`` chooses one (vLLM's ``--all2all-backend`` names, docs/serving/
expert_parallel_deployment.md); each returns (bytes received by the busiest GPU, seconds) for
dispatch plus combine:

* ``deepep_high_throughput`` (simkv's default, its model before backends existed: perf/
  expert_parallel.py): a token goes once to every other GPU holding one of its experts
  (DeepEP's normal kernels route per rank); peers on the node over NVLink, others over the
  GPU's RDMA NIC, the slower part decides. DeepEP measures its normal kernels at 153-158 GB/s
  over NVLink (H800, ~160 GB/s) and 43-58 GB/s over RDMA (a 50 GB/s CX7 NIC):
  github deepseek-ai/DeepEP docs/legacy.md, "Normal kernels".
* ``deepep_low_latency``: every (token, expert) pair is its own message over RDMA (IBGDA), the
  GPU's own tokens included (DeepEP reports "logical" bandwidth counting local traffic); no
  per-rank deduplication, but no CPU synchronisation and CUDA-graph friendly. Its achieved
  bandwidth falls with the EP size: dispatch 98, 63, 48, 43, 39, 39 GB/s and combine 127, 74,
  53, 46, 39, 40 GB/s at EP 8, 16, 32, 64, 128, 256 (docs/legacy.md, "Low-latency kernels",
  H800 with CX7 400 Gb/s, 128 tokens per rank, hidden 7168, top-8); scaled here by the node's
  NIC bandwidth over DeepEP's 50 GB/s, EP below 8 at EP 8's value, interpolated in log EP.
* ``allgather_reducescatter`` (vLLM's default for DP + EP: ``AgRsAll2AllManager``, dispatch an
  all-gather of every rank's hidden states, combine a reduce-scatter): every GPU receives all
  other ranks' tokens, (ep - 1)/ep x T vectors in bf16, whatever the routing; NCCL's ring runs
  at the NVLink bandwidth inside a node and at the per-GPU NIC bandwidth across nodes
  (nccl-tests PERFORMANCE.md: a ring's bus bandwidth is the slowest link's), with one link
  latency per ring step.
"""

from __future__ import annotations

import numpy as np

from simkv.perf.expert_parallel import (
    AllToAllLinks,
    ExpertLoad,
    all_to_all_bytes,
    all_to_all_s,
)

BACKENDS = ("deepep_high_throughput", "deepep_low_latency", "allgather_reducescatter")
DEFAULT = BACKENDS[0]

# DeepEP V1 low-latency kernels (docs/legacy.md): EP size -> logical RDMA bandwidth (bytes/s).
_LL_EP = np.array([8, 16, 32, 64, 128, 256], dtype=np.float64)
_LL_DISPATCH = np.array([98, 63, 48, 43, 39, 39], dtype=np.float64) * 1e9
_LL_COMBINE = np.array([127, 74, 53, 46, 39, 40], dtype=np.float64) * 1e9
_DEEPEP_NIC = 50e9  # the CX7 400 Gb/s NIC of DeepEP's measurements


def low_latency_bandwidth(ep: int, network_bandwidth: float) -> tuple[float, float]:
    """(dispatch, combine) bandwidth of DeepEP's low-latency kernels at this EP size."""
    x = np.log2(np.clip(float(ep), _LL_EP[0], _LL_EP[-1]))
    scale = network_bandwidth / _DEEPEP_NIC
    d = float(np.interp(x, np.log2(_LL_EP), _LL_DISPATCH)) * scale
    c = float(np.interp(x, np.log2(_LL_EP), _LL_COMBINE)) * scale
    return d, c


def cost(backend: str, load: ExpertLoad, tokens: float, hidden: int, dispatch_bytes: float,
         links: AllToAllLinks) -> tuple[float, float]:
    """(bytes received by the busiest GPU, seconds) of one MoE layer's dispatch and combine
    for ``tokens`` tokens spread evenly over the EP group."""
    ep = load.ep
    if ep == 1 or tokens == 0:
        return 0.0, 0.0
    if backend == "deepep_high_throughput":
        dispatch, combine = all_to_all_bytes(load, tokens, hidden, dispatch_bytes)
        return dispatch + combine, (all_to_all_s(dispatch, ep, links)
                                    + all_to_all_s(combine, ep, links))
    if backend == "deepep_low_latency":
        pairs = float(load.routed(tokens).max())  # (token, expert) messages landing there
        dispatch, combine = pairs * hidden * dispatch_bytes, pairs * hidden * 2.0
        bw_d, bw_c = low_latency_bandwidth(ep, links.network_bandwidth)
        lat = links.network_latency_s
        return dispatch + combine, 2 * lat + dispatch / bw_d + combine / bw_c
    if backend == "allgather_reducescatter":
        vectors = tokens * (ep - 1) / ep
        nbytes = vectors * hidden * 2.0  # bf16 both ways (no FP8 all-gather)
        if ep <= links.gpus_per_node:
            bw, lat = links.nvlink_bandwidth, links.nvlink_latency_s
        else:
            bw = min(links.nvlink_bandwidth, links.network_bandwidth)
            lat = links.network_latency_s
        one = (ep - 1) * lat + nbytes / bw
        return 2 * nbytes, 2 * one
    raise ValueError(f"moe.all_to_all: expected one of {', '.join(BACKENDS)}, got {backend!r}")

"""Offline batches whose prompts share a few long prefixes (the BatchLLM setting).

All requests arrive at time 0. Prompts form a two-level prefix tree: every prompt starts
with one shared root (a system prompt), then one of ``num_prefixes`` group prefixes (a
document, a few-shot template), then its own suffix. Each request carries its prefix
identity as a chain of block hashes (``block_tokens`` tokens per block, as in the Mooncake
trace), so a prefix cache can tell what is shared. Requests come in random order: grouping
them back is the scheduler's job (BatchLLM's point).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from simkv.config.bounds import bounded, check
from simkv.registry import register
from simkv.workload.base import ArrivalBatch, OpenLoop
from simkv.workload.distributions import lognormal_int


@dataclass(slots=True)
class SharedPrefixWorkloadConfig:
    num_requests: int = bounded(2000, ge=1)
    num_prefixes: int = bounded(8, ge=1)
    root_tokens: int = bounded(512, ge=0)
    # Group prefix and own suffix lengths ~ lognormal around these medians.
    prefix_median: float = bounded(2048.0, ge=1)
    prefix_sigma: float = bounded(0.3, ge=0)
    suffix_median: float = bounded(128.0, ge=1)
    suffix_sigma: float = bounded(0.8, ge=0)
    output_median: float = bounded(64.0, ge=1)
    output_sigma: float = bounded(0.7, ge=0)
    output_max: int = bounded(2048, ge=1, le=2**31 - 1)
    # Tokens per prefix block id: must equal kv.prefix_block_tokens (SimConfig.validate).
    block_tokens: int = bounded(512, ge=1)

    def __post_init__(self) -> None:
        check(self, "workload.")


@register("workload", "shared_prefix", SharedPrefixWorkloadConfig)
class SharedPrefixWorkload(OpenLoop):
    def __init__(self, cfg: SharedPrefixWorkloadConfig, **_: object) -> None:
        self.cfg = cfg

    def expected_requests(self) -> int | None:
        return self.cfg.num_requests

    def arrivals(self, rng: np.random.Generator) -> Iterator[ArrivalBatch]:
        cfg = self.cfg
        n, bt = cfg.num_requests, cfg.block_tokens
        group_len = lognormal_int(rng, np.log(cfg.prefix_median), cfg.prefix_sigma, cfg.num_prefixes)
        group = rng.integers(0, cfg.num_prefixes, n)
        suffix = lognormal_int(rng, np.log(cfg.suffix_median), cfg.suffix_sigma, n)
        output = lognormal_int(rng, np.log(cfg.output_median), cfg.output_sigma, n,
                               hi=cfg.output_max)
        shared = cfg.root_tokens + group_len[group]
        prompt = shared + suffix
        # Block ids: full blocks of the shared part are identified by (group, block index);
        # the root's full blocks are common to all groups; everything else is unique.
        root_blocks = cfg.root_tokens // bt
        next_id = root_blocks + cfg.num_prefixes * (int(group_len.max()) // bt + 2)
        prefixes = []
        for i in range(n):
            g = int(group[i])
            full_shared = int(shared[i]) // bt
            chain = list(range(root_blocks))
            chain += [root_blocks + g * (int(group_len.max()) // bt + 2) + j
                      for j in range(full_shared - root_blocks)]
            own = -(-int(prompt[i]) // bt) - full_shared
            chain += list(range(next_id, next_id + own))
            next_id += own
            prefixes.append(tuple(chain))
        yield ArrivalBatch(np.zeros(n), prompt.astype(np.int64), output, prefix=prefixes,
                           session=group.astype(np.int64))

"""Data-parallel attention ranks that are not equally loaded: the slowest rank decides.

Under data-parallel attention each of DP ranks attends its own sequences, and every MoE layer
synchronises the ranks (the all-to-all waits for all of them), so a step lasts as long as the
busiest rank's attention. simkv keeps one scheduler per instance; this module says how much of
the batch's attention the busiest rank carries (``moe.dp_balance``):

* ``even`` (the default, simkv's model before this option): 1/DP of everything, as if the
  work split perfectly (vLLM pads idle ranks with dummy steps; the cost model's aggregates are
  linear, so a rank's time is the batch's over DP);
* ``sequences``: ranks hold whole sequences, spread by count as vLLM's DP coordinator does
  (it balances waiting + running requests per rank), so the busiest rank has ceil(n/DP) of
  the n sequences; their contexts differ, so its share of the KV read is larger still: with
  a coefficient of variation c of the sequences' contexts (``moe.rank_context_cv``, an input:
  the workload's length spread), the largest of DP sums of n/DP contexts exceeds their mean
  by c x z_DP / sqrt(n/DP) in expectation (central limit), z_DP the expected maximum of DP
  standard normals. Imbalanced DP attention is a known cost: DeepSeek balances "core-attention
  computation" across DP instances (deepseek-ai/open-infra-index, 202502OpenSourceWeek,
  day_6_one_more_thing), MegaScale-Infer batches to a target per-node attention time (its
  section 8) because variable sequence lengths unbalance attention nodes.

Only attention (and the LM head, already ceil(sampled/DP)) follows the busiest rank; the
non-expert GEMMs of a decode step read their weights whatever the rank's few extra tokens, so
they keep the even split (stated approximation).
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np

BALANCES = ("even", "sequences")


@cache
def expected_max_normal(n: int) -> float:
    """E[max of n independent standard normals] (0 for n = 1), by quadrature."""
    if n <= 1:
        return 0.0
    x = np.linspace(-8.0, 8.0, 16001)
    pdf = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    cdf = 0.5 * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))
    f = x * n * pdf * cdf ** (n - 1)
    return float(np.sum((f[1:] + f[:-1]) * 0.5 * (x[1] - x[0])))


def busiest_share(dp: int, sequences: int, cv: float) -> float:
    """Share of the batch's attention on the busiest of ``dp`` ranks holding whole sequences."""
    if dp <= 1 or sequences <= 0:
        return 1.0
    per = -(-sequences // dp)
    base = per / sequences
    spread = cv * expected_max_normal(min(dp, sequences)) / math.sqrt(per)
    return min(1.0, base * (1.0 + spread))


def check_moe_options(cfg: object, model: object, ep: int, dp: int):
    """The busiest rank's share as a function of the step's sequences, when
    ``moe.dp_balance=sequences`` applies to this layout (DP > 1); None: the even split."""
    if getattr(cfg, "dp_balance", "even") != "sequences" or dp <= 1:
        return None
    cv = float(getattr(cfg, "rank_context_cv", 0.0))

    def share(sequences: int) -> float:
        return busiest_share(dp, sequences, cv)

    return share

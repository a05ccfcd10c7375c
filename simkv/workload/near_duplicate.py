"""Near-duplicate prompts: many tenants running one agent harness, each with small edits.

The KVShare setting (multi-tenant KV reuse of similar, not identical, prompts), built from
the agent data: in the SWE-bench agent trace (../shared/data/agentic, 46 Claude Code
programs) every program's first call carries the same tool definitions (63,235 characters,
all 46 identical) and its own task message (3,455-8,842 characters); by characters the tools
are 93.5% of the first prompt (median), so of its median 16,856 tokens about 15,518 are the
harness and 1,121 the task (lognormal, sigma 0.25 in log tokens). Here:

* a **template** of ``template_tokens`` (the harness: system prompt and tool schemas) is
  shared by all tenants; each of ``num_templates`` tenants edits ``template_edits`` of its
  granules (its own system-prompt lines, tool variants), at uniformly drawn positions;
* each request edits ``request_edits`` more granules of its tenant's template (per-request
  variables: date, user, environment), then appends its own task (the suffix), and its
  output follows the agent preset (lognormal 4.99, 0.97);
* arrivals are Poisson at ``rate``.

The sizes and output law come from the trace; the number of tenants and of edits are
assumptions (the trace has one tenant and no edits: any edit count is a what-if).

Granule ids keep the prefix cache exact: the id of granule j is a hash chain over the
contents of granules 0..j (``chain << 40 | content``), so two requests share an id only if
everything up to it is identical, as vLLM's block hashes. The low 40 bits carry the
content of granule j alone (``content_of``): what KVShare matches when the prefix before it
differs (kv/share.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from simkv.config.bounds import bounded, check, require
from simkv.registry import register
from simkv.workload.base import ArrivalBatch, OpenLoop
from simkv.workload.distributions import lognormal_int

CONTENT_BITS = 40
CONTENT_MASK = (1 << CONTENT_BITS) - 1
_CHAIN_MASK = (1 << 23) - 1  # ids stay below 2**63


def content_of(granule: int) -> int:
    """The content id of a granule id (its low bits); private (negative) ids have none: -1."""
    return granule & CONTENT_MASK if granule >= 0 else -1


def _mix(h: int, x: int) -> int:
    """A deterministic 64-bit mix of a chain state and a content id (splitmix64's finaliser)."""
    z = (h * 0x9E3779B97F4A7C15 + x + 1) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return z ^ (z >> 31)


def chain_ids(contents: list[int]) -> tuple[int, ...]:
    """Granule ids of a sequence of granule contents (a hash chain in the high bits)."""
    out, h = [], 0
    for c in contents:
        h = _mix(h, c)
        out.append(((h & _CHAIN_MASK) << CONTENT_BITS) | c)
    return tuple(out)


@dataclass(slots=True)
class NearDuplicateWorkloadConfig:
    num_requests: int = bounded(2000, ge=1)
    rate: float = bounded(2.0, gt=0)
    num_templates: int = bounded(8, ge=1)
    # The harness (tool definitions, system prompt): 93.5% of the trace's median first prompt.
    template_tokens: int = bounded(15518, ge=1)
    template_edits: int = bounded(1, ge=0)
    request_edits: int = bounded(1, ge=0)
    # The task message, lognormal (median, sigma of log tokens) from the trace's first calls.
    suffix_median: float = bounded(1121.0, ge=1)
    suffix_sigma: float = bounded(0.25, ge=0)
    output_mu: float = bounded(4.99)
    output_sigma: float = bounded(0.97, ge=0)
    output_max: int = bounded(4096, ge=1, le=2**31 - 1)
    # Tokens per prefix block id: must equal kv.prefix_block_tokens (SimConfig.validate).
    block_tokens: int = bounded(512, ge=1)

    def __post_init__(self) -> None:
        check(self, "workload.")

    def validate(self, prefix: str = "workload.") -> None:
        granules = self.template_tokens // self.block_tokens
        require(self.template_edits + self.request_edits <= granules,
                f"{prefix}template_edits + {prefix}request_edits "
                f"({self.template_edits + self.request_edits}) must be at most the template's "
                f"{granules} granules of {self.block_tokens} tokens")


@register("workload", "near_duplicate", NearDuplicateWorkloadConfig)
class NearDuplicateWorkload(OpenLoop):
    def __init__(self, cfg: NearDuplicateWorkloadConfig, **_: object) -> None:
        self.cfg = cfg

    def expected_requests(self) -> int | None:
        return self.cfg.num_requests

    def arrivals(self, rng: np.random.Generator) -> Iterator[ArrivalBatch]:
        cfg = self.cfg
        n, bt = cfg.num_requests, cfg.block_tokens
        g = cfg.template_tokens // bt  # full granules of the template
        fresh = [1 << 20]  # content ids of edits and tasks: unique, above the template's

        def new_content() -> int:
            fresh[0] += 1
            return fresh[0]

        base = list(range(1, g + 1))
        tenants = []
        for _ in range(cfg.num_templates):
            t = list(base)
            for j in rng.choice(g, size=cfg.template_edits, replace=False).tolist():
                t[j] = new_content()
            tenants.append(t)
        arrival = np.cumsum(rng.exponential(1.0 / cfg.rate, n))
        tenant = rng.integers(0, cfg.num_templates, n)
        suffix = lognormal_int(rng, float(np.log(cfg.suffix_median)), cfg.suffix_sigma, n)
        output = lognormal_int(rng, cfg.output_mu, cfg.output_sigma, n, hi=cfg.output_max)
        prompt = cfg.template_tokens + suffix
        prefixes: list[tuple[int, ...] | None] = []
        for i in range(n):
            contents = list(tenants[int(tenant[i])])
            for j in rng.choice(g, size=cfg.request_edits, replace=False).tolist():
                contents[j] = new_content()
            # The task's full granules (the template's partial last granule joins the task).
            contents += [new_content() for _ in range(int(prompt[i]) // bt - g)]
            prefixes.append(chain_ids(contents))
        yield ArrivalBatch(arrival, prompt.astype(np.int64), output, prefix=prefixes)

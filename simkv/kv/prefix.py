"""Granule identities: which cached KV a request's tokens can share.

A granule is ``kv.prefix_block_tokens`` consecutive tokens starting at a multiple of that
size; its id stands for its content *and everything before it* (a hash chain, as vLLM's
block hashes and the Mooncake trace's ``hash_ids``), so equal ids at position j mean the
first j+1 granules are shareable. A request's ``prefix`` tuple lists the ids its trace or
generator knows; every later granule (the rest of the prompt, the generated tokens) gets an
id private to the request, derived from its run-unique id. A closed-loop session's next call
lists the previous call's ids (``granule_ids``) for the context it repeats, which is how the
KV of an answer becomes the prefix of the next prompt.
"""

from __future__ import annotations

from simkv.entities.request import Request

_SHIFT = 21  # granules per request id: 2**21 x 512 tokens, far beyond any context


def granule_id(req: Request, j: int) -> int:
    """Id of the j-th granule of ``req``'s token sequence (prompt, then generated tokens)."""
    p = req.prefix
    if p is not None and j < len(p):
        return p[j]
    # NOTE: negative, so private ids never collide with the non-negative ids of traces.
    return -((req.id << _SHIFT) | j) - 1


def granule_ids(req: Request, n: int) -> tuple[int, ...]:
    """Ids of the first ``n`` granules of ``req``."""
    p = req.prefix or ()
    if n <= len(p):
        return tuple(p[:n])
    base = req.id << _SHIFT
    return tuple(p) + tuple(-(base | j) - 1 for j in range(len(p), n))

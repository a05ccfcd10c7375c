"""The placement contract: which tiers below HBM hold KV, and when KV moves there.

A placement is a small description the KV manager follows, not an engine of its own:

* ``tiers``: the stores below HBM, nearest first (``("dram", "ssd")``);
* ``demote``: a granule evicted from a tier moves to the next one instead of being dropped;
* ``write_through``: a request's KV is written to every tier as soon as its prefill is done
  (LMCache's store-on-prefill), so eviction from HBM can simply drop;
* ``shared``: the tiers are one cluster-wide pool that every replica reads, remote nodes'
  parts over the network (Mooncake's store), instead of one store per node;
* ``swap``: a preempted request's KV is swapped out to DRAM and back in, not recomputed;
* ``attention_in_storage``: the KV cache lives on the node's CSDs, which compute decode
  attention themselves (InstInfer): the replica's KV pool is its share of the drives and
  decode attention is priced on them (perf/in_storage.py);
* ``kv_on_ssd``: the KV cache lives on the node's SSDs and every decode step streams it to
  the GPU (FlexGen-style offloading, InstInfer's baseline).
"""

from __future__ import annotations

from typing import Protocol


class Placement(Protocol):
    tiers: tuple[str, ...]
    demote: bool
    write_through: bool
    shared: bool
    swap: bool
    attention_in_storage: bool
    kv_on_ssd: bool

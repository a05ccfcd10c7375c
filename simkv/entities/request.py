"""A request: its immutable input (what the trace says) and its progress through a replica.

Requests are plain data (slots, no behaviour): the engine moves them between queues and
never gives one its own SimPy process (STACK.md: one process per request costs 80x more
events than one loop per replica).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

from simkv._accel import slotted

NAN = math.nan


class State(IntEnum):
    WAITING = 0
    PREFILLING = 1
    DECODING = 2
    FINISHED = 3
    REJECTED = 4
    # Admitted, waiting for its cached KV to arrive from DRAM/SSD/another node.
    LOADING = 5
    # Lost with its instance and not retried (engine/faults.py); the reason says why.
    FAILED = 6


# The members as module constants, the same objects (``is`` holds): in CPython 3.11
# ``State.DECODING`` costs ~70 ns, as EnumType's ``__getattr__`` routes every attribute of the
# class through a Python-level hook; a module global costs a few. The hot modules import these.
WAITING = State.WAITING
PREFILLING = State.PREFILLING
DECODING = State.DECODING
FINISHED = State.FINISHED
REJECTED = State.REJECTED
LOADING = State.LOADING
FAILED = State.FAILED


@dataclass(eq=False)
class Request:
    """One LLM call. Token counts are ints; times are seconds of simulated time."""

    id: int
    arrival: float
    prompt_tokens: int
    output_tokens: int
    session: int = -1
    turn: int = 0
    model: str = ""
    log_type: str = ""
    # Prefix identity: ids of the prompt's leading granules of ``kv.prefix_block_tokens``
    # tokens (Mooncake-style hash ids); equal leading ids mean shareable KV. Granules past
    # the tuple get ids private to this request (kv/prefix.py).
    prefix: tuple[int, ...] | None = None
    # The trace recorded this request as failed (BurstGPT: zero response tokens).
    failed: bool = False
    # The LoRA adapter it runs with (-1: the base model; engine/lora.py).
    adapter: int = -1
    # Priority class (0 normal; higher first under priority-aware scheduling and migration).
    priority: int = 0

    # --- progress (mutated by the replica that owns it) ---------------------------------
    state: State = State.WAITING
    replica: int = -1
    pool: int = -1
    # Tokens whose KV is in the cache, and output tokens generated so far. While DECODING
    # these are kept lazily (see engine/decode_batch.py) and materialised on demand.
    computed: int = 0
    generated: int = 0
    blocks: int = 0
    preemptions: int = 0
    first_scheduled: float = NAN
    first_token: float = NAN
    finish: float = NAN
    reject_reason: str = ""
    # Lazy decode bookkeeping: computed = base + ticks, generated = gen_base + ticks.
    base: int = 0
    gen_base: int = 0
    # --- prefix cache (kv/manager.py) ---------------------------------------------------
    # Leading granules this request pins in the HBM cache, and the blocks they span: these
    # are shared, so ``blocks`` counts only the request's private blocks.
    pinned_g: int = 0
    shared: int = 0
    # Prompt tokens found cached at first admission (the prefix it skipped), and the same
    # by the tier they came from (remote: the part of dram/disk read from another node's
    # store), and seconds spent loading KV. Counted apart so their sum can be checked.
    cached_tokens: int = 0
    cached_hbm: int = 0
    cached_dram: int = 0
    cached_disk: int = 0
    cached_remote: int = 0
    kv_wait: float = 0.0
    loads_pending: int = 0
    load_epoch: int = 0
    # --- disaggregated prefill/decode (engine/disagg.py) ----------------------------------
    # Tokens of KV computed on a prefill instance that this (decode-side) request waits for;
    # the prefill-side copy keeps its blocks after finishing (hold_kv) until they have moved.
    remote_kv: int = 0
    hold_kv: bool = False
    parent: Request | None = None
    prefill_replica: int = -1
    # The instance that produced the first token when it is not the one that finished the
    # request (-1): a restart or drain moved it after its first token (issue 18).
    first_token_replica: int = -1
    handoff_at: float = NAN
    kv_transfer: float = NAN
    # --- live migration between instances (engine/migration.py) --------------------------
    migrations: int = 0
    # Seconds it was paused for the last stage of its migrations (summed).
    migration_pause: float = 0.0

    @property
    def num_tokens(self) -> int:
        """Tokens known so far (prompt plus generated): what a recompute must prefill."""
        return self.prompt_tokens + self.generated

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.output_tokens


# Compiled, Request is an extension type (request.pxd: compiled code reads its fields
# directly); interpreted, the same dataclass with slots (simkv._accel.slotted says why here).
if __file__.endswith(".py"):
    globals()["Request"] = slotted(Request)

"""The batch-scheduler contract: what runs in the next iteration(s), and what that did.

Shaped like vLLM's ``Scheduler.schedule() -> SchedulerOutput`` / ``update_from_output``, and
free of SimPy so a scheduler unit-tests without an environment. One difference: a
``SchedulerOutput`` may cover ``num_iterations > 1`` decode-only iterations of an unchanged
batch (the fast-forward of DESIGN.md); the engine may commit fewer of them when an arrival
cuts the run short.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from simkv._accel import slotted
from simkv.entities.request import Request
from simkv.kv.block_pool import BlockPool

_EMPTY: tuple[int, ...] = ()


@dataclass(slots=True)
class StepArrays:
    """Per-iteration totals over the decode batch for steps that are not plain one-token
    decodes (a KV policy, a diffusion or visual autoregressive model: engine/steps.py).

    The KV each iteration's attention reads is ``decode_context`` (or ``tail_context``) of
    the SchedulerOutput; these add what else varies. ``single``: every member queries one
    token and samples one, so attention is the roofline's decode path.
    """

    queries: np.ndarray  # query tokens through the layers
    pairs: np.ndarray  # query-key pairs of attention
    logits: np.ndarray  # positions through the LM head
    refresh: np.ndarray  # tokens a refresh recomputes (in refresh_depth of the layers)
    refresh_pairs: np.ndarray
    extra_s: np.ndarray  # seconds outside the roofline (fetches over PCIe)
    fetching: np.ndarray  # members that fetch (a copy latency per layer is paid once)
    single: bool


@dataclass(slots=True)
class StepPlan:
    """What the cost model needs beyond the plain aggregates (perf/steps.py prices it)."""

    decode: StepArrays | None = None  # the run's decode iterations (the first only, with prefills)
    tail: StepArrays | None = None  # the decode iterations after a prefill iteration
    # Extra prefill work of the first iteration (EpiCache's patched prompt and encoder).
    prefill_tokens: float = 0.0
    prefill_pairs: float = 0.0
    prefill_s: float = 0.0
    refresh_fraction: float = 0.0  # fraction of steps that refresh (priced as the expectation)
    refresh_depth: float = 0.0  # fraction of layers a refresh recomputes
    fetch_latency_s: float = 0.0  # paid once per iteration in which some member fetches
    # The members' extra seconds overlap the step (the longer of the two counts), not add.
    overlap_extra: bool = False


@dataclass
class SchedulerOutput:
    """The work of the next ``num_iterations`` iterations.

    Prefill work only ever happens in the first iteration. A run is either decode-only
    (``decode_context[i]`` is the total context attended to in iteration i), or one
    iteration with prefill chunks followed by ``len(tail_context)`` decode-only iterations
    of ``tail_decodes`` sequences: the batch the prefilled requests join.
    """

    num_iterations: int = 1
    # Prefill chunks: (request, new tokens) with the aggregates the cost model needs.
    prefills: list[tuple[Request, int]] = field(default_factory=list)
    prefill_tokens: int = 0
    # Causal query-key pairs of all chunks: sum of n*c + n*(n+1)/2 (c = tokens already cached).
    prefill_attn_pairs: float = 0.0
    # KV tokens touched by prefill attention: sum of c + n.
    prefill_kv_tokens: int = 0
    num_decodes: int = 0
    decode_context: Sequence[int] = _EMPTY  # numpy array, or a tuple for one iteration
    # Sequences that produce a token (logits through the LM head) in each iteration.
    num_sampled: int = 0
    # Decode-only iterations after a first iteration with prefills (see above).
    tail_decodes: int = 0
    tail_context: Sequence[int] = _EMPTY
    # New KV blocks the decodes of the first iteration need (scheduler-private).
    first_need: int = 0
    # The prefilled requests already joined the decode batch at planning (scheduler-private).
    joined: bool = False
    # Static batching pads every sequence of the batch to the same length.
    padded: bool = False
    # Steps that are not plain decodes, or extra prefill work (None: none).
    steps: StepPlan | None = None
    # The engine records a CUDA graph in this iteration (its shape's first time): the cost
    # model adds the engine's capture cost (engine.graph_capture_*; transformers scheduler).
    capture: bool = False


# Compiled, SchedulerOutput is an extension type (interface.pxd); interpreted, the same
# dataclass with slots (simkv._accel.slotted).
if __file__.endswith(".py"):
    globals()["SchedulerOutput"] = slotted(SchedulerOutput)


def new_output() -> SchedulerOutput:
    """``SchedulerOutput()``: every field at its default, a fresh ``prefills`` list.

    The schedulers' hot path makes one per plan. Compiled, this allocates the extension type
    and sets its fields at their C offsets, where the dataclass's ``__init__`` parses fifteen
    optional arguments and looks the ``dataclasses`` module up for the default factory on
    every call (~6% of Vidur's loop). tests/test_compiled.py checks that both give equal
    plans, interpreted and compiled.
    """
    out = SchedulerOutput.__new__(SchedulerOutput)
    out.num_iterations = 1
    out.prefills = []
    out.prefill_tokens = 0
    out.prefill_attn_pairs = 0.0
    out.prefill_kv_tokens = 0
    out.num_decodes = 0
    out.decode_context = _EMPTY
    out.num_sampled = 0
    out.tail_decodes = 0
    out.tail_context = _EMPTY
    out.first_need = 0
    out.joined = False
    out.padded = False
    out.steps = None
    out.capture = False
    return out


class Scheduler(Protocol):
    """A replica's batch scheduler; built-ins live beside this file, one per file."""

    pool: BlockPool

    def admission_error(self, req: Request) -> str:
        """Why this request can never run on this replica: a reason code, '' if it can.

        Codes (docs/OUTPUTS.md): ``kv_capacity`` (its longest sequence exceeds the KV
        pool), ``token_budget`` (without chunked prefill, its longest sequence, which a
        recompute would prefill at once, exceeds the per-iteration token budget).
        """
        ...

    def add_request(self, req: Request) -> None: ...

    def take_waiting(self) -> list[Request]:
        """Remove and return the queued requests that never ran (a draining instance hands
        them back to the router)."""
        ...

    def schedule(self, now: float) -> SchedulerOutput | None:
        """Plan the next iteration(s); None when there is nothing to run."""
        ...

    def update(self, out: SchedulerOutput, done: int, ends: Sequence[float]) -> list[Request]:
        """Commit the first ``done`` iterations of ``out`` (their end times in ``ends``).

        Sets first-token and finish times; returns the requests that finished, in order.
        """
        ...

    def num_unfinished(self) -> int: ...

    def pending_prefill_tokens(self) -> int:
        """Prompt tokens queued or part-way through prefill (what routers estimate TTFT from)."""
        ...

    def scale_seats(self, ranks: int) -> None:
        """The instance now has ``ranks`` data-parallel ranks: seats and budgets are per rank."""
        ...

    def check_invariants(self) -> None:
        """Recount memory and queues from scratch; raise AssertionError on any mismatch."""
        ...

"""Decode batches whose steps are not plain one-token decodes over the whole context.

Two things break the closed form of engine/decode_batch.py: a KV policy (the KV a sequence
keeps, and so its blocks and the attention's reads, is a function of its context, not the
context itself), and a model kind whose step is not one token (a diffusion LLM denoises a
block of positions per step; a visual autoregressive model predicts a whole token map). Both
are handled the same way:

* when a sequence joins, its whole remaining life is computed once as a ``Profile``: per
  step, the query tokens, the KV it reads, the blocks it holds after it, the positions
  through the LM head, any refresh work and any seconds outside the roofline;
* the batch keeps per-tick *totals* of those over its members, indexed by absolute tick
  (a member adds its arrays at its join tick and subtracts what is left when it leaves), so
  what the scheduler asks of a run of k ticks is a slice: O(k) numpy, never O(members x k)
  Python. Joins and leaves cost O(the member's steps).

The scheduler sees the same interface as ``DecodeBatch`` (need, cumulative need, first
finish, advance) plus ``reads`` and ``step_arrays`` for the cost model. A member's
``computed`` is materialised as the KV tokens it *holds* (so ``blocks_for(computed)`` is its
blocks, as for full KV) and ``generated`` as the tokens produced.

Prefill stays the scheduler's (chunks of the prompt); the prefill counts as producing the
first token, as for autoregressive models, so a diffusion LLM's remaining ``output - 1``
tokens take ``ceil((output - 1) / block) x steps`` steps.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

import numpy as np

from simkv.engine.decode_batch import DecodeBatch
from simkv.entities.model import ModelSpec
from simkv.entities.request import Request, State
from simkv.kv.block_pool import BlockPool
from simkv.policies.kv_policy.interface import KVPolicyBase
from simkv.policies.scheduler.interface import StepArrays

# Rows of the per-tick totals.
NEED, READ, QUERIES, PAIRS, LOGITS, REFRESH, REFRESH_PAIRS, EXTRA_S, FETCHING = range(9)
ROWS = 9


@dataclass(slots=True)
class Profile:
    """One sequence's remaining steps from the tick it joins (arrays over its steps)."""

    rows: np.ndarray  # ROWS x steps, float64
    blocks: np.ndarray  # steps + 1: blocks held at the join and after each step
    kv: np.ndarray  # steps + 1: KV tokens held (what ``computed`` materialises to)
    generated: np.ndarray  # steps + 1: tokens generated
    single: bool  # one query and one logit per step, no refresh

    @property
    def steps(self) -> int:
        return int(self.rows.shape[1])


def _blocks(tokens: np.ndarray, block_size: int) -> np.ndarray:
    t = np.asarray(tokens, dtype=np.int64)
    return -(-t // block_size)


def _finish(rows: np.ndarray, kv: np.ndarray, generated: np.ndarray, block_size: int,
            extra: np.ndarray | None, single: bool) -> Profile:
    blocks = _blocks(kv, block_size)
    rows[NEED] = np.diff(blocks)
    rows[PAIRS] = rows[QUERIES] * rows[READ]
    if extra is not None:
        rows[EXTRA_S] = extra
        rows[FETCHING] = extra > 0
    return Profile(rows, blocks, kv, generated, single)


def autoregressive(policy: KVPolicyBase, c0: int, g0: int, output: int,
                   block_size: int) -> Profile:
    """One token per step; the policy decides what of the context stays and is read."""
    k = output - g0
    ctx = c0 + np.arange(0, k + 1, dtype=np.float64)  # context at the join and after each step
    kept = policy.kept(ctx)
    rows = np.zeros((ROWS, k))
    after, kept_after = ctx[1:], kept[1:]
    rows[READ] = policy.read(after, kept_after)
    rows[QUERIES] = 1.0
    rows[LOGITS] = 1.0
    extra = policy.extra_s(after, kept_after)
    # A one-token output never decodes (k = 0): no step to charge the join to, and no join
    # (LeoAM's chunk placement serves decode steps only; it raised IndexError: issue 18).
    join = policy.join_s(c0, float(kept[0])) if k > 0 else 0.0
    if join:
        extra = np.zeros(k) if extra is None else np.array(extra, dtype=np.float64)
        extra[0] += join
    generated = g0 + np.arange(0, k + 1, dtype=np.int64)
    return _finish(rows, kept, generated, block_size, extra, True)


def diffusion(policy: KVPolicyBase, model: ModelSpec, c0: int, g0: int, output: int,
              block_size: int) -> Profile:
    """Blocks of ``diffusion_block`` masked positions, ``diffusion_steps`` steps each.

    Without a cache (``full``) every step recomputes the sequence it attends to (the whole
    canvas, or the prefix and the current block) and keeps no KV between steps. With one
    (Elastic-Cache) a step queries the policy's window against the cached sequence, the
    first step computes the canvas, and a fraction of steps refresh part of the layers.
    """
    rem = output - g0  # tokens after the prefill's first one
    bsz, t = model.diffusion_block, model.diffusion_steps
    nblocks = -(-rem // bsz)
    k = nblocks * t
    s = np.arange(k)
    blk = s // t
    size = np.minimum(bsz, rem - blk * bsz)  # positions of each step's block
    if model.diffusion_canvas:
        total = np.full(k, float(c0 + 1 + rem))  # prompt + the whole canvas of masks
    else:
        total = (c0 + blk * bsz + size).astype(np.float64)  # prefix + finished blocks + this one
    rows = np.zeros((ROWS, k))
    rows[READ] = total
    if policy.diffusion_cached:
        window = np.minimum(policy.diffusion_window(bsz), size).astype(np.float64)
        rows[QUERIES] = window
        rows[LOGITS] = window
        if model.diffusion_canvas and k:  # (a one-token output has no step after its prefill)
            rows[QUERIES, 0] = total[0] - c0  # the first step computes every canvas position
        held = np.concatenate(([float(c0)], total))
        frac, _ = policy.diffusion_refresh()
        if frac > 0 and k > 1:
            # What one refresh recomputes; the cost model weighs it by the refresh fraction.
            rows[REFRESH, 1:] = held[1:-1]
            rows[REFRESH_PAIRS, 1:] = held[1:-1] * total[1:]
        single = bool(np.all(window == 1) and not model.diffusion_canvas and frac == 0)
    else:
        rows[QUERIES] = total
        rows[LOGITS] = total  # the reference sampler takes logits at every position
        held = np.zeros(k + 1)
        single = False
    done = np.minimum(rem, -(-(s + 1) * rem // k))
    generated = np.concatenate(([g0], np.maximum(g0, g0 + done)))
    return _finish(rows, held, generated.astype(np.int64), block_size, None, single)


def visual(policy: KVPolicyBase, model: ModelSpec, c0: int, g0: int, block_size: int
           ) -> Profile:
    """One step per token map: scale k queries its k^2 positions against the condition, the
    earlier maps (as the policy keeps them) and itself; CFG streams multiply everything."""
    areas = np.asarray([h * h for h in model.var_scales], dtype=np.int64)
    cum = np.cumsum(areas)
    first = int(np.searchsorted(cum, g0, side="right"))  # scales produced so far
    m = float(model.guidance_streams)
    scales = range(first, len(areas))
    k = len(scales)
    rows = np.zeros((ROWS, k))
    kv = np.zeros(k + 1)
    # NOTE: the prefill held the condition once; its guidance copies count from the first step.
    kv[0] = c0
    for i, sc in enumerate(scales):
        # Earlier maps with KV: scales 1..sc-1 (scale 0's single token is the condition's slot).
        prefix = c0 + int(cum[sc - 1] - areas[0]) if sc > 0 else c0
        kept = policy.var_prefix(prefix, sc)
        a = float(areas[sc])
        rows[READ, i] = (np.ceil(kept - 1e-9) + a) * m
        rows[QUERIES, i] = a * m
        rows[LOGITS, i] = a * m
        kv[i + 1] = rows[READ, i]
    generated = np.concatenate(([g0], cum[first:])).astype(np.int64)
    return _finish(rows, kv, generated, block_size, None, False)


def speculative(spec: Any, req: Request, c0: int, g0: int, joins: int, block_size: int
                ) -> Profile:
    """Speculative decoding (policies/speculative/): each step verifies the last token and k
    proposals (k + 1 query tokens and logits over the context) and emits the sampled number
    of accepted tokens plus the target's own; full KV, so the KV held is the context."""
    emitted = spec.emitted(req, req.output_tokens - g0, joins)
    n = len(emitted)
    done = np.concatenate(([0], np.cumsum(emitted)))
    ctx = (c0 + done).astype(np.float64)  # KV held at the join and after each step
    rows = np.zeros((ROWS, n))
    rows[READ] = ctx[:-1] + (spec.k + 1)  # the context and the new tokens' own keys
    rows[QUERIES] = spec.k + 1
    rows[LOGITS] = spec.k + 1
    generated = g0 + done.astype(np.int64)
    return _finish(rows, ctx, generated, block_size, None, False)


class ShapedDecodeBatch(DecodeBatch):
    """The decode batch of a replica whose steps follow a KV policy or a non-autoregressive
    model kind (see the module doc); returns blocks a member gives up when it joins."""

    __slots__ = ("_joins", "_life", "_origin", "_sums", "model", "nonsingle", "policy", "pool",
                 "spec")

    def __init__(self, block_size: int, policy: KVPolicyBase, model: ModelSpec,
                 pool: BlockPool, spec: Any = None) -> None:
        super().__init__(block_size)
        self.policy = policy
        self.model = model
        self.pool = pool
        self.spec = spec  # speculative decoding (None: off)
        self._joins: dict[int, int] = {}  # request id -> times it joined (spec's stream)
        self._origin = 0
        self._sums = np.zeros((ROWS, 256))
        self._life: dict[int, tuple[int, Profile]] = {}  # id -> (join tick, profile)
        self.nonsingle = 0

    # --- membership ---------------------------------------------------------------------
    def profile(self, req: Request) -> Profile:
        kind, bs = self.model.kind, self.block_size
        if self.spec is not None:
            return speculative(self.spec, req, req.computed, req.generated,
                               self._joins.get(req.id, 0), bs)
        if kind == "diffusion":
            return diffusion(self.policy, self.model, req.computed, req.generated,
                             req.output_tokens, bs)
        if kind == "var":
            return visual(self.policy, self.model, req.computed, req.generated, bs)
        return autoregressive(self.policy, req.computed, req.generated, req.output_tokens, bs)

    def join(self, req: Request, skip: int = 0) -> None:
        at = self.ticks + skip
        prof = self.profile(req)
        # Reconcile the blocks the prefill left with what the member holds from now on
        # (a policy evicts after the prefill; a diffusion LLM without cache keeps none).
        delta = int(prof.blocks[0]) - req.blocks - req.shared
        if delta < 0:
            self.pool.release(-delta)
        elif delta > 0:
            self.pool.allocate(delta)
        req.blocks = int(prof.blocks[0]) - req.shared
        req.state = State.DECODING
        end = at + prof.steps
        req.gen_base = req.output_tokens - end  # DecodeBatch's finish bookkeeping
        if self.spec is not None:
            self._joins[req.id] = self._joins.get(req.id, 0) + 1
            self._count(prof, 0, +1)
        self._add(at, prof.rows, 1.0)
        self._life[req.id] = (at, prof)
        self.members[req.id] = req
        if not prof.single:
            self.nonsingle += 1
        heapq.heappush(self._heap, (end, req.id, req))

    def leave(self, req: Request) -> None:
        self.materialise(req)
        at, prof = self._life.pop(req.id)
        done = max(0, self.ticks - at)
        if done < prof.steps:
            self._add(self.ticks if self.ticks > at else at, prof.rows[:, done:], -1.0)
            if self.spec is not None:
                self._count(prof, done, -1)  # steps it will not take here
        if self.spec is not None and done >= prof.steps:
            self._joins.pop(req.id, None)  # finished: it never joins again
        del self.members[req.id]
        if not prof.single:
            self.nonsingle -= 1

    def _count(self, prof: Profile, start: int, sign: int) -> None:
        """Speculation counters (summary.json): steps, proposed and accepted drafts of the
        profile's steps from ``start`` on."""
        spec = self.spec
        steps = prof.steps - start
        emitted = int(prof.generated[-1] - prof.generated[start])
        spec.steps += sign * steps
        spec.proposed += sign * steps * spec.k
        spec.accepted += sign * (emitted - steps)

    def materialise(self, req: Request) -> None:
        at, prof = self._life[req.id]
        s = min(max(0, self.ticks - at), prof.steps)
        req.computed = int(prof.kv[s])
        req.generated = int(prof.generated[s])

    def _add(self, at: int, rows: np.ndarray, sign: float) -> None:
        n = rows.shape[1]
        if not n:
            return
        lo = at - self._origin
        if lo < 0:
            raise AssertionError("a member's steps start before the batch's window")
        if lo + n > self._sums.shape[1]:
            self._compact()
            lo = at - self._origin
            if lo + n > self._sums.shape[1]:
                grown = np.zeros((ROWS, max(2 * self._sums.shape[1], lo + n)))
                grown[:, :self._sums.shape[1]] = self._sums
                self._sums = grown
        if sign > 0:
            self._sums[:, lo:lo + n] += rows
        else:
            self._sums[:, lo:lo + n] -= rows

    def _compact(self) -> None:
        """Drop the columns of ticks already past."""
        cut = self.ticks - self._origin
        if cut > 0:
            kept = self._sums[:, cut:]
            self._sums = np.zeros_like(self._sums)
            self._sums[:, :kept.shape[1]] = kept
            self._origin = self.ticks

    def _window(self, row: int, k: int, skip: int) -> np.ndarray:
        lo = self.ticks + skip - self._origin
        out = self._sums[row, lo:lo + k]
        if out.shape[0] < k:
            out = np.concatenate((out, np.zeros(k - out.shape[0])))
        return out

    # --- what the next iterations look like ---------------------------------------------
    def need_next(self) -> int:
        return round(self._window(NEED, 1, 0)[0])

    def need_over(self, k: int, skip: int = 0) -> int:
        return round(float(self._window(NEED, k, skip).sum()))

    def cumulative_need(self, k: int, skip: int = 0) -> np.ndarray:
        """The peak of the blocks needed over ticks skip+1..skip+k (a policy may release
        blocks along the way: a run fits if its peak fits)."""
        return np.maximum.accumulate(np.rint(np.cumsum(self._window(NEED, k, skip))))

    def first_release(self, k: int, skip: int = 0) -> int:
        """Ticks up to and including the first of the next k that frees blocks (k if none)."""
        freed = np.flatnonzero(self._window(NEED, k, skip) < -0.5)
        return int(freed[0]) + 1 if freed.size else k

    def reads(self, k: int, skip: int = 0) -> np.ndarray:
        """KV token-equivalents the attention reads in each of the next k ticks."""
        return self._window(READ, k, skip).copy()

    def step_arrays(self, k: int, skip: int = 0) -> StepArrays | None:
        """What the cost model needs besides the reads; None when the steps are plain
        one-token decodes with nothing extra (the roofline's decode path, unchanged)."""
        extra = self._window(EXTRA_S, k, skip)
        fetching = self._window(FETCHING, k, skip)
        single = self.nonsingle == 0
        if single and not fetching.any() and not extra.any():
            return None
        w = self._window
        return StepArrays(w(QUERIES, k, skip).copy(), w(PAIRS, k, skip).copy(),
                          w(LOGITS, k, skip).copy(), w(REFRESH, k, skip).copy(),
                          w(REFRESH_PAIRS, k, skip).copy(), extra.copy(), fetching.copy(),
                          single)

    def advance(self, k: int) -> list[Request]:
        done = super().advance(k)
        if self.ticks - self._origin > 4096:
            self._compact()
        return done

    def peak_blocks(self, req: Request, prefill_blocks: int) -> int:
        """The most blocks ``req`` would hold over its life, were it admitted now."""
        if self.spec is not None:  # full KV: the whole sequence at the end
            return max(prefill_blocks, -(-(req.prompt_tokens + req.output_tokens - 1)
                                         // self.block_size))
        c0, g0 = req.prompt_tokens, 1
        probe = Request(-1, 0.0, req.prompt_tokens, req.output_tokens, computed=c0, generated=g0)
        return max(prefill_blocks, int(self.profile(probe).blocks.max()))

    def held_blocks(self) -> int:
        total = 0
        for rid, req in self.members.items():
            at, prof = self._life[rid]
            s = min(max(0, self.ticks - at), prof.steps)
            total += int(prof.blocks[s]) - req.shared
        return total

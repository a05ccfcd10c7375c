"""Step by step: does simkv schedule what the engine scheduled?

    simkv-validate schedule validation/hf_h200_2026-11-30            # every stream
    simkv-validate schedule validation/hf_h200_2026-11-30/llama3_8b --csv steps.csv

Before any time is compared, simkv's scheduler (``scheduler=transformers``, the engine's own
rules) is fed the engine's arrivals and asked for each step's batch; the engine's profiled
steps (``iterations_<stream>.csv``: sequences, query tokens and KV tokens read per step) say
what it actually ran. Two comparisons:

* **replayed on the engine's clock** (``teacher_forced``): step k of simkv is planned when the
  engine planned its step k (``start_s - prepare_s``), with every request submitted before
  then in its queue, so only the scheduling rules can differ. A step agrees when its number of
  sequences and its query tokens equal the engine's (``kv_read`` is reported beside: it checks
  the whole KV state, since it sums every scheduled request's cached tokens).
* **on simkv's own clock** (``free_running``): a normal simkv run of the stream, step times
  from the cost model; its k-th step against the engine's k-th. This one also moves when a
  step's price is off (an arrival lands in another step), so it measures the two together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from simkv.entities.request import Request
from simkv.kv.block_pool import BlockPool
from simkv.policies.scheduler.interface import SchedulerOutput
from simkv.policies.scheduler.transformers_cb import TransformersScheduler, TransformersSchedulerConfig

STEP_COLUMNS = ("sequences", "tokens", "kv_read")


@dataclass
class Limits:
    """The engine's scheduling limits, as its engine.json recorded them."""

    num_blocks: int
    block_size: int
    max_batch_tokens: int
    max_requests_per_batch: int = 1024
    safety_margin: float | None = None
    scheduler_type: str = "fifo"

    def config(self, cuda_graphs: str = "captured") -> TransformersSchedulerConfig:
        return TransformersSchedulerConfig(
            scheduler_type=self.scheduler_type, max_batch_tokens=self.max_batch_tokens,
            max_requests_per_batch=self.max_requests_per_batch, safety_margin=self.safety_margin,
            cuda_graphs=cuda_graphs)


def limits(engine: dict[str, Any]) -> Limits:
    """The limits of an engine.json (hf_campaign / hf_replay): resolved values first."""
    from simkv.validation.campaign import engine_limit

    res = engine.get("cb_resolved") or {}
    sched = engine.get("engine_resolved") or {}  # what the engine resolved (2026-12-07 on)
    margin = sched.get("safety_margin", res.get("safety_margin"))
    kind = {"FIFOScheduler": "fifo", "PrefillFirstScheduler": "prefill_first"}.get(
        str(sched.get("scheduler")), sched.get("scheduler"))
    where = Path(str(engine.get("_folder", ".")))
    return Limits(
        num_blocks=engine_limit(engine, "num_blocks", where),
        block_size=engine_limit(engine, "block_size", where),
        max_batch_tokens=engine_limit(engine, "max_batch_tokens", where),
        max_requests_per_batch=int(sched.get("max_requests_per_batch")
                                   or res.get("max_requests_per_batch") or 1024),
        safety_margin=None if margin is None else float(margin),
        scheduler_type=str(kind or res.get("scheduler_type") or "fifo"))


def teacher_forced(requests: pd.DataFrame, steps: pd.DataFrame, lim: Limits) -> pd.DataFrame:
    """simkv's plan of each of the engine's steps, planned at the engine's own step times.

    ``requests``: the stream's requests (``id``, ``submit_s`` or the engine's ``queued_step``,
    ``prompt_tokens``, ``output_tokens``); ``steps``: its profiled steps in order (``start_s``, ``prepare_s``
    and ``STEP_COLUMNS``). Each simkv step commits at the engine's next planning time, so
    finishes and arrivals line up with the engine's. Returns one row per engine step: the
    engine's columns, simkv's (``sim_*``) and ``agree`` (sequences and tokens equal).
    """
    pool = BlockPool(lim.num_blocks, lim.block_size)
    sched = TransformersScheduler(lim.config(), pool=pool)
    plan_t = (steps["start_s"] - steps["prepare_s"]).to_numpy(float)
    if "queued_step" in requests and requests["queued_step"].notna().all():
        # the engine recorded which step first saw each request (2026-12-07 on): exact
        reqs = requests.sort_values(["queued_step", "id"], kind="stable")
        at = reqs["queued_step"].to_numpy(int)
        submit = np.where(at < len(plan_t), plan_t[np.minimum(at, len(plan_t) - 1)], math.inf)
        submit = np.nextafter(submit, -math.inf)  # in the queue by that step's planning
    else:
        reqs = requests.sort_values(["submit_s", "id"], kind="stable")
        submit = reqs["submit_s"].to_numpy(float)
    queue = [Request(int(r.id), float(r.submit_s), int(r.prompt_tokens), int(r.output_tokens))
             for r in reqs.itertuples()]
    ends = np.append(plan_t[1:], math.inf)
    sim = np.zeros((len(steps), 3), dtype=np.int64)
    keys: list[str] = [""] * len(steps)
    plans: list[SchedulerOutput | None] = [None] * len(steps)
    nxt = 0
    for k, t in enumerate(plan_t):
        while nxt < len(queue) and submit[nxt] < t:
            sched.add_request(queue[nxt])
            nxt += 1
        out = sched.schedule(t)
        if out is None:
            continue
        assert sched.last_step is not None
        sim[k] = sched.last_step[:3]
        key = sched.last_step[3]
        if key is not None:
            keys[k] = "/".join(map(str, key))
        plans[k] = _aggregates(out)
        sched.update(out, 1, (float(ends[k]),))
    d = steps[list(STEP_COLUMNS)].copy().reset_index(drop=True)
    for i, c in enumerate(STEP_COLUMNS):
        d[f"sim_{c}"] = sim[:, i]
    d["agree"] = (d["sequences"] == d["sim_sequences"]) & (d["tokens"] == d["sim_tokens"])
    d["sim_key"] = keys
    d.attrs["plans"] = plans
    return d


def _aggregates(out: SchedulerOutput) -> SchedulerOutput:
    """A copy of a plan's aggregates without its request objects (what pricing needs)."""
    return SchedulerOutput(prefill_tokens=out.prefill_tokens,
                           prefill_attn_pairs=out.prefill_attn_pairs,
                           prefill_kv_tokens=out.prefill_kv_tokens, num_decodes=out.num_decodes,
                           decode_context=tuple(out.decode_context), num_sampled=out.num_sampled)


def free_running(requests: pd.DataFrame, lim: Limits, cost: Any,
                 sched_cfg: TransformersSchedulerConfig | None = None
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """simkv's own steps for the stream, on its own clock: the replica's loop of one instance
    (plan when idle at an arrival, or when the run in flight ends, with every request arrived
    by then; run times from ``cost``, a CostModel). Returns (steps, requests): per step its
    sequences, query tokens, KV read, start and duration; per request (in ``requests``'
    order) ``ttft``, ``tpot``, ``e2e`` and its evictions. ``tests/test_schedule_validation.py``
    checks that the request times equal a full simkv run's."""
    pool = BlockPool(lim.num_blocks, lim.block_size)
    sched = TransformersScheduler(sched_cfg or lim.config(), pool=pool, engine=cost.engine)
    order = requests.sort_values(["arrival_s", "id"], kind="stable")
    reqs = {int(r.id): Request(int(r.id), float(r.arrival_s), int(r.prompt_tokens),
                               int(r.output_tokens)) for r in order.itertuples()}
    queue = list(reqs.values())
    rows: list[tuple[int, int, int, float, float, bool]] = []
    now, nxt = 0.0, 0
    while nxt < len(queue) or sched.num_unfinished():
        if not sched.num_unfinished():
            now = max(now, queue[nxt].arrival)
        while nxt < len(queue) and queue[nxt].arrival <= now:
            sched.add_request(queue[nxt])
            nxt += 1
        out = sched.schedule(now)
        if out is None:
            if nxt >= len(queue):
                raise ValueError("the scheduler cannot run the requests left")
            now = queue[nxt].arrival
            continue
        dur = float(cost.run_times(out))
        assert sched.last_step is not None
        seqs, q, kv, _key, captured = sched.last_step
        rows.append((seqs, q, kv, now, dur, captured))
        now += dur
        sched.update(out, 1, (now,))
    steps = pd.DataFrame(rows, columns=["sim_sequences", "sim_tokens", "sim_kv_read", "sim_start_s",
                                        "sim_step_s", "sim_captured"])
    out_reqs = [reqs[int(i)] for i in requests["id"]]
    first = np.array([r.first_token for r in out_reqs])
    fin = np.array([r.finish for r in out_reqs])
    arr = np.array([r.arrival for r in out_reqs])
    n_out = np.array([r.output_tokens for r in out_reqs], float)
    pred = pd.DataFrame({"ttft": first - arr, "e2e": fin - arr,
                         "tpot": (fin - first) / np.maximum(1.0, n_out - 1),
                         "evictions": [r.preemptions for r in out_reqs]})
    return steps, pred


def compare_steps(engine_steps: pd.DataFrame, sim_steps: pd.DataFrame) -> pd.DataFrame:
    """The engine's k-th step beside simkv's k-th (as many as both have)."""
    n = min(len(engine_steps), len(sim_steps))
    d = engine_steps[list(STEP_COLUMNS)].iloc[:n].reset_index(drop=True)
    return pd.concat([d, sim_steps.iloc[:n].reset_index(drop=True)], axis=1)


def agreement(d: pd.DataFrame) -> dict[str, float]:
    """Shares of steps (%) whose sequences, tokens, KV read, and both of the first two agree."""
    n = max(1, len(d))
    out = {"steps": float(len(d)),
           "sequences": 100.0 * float((d["sequences"] == d["sim_sequences"]).sum()) / n,
           "tokens": 100.0 * float((d["tokens"] == d["sim_tokens"]).sum()) / n}
    if "sim_kv_read" in d:
        out["kv_read"] = 100.0 * float((d["kv_read"] == d["sim_kv_read"]).sum()) / n
    out["agree"] = 100.0 * float(((d["sequences"] == d["sim_sequences"])
                                  & (d["tokens"] == d["sim_tokens"])).sum()) / n
    return out


def schedule_report(runs: list[Any], csv: str | None = None) -> pd.DataFrame:
    """``simkv-validate schedule``: per stream with a step profile, the share of steps whose
    sequences, query tokens and KV read equal the engine's, replayed on its clock."""
    rows = []
    for run in runs:
        lim = limits(run.engine)
        for tag, steps in run.steps.items():
            a = agreement(teacher_forced(run.requests[tag], steps, lim))
            rows.append({"run": run.name, "stream": tag, **a})
    if not rows:
        raise ValueError("no stream with a step profile (iterations_<stream>.csv) in "
                         + ", ".join(str(r.folder) for r in runs))
    d = pd.DataFrame(rows)
    print("| run | stream | steps | sequences equal | query tokens equal | KV read equal | all |")
    print("|---|---|---|---|---|---|---|")
    for r in d.itertuples():
        print(f"| {r.run} | {r.stream} | {int(r.steps)} | {r.sequences:.1f}% | {r.tokens:.1f}% | "
              f"{r.kv_read:.1f}% | {r.agree:.1f}% |")
    w = d["steps"].to_numpy()
    print(f"all streams: {int(w.sum())} steps, {np.average(d['agree'], weights=w):.2f}% equal "
          f"(sequences and query tokens), {np.average(d['kv_read'], weights=w):.2f}% KV read")
    if csv:
        d.to_csv(csv, index=False)
        print(f"per-stream agreement: {csv}")
    return d

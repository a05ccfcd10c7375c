"""Energy-aware autoscaling: the instance count and SM clock with the least energy that
still meets the TPOT objective (DynamoLLM's idea, HPCA 2025, on one of its knobs pairs).

Every interval the policy measures what a real controller can see of its pool: the arrival
rate over the window and the mean prompt and output lengths of the requests that finished.
For each candidate (instances n, clock fraction x) it predicts one instance's steady state
with the pool's own cost and power models (the profile DynamoLLM measures offline):

* prefill: each request's prompt as one step, so prefill keeps an instance busy
  rho = (rate / n) x t_prefill(x) of the time;
* decode: the batch B that Little's law gives, B = (rate / n) x output x TPOT, with
  TPOT = t_step(B, x) / (1 - rho) (decode steps share the GPU with prefills), solved by
  fixed-point iteration; the step reads B x (prompt + output / 2) tokens of context;
* the rate planned for is ``rate_headroom`` x the measured one (a burst outruns start-up);
* feasible when TPOT <= ``tpot_headroom`` x slo.tpot_s, rho <= ``max_prefill_busy``, and B
  fits the instance's sequences and KV;
* energy rate n x GPUs x (idle + busy shares x (step power - idle)), from the power model at
  clock x (model.py), power of a busy instance times the share of time it is busy.

It takes the feasible pair of least predicted energy (fewer instances, then the higher
clock, on ties); with none feasible, every instance it may have at full clock. Instances are
launched and drained like horizontal scaling (a scale-down waits out
``scale_down_stabilization_s``, taking the largest count recommended in it); the clock
changes at once for the pool's next steps. Neither DynamoLLM's re-sharding (tensor
parallelism changes) nor per-request-type pools are modelled.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simkv.config.bounds import bounded, meta, require
from simkv.engine.lifecycle import LEAVING, SERVING
from simkv.policies.autoscaler.interface import Action, Drain, Launch, ScalingConfig, SetClock
from simkv.registry import register


@dataclass(slots=True)
class EnergyAwareConfig(ScalingConfig):
    # SM clocks it may choose, as fractions of the GPU's maximum (each within its power
    # model's range).
    clocks: list[float] = field(default_factory=lambda: [1.0, 0.9, 0.8, 0.7, 0.6, 0.5],
                                metadata=meta(gt=0, le=1))
    # The TPOT it plans for, as a share of slo.tpot_s (slack for bursts and queueing).
    tpot_headroom: float = bounded(0.7, gt=0, le=1)
    # The largest share of an instance's time it lets prefills take (TTFT grows as the
    # prefill queue approaches saturation).
    max_prefill_busy: float = bounded(0.5, gt=0, lt=1)
    # It plans for this multiple of the measured arrival rate: slack for a burst that arrives
    # faster than a new instance starts (assumed; DynamoLLM plans for a predicted peak).
    rate_headroom: float = bounded(1.5, ge=1)
    # HPA's defaults do not suit a policy that measures its own window: react within 60 s.
    scale_down_stabilization_s: float = bounded(120.0, ge=0)

    def validate(self, prefix: str = "autoscaler.") -> None:
        # An empty list left the planner no clock to choose from (max() of an empty sequence
        # mid-run).
        require(bool(self.clocks), f"{prefix}clocks: expected at least one SM clock fraction "
                                   f"(e.g. [1, 0.8, 0.6]), got []")


@dataclass(slots=True)
class Plan:
    """One candidate's predicted steady state."""

    instances: int
    clock: float
    feasible: bool
    watts: float
    tpot_s: float
    batch: float
    prefill_busy: float


@register("autoscaler", "energy", EnergyAwareConfig)
class EnergyAware:
    def __init__(self, cfg: EnergyAwareConfig, **_: object) -> None:
        self.cfg = cfg
        self.history: dict[str, deque[tuple[float, int, int, int, int]]] = {}
        self.recommended: dict[str, deque[tuple[float, int]]] = {}
        self.last_plan: dict[str, Plan] = {}

    @property
    def acts_on_fixed(self) -> bool:
        """It has clocks to choose from, so a pool of fixed size is still its to scale: with
        no pool that can change size, the controller gives it every pool (it refused the
        clock-only run, advising a replica range)."""
        return len(set(self.cfg.clocks)) > 1

    def check(self, pool: Any) -> None:
        from simkv.engine.pool import pool_key

        if getattr(pool, "power", None) is None:
            raise ValueError("autoscaler=energy needs energy.enabled=true")
        lo = pool.power.params.min_fraction
        bad = [c for c in self.cfg.clocks if c < lo - 1e-12]
        if bad:
            ok = [c for c in self.cfg.clocks if c >= lo - 1e-12] or [1.0]
            raise ValueError(f"autoscaler.clocks: {bad[0]:g} is below {pool.power.params.name}'s "
                             f"lowest modelled clock ({lo:.3f} of {pool.power.params.max_sm_mhz:g} "
                             f"MHz, pool {pool.name}); list clocks >= {lo:.3f}, e.g. "
                             f"autoscaler.clocks=[{','.join(f'{c:g}' for c in ok)}]")
        if pool.max_instances == pool.min_instances and len(set(self.cfg.clocks)) < 2:
            raise ValueError(f"autoscaler=energy has nothing to choose for pool {pool.name}: "
                             f"{pool_key(pool.name, 'min_instances')} = "
                             f"{pool_key(pool.name, 'max_instances')} and one clock")

    # --- what it measures ---------------------------------------------------------------
    def _measure(self, pool: Any, now: float) -> tuple[float, float, float] | None:
        hist = self.history.setdefault(pool.name, deque())
        hist.append((now, pool.routed, pool.finished, pool.prompt_tokens_done,
                     pool.output_tokens_done))
        while len(hist) > 2 and hist[1][0] <= now - self.cfg.window_s:
            hist.popleft()
        t0, routed0, fin0, p0, o0 = hist[0]
        span = now - t0
        if span <= 0:
            return None
        rate = (pool.routed - routed0) / span
        done = pool.finished - fin0
        if done > 0:
            return rate, (pool.prompt_tokens_done - p0) / done, (pool.output_tokens_done - o0) / done
        if pool.finished:
            return rate, pool.prompt_tokens_done / pool.finished, pool.output_tokens_done / pool.finished
        return None

    # --- what it predicts ---------------------------------------------------------------
    def plan(self, pool: Any, rate: float, prompt: float, output: float, n: int, clock: float
             ) -> Plan:
        from simkv.policies.scheduler.interface import SchedulerOutput

        power = pool.power
        cost = pool.cost(pool.base_degree)
        work = power.work(cost)
        model = power.model
        gpus = pool.base.gpus
        idle = power.params.idle_w
        tpot_slo = pool.sim.slo.tpot_s * self.cfg.tpot_headroom
        seats = pool._seats
        kv_tokens = pool.capacity(pool.base_degree).tokens
        per = rate / n
        p = max(1, round(prompt))
        pf = SchedulerOutput(num_iterations=1, prefill_tokens=p, prefill_attn_pairs=p * (p + 1) / 2,
                             prefill_kv_tokens=p, num_sampled=1)
        t_pf, p_pf = self._step(model, work, cost, pf, clock)
        rho = per * t_pf
        ctx = prompt + output / 2.0
        b, tpot, p_dec, ok = 1.0, 0.0, idle, rho <= self.cfg.max_prefill_busy
        for _ in range(12):
            size = max(1, math.ceil(b))
            dec = SchedulerOutput(num_iterations=1, num_decodes=size,
                                  decode_context=(size * max(1, round(ctx)),), num_sampled=size)
            t_dec, p_dec = self._step(model, work, cost, dec, clock)
            tpot = t_dec / max(1e-9, 1.0 - rho)
            nb = per * output * tpot
            if abs(nb - b) < 0.01 * max(b, 1.0):
                b = nb
                break
            b = nb
        ok = ok and tpot <= tpot_slo and b <= seats and b * ctx <= kv_tokens
        busy_dec = (1.0 - rho) * min(1.0, b) if rho < 1 else 0.0
        watts = n * gpus * (idle + busy_dec * (p_dec - idle) + min(rho, 1.0) * (p_pf - idle))
        return Plan(n, clock, bool(ok), watts, tpot, b, rho)

    @staticmethod
    def _step(model: Any, work: Any, cost: Any, out: Any, clock: float) -> tuple[float, float]:
        t = float(cost.run_times(out))
        f, b, lk = work.run(out)
        op = model.operate(np.array([t]), f, b, lk, clock=clock, cap_w=None)
        return float(op.seconds[0]), float(op.power_w[0])

    def best(self, pool: Any, rate: float, prompt: float, output: float) -> Plan:
        plans = [self.plan(pool, rate, prompt, output, n, c)
                 for n in range(max(1, pool.min_instances), pool.max_instances + 1)
                 for c in sorted(set(self.cfg.clocks), reverse=True)]
        ok = [p for p in plans if p.feasible]
        if not ok:
            top = max(plans, key=lambda p: (p.instances, p.clock))
            return Plan(top.instances, 1.0, False, top.watts, top.tpot_s, top.batch, top.prefill_busy)
        return min(ok, key=lambda p: (round(p.watts, 6), p.instances, -p.clock))

    # --- what it does -------------------------------------------------------------------
    def decide(self, pool: Any, desired_gpus: int, now: float) -> list[Action]:
        seen = self._measure(pool, now)
        if seen is None:
            return []
        rate, prompt, output = seen
        plan = self.best(pool, rate * self.cfg.rate_headroom, prompt, output)
        self.last_plan[pool.name] = plan
        rec = self.recommended.setdefault(pool.name, deque())
        rec.append((now, plan.instances))
        while rec and rec[0][0] < now - self.cfg.scale_down_stabilization_s:
            rec.popleft()
        live = [r for r in pool.instances if r.state not in LEAVING]
        want = plan.instances
        if want < len(live):  # down only as far as the stabilisation window allows
            want = min(len(live), max(n for _, n in rec))
        want = min(max(want, pool.min_instances), pool.max_instances)
        actions: list[Action] = []
        if abs(plan.clock - pool.power.clock) > 1e-12:
            actions.append(SetClock(plan.clock))
        if want > len(live):
            actions += [Launch(pool.base_degree)] * (want - len(live))
        elif want < len(live):
            serving = [r for r in live if r.state == SERVING]
            serving.sort(key=lambda r: (r.outstanding_requests, -r.index))
            actions += [Drain(r) for r in serving[:len(live) - want]]
        return actions

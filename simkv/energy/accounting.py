"""Energy during a run: each pool's power model and settings, each instance's steps.

Built only with ``energy.enabled`` (``Cluster.energy`` is None otherwise, and no replica has a
``power`` hook: the default run executes the code it always did). Two hooks of the replica
loop, beside the collectives' (engine/replica.py):

* ``plan(out, durations)``: under a power cap or a locked clock the run's iterations are
  stretched to the clock the cap allows (model.py); otherwise the durations pass unchanged;
* ``commit(out, ends, done)``: the energy above idle of the iterations that ran, per GPU
  times the instance's GPUs, added to its pool under the instance's state.

Idle power is not counted here: every GPU an instance holds draws it in every state from
provisioning to stopped, so it is integrated from the instances' transitions, the one
integral GPU-hours come from (metrics/cluster.py; summary.py here). A run's energy is that
integral times idle power plus the dynamic energy of its steps, which is never negative: the
invariant ``energy >= idle x GPU-seconds`` holds by construction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from simkv.energy.model import PowerModel
from simkv.energy.params import PowerParams, default_for, load_power
from simkv.energy.work import StepWork


def power_model(params: PowerParams, hw: Any) -> PowerModel:
    """The model of ``params`` against a hardware profile's peaks (its GEMMs' achieved
    compute efficiency sets the compute-bound share of a step)."""
    eff = hw.gemm.compute_eff if hw.gemm is not None else hw.eff("gemm_compute").values[-1]
    return PowerModel(params, hw.bf16_flops, hw.hbm_bandwidth, hw.nvlink_bandwidth, eff)


def params_for(pool: Any, sim: Any) -> PowerParams:
    """The power model of a pool's GPUs: energy.power(_path), else its profile's default."""
    e = sim.energy
    profile = pool.cfg.hardware or (None if sim.hardware.path else sim.hardware.profile)
    if e.power or e.power_path:
        params = load_power(e.power, e.power_path)
        if params.profiles and profile and profile not in params.profiles:
            # Another GPU's model (an H100's on an A100 pool ran with its idle power, TDP
            # and clocks): refused unless the file names no hardware.
            key = f"energy.power={e.power}" if e.power else f"energy.power_path={e.power_path}"
            own = default_for(profile)
            raise ValueError(f"{key}: a power model of {', '.join(params.profiles)}, and pool "
                             f"{pool.name} runs {profile}; leave it unset (each pool's GPU's own "
                             f"model{f': {own.name}' if own else ''}) or name a model of {profile}")
        return params
    found = default_for(profile) if profile else None
    if found is None:
        from simkv.energy.params import shipped_power

        what = f"hardware {profile}" if profile else f"hardware.path={sim.hardware.path}"
        raise ValueError(f"energy.enabled: no power model for {what} (pool {pool.name}); "
                         f"name one with energy.power ({', '.join(shipped_power())}) or "
                         f"energy.power_path (docs/ENERGY.md)")
    return found


class PoolPower:
    """One pool's power model, settings and counters."""

    def __init__(self, pool: Any, sim: Any) -> None:
        from simkv.engine.pool import pool_key

        self.pool = pool
        self.params = params_for(pool, sim)
        self.model = power_model(self.params, pool.hw)
        p, e, pc = self.params, sim.energy, pool.cfg
        cap = pc.power_cap_w if pc.power_cap_w is not None else e.power_cap_w
        mhz = pc.sm_clock_mhz if pc.sm_clock_mhz is not None else e.sm_clock_mhz
        cap_key = (pool_key(pool.name, "power_cap_w") if pc.power_cap_w is not None
                   else "energy.power_cap_w")
        clk_key = (pool_key(pool.name, "sm_clock_mhz") if pc.sm_clock_mhz is not None
                   else "energy.sm_clock_mhz")
        floor = p.idle_w + p.active_w * p.min_fraction ** p.freq_exponent
        if cap is not None and not floor < cap <= p.tdp_w:
            raise ValueError(f"{cap_key}={cap:g}: expected above {floor:.0f} W (the idle and "
                             f"clock-floor power of {p.name} at its lowest modelled clock, "
                             f"{p.min_sm_mhz:g} MHz) and at most its TDP, {p.tdp_w:g} W")
        if mhz is not None and not p.min_sm_mhz <= mhz <= p.max_sm_mhz:
            raise ValueError(f"{clk_key}={mhz:g}: expected a clock within {p.min_sm_mhz:g}-"
                             f"{p.max_sm_mhz:g} MHz ({p.name})")
        self.cap_w = cap
        self.clock = 1.0 if mhz is None else mhz / p.max_sm_mhz
        self._works: dict[int, StepWork] = {}
        self.dynamic_j: dict[str, float] = defaultdict(float)
        self.busy_gpu_s = 0.0
        self.clock_gpu_s = 0.0  # busy GPU-seconds x clock fraction
        self.iterations = 0
        self.slowed = 0
        self.unmet = 0
        self.clock_changes = 0

    @property
    def settable(self) -> bool:
        return self.cap_w is not None or self.clock < 1.0

    def work(self, cost: Any) -> StepWork:
        w = self._works.get(id(cost))
        if w is None or w.cost is not cost:
            w = self._works[id(cost)] = StepWork(cost)
        return w

    def set_clock(self, fraction: float) -> None:
        """A new locked clock for the pool's runs (autoscaler=energy), from the end of each
        busy instance's iteration in flight: its run is cut there (``poke``) and replanned,
        as step-by-step planning would price its next iteration (before, a fast-forwarded
        run kept the old clock to its end, so the run depended on engine.max_fast_forward)."""
        fraction = min(1.0, max(self.params.min_fraction, fraction))
        if fraction != self.clock:
            self.clock = fraction
            self.clock_changes += 1
            for r in self.pool.instances:
                if r.busy:
                    r.poke()


class InstancePower:
    """The replica's hooks: stretch planned runs under a cap, count committed energy."""

    def __init__(self, energy: Energy, replica: Any, pool: PoolPower) -> None:
        self.energy = energy
        self.replica = replica
        self.pool = pool
        # The run priced last: (out, power, clock, capped, unmet) per planned iteration.
        self._pending: tuple[Any, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None

    def _work(self, out: Any, done: int | None = None) -> Any:
        """The run's work per GPU and iteration, the LoRA adapters' kernels included."""
        cost = self.replica.cost
        f, b, lk = self.pool.work(cost).run(out, done)
        extra = getattr(cost, "lora_work", None)
        if extra is None:
            return f, b, lk
        lf, lb = extra(out, len(f))
        return f + lf, b + lb, lk

    def plan(self, out: Any, durations: Any) -> Any:
        pp = self.pool
        self._pending = None
        if not pp.settable:
            return durations
        single = out.num_iterations == 1
        t = np.atleast_1d(np.asarray(durations, dtype=np.float64))
        f, b, lk = self._work(out)
        op = pp.model.operate(t, f, b, lk, clock=pp.clock, cap_w=pp.cap_w)
        # (slowed and unmet iterations are counted when they run, in commit: a run cut short
        # planned iterations that never ran)
        self._pending = (out, op.power_w, op.clock, op.capped, op.unmet)
        if single:
            return float(op.seconds[0])
        return op.seconds

    def commit(self, out: Any, ends: Sequence[float], done: int, start: float) -> None:
        pp = self.pool
        e = np.asarray(ends[:done], dtype=np.float64)
        d = np.diff(e, prepend=start)
        pending = self._pending
        if pending is not None and pending[0] is out:
            power, clock = pending[1][:done], pending[2][:done]
            pp.slowed += int(pending[3][:done].sum())
            pp.unmet += int(pending[4][:done].sum())
        else:
            f, b, lk = self._work(out, done)
            power, clock = pp.model.power(d, f, b, lk), 1.0
        self._pending = None
        gpus = self.replica.gpus
        dyn = (power - pp.params.idle_w) * d * gpus
        pp.dynamic_j[self.replica.state] += float(dyn.sum())
        busy = float(d.sum()) * gpus
        pp.busy_gpu_s += busy
        pp.clock_gpu_s += float(np.sum(clock * d)) * gpus
        pp.iterations += done
        if self.energy.series_s:
            self.energy.add_series(e, dyn, _sampled(out, done))


def _sampled(out: Any, done: int) -> np.ndarray:
    """Tokens sampled (output tokens) by each of the first ``done`` iterations."""
    if out.prefill_tokens:
        return np.concatenate(([out.num_sampled], np.full(max(done - 1, 0), out.tail_decodes)))[:done]
    return np.full(done, out.num_sampled)


# Bins summary.json's energy series may hold (two lists of floats, about 4 MB of JSON). A run
# that passes this many bins of energy.series_s stops there with one line naming the key
# (energy.series_s=1e-9 asked numpy for 144 GiB at the end of a 20 s run: internal error).
MAX_SERIES_BINS = 100_000


def series_error(series_s: float, now: float) -> ValueError:
    return ValueError(f"energy.series_s={series_s:g} s cuts the run into more than "
                      f"{MAX_SERIES_BINS:,} bins by {now:,.6g} s of simulated time; set "
                      f"energy.series_s to at least the run's span / {MAX_SERIES_BINS:,} "
                      f"(or 0: no series)")


class Energy:
    """The run's energy accounting (Cluster.energy)."""

    def __init__(self, cluster: Any) -> None:
        sim = cluster.cfg
        self.cfg = sim.energy
        self.pools: dict[str, PoolPower] = {}
        for name, pool in cluster.pools.items():
            try:
                self.pools[name] = pool.power = PoolPower(pool, sim)
            except ValueError as exc:
                from simkv.config.bounds import ConfigError

                raise ConfigError(str(exc)) from None
        self.series_s = self.cfg.series_s
        self.series_j: dict[int, float] = defaultdict(float)
        self.series_tokens: dict[int, float] = defaultdict(float)

    def attach(self, replica: Any) -> InstancePower:
        return InstancePower(self, replica, self.pools[replica.pool.name])

    def add_series(self, ends: np.ndarray, joules: np.ndarray, tokens: np.ndarray) -> None:
        """Each iteration's energy above idle and tokens, in the bin of its end."""
        bins = np.floor(ends / self.series_s).astype(np.int64)
        if bins.size and bins[-1] >= MAX_SERIES_BINS:
            raise series_error(self.series_s, float(ends[-1]))
        # NOTE: a run's ends increase, so its bins come in runs of equal values: one sum each.
        keys, first = np.unique(bins, return_index=True)
        for k, j, n in zip(keys.tolist(), np.add.reduceat(joules, first).tolist(),
                           np.add.reduceat(tokens.astype(np.float64), first).tolist(), strict=True):
            self.series_j[k] += j
            self.series_tokens[k] += n

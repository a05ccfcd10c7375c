"""A GPU's published power parameters, derived from published measurements (docs/ENERGY.md).

Splitwise's simulator assigns its prompt and token phases a power each; ``published_fit``
finds the compute and memory powers (and, from a cap or clock finding, the frequency
exponent or the active power) with which simkv's own work for that setup (the cost model's
operators, simkv/energy/work.py) draws those powers through the same linear equations the
device fit uses (``power_fit.py``).

Why a module of its own: it fits to published targets, not to this project's samples, and
``power_fit`` only needs ``cap_exponent`` from it; ``power_fit`` re-exports the names tests
and docs import from there.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from simkv.energy.params import PowerParams


@dataclass(frozen=True, slots=True)
class PublishedTargets:
    """What a GPU's published parameters are fitted to (docs/ENERGY.md has the sources)."""

    profile: str  # hardware profile of the work counts
    model: str
    tensor_parallel: int
    prompt_tokens: int  # the prompt phase's step
    prompt_w: float
    token_batch: int  # the token phase's step: this many decodes at token_context each
    token_context: int
    token_w: float
    idle_w: float
    active_w: float
    link_w: float
    # Splitwise-HHcap (optional): a per-GPU cap that slows the prompt step by this factor.
    cap_w: float | None = None
    cap_slowdown: float | None = None
    # Towards Greener LLMs (optional): at this clock fraction the token step takes this
    # fraction of its full-clock energy; fits ``active`` (then idle_w + active_w is a start).
    clock: float | None = None
    clock_energy: float | None = None


def phase_work(t: PublishedTargets) -> dict[str, tuple[float, float, float, float]]:
    """(seconds, FLOPs, bytes, link bytes) per GPU of the prompt and token steps."""
    from simkv.energy.work import StepWork
    from simkv.engine.pool import load_model
    from simkv.entities.hardware import load_profile
    from simkv.perf.roofline import CostModel
    from simkv.policies.scheduler.interface import SchedulerOutput

    cost = CostModel(load_model(t.model), load_profile(t.profile), t.tensor_parallel)
    w = StepWork(cost)
    p = t.prompt_tokens
    prompt = SchedulerOutput(num_iterations=1, prefill_tokens=p, prefill_attn_pairs=p * (p + 1) / 2,
                             prefill_kv_tokens=p, num_sampled=1)
    token = SchedulerOutput(num_iterations=1, num_decodes=t.token_batch,
                            decode_context=(t.token_batch * t.token_context,), num_sampled=t.token_batch)
    out = {}
    for name, o in (("prompt", prompt), ("token", token)):
        f, b, lk = w.run(o)
        out[name] = (float(cost.run_times(o)), float(f[0]), float(b[0]), float(lk[0]))
    return out


def published_fit(t: PublishedTargets, base: PowerParams) -> dict[str, float]:
    """compute_w and memory_w such that the prompt and token steps draw the targets; the
    freq_exponent with which the cap slows the prompt step by the target factor; and, with a
    clock target, the active power with which that clock saves the target energy on the
    token step (an outer bisection around the other two)."""
    if t.clock is None or t.clock_energy is None:
        return _fit_at(t, base, t.active_w)
    lo, hi = 0.0, t.prompt_w - t.idle_w - 1.0
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        got = _fit_at(t, base, mid)
        if got["token_clock_energy"] > t.clock_energy:
            lo = mid  # more clock-scaled power saves more
        else:
            hi = mid
    return _fit_at(t, base, 0.5 * (lo + hi))


def cap_exponent(t: PublishedTargets, p: PowerParams) -> float:
    """The freq_exponent with which ``t``'s cap slows its prompt step by ``t.cap_slowdown``,
    the other parameters being ``p``'s (a device fit keeps Splitwise's cap finding)."""
    fixed = replace(t, idle_w=p.idle_w, link_w=p.link_w)
    return _fit_at(fixed, p, p.active_w, (p.compute_w, p.memory_w))["freq_exponent"]


def _fit_at(t: PublishedTargets, base: PowerParams, active: float,
            fixed: tuple[float, float] | None = None) -> dict[str, float]:
    from simkv.energy.model import PowerModel
    from simkv.entities.hardware import load_profile

    hw = load_profile(t.profile)
    work = phase_work(t)
    if fixed is None:
        rows, rhs = [], []
        for name, target in (("prompt", t.prompt_w), ("token", t.token_w)):
            sec, f, b, lk = work[name]
            rows.append([f / hw.bf16_flops / sec, b / hw.hbm_bandwidth / sec])
            rhs.append(target - t.idle_w - active - t.link_w * lk / hw.nvlink_bandwidth / sec)
        compute_w, memory_w = (float(v) for v in np.linalg.solve(np.array(rows), np.array(rhs)))
    else:
        compute_w, memory_w = fixed
    eff = hw.gemm.compute_eff if hw.gemm is not None else hw.eff("gemm_compute").values[-1]

    def model(gamma: float) -> PowerModel:
        p = PowerParams(base.name, t.idle_w, active, compute_w, memory_w, t.link_w,
                        base.tdp_w, base.max_sm_mhz, base.min_sm_mhz, gamma)
        return PowerModel(p, hw.bf16_flops, hw.hbm_bandwidth, hw.nvlink_bandwidth, eff)

    def run(m: PowerModel, name: str, **kw: float) -> tuple[float, float]:
        sec, f, b, lk = work[name]
        op = m.operate(np.array([sec]), np.array([f]), np.array([b]), np.array([lk]), **kw)
        return float(op.seconds[0]), float(op.seconds[0] * op.power_w[0])

    gamma = base.freq_exponent
    if t.cap_w is not None and t.cap_slowdown is not None:
        lo, hi = 1.0, 4.0  # a larger exponent saves more power per clock step: less slowdown
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            if run(model(mid), "prompt", cap_w=t.cap_w)[0] / work["prompt"][0] > t.cap_slowdown:
                lo = mid
            else:
                hi = mid
        gamma = 0.5 * (lo + hi)
    out = {"active_w": active, "compute_w": compute_w, "memory_w": memory_w, "freq_exponent": gamma}
    if t.clock is not None:
        m = model(gamma)
        out["token_clock_energy"] = run(m, "token", clock=t.clock)[1] / run(m, "token")[1]
    return out


# Splitwise's H100 setting (docs/ENERGY.md): the published fit's targets.
SPLITWISE_H100 = PublishedTargets("h100_sxm_80gb", "llama2_70b", 8, 1500, 700.0, 32, 1500, 380.0,
                                  75.0, 60.0, 30.0, cap_w=350.0, cap_slowdown=1.30)

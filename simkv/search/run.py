"""The search: each candidate's capacity by bisection on simulated runs, branch and bound over
candidates in parallel (loky's processes, or Ray through joblib), then the cheapest deployment for a rate.

Capacity (Vidur-Search's question, its config explorer's capacity search): the highest arrival
rate at which one replica of the candidate meets the SLO (``SLOSpec``: quantiles of TTFT and
TPOT over the run's requests, every request served), by bisection between 0 and the roofline
bound (bounds.py) until the bracket is within ``granularity`` of the rate. Candidates are taken
best bound first, ``n_jobs`` at a time; after each round the best capacity per dollar found
prunes every candidate whose bound cannot beat it. The cheapest deployment for
``target_rate``: ceil(rate / capacity) replicas of each searched candidate, the cheapest ones
simulated at that rate (with one replica fewer too), which gives the cost/attainment points of
the Pareto front.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from simkv.command import one_blas_thread_env
from simkv.search.bounds import Bound, Shape, bound, workload_shape
from simkv.search.spec import Candidate, SearchSpec, candidates


@dataclass(slots=True)
class Probe:
    rate: float
    ttft_q: float
    tpot_q: float
    attainment: float
    ok: bool


@dataclass(slots=True)
class Evaluated:
    candidate: Candidate
    bound: Bound
    status: str = "pruned"  # pruned | infeasible | searched
    capacity: float = 0.0
    probes: list[Probe] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # in the process that searched it (joblib workers included)
    pid: int = 0  # that process


def simulate(spec: SearchSpec, overrides: list[str], rate: float) -> Probe:
    """One run at ``rate``; the SLO's quantiles and the share of requests meeting both SLOs."""
    import simkv

    s = spec.slo
    count = ([f"{spec.count_key}={max(spec.min_requests, math.ceil(rate * spec.horizon_s))}"]
             if spec.count_key else [])
    cfg = simkv.compose(["output.plot=false", "output.progress=false", *spec.workload,
                         f"{spec.rate_key}={rate}", *count, *spec.overrides, *overrides,
                         f"slo.ttft_s={s.ttft_s}", f"slo.tpot_s={s.tpot_s}"])
    res = simkv.simulate(cfg)
    req = res.requests
    done = req["status"] == "finished"
    # Requests longer than the model's context are rejected by every deployment (a property
    # of the workload and the model, as Vidur filters its traces to 4,096 tokens): the SLO is
    # on the others, every one of which must be served.
    lost = (req["status"] != "finished") & (req["reject_reason"] != "max_model_len")
    ttft = req.loc[done, "ttft_s"].to_numpy()
    tpot = req.loc[done, "tpot_s"].to_numpy()
    tpot = tpot[~np.isnan(tpot)]
    tq = float(np.quantile(ttft, s.ttft_quantile)) if ttft.size else math.inf
    pq = float(np.quantile(tpot, s.tpot_quantile)) if tpot.size else 0.0
    fits = req["reject_reason"] != "max_model_len"
    met = float((req["slo_met"] & done)[fits].mean()) if fits.any() else 0.0
    ok = not bool(lost.any()) and tq <= s.ttft_s and pq <= s.tpot_s
    return Probe(rate, tq, pq, met, ok)


def capacity(spec: SearchSpec, c: Candidate, b: Bound, shape: Shape) -> Evaluated:
    """The highest rate one replica of ``c`` serves within the SLO, by bisection in (0, bound]:
    the bound itself first (doubled while it is met), then halving the bracket until it is
    within ``granularity`` of its upper end or ``max_probes`` runs were made."""
    t0, cpu0 = time.perf_counter(), time.process_time()
    ev = Evaluated(c, b, "searched")
    over = c.overrides(spec, shape)
    lo, hi = 0.0, b.rate
    # The bound met (a run too short for the queue to build, or a workload the bound does not
    # describe): widen the bracket as Vidur-Search does, doubling until a rate fails.
    while len(ev.probes) < spec.max_probes:
        p = simulate(spec, over, hi)
        ev.probes.append(p)
        if not p.ok:
            break
        lo, hi = hi, 2.0 * hi
    while len(ev.probes) < spec.max_probes and hi - lo > spec.granularity * hi:
        mid = (lo + hi) / 2.0
        p = simulate(spec, over, mid)
        ev.probes.append(p)
        if p.ok:
            lo = mid
        else:
            hi = mid
    ev.capacity = lo
    ev.seconds = time.perf_counter() - t0
    ev.cpu_seconds = time.process_time() - cpu0
    ev.pid = os.getpid()
    return ev


Round = Callable[[list[tuple[Candidate, Bound]], Shape], list[Evaluated]]


@contextlib.contextmanager
def _rounds(spec: SearchSpec) -> Iterator[Round]:
    """What runs a round's candidates, ``n_jobs`` at a time, for the whole search; no worker
    is left when it ends.

    (joblib's loky backend keeps its workers for reuse 300 s after the last round: a search in a
    process of a pool, as experiments/run_all.py --jobs runs them, kept that process from
    exiting until they timed out, 5 minutes of CI's 14. loky's own executor, shut down with
    the search, runs the same function on the same candidates: the same results.)"""
    def here(jobs: list[tuple[Candidate, Bound]], shape: Shape) -> list[Evaluated]:
        return [capacity(spec, c, b, shape) for c, b in jobs]

    if spec.n_jobs == 1:
        yield here
        return
    if spec.backend == "ray":
        try:
            from ray.util.joblib import register_ray
        except ImportError:
            raise ValueError("backend: ray is not installed (pip install 'simkv[ray]'); use "
                             "backend=loky") from None
        from joblib import Parallel, delayed, parallel_backend

        register_ray()

        def on_ray(jobs: list[tuple[Candidate, Bound]], shape: Shape) -> list[Evaluated]:
            if len(jobs) == 1:
                return here(jobs, shape)
            with parallel_backend("ray"):
                return Parallel(n_jobs=spec.n_jobs)(delayed(capacity)(spec, c, b, shape)
                                                    for c, b in jobs)

        yield on_ray
        return
    if multiprocessing.current_process().daemon:  # a daemonic process cannot have children
        warnings.warn(f"n_jobs={spec.n_jobs}: this process is daemonic and cannot start workers; "
                      f"the search runs its candidates one after another here", stacklevel=3)
        yield here
        return
    from joblib.externals.loky import ProcessPoolExecutor

    # One OpenBLAS thread a worker, unless the user chose (as joblib's loky backend set it).
    with ProcessPoolExecutor(max_workers=spec.n_jobs, env=one_blas_thread_env()) as pool:
        def on_pool(jobs: list[tuple[Candidate, Bound]], shape: Shape) -> list[Evaluated]:
            if len(jobs) == 1:
                return here(jobs, shape)
            n = len(jobs)
            return list(pool.map(capacity, [spec] * n, [c for c, _ in jobs],
                                 [b for _, b in jobs], [shape] * n))

        yield on_pool


@dataclass(slots=True)
class SearchResult:
    evaluated: list[Evaluated]
    shape: Shape
    seconds: float
    simulations: int
    deployments: list[dict[str, Any]] = field(default_factory=list)
    cpu_seconds: float = 0.0  # this process and the workers, all of the search

    def best(self) -> Evaluated | None:
        done = [e for e in self.evaluated if e.status == "searched" and e.capacity > 0]
        return min(done, key=lambda e: e.candidate.cost_per_hour / e.capacity) if done else None

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for e in self.evaluated:
            c = e.candidate
            out.append({"candidate": str(c), "gpu": c.gpu, "tp": c.tp, "pp": c.pp,
                        "max_num_seqs": c.seqs, "chunk": c.chunk, "gpus": c.gpus,
                        "cost_per_hour": c.cost_per_hour, "status": e.status,
                        "why": e.bound.why, "bound_rate": e.bound.rate,
                        "bound_batch": e.bound.batch, "capacity": e.capacity,
                        "rate_per_dollar_hour": (e.capacity / c.cost_per_hour
                                                 if e.capacity else 0.0),
                        "probes": len(e.probes), "seconds": e.seconds,
                        "cpu_seconds": e.cpu_seconds})
        return out


def search(spec: SearchSpec, log: Any = None) -> SearchResult:
    """Run the whole search (see the module docstring)."""
    t0, cpu0 = time.perf_counter(), time.process_time()
    count = [f"{spec.count_key}={max(spec.min_requests, 1000)}"] if spec.count_key else []
    shape = workload_shape([*spec.workload, f"{spec.rate_key}=1.0", *count, *spec.overrides])
    found = []
    for c in candidates(spec):
        b = bound(c, spec.model, shape, spec.slo.tpot_s)
        found.append(Evaluated(c, b, "pruned" if b.feasible else "infeasible"))
    live = sorted((e for e in found if e.bound.feasible),
                  key=lambda e: (e.candidate.cost_per_hour / e.bound.rate, str(e.candidate)))
    best = math.inf  # dollars per hour per request/s
    queue = list(live)
    with _rounds(spec) as run_round:
        while queue:
            if spec.prune:
                queue = [e for e in queue if e.candidate.cost_per_hour / e.bound.rate < best]
            round_, queue = queue[:spec.n_jobs], queue[spec.n_jobs:]
            if not round_:
                break
            results = run_round([(e.candidate, e.bound) for e in round_], shape)
            for e, r in zip(round_, results, strict=True):
                e.status, e.capacity, e.probes = r.status, r.capacity, r.probes
                e.seconds, e.cpu_seconds, e.pid = r.seconds, r.cpu_seconds, r.pid
                if r.capacity > 0:
                    best = min(best, e.candidate.cost_per_hour / r.capacity)
                if log is not None:
                    log(f"{e.candidate}: capacity {r.capacity:.3g} req/s (bound "
                        f"{e.bound.rate:.3g}), {len(r.probes)} runs, {r.seconds:.1f} s")
    result = SearchResult(found, shape, 0.0, sum(len(e.probes) for e in found))
    if spec.target_rate > 0:
        result.deployments = deployments(spec, result)
        result.simulations += len(result.deployments)
    result.seconds = time.perf_counter() - t0
    me = os.getpid()
    result.cpu_seconds = (time.process_time() - cpu0
                          + sum(e.cpu_seconds for e in found if e.pid and e.pid != me))
    return result


def deployments(spec: SearchSpec, result: SearchResult) -> list[dict[str, Any]]:
    """The cheapest deployments for ``target_rate`` (and one replica fewer), simulated."""
    rate = spec.target_rate
    options = []
    for e in result.evaluated:
        if e.status == "searched" and e.capacity > 0:
            n = math.ceil(rate / e.capacity)
            options.append((n * e.candidate.cost_per_hour, n, e.candidate))
    options.sort(key=lambda x: (x[0], str(x[2])))
    rows = []
    for _cost, n, c in options[:spec.verify]:
        for replicas in sorted({n, max(1, n - 1)}):
            over = [o for o in c.overrides(spec, result.shape)
                    if not o.startswith("cluster.replicas")]
            over += [f"cluster.replicas={replicas}", "router=least_outstanding"]
            p = simulate(spec, over, rate)
            rows.append({"candidate": str(c), "replicas": replicas,
                         "cost_per_hour": replicas * c.cost_per_hour, "rate": rate,
                         "ttft_q": p.ttft_q, "tpot_q": p.tpot_q, "attainment": p.attainment,
                         "meets_slo": p.ok})
    return rows


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats in both lower cost and higher attainment."""
    keep = []
    for i, (c, a) in enumerate(points):
        if not any((c2 <= c and a2 >= a) and (c2 < c or a2 > a) for c2, a2 in points):
            keep.append(i)
    return keep


def summary(spec: SearchSpec, result: SearchResult) -> dict[str, Any]:
    best = result.best()
    ok = [d for d in result.deployments if d["meets_slo"]]
    cheapest = min(ok, key=lambda d: (d["cost_per_hour"], d["candidate"])) if ok else None
    over = [e for e in result.evaluated if e.status == "searched" and e.capacity > e.bound.rate * 1.0001]
    return {
        "spec": asdict(spec),
        "workload_shape": asdict(result.shape),
        "candidates": len(result.evaluated),
        "infeasible": sum(e.status == "infeasible" for e in result.evaluated),
        "pruned": sum(e.status == "pruned" for e in result.evaluated),
        "searched": sum(e.status == "searched" for e in result.evaluated),
        "simulations": result.simulations,
        "seconds": result.seconds,
        "cpu_seconds": result.cpu_seconds,
        "best_capacity_per_dollar": (
            {"candidate": str(best.candidate), "capacity": best.capacity,
             "cost_per_hour": best.candidate.cost_per_hour,
             "rate_per_dollar_hour": best.capacity / best.candidate.cost_per_hour}
            if best else None),
        "cheapest_deployment": cheapest,
        "bound_violations": [str(e.candidate) for e in over],
    }

"""``simkv-search SPEC.yaml --out DIR``: the cheapest deployment meeting an SLO for a workload.

Writes DIR/candidates.csv (every candidate: bound, status, capacity, runs, seconds),
DIR/deployments.csv (the cheapest deployments for ``target_rate``, simulated),
DIR/search.json (the answer, counts, wall time and the machine's load) and DIR/pareto.png/.pdf
(cost against SLO attainment; capacity per dollar of every candidate searched).
docs/SEARCH.md explains the spec, the pruning and the comparison with Vidur-Search.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from simkv.search.run import SearchResult, pareto, search, summary
from simkv.search.spec import BACKENDS, SearchSpec, load_spec


def figure(result: SearchResult, spec: SearchSpec) -> Any:
    """Left: capacity per dollar of each searched candidate against its roofline bound.
    Right: cost against SLO attainment of the deployments simulated at the target rate, the
    Pareto front joined."""
    from simkv.metrics import style

    fig, (a, b) = style.figure(1, 2, size=(10.0, 4.0))
    rows = pd.DataFrame(result.rows())
    done = rows[rows["status"] == "searched"]
    for gpu, g in done.groupby("gpu"):
        a.scatter(g["bound_rate"] / g["cost_per_hour"], g["rate_per_dollar_hour"], label=str(gpu), s=18)
    if len(done):
        top = float((done["bound_rate"] / done["cost_per_hour"]).max())
        a.plot([0, top], [0, top], color="0.6", lw=0.8, ls="--", label="bound")
    a.set_xlabel("roofline bound (req/s per $/h)")
    a.set_ylabel("simulated capacity (req/s per $/h)")
    a.set_title("candidates searched")
    a.legend(fontsize=7)
    dep = pd.DataFrame(result.deployments)
    if len(dep):
        pts = list(zip(dep["cost_per_hour"], dep["attainment"], strict=True))
        front = sorted(pareto(pts), key=lambda i: pts[i][0])
        b.scatter(dep["cost_per_hour"], dep["attainment"], s=18, color="0.5", label="deployments")
        b.plot([pts[i][0] for i in front], [pts[i][1] for i in front], marker="o", color="C3",
               label="Pareto front")
        b.legend(fontsize=7)
    b.set_xlabel("cost ($/h)")
    b.set_ylabel("requests meeting both SLOs")
    b.set_title(f"deployments at {spec.target_rate:g} req/s" if spec.target_rate else "no target rate")
    return fig


def write(out: Path, spec: SearchSpec, result: SearchResult) -> dict[str, Any]:
    from simkv.metrics import style

    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(result.rows()).to_csv(out / "candidates.csv", index=False, float_format="%.6g")
    pd.DataFrame(result.deployments).to_csv(out / "deployments.csv", index=False,
                                            float_format="%.6g")
    info = summary(spec, result)
    info["machine"] = {"cpus": os.cpu_count(), "load_average": list(os.getloadavg())}
    (out / "search.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    with style.context():
        style.save(figure(result, spec), out / "pareto.png")
    return info


def _main(argv: list[str] | None) -> int:
    ap = argparse.ArgumentParser(prog="simkv-search", description=__doc__.split("\n\n")[0])
    ap.add_argument("spec", type=Path, help="search spec (YAML; docs/SEARCH.md)")
    ap.add_argument("--out", type=Path, required=True, help="folder for the results")
    ap.add_argument("--n-jobs", type=int, default=None, help="parallel candidates (spec: n_jobs)")
    ap.add_argument("--backend", choices=BACKENDS, default=None, help="joblib backend (loky, ray)")
    ap.add_argument("--target-rate", type=float, default=None, help="requests/s to deploy for")
    ap.add_argument("--no-prune", action="store_true", help="search every feasible candidate")
    args = ap.parse_args(argv)
    spec = load_spec(args.spec, n_jobs=args.n_jobs, backend=args.backend,
                     target_rate=args.target_rate, prune=False if args.no_prune else None)
    result = search(spec, log=lambda line: print(line, file=sys.stderr))
    info = write(args.out, spec, result)
    best, cheap = info["best_capacity_per_dollar"], info["cheapest_deployment"]
    print(f"{info['candidates']} candidates: {info['infeasible']} infeasible, {info['pruned']} "
          f"pruned by the roofline bound, {info['searched']} searched in {info['simulations']} "
          f"runs, {info['seconds']:.0f} s")
    if best:
        print(f"best capacity per dollar: {best['candidate']}: {best['capacity']:.3g} req/s at "
              f"${best['cost_per_hour']:.2f}/h")
    if cheap:
        print(f"cheapest deployment for {spec.target_rate:g} req/s: {cheap['replicas']} x "
              f"{cheap['candidate']}: ${cheap['cost_per_hour']:.2f}/h, "
              f"{cheap['attainment']:.1%} of requests within both SLOs")
    print(f"results in {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from simkv.entry import guarded

    return guarded("simkv-search", lambda: _main(argv))

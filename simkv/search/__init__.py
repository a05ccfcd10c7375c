"""``simkv-search``: the cheapest deployment meeting an SLO for a workload (docs/SEARCH.md).

Candidates (GPU kind and price, TP, PP, the scheduler's batch limit and chunk) are bounded by the
roofline before anything runs (bounds.py), searched best bound first with a bisection of the
arrival rate on simulated runs (run.py, in parallel through joblib or Ray), and the cheapest
deployment for a target rate is simulated with its neighbours to draw the cost / SLO attainment
front (cli.py).
"""

from simkv.search.run import SearchResult, search
from simkv.search.spec import Candidate, SearchSpec, load_spec

__all__ = ["Candidate", "SearchResult", "SearchSpec", "load_spec", "search"]

"""Per-window time series of a run: what scaling experiments plot against time.

``window_series(requests, instances, window_s)`` gives, per window of simulated time: the
arrival rate, the GPUs in service and held (from instances.parquet), TTFT p50/p99 and SLO
attainment of the requests *arriving* in the window (so a burst's queueing shows where the
burst is), and output tokens completed per second.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

IN_SERVICE = ("serving", "scaling")


def gpus_over_time(instances: pd.DataFrame, times: np.ndarray, states: tuple[str, ...]
                   ) -> np.ndarray:
    """GPUs of instances in ``states`` at each time (a step function of the rows)."""
    rows = instances.sort_values("time_s", kind="stable")
    delta_t: list[float] = []
    delta_g: list[int] = []
    current: dict[int, int] = {}
    for r in rows.itertuples():
        new = r.gpus if r.to_state in states else 0
        old = current.get(r.instance, 0)
        if new != old:
            delta_t.append(r.time_s)
            delta_g.append(new - old)
            current[r.instance] = new
    if not delta_t:
        return np.zeros(len(times), dtype=np.int64)
    steps = np.cumsum(delta_g)
    idx = np.searchsorted(np.asarray(delta_t), times, side="right") - 1
    return np.where(idx >= 0, steps[np.maximum(idx, 0)], 0)


def window_series(requests: pd.DataFrame, instances: pd.DataFrame, window_s: float = 60.0
                  ) -> pd.DataFrame:
    end = float(np.nanmax([requests["arrival_s"].max(), requests["completion_s"].max()]))
    edges = np.arange(0.0, end + window_s, window_s)
    mid = edges[:-1] + window_s / 2
    arrive = np.clip(np.searchsorted(edges, requests["arrival_s"], side="right") - 1, 0,
                     len(mid) - 1)
    done = requests["status"] == "finished"
    out = pd.DataFrame({"t_s": mid})
    out["arrivals_per_s"] = np.bincount(arrive, minlength=len(mid)) / window_s
    by = pd.DataFrame({"w": arrive, "ttft": requests["ttft_s"].where(done),
                       "met": requests["slo_met"] & done, "done": done})
    g = by.groupby("w")
    out["ttft_p50_s"] = g["ttft"].quantile(0.5).reindex(range(len(mid))).to_numpy()
    out["ttft_p99_s"] = g["ttft"].quantile(0.99).reindex(range(len(mid))).to_numpy()
    n = g.size().reindex(range(len(mid)), fill_value=0).to_numpy()
    met = g["met"].sum().reindex(range(len(mid)), fill_value=0).to_numpy()
    out["slo_attainment"] = np.where(n > 0, met / np.maximum(n, 1), np.nan)
    comp = requests.loc[done, "completion_s"].to_numpy()
    tok = requests.loc[done, "output_tokens"].to_numpy()
    cw = np.clip(np.searchsorted(edges, comp, side="right") - 1, 0, len(mid) - 1)
    out["output_tokens_per_s"] = np.bincount(cw, weights=tok, minlength=len(mid)) / window_s
    out["gpus_serving"] = gpus_over_time(instances, mid, IN_SERVICE)
    out["gpus_held"] = gpus_over_time(instances, mid, ("provisioning", "loading", *IN_SERVICE,
                                                       "draining"))
    return out

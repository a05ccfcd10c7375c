"""GPU-hours and time per state without pandas: bit for bit what the pandas code gave.

metrics/cluster.py computed the spans with a DataFrame and summed them with
``groupby().sum()`` (pandas adds float64 with Kahan's compensated sum, in row order); it now
uses numpy and ``group_sums``, so that a run does not import pandas. The pandas version is
kept here as the reference and both run on random transitions with awkward values.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from simkv.engine.lifecycle import RELEASED, STATES
from simkv.metrics.cluster import gpu_seconds, group_sums, state_seconds

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # inf - inf, in pandas too

AWKWARD = np.array([1e16, 1.0, -1e16, 1e-16, 3.0, 0.1, 0.2, 0.3, -0.0, 0.0, 5e-324, 1e308,
                    1e308, -1e308, 2.0**53, 1.0 + 2.0**-52, 7e-17])


def reference_state_seconds(rows: pd.DataFrame, end_s: float) -> pd.DataFrame:
    """metrics/cluster.state_seconds as it was (pandas), the reference."""
    rows = rows.sort_values(["instance", "time_s"], kind="stable")
    t = rows["time_s"].clip(upper=end_s)
    nxt = rows.groupby("instance")["time_s"].shift(-1).fillna(end_s).clip(upper=end_s)
    seconds = (nxt - t).clip(lower=0.0)
    out = pd.DataFrame({"instance": rows["instance"], "pool": rows["pool"],
                        "state": rows["to_state"], "start_s": t, "seconds": seconds,
                        "gpu_seconds": seconds * rows["gpus"]})
    return out[~out["state"].isin(RELEASED)]


def _bits(x: object) -> list[str]:
    return [float(v).hex() for v in np.atleast_1d(np.asarray(x, np.float64))]


def _transitions(rng: np.random.Generator, n: int, end_s: float) -> pd.DataFrame:
    kind = rng.integers(0, 4, n)
    times = np.where(kind == 0, rng.choice(AWKWARD, n) % (2 * end_s),  # awkward magnitudes
                     np.where(kind == 1, np.round(rng.uniform(0, 1.5 * end_s, n), 1),  # ties
                              rng.uniform(0, 1.5 * end_s, n)))  # beyond the window too
    times[rng.random(n) < 0.02] = np.nan
    return pd.DataFrame({
        "time_s": times,
        "instance": rng.integers(0, max(1, n // 6), n).astype(np.int32),
        "pool": rng.choice(["prefill", "decode", "a100"], n),
        "from_state": rng.choice(["none", *STATES], n),
        "to_state": rng.choice(list(STATES), n),
        "gpus": rng.choice([1, 2, 4, 8, 3], n).astype(np.int32),
    })


@pytest.mark.parametrize("seed", range(6))
def test_spans_gpu_seconds_and_state_seconds_are_pandas_bit_for_bit(seed: int) -> None:
    rng = np.random.default_rng(seed)
    end_s = float(rng.choice([117.37, 3600.0, 1e6 / 3]))
    rows = _transitions(rng, int(rng.integers(1, 400)), end_s)
    want = reference_state_seconds(rows, end_s)
    got = state_seconds({c: rows[c].to_numpy() for c in rows}, end_s)
    for col in want:
        if col in ("pool", "state") or col == "instance":
            assert list(got[col]) == list(want[col])
        else:
            assert _bits(got[col]) == _bits(want[col]), col
    # A DataFrame is taken as it was.
    assert _bits(state_seconds(rows, end_s)["gpu_seconds"]) == _bits(want["gpu_seconds"])
    # GPU-seconds per pool and seconds per state of each pool: groupby().sum() as it was.
    paid = {str(k): float(v) for k, v in want.groupby("pool")["gpu_seconds"].sum().items()}
    mine = gpu_seconds({c: rows[c].to_numpy() for c in rows}, end_s)
    assert list(mine) == list(paid)
    assert _bits(list(mine.values())) == _bits(list(paid.values()))
    for pool in ("prefill", "decode", "a100"):
        ref = want[want["pool"] == pool].groupby("state")["seconds"].sum()
        sel = got["pool"] == pool
        per_state = group_sums(got["state"][sel], got["seconds"][sel])
        assert list(per_state) == list(ref.index)
        assert _bits(list(per_state.values())) == _bits(ref.to_numpy())


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("order", ["shuffled", "sorted", "sorted_with_nan", "missing_keys"])
def test_group_sums_are_groupby_sum(seed: int, order: str) -> None:
    # Both of pandas' ways: rows sorted by key without NaN (numpy's reduceat), the rest (Kahan).
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(1, 3000))
    with np.errstate(over="ignore"):
        values = rng.choice(AWKWARD, n) * rng.choice([1.0, -1.0, 3.7, 1e-3], n)
    plain = rng.random(n) < 0.3
    values[plain] = rng.normal(0, 1e9, int(plain.sum()))
    if seed % 2:
        values[rng.integers(0, n, 3)] = [np.inf, -np.inf, 2.5]
    if seed == 4:
        values[rng.integers(0, n)] = np.inf  # one infinity: the compensation restarts
    keys = rng.choice(["b", "a", "c", "serving", "draining"], n).astype(object)
    if order != "shuffled":
        keys = np.sort(keys)
    if order == "sorted_with_nan":
        values[rng.integers(0, n)] = np.nan
    if order == "missing_keys":
        keys[rng.random(n) < 0.1] = None
    ref = pd.Series(values).groupby(keys).sum()
    mine = group_sums(keys, values)
    assert list(mine) == list(ref.index)
    assert _bits(list(mine.values())) == _bits(ref.to_numpy())


def test_the_compensated_sum_keeps_small_terms() -> None:
    # Rows not sorted by key: pandas adds with Kahan's compensation, which keeps most of the
    # 1.0s a left-to-right sum loses against 1e16 (so the reference is not a plain sum).
    values = np.array([1e16, 7.0, 1.0, 7.0, 1.0, 7.0, 1.0, 7.0, -1e16, 7.0])
    keys = np.array(["p", "q"] * 5, object)
    ref = pd.Series(values).groupby(keys).sum()
    mine = group_sums(keys, values)
    assert mine == {"p": ref["p"], "q": ref["q"]}
    plain = sum(values[::2].tolist())  # 0.0: every 1.0 lost (the exact sum is 3)
    assert abs(mine["p"] - 3.0) < abs(plain - 3.0)

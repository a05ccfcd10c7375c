"""summary.json streamed from requests.parquet: the same numbers as reading it whole.

Percentiles must be numpy.percentile's, bit for bit, however many passes the selection
takes; means within round-off; counts, sums and sessions exact.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import simkv
from simkv.metrics import summary as summary_mod
from simkv.metrics.quantiles import OrderStatistics, keys, ranks_for, value_of
from tests.conftest import small

P = (50, 90, 99)


def _select(x: np.ndarray, collect: int, chunks: int) -> tuple[OrderStatistics, int]:
    o = OrderStatistics(collect=collect)
    parts = np.array_split(x, chunks)
    for part in parts:
        o.feed(part)
    o.choose(ranks_for(o.n, P))
    passes = 1
    while o.more():
        for part in reversed(parts):  # any order, as long as the same values
            o.feed(part)
        o.advance()
        passes += 1
    return o, passes


@pytest.mark.parametrize("kind", ["lognormal", "ties", "constant", "signed", "extremes"])
@pytest.mark.parametrize("collect", [1, 16, 1 << 16])
def test_percentiles_are_numpys_bit_for_bit(kind: str, collect: int) -> None:
    rng = np.random.default_rng(abs(hash(kind)) % 2**32)
    for n in (1, 2, 3, 10, 257, 5000):
        x = {"lognormal": lambda n: rng.lognormal(-3, 1.5, n),
             "ties": lambda n: np.round(rng.lognormal(-3, 1, n), 3),
             "constant": lambda n: np.full(n, 0.0105),
             "signed": lambda n: rng.normal(0, 1, n),
             "extremes": lambda n: rng.choice([5e-324, 1e-300, 1.0, 1e300, 0.0, -0.0], n)}[kind](n)
        o, passes = _select(x, collect, max(1, n // 97))
        got = o.percentiles(P)
        want = np.percentile(x, P)
        assert [got[q] for q in P] == [float(w) for w in want], (kind, n, collect)
        assert o.mean() == pytest.approx(float(x.mean()), rel=1e-12, abs=1e-300)
        if n > collect and kind != "constant":
            assert passes > 1  # the multi-pass path was taken


def test_keys_keep_the_order_of_floats() -> None:
    x = np.array([-np.inf, -1e300, -1.0, -5e-324, 0.0, 5e-324, 1e-300, 1.0, 1e300, np.inf])
    k = keys(x)
    assert (np.diff(k.astype(object)) > 0).all()
    assert [value_of(int(v)) for v in k] == x.tolist()


def _reference(path) -> dict:
    """The old way: the whole table in memory, numpy over each column."""
    t = pd.read_parquet(path)
    done = t[t["status"] == "finished"]
    tpot = done.loc[done["output_tokens"] > 1, "tpot_s"]
    wait = done.loc[done["kv_wait_s"] > 0, "kv_wait_s"]
    out = {col: np.percentile(v.to_numpy(), P).tolist() if len(v) else [None] * 3
           for col, v in (("ttft_s", done["ttft_s"]), ("tpot_s", tpot), ("e2e_s", done["e2e_s"]),
                          ("kv_wait_s", wait))}
    sess = t[t["session"] >= 0]
    if sess.empty:
        return {**out, "jct": None, "sessions": (0, 0), "cached": int(done["cached_tokens"].sum()),
                "rejected": dict(t.loc[t["status"] != "finished", "reject_reason"].value_counts())}
    g = sess.groupby("session")
    ok = g["status"].apply(lambda s: (s == "finished").all())
    last = sess.assign(c=np.where(sess["status"] == "finished", sess["completion_s"], -np.inf)).groupby("session")["c"].max()
    jct = (last - g["arrival_s"].min())[ok]
    out["jct"] = np.percentile(jct.to_numpy(), P).tolist() if len(jct) else None
    out["sessions"] = (len(g), int(ok.sum()))
    out["cached"] = int(done["cached_tokens"].sum())
    out["rejected"] = dict(t.loc[t["status"] != "finished", "reject_reason"].value_counts())
    return out


@pytest.mark.parametrize("overrides", [
    ["workload=poisson", "workload.num_requests=3000", "kv.num_gpu_blocks_override=300"],
    ["workload=sharegpt", "workload.num_conversations=150", "offload=dram", "memory.dram_gib=1"],
])
def test_streamed_summary_equals_the_whole_table(tmp_path, monkeypatch, overrides: list[str]) -> None:
    res = simkv.simulate(small(["output.row_group_size=97", *overrides]), tmp_path / "run")
    path = res.out_dir / "requests.parquet"
    ref = _reference(path)
    # Small selection buffers and small session merges: every multi-pass path is taken.
    monkeypatch.setattr(OrderStatistics.__init__, "__defaults__", (8,))
    monkeypatch.setattr(summary_mod, "BATCH_ROWS", 64)
    s = summary_mod.summarise(path, gpu_hours=1.0, slo={"ttft_s": 2.0, "tpot_s": 0.1}, extra={})
    prefix = s["prefix_cache"]
    for col, got in (("ttft_s", s["ttft_s"]), ("tpot_s", s["tpot_s"]), ("e2e_s", s["e2e_s"]),
                     ("kv_wait_s", prefix["kv_wait_s"])):
        assert [got[f"p{q}"] for q in P] == ref[col], col
    assert prefix["cached_tokens_all"] == ref["cached"]
    assert s["requests"]["rejected_by_reason"] == ref["rejected"]
    if ref["sessions"][0]:
        assert (s["sessions"]["count"], s["sessions"]["complete"]) == ref["sessions"]
        assert [s["sessions"]["jct_s"][f"p{q}"] for q in P] == ref["jct"]
    # And the run's own summary (default buffers, row-group batches) has the same numbers.
    assert res.summary["requests"] == s["requests"]
    for key in ("ttft_s", "tpot_s", "e2e_s"):
        assert {k: v for k, v in res.summary[key].items() if k != "mean"} == \
            {k: v for k, v in s[key].items() if k != "mean"}
        assert res.summary[key]["mean"] == pytest.approx(s[key]["mean"], rel=1e-12)

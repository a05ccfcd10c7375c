"""Every headline of experiments/RESULTS.md is judged by a rule that could fail (issue 20).

Each experiment's ``headline()`` is run on its committed full-size table, and on that table
doctored through the headline's ``lever`` (the measurement its number stands on) so that the
number lands inside the rule's band and far on the wrong side of "no effect": the verdicts
must then be "agrees" (or "direction only" for a claim of direction) and "disagrees". So no
rule is vacuous, no verdict is a literal, and no number is an input the table cannot move.
No simulation runs here: the tables are the committed CSVs (seconds in all).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import suite  # noqa: E402
from verdict import Headline, Lever, Position, Rule, Setting, Swept, Tier, Verdict  # noqa: E402


def _targets(rule: Rule) -> list[tuple[float, Verdict]]:
    """A number the rule must accept (at its best) and one it must reject."""
    if rule.null is None:  # a level: inside the band, or three times the paper's number
        return [(rule.paper, Verdict.AGREES), (3.0 * rule.paper, Verdict.DISAGREES)]  # type: ignore[operator]
    wrong = rule.null * (0.5 if rule.up else 2.0) if rule.null else (-1.0 if rule.up else 1.0)
    if rule.paper is None:
        right = rule.null * (2.0 if rule.up else 0.5) if rule.null else (1.0 if rule.up else -1.0)
        return [(right, Verdict.DIRECTION), (wrong, Verdict.DISAGREES)]
    hi = rule.paper if rule.paper_hi is None else rule.paper_hi
    return [((rule.paper + hi) / 2, Verdict.AGREES), (wrong, Verdict.DISAGREES)]


def doctor(df: pd.DataFrame, lever: Lever, factor: float) -> pd.DataFrame:
    """The table with the lever's cells scaled so the headline's number scales by ``factor``
    (exactly when the number is proportional to the cells' power)."""
    out = df.copy()
    out[lever.column] = out[lever.column].astype(float)
    idx = out.query(lever.rows, engine="python").index
    assert len(idx), f"the lever's rows select nothing: {lever.rows}"
    out.loc[idx, lever.column] = out.loc[idx, lever.column] * factor ** (1.0 / lever.power)
    return out


def doctored_headline(module, df: pd.DataFrame, i: int, h: Headline, target: float) -> Headline:
    """The i-th headline of the table doctored so that its number is ``target``: by the
    lever's proportion when the number is proportional to it, else by bisection on the scale
    factor (a number that is a difference of measurements, say, moves monotonically)."""
    got = None
    if target / h.value > 0 or abs(h.lever.power) == 1:  # a negative factor needs an odd power
        got = module.headline(doctor(df, h.lever, target / h.value))[i]
        if math.isclose(got.value, target, rel_tol=1e-6):
            return got

    def at(log_k: float) -> Headline:
        return module.headline(doctor(df, h.lever, math.exp(log_k) ** h.lever.power))[i]

    lo, hi = math.log(1e-6), math.log(1e6)
    f_lo, f_hi = at(lo).value - target, at(hi).value - target
    assert f_lo * f_hi < 0, (h.claim, "the lever cannot reach", target)
    for _ in range(200):
        mid = (lo + hi) / 2
        g = at(mid)
        if math.isclose(g.value, target, rel_tol=1e-9):
            return g
        if (g.value - target) * f_lo > 0:
            lo, f_lo = mid, g.value - target
        else:
            hi = mid
    return g


@pytest.mark.parametrize("name", suite.EXPERIMENTS)
def test_every_headline_can_agree_and_disagree(name: str) -> None:
    module = suite.load(name)
    csv = suite.RESULTS / f"{name}.csv"
    assert csv.is_file(), f"{name}: no committed {csv.name} (run it at full size)"
    df = pd.read_csv(csv)
    headlines = module.headline(df)
    assert headlines, f"{name}: no headline"
    for i, h in enumerate(headlines):
        assert isinstance(h, Headline), (name, i)
        assert isinstance(h.rule, Rule), (name, i)
        assert h.lever is not None, f"{name}: headline {i} names no lever"
        assert math.isfinite(h.value), (name, i, h.value)
        assert h.value != 0, (name, i)
        for target, expected in _targets(h.rule):
            got = doctored_headline(module, df, i, h, target)
            assert got.rule == h.rule, (name, i)
            assert math.isclose(got.value, target, rel_tol=1e-6), (name, i, got.value, target)
            assert got.verdict is expected, (name, i, target, got.verdict, got.reason())


def test_seed_headlines_have_a_setting_and_sources() -> None:
    for name in suite.EXPERIMENTS:
        df = pd.read_csv(suite.RESULTS / f"{name}.csv")
        for h in suite.load(name).headline(df):
            if h.seed:
                assert h.setting is not None, (name, h.claim)
                assert h.setting.figure, (name, h.claim)
                assert h.setting.paper, (name, h.claim)
                assert "arXiv" in h.paper or "arXiv" in h.setting.figure, (
                    name, h.claim)


def test_rules_positions_verdicts_and_tiers() -> None:
    r = Rule(paper=2.0, tol=0.25)
    assert [r.position(x) for x in (0.9, 1.2, 2.4, 2.6)] == [
        Position.REVERSED, Position.BELOW, Position.WITHIN, Position.ABOVE]
    assert r.verdict(1.2) is Verdict.DIRECTION
    assert r.verdict(0.9) is Verdict.DISAGREES
    lower = Rule(paper=0.5, tol=0.25)  # a claim of a lower number (a ratio below 1)
    assert lower.verdict(0.5) is Verdict.AGREES
    assert lower.verdict(1.1) is Verdict.DISAGREES
    level = Rule(paper=1.0, tol=0.25, null=None)
    assert level.verdict(1.2) is Verdict.AGREES
    assert level.verdict(1.3) is Verdict.DISAGREES
    assert level.verdict(0.7) is Verdict.DISAGREES
    rng = Rule(paper=1.1, paper_hi=2.0, tol=0.25)
    assert rng.verdict(0.9) is Verdict.DISAGREES  # a slowdown never agrees, whatever the width
    assert rng.verdict(2.4) is Verdict.AGREES
    assert rng.verdict(2.6) is Verdict.DIRECTION
    direction = Rule(paper=None, higher=True, min_effect=0.05)
    assert direction.verdict(1.04) is Verdict.DISAGREES
    assert direction.verdict(1.06) is Verdict.DIRECTION
    assert Rule(paper=2.0).verdict(float("nan")) is Verdict.DISAGREES
    with pytest.raises(ValueError, match="direction claim"):
        Rule(paper=None)
    with pytest.raises(ValueError, match="equals the rule's null"):
        Rule(paper=1.0)  # equal to its null: no direction to judge

    matched = Setting("fig", "paper", "simkv", matched=True)
    h = Headline("P", "c", "2x", "2.1x", r, 2.1, matched, seed="P")
    assert h.tier is Tier.REPRODUCED
    assert "within 25%" in h.reason()
    assert Headline("P", "c", "2x", "", r, 2.1, Setting("f", "p", "s", matched=False),
                    seed="P").tier is Tier.DIRECTION
    swept = Headline("P", "c", "2x", "", r, 2.1, matched, seed="P",
                     sweep=(Swept("x", (1.2, 2.2)),))
    assert swept.tier is Tier.DIRECTION
    assert "the assumption decides it" in swept.reason()
    assert Headline("P", "c", "2x", "", r, 0.8, matched, seed="P").tier is Tier.DISAGREES
    demo = Headline("-", "c", "-", "", direction, 1.5)
    assert demo.tier is Tier.DEMO
    assert demo.verdict is Verdict.DIRECTION

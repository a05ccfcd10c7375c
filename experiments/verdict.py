"""Verdicts that could fail: a rule declared before the run, the verdict computed from simkv's
number, and the reproduction tier from the verdict and the provenance of the setting.

Each experiment module declares, as module constants, one :class:`Rule` per headline (the
paper's number on simkv's scale and a two-sided tolerance, or a direction claim), the
:class:`Setting` it reproduces (the paper's figure or table, cited) and the :class:`Param` s it
assumes (each with a source, or named assumed and swept). Its ``headline(df)`` then only
computes simkv's number from the table; the verdict, the reason's wording and the tier follow
from the number by the rules below, so no row can say "agrees" by being told so, and the text
beside a number can never contradict it.

Positions of simkv's number against a rule (the "why" text is selected by the position):

    REVERSED  on the wrong side of "no effect" (the rule's ``null``, 1 for a ratio)
    BELOW     the paper's direction, below the tolerance band
    WITHIN    inside the band: [paper x (1 - tol), paper x (1 + tol)]
    ABOVE     the paper's direction, above the band (a direction claim: the effect holds)

Verdicts: WITHIN agrees; BELOW and ABOVE hold the direction only; REVERSED disagrees. A
direction claim (``paper=None``) cannot agree in magnitude: its best verdict is "direction
only", and an effect smaller than ``min_effect`` disagrees.

Tiers (experiments/RESULTS.md): *reproduced* = agrees, the setting matched as far as the
paper publishes it, every parameter sourced, and still agrees at both ends of every assumed
parameter's swept range; *direction* = the direction holds but not the magnitude, or the
magnitude only for some of the assumed values; *disagrees* = reversed; *demo* = no seed
paper's number to compare (a what-if of simkv's own), kept and labelled.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum


class Position(Enum):
    REVERSED = "reversed"
    BELOW = "below"
    WITHIN = "within"
    ABOVE = "above"


class Verdict(Enum):
    AGREES = "agrees"
    DIRECTION = "direction only"
    DISAGREES = "disagrees"


class Tier(Enum):
    REPRODUCED = "reproduced"
    DIRECTION = "direction"
    DISAGREES = "disagrees"
    DEMO = "demo"


VERDICT_OF = {Position.REVERSED: Verdict.DISAGREES, Position.BELOW: Verdict.DIRECTION,
              Position.WITHIN: Verdict.AGREES, Position.ABOVE: Verdict.DIRECTION}


@dataclass(frozen=True, slots=True)
class Rule:
    """How simkv's number is judged against the paper's, fixed before the run.

    ``paper``: the paper's number on the scale of simkv's (a ratio, mostly); None for a claim
    of direction only. ``tol``: agreement is ``|value / paper - 1| <= tol`` (two-sided).
    ``null``: the value meaning "no effect" (a ratio of 1); None for a claim of a level with
    no direction (a latency that stays flat: outside the band it disagrees). ``higher``: the
    claim's direction (value above null); derived from ``paper`` when it is given.
    ``min_effect``: for a direction claim, the relative distance from null an effect needs to
    count (0.05: 5%).
    """

    paper: float | None
    tol: float = 0.25
    null: float | None = 1.0
    higher: bool | None = None
    min_effect: float = 0.0
    # A range claim ("1.1x to 2x"): agreement is inside [paper, paper_hi], widened by tol.
    paper_hi: float | None = None

    def __post_init__(self) -> None:
        if self.paper is None and (self.higher is None or self.null is None):
            raise ValueError("a direction claim (paper=None) needs higher=True or False and a null")
        if self.paper is not None and self.paper == self.null:
            raise ValueError("the paper's number equals the rule's null: no direction to judge")
        if not 0 < self.tol < 1:
            raise ValueError(f"tol must be in (0, 1), got {self.tol}")
        if self.paper_hi is not None and (self.paper is None or self.paper_hi < self.paper):
            raise ValueError("a range claim needs paper <= paper_hi")

    @property
    def up(self) -> bool:
        """The claim's direction: True when the paper's effect is above ``null``."""
        if self.paper is not None:
            return self.null is None or self.paper > self.null
        return bool(self.higher)

    @property
    def band(self) -> tuple[float, float] | None:
        if self.paper is None:
            return None
        hi = self.paper if self.paper_hi is None else self.paper_hi
        return self.paper * (1 - self.tol), hi * (1 + self.tol)

    def position(self, value: float) -> Position:
        if value is None or math.isnan(value):
            return Position.REVERSED  # no number is no evidence for the claim
        if self.null is None:  # a level, no direction: inside the band or not
            lo, hi = self.band  # type: ignore[misc]
            return Position.WITHIN if lo <= value <= hi else Position.REVERSED
        sign = 1.0 if self.up else -1.0
        null = self.null
        margin = self.min_effect * abs(null) if self.paper is None else 0.0
        if (value - null) * sign <= margin:
            return Position.REVERSED
        band = self.band
        if band is None:
            return Position.ABOVE if self.up else Position.BELOW
        lo, hi = band
        if value < lo:
            return Position.BELOW
        if value > hi:
            return Position.ABOVE
        return Position.WITHIN

    def verdict(self, value: float) -> Verdict:
        return VERDICT_OF[self.position(value)]

    def text(self, unit: str = "x") -> str:
        """The rule in words, as RESULTS.md prints it."""
        op = ">" if self.up else "<"
        if self.null is None:
            lo, hi = self.band  # type: ignore[misc]
            return f"agrees in {fmt_num(lo)}-{fmt_num(hi)}{unit} (±{self.tol:.0%}); otherwise disagrees"
        if self.paper is None:
            need = f"{op} {fmt_num(self.null)}{unit}"
            if self.min_effect:
                need += f" by > {self.min_effect:.0%}"
            return f"direction: {need}; otherwise disagrees"
        lo, hi = self.band  # type: ignore[misc]
        # On the wrong side of no effect it disagrees, whatever the band's width.
        lo, hi = (max(lo, self.null), hi) if self.up else (lo, min(hi, self.null))
        return (f"agrees in {fmt_num(lo)}-{fmt_num(hi)}{unit} (±{self.tol:.0%}); direction only if "
                f"{op} {fmt_num(self.null)}{unit}; otherwise disagrees")


def fmt_num(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"


@dataclass(frozen=True, slots=True)
class Setting:
    """The paper's setting a headline reproduces, cited, beside simkv's.

    ``figure``: the figure or table (or abstract sentence) with its source (arXiv id, repo
    file). ``paper``: the paper's model, GPU, workload and baseline as published (say which
    are not). ``simkv``: the same for simkv's run. ``matched``: simkv runs the paper's
    setting as far as the paper publishes it; ``differs``: what differs and why.
    """

    figure: str
    paper: str
    simkv: str
    matched: bool
    differs: str = ""


@dataclass(frozen=True, slots=True)
class Param:
    """A parameter the result depends on: its value and source (datasheet, paper, repo file,
    a measurement), or ``source=""`` (assumed) with the range it is swept over."""

    name: str
    value: str
    source: str = ""
    swept: str = ""

    @property
    def assumed(self) -> bool:
        return not self.source


@dataclass(frozen=True, slots=True)
class Swept:
    """simkv's number at the ends of an assumed parameter's plausible range."""

    param: str
    values: tuple[float, ...]
    range_text: str = ""


@dataclass(frozen=True, slots=True)
class Lever:
    """The measurement a headline's number stands on: ``value`` is proportional to
    ``column`` (raised to ``power``) on the rows ``rows`` selects (a DataFrame.query
    expression). tests/test_experiment_verdicts.py scales those cells to show the rule can
    both agree and disagree on a doctored table."""

    column: str
    rows: str
    power: float = 1.0


@dataclass
class Headline:
    """One row of RESULTS.md: a paper's claim beside simkv's number, judged by a rule declared
    before the run. Nothing in it says "agrees": the verdict, the tier and the wording of the
    reason are computed from ``value``."""

    paper: str
    claim: str
    paper_value: str
    simkv_value: str
    rule: Rule
    value: float
    setting: Setting | None = None
    params: tuple[Param, ...] = ()
    # The reason's words per position of the number (selected by it), or one text of measured
    # facts that holds wherever the number falls.
    why: Mapping[Position, str] | str = field(default_factory=dict)
    sweep: tuple[Swept, ...] = ()
    lever: Lever | None = None
    seed: str | None = None  # the seed paper (shared/seeds/papers.txt) this reproduces
    decomposition: str = ""  # measured causes of a gap, computed from the table
    unit: str = "x"

    @property
    def position(self) -> Position:
        return self.rule.position(self.value)

    @property
    def verdict(self) -> Verdict:
        return self.rule.verdict(self.value)

    @property
    def agrees(self) -> bool | None:
        """True / None (direction only) / False, as the verdict."""
        return {Verdict.AGREES: True, Verdict.DIRECTION: None, Verdict.DISAGREES: False}[self.verdict]

    @property
    def robust(self) -> bool:
        """The verdict is the same at every swept value of every assumed parameter."""
        v = self.verdict
        return all(self.rule.verdict(x) == v for s in self.sweep for x in s.values)

    @property
    def sweep_range(self) -> tuple[float, float] | None:
        if not any(s.values for s in self.sweep):
            return None
        xs = [x for s in self.sweep for x in s.values if not math.isnan(x)] + [self.value]
        return min(xs), max(xs)

    @property
    def sourced(self) -> bool:
        """Every parameter has a source or is swept."""
        return all(p.source or p.swept for p in self.params)

    @property
    def tier(self) -> Tier:
        if self.seed is None and self.rule.paper is None:
            return Tier.DEMO
        v = self.verdict
        if v is Verdict.DISAGREES:
            return Tier.DISAGREES
        if (v is Verdict.AGREES and self.robust and self.sourced
                and self.setting is not None and self.setting.matched):
            return Tier.REPRODUCED
        return Tier.DIRECTION

    def reason(self) -> str:
        """Why, in words selected by the numbers: where simkv's number lies against the rule,
        what the swept assumptions do to it, then the experiment's text for that position."""
        pos, r = self.position, self.rule
        paper = f"{fmt_num(r.paper)}{self.unit}" if r.paper is not None else ""
        if r.paper_hi is not None:
            paper = f"{fmt_num(r.paper)}-{fmt_num(r.paper_hi)}{self.unit}"
        if pos is Position.REVERSED and r.null is None:
            side = "above" if self.value > r.paper else "below"  # type: ignore[operator]
            head = (f"{side} the band around the paper's {paper} "
                    f"({self.value / r.paper:.2f}x of it)")  # type: ignore[operator]
        elif pos is Position.REVERSED:
            head = (f"reversed: {fmt_num(self.value)}{self.unit} is not "
                    f"{'above' if r.up else 'below'} {fmt_num(r.null)}{self.unit}")
            if r.paper is None and r.min_effect:
                head += f" by more than {r.min_effect:.0%}"
        elif pos is Position.WITHIN:
            head = f"within {r.tol:.0%} of the paper's {paper}"
        elif r.paper is None:
            head = "the direction holds"
        else:
            ref = r.paper_hi if (pos is Position.ABOVE and r.paper_hi is not None) else r.paper
            off = self.value / ref
            head = (f"{'above' if pos is Position.ABOVE else 'below'} the paper's {paper} "
                    f"({off:.2f}x of {fmt_num(ref)}{self.unit})")
        parts = [head]
        rng = self.sweep_range
        if rng is not None:
            names = ", ".join(s.param for s in self.sweep if s.values)
            seen = {r.verdict(x) for s in self.sweep for x in s.values} | {self.verdict}
            kinds = ", ".join(v.value for v in Verdict if v in seen)
            parts.append(f"over the assumed {names}: {fmt_num(rng[0])}-{fmt_num(rng[1])}{self.unit}"
                         + ("" if self.robust else f" ({kinds}: the assumption decides it)"))
        if self.setting is not None and not self.setting.matched and self.setting.differs:
            parts.append(f"setting differs: {self.setting.differs}")
        unsourced = [p.name for p in self.params if not (p.source or p.swept)]
        if unsourced:
            parts.append("unsourced, not swept: " + ", ".join(unsourced))
        text = self.why if isinstance(self.why, str) else self.why.get(pos, "")
        if text:
            parts.append(text)
        if self.decomposition:
            parts.append(f"measured causes: {self.decomposition}")
        return "; ".join(parts)

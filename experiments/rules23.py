"""Two-sided rules of issue 23's experiments, declared as module constants before the run.

A small stand-in with the semantics of issue 20's rule (experiments/verdict.py on rep20's
branch, not on main yet): a paper's number on simkv's scale with a tolerance band, or a
direction claim against a null; simkv's number is then *within* the band (agrees), on the
paper's side but outside it (direction only), or on the wrong side of the null (disagrees).
Switch to verdict.Rule when it lands; the constants keep their meaning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Rule23:
    """``paper``: the paper's number (None: a direction claim); ``tol``: the band
    paper x (1 -/+ tol); ``null``: the value meaning no effect; ``higher``: the claim's side of
    the null (derived from ``paper`` when given); ``paper_hi``: a range claim's upper end."""

    paper: float | None
    tol: float = 0.25
    null: float = 1.0
    higher: bool | None = None
    paper_hi: float | None = None

    @property
    def up(self) -> bool:
        return self.paper > self.null if self.paper is not None else bool(self.higher)

    def verdict(self, value: float) -> bool | None:
        """True (agrees), None (direction only), False (disagrees)."""
        if value is None or math.isnan(value) or (value - self.null) * (1 if self.up else -1) <= 0:
            return False
        if self.paper is None:
            return None
        hi = self.paper if self.paper_hi is None else self.paper_hi
        return True if self.paper * (1 - self.tol) <= value <= hi * (1 + self.tol) else None

    def text(self, unit: str = "x") -> str:
        op = ">" if self.up else "<"
        if self.paper is None:
            return f"direction: {op} {self.null:g}{unit}, else disagrees"
        hi = self.paper if self.paper_hi is None else self.paper_hi
        return (f"agrees in {self.paper * (1 - self.tol):.3g}-{hi * (1 + self.tol):.3g}{unit}; "
                f"direction only if {op} {self.null:g}{unit}; else disagrees")

"""Cost models: how long an iteration takes on given hardware."""

from simkv.perf.roofline import CostModel, OperatorCost

__all__ = ["CostModel", "OperatorCost"]

"""simkv: a trace-driven discrete-event simulator of LLM serving clusters.

    import simkv
    cfg = simkv.compose(["cluster.replicas=4", "router=least_outstanding"])
    result = simkv.simulate(cfg)          # writes to a new temporary folder
    result.requests                       # pandas DataFrame, one row per request
    result.summary["ttft_s"]["p99"]
    simkv.load_results(result.out_dir)    # read a run back
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from simkv import _accel

# Before any module of the hot path loads: its compiled build, or its source where that build
# is missing, stale or switched off (SIMKV_PURE_PYTHON=1; simkv/_accel.py).
_accel.install()

__version__ = "0.1.0"

__all__ = ["SimConfig", "SimResult", "__version__", "compose", "load_results", "simulate"]

if TYPE_CHECKING:
    from simkv.config.schema import SimConfig
    from simkv.results import SimResult, load_results
    from simkv.runner import simulate


def compose(overrides: Any = ()) -> SimConfig:
    """The packaged config with Hydra-style overrides, as typed dataclasses."""
    from simkv.config.store import compose as _compose

    return _compose(overrides)


def __getattr__(name: str) -> Any:
    # Lazy imports keep `import simkv` light (no Hydra, SimPy or pyarrow until used).
    if name == "simulate":
        from simkv.runner import simulate

        return simulate
    if name in ("load_results", "SimResult"):
        from simkv import results

        return getattr(results, name)
    if name == "SimConfig":
        from simkv.config.schema import SimConfig

        return SimConfig
    raise AttributeError(f"module 'simkv' has no attribute {name!r}")

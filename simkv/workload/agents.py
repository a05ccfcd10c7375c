"""Agent programs with tool calls (the Continuum setting), closed loop.

A program is a sequence of LLM calls separated by tool executions. Its first call carries
the system prompt, tool schemas and task; each later call's prompt is the previous context
plus the previous output and the tool's result (a growth drawn per call; with a small
probability the agent resets its context, as summarising agents do). The next call arrives
when the previous completes plus the tool time.

Presets (workloads/swebench.yaml, workloads/bfcl.yaml) carry the fitted numbers and their
sources; docs/WORKLOADS.md compares them with the real trace.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simkv.config.bounds import bounded, check, require
from simkv.registry import register
from simkv.workload.sessions import Call, SessionWorkload


@dataclass(slots=True)
class AgentWorkloadConfig:
    preset: str = "swebench"
    num_programs: int = bounded(100, ge=1)
    # Programs started per second (Poisson).
    program_rate: float = bounded(0.2, gt=0)
    # LLM calls per program ~ Gamma(shape, scale), rounded, clipped to [min, max].
    calls_shape: float = bounded(3.24, gt=0)
    calls_scale: float = bounded(15.4, gt=0)
    calls_min: int = bounded(2, ge=1)
    calls_max: int = bounded(104, ge=1)
    # First prompt ~ lognormal(median, sigma) tokens.
    first_prompt_median: float = bounded(16856.0, ge=1)
    first_prompt_sigma: float = bounded(0.05, ge=0)
    # Context growth per call ~ lognormal(mu, sigma); reset to the first prompt with reset_prob.
    growth_mu: float = bounded(5.99)
    growth_sigma: float = bounded(1.08, ge=0)
    reset_prob: float = bounded(0.064, ge=0, lt=1)
    # Output tokens per call ~ lognormal(mu, sigma).
    output_mu: float = bounded(4.99)
    output_sigma: float = bounded(0.97, ge=0)
    # Tool time before the next call ~ Weibull(shape, scale seconds).
    tool_weibull_shape: float = bounded(0.976, gt=0)
    tool_weibull_scale: float = bounded(9.13, ge=0)
    # Share of calls issued right as the previous one completes (no tool gap).
    tool_zero_prob: float = bounded(0.0, ge=0, le=1)
    max_context: int = bounded(131072, ge=2, le=2**31 - 1)

    def __post_init__(self) -> None:
        check(self, "workload.")

    def validate(self, prefix: str = "workload.") -> None:
        require(self.calls_min <= self.calls_max,
                f"{prefix}calls_min ({self.calls_min}) must be <= {prefix}calls_max "
                f"({self.calls_max})")


@dataclass(slots=True)
class _Program:
    first: int
    left: int


@register("workload", "agent", AgentWorkloadConfig)
class AgentWorkload(SessionWorkload):
    def __init__(self, cfg: AgentWorkloadConfig, **_: object) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_sessions = cfg.num_programs
        self.session_rate = cfg.program_rate
        self.max_context = cfg.max_context

    def _output(self, rng: np.random.Generator) -> int:
        return max(1, round(float(np.exp(self.cfg.output_mu + self.cfg.output_sigma
                                                 * rng.standard_normal()))))

    def start(self, rng: np.random.Generator) -> tuple[Call, _Program]:
        cfg = self.cfg
        calls = int(np.clip(round(rng.gamma(cfg.calls_shape, cfg.calls_scale)), cfg.calls_min,
                            cfg.calls_max))
        first = max(1, round(cfg.first_prompt_median
                                 * float(np.exp(cfg.first_prompt_sigma * rng.standard_normal()))))
        return Call(first, self._output(rng)), _Program(first, calls - 1)

    def follow(self, rng: np.random.Generator, state: _Program, prev: Call
               ) -> tuple[Call, _Program] | None:
        if state.left <= 0:
            return None
        cfg = self.cfg
        shared = None
        if rng.random() < cfg.reset_prob:
            # The agent restarts from its first context (system prompt, tools, task).
            prompt = shared = state.first
        else:
            growth = float(np.exp(cfg.growth_mu + cfg.growth_sigma * rng.standard_normal()))
            prompt = prev.prompt + max(prev.output, round(growth))
        tool = cfg.tool_weibull_scale * float(rng.weibull(cfg.tool_weibull_shape))
        if rng.random() < cfg.tool_zero_prob:
            tool = 0.0
        state.left -= 1
        return Call(prompt, self._output(rng), tool, shared), state

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

from simkv.registry import register
from simkv.workload.sessions import Call, SessionWorkload


@dataclass(slots=True)
class AgentWorkloadConfig:
    preset: str = "swebench"
    num_programs: int = 100
    # Programs started per second (Poisson).
    program_rate: float = 0.2
    # LLM calls per program ~ Gamma(shape, scale), rounded, clipped to [min, max].
    calls_shape: float = 3.24
    calls_scale: float = 15.4
    calls_min: int = 2
    calls_max: int = 104
    # First prompt ~ lognormal(median, sigma) tokens.
    first_prompt_median: float = 16856.0
    first_prompt_sigma: float = 0.05
    # Context growth per call ~ lognormal(mu, sigma); reset to the first prompt with reset_prob.
    growth_mu: float = 5.99
    growth_sigma: float = 1.08
    reset_prob: float = 0.064
    # Output tokens per call ~ lognormal(mu, sigma).
    output_mu: float = 4.99
    output_sigma: float = 0.97
    # Tool time before the next call ~ Weibull(shape, scale seconds).
    tool_weibull_shape: float = 0.976
    tool_weibull_scale: float = 9.13
    # Share of calls issued right as the previous one completes (no tool gap).
    tool_zero_prob: float = 0.0
    max_context: int = 131072

    def __post_init__(self) -> None:
        if self.num_programs < 1 or not self.program_rate > 0:
            raise ValueError("workload: num_programs >= 1 and program_rate > 0 are required")
        if not 1 <= self.calls_min <= self.calls_max:
            raise ValueError("workload: need 1 <= calls_min <= calls_max")
        if not 0 <= self.reset_prob < 1:
            raise ValueError("workload.reset_prob must be in [0, 1)")


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

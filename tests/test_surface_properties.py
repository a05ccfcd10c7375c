"""Invariants over random valid configurations of the living cluster's surfaces (hypothesis):
pools (one, heterogeneous, disaggregated, MoE with expert parallelism), autoscalers (none,
horizontal, vertical, elastic_moe), DistAttention, KV policies, tool-call KV, schedulers,
open- and closed-loop workloads (issue 18).

For every configuration simkv accepts: every request ends finished or rejected with a
reason; every finished request generated exactly the tokens it asked for; no instance runs
an iteration, produces a first token or completes a request outside a serving state; the
summary's GPU-hours are the integral of instances.parquet; and a rerun is byte-identical.
Tiny workloads and a fixed example budget keep it cheap in CI (SIMKV_SURFACE_EXAMPLES raises
it); a wall-clock alarm and a small livelock limit turn a hang into a failure.
"""

from __future__ import annotations

import os
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest.mock import patch

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import simkv
from simkv import registry, runner
from simkv.entities.request import Request, State
from simkv.registry import register
from simkv.workload.base import ArrivalBatch, FollowUp
from tests.helpers import Checker, SeenListWorkload, SeenListWorkloadConfig
from tests.test_cost_accounting import integral_gpu_hours

EXAMPLES = int(os.environ.get("SIMKV_SURFACE_EXAMPLES", 24))
# CI draws the same examples every time (a failure is never by chance); set
# SIMKV_SURFACE_RANDOM=1 to search new ones.
DERANDOMIZE = not os.environ.get("SIMKV_SURFACE_RANDOM")
WALL_S = 120  # per example: a run that hangs (an engine bug) fails instead


@dataclass(slots=True)
class SeenChatConfig:
    """Closed-loop sessions: each completion releases the next call ``gap_s`` later, whose
    prompt repeats the whole context (prompt + output) and adds ``grow`` tokens."""

    start_s: list[float] = field(default_factory=list)
    prompt: int = 400
    output: int = 30
    turns: int = 3
    gap_s: float = 0.0
    grow: int = 200


@register("workload", "test_seen_chat", SeenChatConfig)
class SeenChat:
    def __init__(self, cfg: SeenChatConfig, **_: object) -> None:
        self.cfg = cfg
        self.seen: list[Request] = []

    def expected_requests(self) -> int | None:
        return None

    def arrivals(self, rng: np.random.Generator) -> Iterator[ArrivalBatch]:
        n = len(self.cfg.start_s)
        yield ArrivalBatch(np.asarray(self.cfg.start_s, float), np.full(n, self.cfg.prompt, np.int64),
                           np.full(n, self.cfg.output, np.int64),
                           session=np.arange(n, dtype=np.int64), turn=np.zeros(n, np.int64))

    def on_complete(self, req: Request, now: float) -> list[FollowUp]:
        self.seen.append(req)
        if req.state is State.REJECTED or req.turn + 1 >= self.cfg.turns:
            return []
        context = req.prompt_tokens + req.output_tokens
        return [FollowUp(now + self.cfg.gap_s, context + self.cfg.grow, self.cfg.output,
                         req.session, req.turn + 1, shared_tokens=context)]


class ServingChecker(Checker):
    """Also: an instance runs iterations only while serving, scaling (elastic) or draining."""

    def __call__(self, replica: Any) -> None:
        super().__call__(replica)
        assert replica.state in ("serving", "scaling", "draining"), replica.state


SCALE = ["autoscaler.metric=outstanding", "autoscaler.interval_s=5", "autoscaler.window_s=10",
         "autoscaler.scale_down_stabilization_s=20"]


@st.composite
def surfaces(draw: Any) -> tuple[list[str], Any]:
    """A valid configuration of the new surfaces, and a tiny workload."""
    layout = draw(st.sampled_from(["single", "hetero", "pd", "moe"]))
    ov: list[str] = []
    most = 1  # the most instances one pool may ever hold (DistAttention needs two)
    scaler = "none"
    if layout == "single":
        n = draw(st.integers(1, 3))
        ov.append(f"cluster.replicas={n}")
        most = n
        if draw(st.booleans()):
            top = draw(st.integers(n + 1, 4))
            scaler = "horizontal"
            ov += [f"cluster.max_replicas={top}", "cluster.min_replicas=1"]
            most = top
    elif layout == "hetero":
        h, a = draw(st.integers(1, 2)), draw(st.integers(1, 2))
        ov += ["pools=h100_a100", f"pools.h100.instances={h}", f"pools.a100.instances={a}"]
        most = max(h, a)
        if draw(st.booleans()):
            scaler = "horizontal"
            ov += ["pools.h100.max_instances=3", "pools.a100.max_instances=3"]
            most = 3
    elif layout == "pd":
        p, d = draw(st.integers(1, 2)), draw(st.integers(1, 2))
        ov += ["pools=pd_split", f"pools.prefill.instances={p}", f"pools.decode.instances={d}"]
        most = max(p, d)
        if draw(st.booleans()):
            scaler = "horizontal"
            ov += ["pools.prefill.max_instances=3", "pools.decode.max_instances=3",
                   "pools.decode.min_instances=1"]
            most = 3
        if draw(st.booleans()):
            ov.append("disagg.kv_streaming=true")
    else:
        ov += ["model=qwen3_30b_a3b", "pools=moe_ep"]
        scaler = draw(st.sampled_from(["none", "vertical", "elastic_moe"]))
    if scaler != "none":
        ov += [f"autoscaler={scaler}", *SCALE, f"autoscaler.target={draw(st.integers(2, 8))}"]
    ov.append(f"scheduler={draw(st.sampled_from(['vllm', 'continuum']))}")
    if most >= 2 and draw(st.booleans()):
        ov.append("kv_pool=distattention")
    blocks = draw(st.sampled_from([None, 400, 3000]))
    if blocks is not None:
        ov.append(f"kv.num_gpu_blocks_override={blocks}")
    closed = draw(st.booleans())
    if layout in ("single", "hetero") and not closed and draw(st.booleans()):
        ov += ["kv_policy=h2o", "kv.prefix_caching=false"]
    elif closed:
        ttl = draw(st.sampled_from([None, 0.0, 0.5, 5.0]))
        if ttl is not None:
            ov += ["tool_kv=ttl_pin", f"tool_kv.ttl_s={ttl}"]
    ov.append(f"seed={draw(st.integers(0, 3))}")
    if closed:
        starts = sorted(draw(st.lists(st.floats(0, 40), min_size=1, max_size=6)))
        wl: Any = SeenChatConfig(starts, prompt=draw(st.integers(16, 1500)),
                                 output=draw(st.integers(1, 100)), turns=draw(st.integers(1, 4)),
                                 gap_s=draw(st.sampled_from([0.0, 0.3, 3.0])),
                                 grow=draw(st.integers(0, 600)))
    else:
        reqs = sorted(draw(st.lists(st.tuples(st.floats(0, 60), st.integers(16, 1500),
                                              st.integers(1, 150)), min_size=1, max_size=25)))
        wl = SeenListWorkloadConfig([r[0] for r in reqs], [r[1] for r in reqs],
                                    [r[2] for r in reqs])
    return ov, wl


BASE = ["output.plot=false", "output.progress=false", "engine.livelock_iterations=50000"]


def _alarm(signum: int, frame: object) -> None:
    raise TimeoutError(f"a run took over {WALL_S} s: an engine hang")


def _run(ov: list[str], wl: Any, out: Path) -> tuple[Any, list[Request], ServingChecker]:
    cfg = simkv.compose([*BASE, *ov])
    cfg.workload = wl
    seen: list[Any] = []
    build = registry.build

    def keep(c: Any, **deps: Any) -> Any:
        obj = build(c, **deps)
        if isinstance(obj, SeenListWorkload | SeenChat):
            seen.append(obj)
        return obj

    checker = ServingChecker()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(WALL_S)
    try:
        with patch.object(runner, "build", keep):
            res = simkv.simulate(cfg, out, observer=checker)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return res, seen[0].seen, checker


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGALRM"), reason="needs SIGALRM (POSIX)")
@settings(max_examples=EXAMPLES, deadline=None, derandomize=DERANDOMIZE,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=surfaces())
def test_every_accepted_surface_config_runs_to_a_correct_result(case: tuple[list[str], Any]) -> None:
    ov, wl = case
    if os.environ.get("SIMKV_SURFACE_LOG"):
        print(ov, type(wl).__name__, flush=True)
    with tempfile.TemporaryDirectory() as d:
        a, b = Path(d) / "a", Path(d) / "b"
        res, seen, checker = _run(ov, wl, a)
        df = res.requests
        rows = pd.read_parquet(a / "instances.parquet")
        # Every request ends finished or rejected with a reason, once.
        assert df["request_id"].is_unique
        assert len(df) == len(seen)
        if isinstance(wl, SeenListWorkloadConfig):
            assert len(df) == len(wl.arrival_s)
        assert set(df["status"]) <= {"finished", "rejected"}
        rejected = df[df["status"] == "rejected"]
        assert (rejected["reject_reason"] != "").all()
        assert (df[df["status"] == "finished"]["reject_reason"] == "").all()
        # Tokens generated equal tokens requested.
        for req in seen:
            if req.state is State.FINISHED:
                assert req.generated == req.output_tokens, (req.id, req.generated, req.output_tokens)
        # Nothing left anywhere at the end.
        for replica in checker.replicas.values():
            assert replica.scheduler.num_unfinished() == 0
            assert replica.outstanding_requests == 0
        # No request served outside a serving state: its first token by an instance that was
        # serving (or resizing in place) then, its completion by one not yet stopped.
        ok = df[df["status"] == "finished"]
        serving = rows[rows["to_state"] == "serving"].groupby("instance")["time_s"].min()
        stopped = rows[rows["to_state"] == "stopped"].groupby("instance")["time_s"].min()
        for col, t in (("first_token_replica", "first_token_s"), ("replica", "completion_s")):
            born = serving.reindex(ok[col]).to_numpy()
            assert (ok[t].to_numpy() >= born - 1e-9).all(), col
            assert (ok[t].to_numpy() <= stopped.reindex(ok[col]).fillna(np.inf).to_numpy() + 1e-9).all()
        # GPU-hours are the integral of the instances' transitions.
        s = res.summary
        end = s["cluster"]["window_s"][1]
        assert s["gpu_hours"] == pytest.approx(sum(integral_gpu_hours(rows, end).values()),
                                               rel=1e-9, abs=1e-12)
        # Byte-identical rerun.
        _run(ov, wl, b)
        for name in ("requests.parquet", "instances.parquet", "summary.json"):
            assert (a / name).read_bytes() == (b / name).read_bytes(), name

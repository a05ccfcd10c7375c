"""vLLM v0 without chunked prefill plans a prefill and the decode run after it together
(policies/scheduler/vllm.py's ``_plan_alone_tail``): one plan and one SimPy event fewer per
prefill, and results byte-identical to planning the two apart.

The reference is the same scheduler with ``plans_alone_tail = False``: every result file
must be the same bytes, on runs that exercise what could tell the two apart (memory that
runs dry, short fast-forward limits, a lost instance, energy accounting, disaggregated
decode instances, the iterations table), and the combined plan must actually be taken.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

import simkv
from simkv.config.faults import FaultEvent
from simkv.policies.scheduler.vllm import VLLMScheduler, VLLMSchedulerConfig
from simkv.registry import register


@dataclass
class CountingConfig(VLLMSchedulerConfig):
    pass


@register("scheduler", "test_vllm_counting", CountingConfig)
class Counting(VLLMScheduler):
    """vLLM's scheduler, counting the plans that took the combined form."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.alone = 0
        self.lost = 0

    def _plan_alone_tail(self, out):  # type: ignore[no-untyped-def]
        super()._plan_alone_tail(out)
        if out.prefill_alone:
            self.alone += 1

    def unplan_alone_tail(self, out):  # type: ignore[no-untyped-def]
        super().unplan_alone_tail(out)
        if out.prefill_alone:  # a planned one whose prefill was lost (not one given up)
            self.lost += 1


@dataclass
class StepwiseConfig(VLLMSchedulerConfig):
    pass


@register("scheduler", "test_vllm_stepwise", StepwiseConfig)
class Stepwise(Counting):
    """vLLM's scheduler planning a prefill-only iteration and its decode run apart."""

    plans_alone_tail = False


BASE = ["output.plot=false", "output.progress=false", "output.iterations=true",
        "scheduler.chunked_prefill=false", "workload=poisson", "workload.num_requests=300",
        "workload.rate=30"]

CASES = {
    "roomy": [],
    # A pool that runs dry: preemptions, and decode runs stopped where the blocks end.
    "tight": ["kv.num_gpu_blocks_override=300", "workload.prompt_max=2048",
              "workload.output_max=1024"],
    # Fast-forward limits of a few ticks: tails of 2 and 3, and tails of one (not taken).
    "short_ff": ["engine.max_fast_forward=3"],
    "seats": ["scheduler.max_num_seqs=6", "scheduler.max_num_batched_tokens=2048"],
    "energy": ["energy.enabled=true"],
    "three": ["cluster.replicas=3", "router=least_outstanding"],
    "disaggregated": ["pools=pd_split"],
}

FILES = ("requests.parquet", "iterations.parquet", "instances.parquet")


def _run(tmp: Path, scheduler: str, extra: list[str],
         events: list[FaultEvent] | None = None) -> tuple[Path, list[object]]:
    cfg = simkv.compose([*BASE, f"scheduler={scheduler}", *extra])
    if events is not None:
        cfg.faults.events = events
    seen: list[object] = []
    simkv.simulate(cfg, tmp, observer=lambda r: seen.append(r.scheduler))
    return tmp, seen


def _count(schedulers: list[object], what: str) -> int:
    return sum(getattr(s, what) for s in {id(s): s for s in schedulers}.values())


def _same(a: Path, b: Path) -> None:
    """Every value equal, bit for bit (the files' metadata name the scheduler, so bytes are
    compared as values). iterations.parquet's rows come in the order runs are committed: a
    prefill's row now comes with its decode run's, after other instances' rows."""
    for name in FILES:
        x, y = pd.read_parquet(a / name), pd.read_parquet(b / name)
        if name == "iterations.parquet":
            x, y = (f.sort_values(["replica", "start_s"], kind="stable").reset_index(drop=True)
                    for f in (x, y))
        pd.testing.assert_frame_equal(x, y, check_exact=True)
    sa = json.loads((a / "summary.json").read_text())
    sb = json.loads((b / "summary.json").read_text())
    for key in ("engine", "requests", "latency", "throughput", "cluster"):
        assert sa.get(key) == sb.get(key), key
    # Energy totals are sums over every instance's runs in the order they are committed: a
    # prefill's terms now come with its decode run's, after other instances' runs, so the
    # totals agree to the last bits of a float sum (each run's terms are the same).
    ea, eb = _flat(sa.get("energy")), _flat(sb.get("energy"))
    assert ea.keys() == eb.keys()
    for k, x in ea.items():
        y = eb[k]
        assert (x == pytest.approx(y, rel=1e-12) if isinstance(x, float) else x == y), k


def _flat(tree: object, key: str = "") -> dict[str, object]:
    if isinstance(tree, dict):
        return {k: v for name, sub in tree.items() for k, v in _flat(sub, f"{key}.{name}").items()}
    if isinstance(tree, list):
        return {k: v for i, sub in enumerate(tree) for k, v in _flat(sub, f"{key}[{i}]").items()}
    return {key: tree}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_prefill_planned_with_its_decode_run_gives_the_same_bytes(tmp_path: Path,
                                                                      case: str) -> None:
    extra = CASES[case]
    fast, seen = _run(tmp_path / "together", "test_vllm_counting", extra)
    slow, apart = _run(tmp_path / "apart", "test_vllm_stepwise", extra)
    _same(fast, slow)
    assert _count(seen, "alone") > 0, "the combined plan must be taken in this case"
    assert _count(apart, "alone") == 0


def test_an_instance_lost_in_a_combined_prefill_gives_the_same_bytes(tmp_path: Path) -> None:
    """A GPU lost while a combined plan's prefill is in flight: its early-committed progress
    is undone (unplan_alone_tail), as if the prefill had been planned alone."""
    events = [FaultEvent(time_s=t, kind="gpu", target=0) for t in (2.0, 4.1)]
    extra = ["cluster.replicas=2", "faults.detect_s=1"]
    fast, seen = _run(tmp_path / "together", "test_vllm_counting", extra, events)
    slow, _ = _run(tmp_path / "apart", "test_vllm_stepwise", extra, events)
    _same(fast, slow)
    assert _count(seen, "lost") > 0, "a failure must come during a combined plan's prefill in this case"


def test_the_combined_plan_is_never_taken_where_it_could_differ(tmp_path: Path) -> None:
    """Chunked prefill plans its own tail (_plan_tail); one tick of fast-forward plans step by
    step; neither takes the prefill-alone form."""
    for extra in (["scheduler.chunked_prefill=true"], ["engine.max_fast_forward=1"]):
        _, seen = _run(tmp_path / extra[0], "test_vllm_counting", extra)
        assert _count(seen, "alone") == 0

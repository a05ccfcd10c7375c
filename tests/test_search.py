"""simkv-search: the spec's checks, the candidates, the roofline bound, pruning that never loses
the best candidate, the Pareto front, and the command's outputs."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest
import yaml

from simkv.config.bounds import ConfigError
from simkv.search.bounds import Shape, bound
from simkv.search.cli import main
from simkv.search.run import pareto, search
from simkv.search.spec import Candidate, GPUChoice, SearchSpec, candidates, load_spec

SMALL = {"model": "llama3_2_3b",
         "gpus": [{"profile": "h100_sxm_80gb", "price": 2.69}, {"profile": "a100_80gb", "price": 1.49}],
         "tensor_parallel": [1, 2], "pipeline_parallel": [1], "max_num_seqs": [64],
         "chunk": [1024], "workload": ["workload=poisson", "workload.output_median=100"],
         "horizon_s": 20, "granularity": 0.1, "max_probes": 5, "n_jobs": 1}


def _spec(tmp_path: Path, **over: object) -> Path:
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump({**SMALL, **over}))
    return p


def test_the_space_is_the_product_and_each_candidate_a_replica() -> None:
    spec = SearchSpec()
    cs = candidates(spec)
    # Vidur-Search's dimensions: 2 GPUs x TP 1,2,4,8 x PP 1,2,4 x 3 batch limits x 3 chunks.
    assert len(cs) == 2 * 4 * 3 * 3 * 3
    c = Candidate("a100_80gb", 1.49, 4, 2, 64, 0)
    assert c.gpus == 8
    assert c.cost_per_hour == pytest.approx(8 * 1.49)
    over = c.overrides(spec, Shape(600.0, 200.0, 3000))
    assert "cluster.tensor_parallel=4" in over
    assert "cluster.pipeline_parallel=2" in over
    # Without chunking the budget covers max_model_len: twice the longest, a power of two,
    # within the model's context (Llama-2-70B: 4,096).
    assert "scheduler.max_num_batched_tokens=4096" in over
    assert "model.max_model_len=4096" in over
    small = c.overrides(SearchSpec(model="llama3_8b"), Shape(600.0, 200.0, 3000))
    assert "scheduler.max_num_batched_tokens=8192" in small
    assert "model.max_model_len=8192" in small


def test_the_bound_refuses_what_cannot_serve_and_orders_the_rest() -> None:
    shape = Shape(600.0, 200.0, 3000)
    tiny = bound(Candidate("a100_80gb", 1.49, 1, 1, 64, 1024), "llama2_70b", shape, 0.2)
    assert not tiny.feasible
    assert tiny.why == "does not fit in memory"
    odd = bound(Candidate("a100_80gb", 1.49, 3, 1, 64, 1024), "llama2_70b", shape, 0.2)
    assert not odd.feasible
    assert "divide" in odd.why
    slow = bound(Candidate("a100_80gb", 1.49, 4, 1, 64, 1024), "llama2_70b", shape, 0.001)
    assert not slow.feasible
    assert "TPOT" in slow.why
    tp4 = bound(Candidate("h100_sxm_80gb", 2.69, 4, 1, 64, 1024), "llama2_70b", shape, 0.2)
    tp8 = bound(Candidate("h100_sxm_80gb", 2.69, 8, 1, 64, 1024), "llama2_70b", shape, 0.2)
    assert tp4.feasible
    assert tp8.rate > tp4.rate > 0
    assert tp8.kv_tokens > tp4.kv_tokens


@pytest.mark.slow
def test_pruning_never_loses_the_best_candidate(tmp_path) -> None:
    pruned = search(load_spec(_spec(tmp_path)))
    full = search(load_spec(_spec(tmp_path), prune=False))
    assert pruned.best() is not None
    assert str(pruned.best().candidate) == str(full.best().candidate)
    assert pruned.best().capacity == pytest.approx(full.best().capacity)
    assert pruned.simulations < full.simulations
    # Every searched candidate stayed under its roofline bound here.
    for e in full.evaluated:
        if e.status == "searched":
            assert e.capacity <= e.bound.rate * 1.0001


@pytest.mark.slow
def test_the_command_writes_its_answer_and_front(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    assert main([str(_spec(tmp_path, target_rate=20.0, verify=1)), "--out", str(out)]) == 0
    info = json.loads((out / "search.json").read_text())
    assert info["candidates"] == 4
    assert info["best_capacity_per_dollar"] is not None
    assert info["searched"] + info["pruned"] + info["infeasible"] == 4
    assert (out / "candidates.csv").is_file()
    assert (out / "pareto.png").is_file()
    assert "cheapest deployment for 20 req/s" in capsys.readouterr().out


def test_the_pareto_front() -> None:
    pts = [(1.0, 0.5), (2.0, 0.9), (2.0, 0.8), (3.0, 0.9), (4.0, 1.0)]
    assert pareto(pts) == [0, 1, 4]


@pytest.mark.parametrize(("doc", "message"), [
    ({"chunk": [16]}, "chunk: a chunk of 16 tokens is below max_num_seqs 64; vLLM requires chunk >= max_num_seqs"),
    ({"rate_key": "cluster.replicas"}, "rate_key: expected a workload field (e.g. workload.rate or workload.target_rate), got 'cluster.replicas'"),
    ({"granularity": 0}, "granularity: expected a finite number > 0 and < 1, got 0"),
    ({"gpus": [{"profile": "h100_sxm_80gb", "price": -1}]}, "price: expected a finite number > 0, got -1"),
    ({"tensor_parallel": []}, "tensor_parallel: expected at least one value"),
    ({"backend": "dask"}, "backend: expected one of loky, ray, got 'dask'"),
    ({"nodes": 3}, "nodes: unknown key; valid keys: backend, chunk, count_key, gpus, granularity, horizon_s, max_num_seqs, max_probes, min_requests, model, n_jobs, overrides, pipeline_parallel, prune, rate_key, slo, target_rate, tensor_parallel, verify, workload"),
    ({"count_key": "cluster.replicas"}, "count_key: expected a workload field (e.g. workload.num_requests or workload.limit) or empty, got 'cluster.replicas'"),
])
def test_bad_specs_are_refused_in_one_line(tmp_path, doc: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_spec(_spec(tmp_path, **doc))
    assert str(err.value).endswith(message)


def test_gpu_choice_defaults_have_a_price() -> None:
    assert GPUChoice().price > 0


@pytest.mark.slow
def test_parallel_rounds_give_the_serial_answer_and_leave_no_worker(tmp_path) -> None:
    """n_jobs=2 runs a round's candidates in worker processes: the same evaluations as one
    process, and none of the workers outlives the search (joblib's loky kept them 300 s,
    which held a pool process that ran a search from exiting: experiments/run_all.py --jobs)."""
    serial = search(load_spec(_spec(tmp_path)))
    parallel = search(load_spec(_spec(tmp_path, n_jobs=2)))
    assert multiprocessing.active_children() == []
    keep = ("candidate", "status", "capacity", "probes")
    assert [{k: r[k] for k in keep} for r in parallel.rows()] == \
        [{k: r[k] for k in keep} for r in serial.rows()]
    assert {e.pid for e in parallel.evaluated if e.pid} - {os.getpid()}  # workers did run

"""Sweeps as a user runs them: the joblib launcher (CI), Ray locally (where installed), the
sweep's Parquet dataset and simkv-compare's plots; and `simkv --help`."""

from __future__ import annotations

import hashlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pytest

from simkv.metrics.dataset import gather
from tests.test_cli_and_determinism import simkv_cmd

QUIET = ["output.progress=false", "output.plot=false", "workload=poisson", "workload.num_requests=40"]


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_joblib_sweep_gathers_into_one_dataset(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    p = simkv_cmd("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                  "router=round_robin,least_outstanding", "cluster.replicas=1,2", *QUIET,
                  f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    exe = Path(sys.executable).parent / "simkv-compare"
    c = subprocess.run([str(exe), str(sweep), "--x", "cluster.replicas", "--y", "ttft_s.p99",
                        "--no-plot"], capture_output=True, text=True, timeout=300)
    assert c.returncode == 0, c.stderr
    root = sweep / "dataset"
    # One line each: pandas, pyarrow.
    requests = pd.read_parquet(root / "requests")
    summary = pd.read_parquet(root / "summary")
    assert len(requests) == 4 * 40
    assert sorted(summary["job"].astype(int)) == [0, 1, 2, 3]
    # The swept values are columns, typed as in the config; the job comes from the folders.
    assert requests["cluster.replicas"].dtype.kind == "i"
    per_job = requests.groupby(["job", "router", "cluster.replicas"], observed=True).size()
    assert per_job.tolist() == [40] * 4
    assert set(summary["router"]) == {"round_robin", "least_outstanding"}
    assert (summary["status"] == "ok").all()
    assert summary["requests.finished"].tolist() == [40] * 4
    table = ds.dataset(root / "summary", partitioning="hive").to_table(
        filter=ds.field("cluster.replicas") == 2)
    assert table.num_rows == 2
    # The same sweep gathers into the same files, byte for byte (fixed names, no uuids).
    before = _digest(root)
    assert sorted(before) == sorted(f"{t}/job={j}/part-0.parquet" for t in ("requests", "summary")
                                    for j in range(4))
    gather(sweep)
    assert _digest(root) == before
    for suffix in ("png", "pdf"):
        assert (sweep / f"compare_ttft_s.p99_vs_cluster.replicas.{suffix}").stat().st_size > 0


def test_dataset_of_runs_without_hydra_keeps_failed_jobs_and_union_of_keys(tmp_path: Path) -> None:
    import simkv
    from tests.conftest import small

    simkv.simulate(small(["workload=swebench", "workload.num_programs=2"]), tmp_path / "a")
    simkv.simulate(small(), tmp_path / "b")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "run.json").write_text('{"status": "error", "error": "boom"}')
    root = gather(tmp_path)
    summary = pd.read_parquet(root / "summary").sort_values("job")
    assert summary["status"].tolist() == ["ok", "ok", "error"]
    assert summary["error"].tolist()[2] == "boom"
    # Keys only the session run has are kept (null elsewhere): the union schema.
    assert summary["sessions.jct_s.p90"].notna().tolist() == [True, False, False]
    assert "workload" in summary  # differing config keys stand for swept ones
    assert sorted(pd.read_parquet(root / "requests")["job"].astype(int).unique()) == [0, 1]


def test_duckdb_reads_the_dataset_in_one_line(tmp_path: Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    import simkv
    from tests.conftest import small

    for n in (1, 2):
        simkv.simulate(small([f"cluster.replicas={n}"]), tmp_path / f"r{n}")
    root = gather(tmp_path)
    rows = duckdb.sql(f"select job, count(*) from read_parquet('{root}/requests/*/*.parquet', "
                      "hive_partitioning=true) group by job order by job").fetchall()
    assert rows == [(0, 200), (1, 200)]


@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None,
                    reason="the Ray launcher is an opt-in extra: pip install 'simkv[ray]'")
def test_ray_sweep_runs_locally(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    p = simkv_cmd("-m", "hydra/launcher=ray", "+hydra.launcher.ray.init.num_cpus=2",
                  "+hydra.launcher.ray.init.include_dashboard=false", "cluster.replicas=1,2", *QUIET,
                  f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    summary = pd.read_parquet(gather(sweep) / "summary")
    assert sorted(summary["cluster.replicas"]) == [1, 2]
    assert (summary["status"] == "ok").all()


@pytest.mark.slow
def test_help_says_what_simkv_is_then_groups_examples_and_config(tmp_path: Path) -> None:
    p = simkv_cmd("--help", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert out.startswith("simkv: a trace-driven discrete-event simulator of LLM serving clusters.")
    groups, examples, config = (out.index("== Config groups"), out.index("== Examples =="),
                                out.index("== Config ==\n"))
    assert groups < examples < config
    from simkv.config.store import SINGLE_CHOICE_GROUPS, choices

    for group in SINGLE_CHOICE_GROUPS:
        assert f"\n  {group} " in out[groups:examples], group
        block = re.search(rf"\n  {group} .*?\n((?: {{12,}}.*\n)+)", out[groups:examples])
        assert block is not None, group
        # (tests/helpers.py registers test_* workloads in this process, not in the command's)
        expected = [c for c in choices(group) if not c.startswith("test_")]
        assert block.group(1).replace(",", " ").split() == expected, group
    assert out[examples:config].count("\n  simkv ") == 3
    assert "simkv --cfg job" in out[config:]
    # With overrides, Hydra composes them and prints the resulting config after the help.
    p = simkv_cmd("--help", "seed=3", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "\nseed: 3\n" in p.stdout[p.stdout.index("== Config ==\n"):]


def test_help_and_version_answer_without_hydra() -> None:
    """`simkv --help` alone never imports Hydra, pandas, pyarrow or the runner (it took 4-7 s when
    Hydra composed the config); `--version` is simkv's, not Hydra's."""
    code = ("import sys; sys.argv = ['simkv', '{arg}']; from simkv.command import main; main(); "
            "print(sorted(m for m in ('hydra', 'omegaconf', 'pyarrow', 'pandas', 'simkv.runner') "
            "if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code.format(arg="--help")], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.rstrip().endswith("[]")
    import simkv

    p = subprocess.run([sys.executable, "-c", code.format(arg="--version")], capture_output=True, text=True)
    assert p.stdout.splitlines()[0] == f"simkv {simkv.__version__}"


OPTUNA = importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None


@pytest.mark.slow
@pytest.mark.skipif(OPTUNA, reason="the Optuna sweeper is an extra: pip install '.[optuna]'")
def test_optuna_maximises_goodput_and_its_best_trial_is_the_best_run(tmp_path: Path) -> None:
    """docs/SWEEPS.md's Optuna line: every job returns its goodput and the study maximises it,
    so the trial Optuna calls best is the run with the highest goodput of the sweep."""
    import json

    import yaml

    sweep = tmp_path / "sweep"
    p = simkv_cmd("-m", "hydra/sweeper=optuna", "hydra.sweeper.direction=maximize",
                  "hydra.sweeper.n_trials=4", "hydra.sweeper.sampler.seed=1",
                  "workload.rate=interval(2,40)", *QUIET, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "Directions: ['maximize']" in p.stdout + p.stderr
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    runs = {}
    for job in sweep.glob("*/summary.json"):
        rate = json.loads((job.parent / "config.json").read_text())["workload"]["rate"]
        runs[rate] = json.loads(job.read_text())["goodput"]["requests_per_s"]
    assert len(runs) == 4
    assert len(set(runs.values())) > 1  # the trials differ, so the direction matters
    assert best["best_value"] == max(runs.values())
    assert runs[best["best_params"]["workload.rate"]] == max(runs.values())


@pytest.mark.slow
@pytest.mark.skipif(OPTUNA, reason="the Optuna sweeper is an extra: pip install '.[optuna]'")
def test_optuna_told_to_minimise_goodput_is_refused_before_any_trial(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    p = simkv_cmd("-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=2",
                  "workload.rate=interval(2,40)", *QUIET, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines()[-1] == (
        "simkv: error: hydra.sweeper.direction=minimize: every simkv job returns its goodput "
        "(goodput.requests_per_s, better higher), so Optuna would look for the worst run; add "
        "hydra.sweeper.direction=maximize")
    assert not sweep.exists()

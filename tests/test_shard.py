"""A cluster simulated as shards in several processes (simkv/shard.py) gives one dataset:
with round-robin routing the same rows, value for value, as one process, and the same
summary; with a router that reads load every request exactly once; what cannot be sharded is
refused in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

import simkv
from simkv import shard_stream
from simkv.shard import simulate_sharded

COMMON = ["output.plot=false", "output.progress=false"]


def _flat(d: dict[str, Any], p: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{p}{k}.") if isinstance(v, dict) else {p + k: v})
    return out


@pytest.mark.parametrize(("overrides", "shards", "processes"), [
    # BurstGPT: failed calls rejected before routing, bursts; two processes.
    (["cluster.replicas=6", "workload.num_requests=1200"], 2, 2),
    # Uneven shards (7 instances in 3), small row groups (the merge streams them), a KV pool
    # small enough to preempt, requests longer than the context rejected before routing.
    (["cluster.replicas=7", "workload=poisson", "workload.num_requests=1500", "workload.rate=90",
      "kv.num_gpu_blocks_override=700", "model.max_model_len=1536", "output.row_group_size=256"],
     3, 1),
    # Prefix ids beyond 2^53 (hash chains of granules), carried exactly: each shard draws
    # the stream itself, nothing goes through a file.
    (["cluster.replicas=4", "workload=near_duplicate", "workload.num_requests=60"], 2, 1),
])
def test_round_robin_shards_equal_one_process(overrides: list[str], shards: int, processes: int,
                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Shards run in this process (processes=1) hand their rows to the cluster in pieces of
    # 97 (not 65,536): a chunk's end anywhere changes nothing.
    monkeypatch.setattr(shard_stream, "PIECE", 97)
    cfg = simkv.compose([*overrides, *COMMON])
    one = simkv.simulate(cfg, tmp_path / "one")
    sharded = simulate_sharded(simkv.compose([*overrides, *COMMON]), tmp_path / "sharded",
                               shards=shards, processes=processes)
    a = pq.read_table(tmp_path / "one" / "requests.parquet").sort_by("request_id")
    b = pq.read_table(tmp_path / "sharded" / "requests.parquet").sort_by("request_id")
    assert a.num_rows == b.num_rows == cfg.workload.num_requests
    assert a.schema.names == b.schema.names
    for col in a.column_names:
        np.testing.assert_array_equal(a.column(col).to_numpy(zero_copy_only=False),
                                      b.column(col).to_numpy(zero_copy_only=False), err_msg=col)
    assert sharded.summary["sharding"] == {"shards": shards, "exact": True}
    # The configs differ in `shards` only, so do their hashes.
    assert sharded.config["shards"] == shards
    assert one.config["shards"] == 1
    skip = ("sharding", "config_hash")
    fa, fb = _flat({k: v for k, v in one.summary.items() if k != "config_hash"}), \
        _flat({k: v for k, v in sharded.summary.items() if k not in skip})
    assert fa.keys() == fb.keys()
    # Percentiles, counts, GPU-hours and engine totals are equal; means are sums over rows,
    # whose order may differ (ties), so they are equal to rounding.
    for key, va in fa.items():
        if isinstance(va, float) and key.endswith(".mean"):
            assert fb[key] == pytest.approx(va, rel=1e-12), key
        else:
            assert fb[key] == va, key
    inst_a = pq.read_table(tmp_path / "one" / "instances.parquet").sort_by([("instance", "ascending")])
    inst_b = pq.read_table(tmp_path / "sharded" / "instances.parquet").sort_by([("instance", "ascending")])
    assert inst_a.to_pylist() == inst_b.to_pylist()


def test_a_load_reading_router_is_sharded_approximately_but_keeps_every_request(tmp_path: Path) -> None:
    cfg = simkv.compose(["cluster.replicas=6", "router=power_of_two", "workload.num_requests=900",
                         *COMMON])
    res = simulate_sharded(cfg, tmp_path, shards=2, processes=1)
    t = pq.read_table(tmp_path / "requests.parquet")
    assert sorted(t.column("request_id").to_pylist()) == list(range(900))
    assert res.summary["sharding"] == {"shards": 2, "exact": False}
    replicas = set(t.column("replica").to_pylist()) - {-1}
    assert replicas == set(range(6))  # both shards' instances served, with the cluster's ids


@pytest.mark.parametrize(("overrides", "key"), [
    (["autoscaler=vertical", "cluster.max_tensor_parallel=2"], "autoscaler=vertical"),
    (["speculative=ngram"], "speculative=ngram"),
    (["migration=llumnix"], "migration=llumnix"),
    (["router=session_affinity", "workload=sharegpt", "workload.num_conversations=10"],
     "a closed loop"),
    (["offload=dram"], "offload=dram"),
])
def test_what_cannot_be_sharded_is_refused_in_one_line(overrides: list[str], key: str,
                                                        tmp_path: Path) -> None:
    cfg = simkv.compose([*overrides, "cluster.replicas=4", *COMMON])
    with pytest.raises(ValueError, match="^shards=2: ") as err:
        simulate_sharded(cfg, tmp_path, shards=2, processes=1)
    assert key in str(err.value)
    assert "set shards=1" in str(err.value)
    assert "\n" not in str(err.value)
    # The same config with the key set is refused before the run, by the config's check.
    with pytest.raises(ValueError, match="^shards=2: ") as err2:
        simkv.simulate(simkv.compose([*overrides, "cluster.replicas=4", "shards=2", *COMMON]),
                       tmp_path / "cli")
    assert str(err2.value) == str(err.value)
    assert not (tmp_path / "cli" / "requests.parquet").exists()


def test_the_shards_key_runs_the_sharded_simulation(tmp_path: Path) -> None:
    """`shards=2` on the command line (or in a composed config) is the sharded run: the same
    files as simulate_sharded, the figure drawn from the merged tables; more shards than
    instances, or an observer, is refused in one line naming the key."""
    overrides = ["cluster.replicas=4", "workload.num_requests=300", "output.progress=false"]
    res = simkv.simulate(simkv.compose([*overrides, "shards=2"]), tmp_path / "key")
    simulate_sharded(simkv.compose(overrides), tmp_path / "api", shards=2)
    assert res.summary["sharding"] == {"shards": 2, "exact": True}
    for f in ("requests.parquet", "instances.parquet", "summary.json"):
        assert (tmp_path / "key" / f).read_bytes() == (tmp_path / "api" / f).read_bytes(), f
    assert (tmp_path / "key" / "latency.png").stat().st_size > 0
    with pytest.raises(ValueError, match=r"^shards=5: more shards than the 4 instances of "
                       r"cluster.replicas \(every shard needs one of each pool\); set shards <= 4$"):
        simkv.simulate(simkv.compose([*overrides, "shards=5"]), tmp_path / "five")
    with pytest.raises(ValueError, match="^shards=2: an observer"):
        simkv.simulate(simkv.compose([*overrides, "shards=2"]), tmp_path / "obs",
                       observer=lambda r: None)


def test_sharded_runs_are_deterministic_whatever_the_process_count(tmp_path: Path) -> None:
    """Same config and seed: byte-identical result files, whether the shards ran in two
    processes or one after the other in this one."""
    overrides = ["cluster.replicas=5", "workload.num_requests=700", "output.row_group_size=128",
                 *COMMON]
    for name, processes in (("a", 2), ("b", 1)):
        simulate_sharded(simkv.compose(overrides), tmp_path / name, shards=2, processes=processes)
    for f in ("requests.parquet", "instances.parquet", "summary.json"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    assert not (tmp_path / "a" / ".shards").exists()


def test_shards_in_a_joblib_workers_process_run_one_after_another(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A joblib sweep's worker has the start method "loky", which spawned children cannot find
    (each died at start): the shards then run in this process, to the same files, and
    run.json says why."""
    import json
    import multiprocessing

    overrides = ["cluster.replicas=4", "workload.num_requests=300", *COMMON]
    simulate_sharded(simkv.compose(overrides), tmp_path / "a", shards=2)
    monkeypatch.setattr(multiprocessing, "get_start_method", lambda allow_none=False: "loky")
    simulate_sharded(simkv.compose(overrides), tmp_path / "b", shards=2)
    for f in ("requests.parquet", "instances.parquet", "summary.json"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    assert "'loky'" in json.loads((tmp_path / "b" / "run.json").read_text())["serial_because"]
    assert "serial_because" not in json.loads((tmp_path / "a" / "run.json").read_text())


@pytest.mark.slow
def test_a_joblib_sweep_of_sharded_runs_finishes(tmp_path: Path) -> None:
    """The real case: `simkv -m hydra/launcher=joblib shards=2 ...` (it hung, then was killed,
    with every shard process failing to start)."""
    import json
    import subprocess
    import sys

    exe = Path(sys.executable).with_name("simkv")
    argv = [str(exe)] if exe.exists() else [sys.executable, "-c",
                                            "import sys; from simkv.command import main; sys.exit(main())"]
    p = subprocess.run([*argv, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "shards=2",
                        "cluster.replicas=4", "router=round_robin,power_of_two",
                        "workload.num_requests=300", "output.plot=false", "output.progress=false",
                        f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    jobs = sorted((tmp_path / "sweep").glob("*/requests.parquet"))
    assert len(jobs) == 2
    assert all(f.stat().st_size > 0 for f in jobs)
    assert all("serial_because" in json.loads((f.parent / "run.json").read_text()) for f in jobs)


@pytest.mark.parametrize("instance_routing", [True, False])
def test_shard_streams_partition_the_stream_one_process_draws(
        instance_routing: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each shard draws the whole stream and keeps its rows: together the shards hold every
    request once, value for value, under the whole run's ids; a routed request is on the
    shard of the instance round robin gives it (or every k-th routed request, for other
    routers), a request rejected before routing (failed, or longer than the context) on 0."""
    from simkv.registry import build
    from simkv.shard_stream import ShardStream

    monkeypatch.setattr(shard_stream, "PIECE", 101)
    cfg = simkv.compose(["workload.num_requests=3000", "model.max_model_len=2048"])
    n, k = 7, 3

    def stream() -> Any:
        return build(cfg.workload, granule_tokens=cfg.kv.prefix_block_tokens)

    whole = list(stream().arrivals(np.random.default_rng(11)))
    cols = ("arrival_s", "prompt_tokens", "output_tokens")
    full = {c: np.concatenate([getattr(b, c) for b in whole]) for c in cols}
    failed = np.concatenate([b.failed if b.failed is not None else np.zeros(len(b), bool)
                             for b in whole])
    unrouted = failed | (full["prompt_tokens"] + full["output_tokens"] > 2048)
    assert unrouted.any()
    assert (~unrouted).any()
    j = np.cumsum(~unrouted) - 1
    want = np.where(unrouted, 0, (j % n) % k if instance_routing else j % k)
    seen = np.zeros(len(failed), int)
    for s in range(k):
        part = ShardStream(stream(), instances=n, shards=k, shard=s,
                           instance_routing=instance_routing, max_model_len=2048)
        got = list(part.arrivals(np.random.default_rng(11)))
        assert max(len(b) for b in got) <= 101
        ids = part.ids()
        np.testing.assert_array_equal(ids, np.flatnonzero(want == s))
        for c in cols:
            np.testing.assert_array_equal(np.concatenate([getattr(b, c) for b in got]), full[c][ids])
        seen[ids] += 1
    assert (seen == 1).all()


def test_a_shards_sort_keys_are_written_row_group_by_row_group(tmp_path: Path) -> None:
    """when.npy / gid.npy, streamed to the files a row group at a time: for each row, its
    record time (completion if finished, else arrival) and its id in the whole run."""
    import pyarrow as pa

    from simkv.shard_merge import write_keys

    rng = np.random.default_rng(3)
    n = 10_000
    status = rng.choice(["finished", "rejected", "failed"], n)
    comp, arr = rng.random(n) + 5, rng.random(n)
    rid = rng.permutation(n)
    pq.write_table(pa.table({"status": status, "completion_s": comp, "arrival_s": arr,
                             "request_id": rid}), tmp_path / "r.parquet", row_group_size=777)
    ids = rng.permutation(3 * n)[:n]
    write_keys(tmp_path / "r.parquet", ids, tmp_path)
    np.testing.assert_array_equal(np.load(tmp_path / "when.npy"),
                                  np.where(status == "finished", comp, arr))
    np.testing.assert_array_equal(np.load(tmp_path / "gid.npy"), ids[rid])


def test_one_progress_bar_for_a_sharded_run() -> None:
    """Shard 0 draws the bar (when the run asked for one) with its share of the requests as
    its total: the shards' totals add up to the run's; the others draw none."""
    from simkv.registry import build
    from simkv.shard import _shard_config
    from simkv.shard_stream import ShardStream

    cfg = simkv.compose(["cluster.replicas=7", "workload.num_requests=1001", "output.progress=true"])
    assert [_shard_config(cfg, s, 3).output.progress for s in range(3)] == [True, False, False]
    quiet = simkv.compose(["cluster.replicas=7", "output.progress=false"])
    assert not _shard_config(quiet, 0, 3).output.progress
    totals = [ShardStream(build(cfg.workload), instances=7, shards=3, shard=s,
                          instance_routing=False, max_model_len=4096).expected_requests()
              for s in range(3)]
    assert totals == [334, 334, 333]

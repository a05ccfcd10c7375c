"""The corpus of bad inputs (tests/bad_inputs/): every case gives exactly its one-line message.

Trace files of every reader, and config values of every config group: each must stop before
anything is simulated (or, for a bad row met mid-run, stop there) with the message below,
which names the file and 1-based row and the file's own column, or the config key, what was
found and what was expected. A run that got as far as its folder records the same message
in run.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import simkv
from simkv.config.bounds import ConfigError
from simkv.workload import TraceWorkload, TraceWorkloadConfig
from simkv.workload.readers import TraceError, read

CORPUS = Path(__file__).parent / "bad_inputs"

# (file, format, message after "FILE: ")
TRACES = [
    # native CSV
    ("native_missing_column.csv", "native", "missing column(s) ['output_tokens'] for format 'native'; found ['arrival_s', 'prompt_tokens']"),
    ("native_text_prompt.csv", "native", "row 2, column 'prompt_tokens': expected a number, got 'abc'"),
    ("native_negative_prompt.csv", "native", "row 2, column 'prompt_tokens': expected a whole number >= 1, got -5"),
    ("native_empty_output.csv", "native", "row 2, column 'output_tokens': expected a number, got an empty cell"),
    ("native_time_back.csv", "native", "row 3, column 'arrival_s': expected non-decreasing times, got 3 after 5"),
    ("native_fraction_output.csv", "native", "row 1, column 'output_tokens': expected a whole number >= 1, got 2.5"),
    ("native_zero_output.csv", "native", "row 1, column 'output_tokens': expected a whole number >= 1, got 0"),
    ("native_prompt_over_int32.csv", "native", "row 1, column 'prompt_tokens': expected a whole number >= 1 and <= 2147483647, got 3e+09"),
    ("native_time_1e15.csv", "native", "row 1, column 'arrival_s': expected a time < 4294967296 s (past it float64 cannot resolve a microsecond), got 1e+15"),
    ("native_negative_time.csv", "native", "row 1, column 'arrival_s': expected a time >= 0, got -1"),
    ("native_inf_time.csv", "native", "row 2, column 'arrival_s': expected a finite time, got inf"),
    ("native_nan_prompt.csv", "native", "row 1, column 'prompt_tokens': expected a number, got 'nan'"),
    ("native_header_only.csv", "native", "the trace has no rows (a header only, or an empty file)"),
    ("native_empty.csv", "native", "the trace has no rows (an empty file)"),
    ("native_short_row.csv", "native", "row 2: expected 3 fields as in the header, got 2"),
    ("native_prefix_text.csv", "native", "row 1, column 'prefix_hashes': expected hashes as whole numbers >= 0, got 'x'"),
    ("native_prefix_negative.csv", "native", "row 1, column 'prefix_hashes': expected hashes as whole numbers >= 0, got -3"),
    ("native_failed_maybe.csv", "native", "row 2, column 'failed': expected true/false, yes/no or 1/0, got 'maybe'"),
    ("native_think_negative.csv", "native", "row 1, column 'think_s': expected seconds >= 0, got -1"),
    ("native_session_below.csv", "native", "row 1, column 'session': expected a whole number >= -1, got -2"),
    ("native_turn_fraction.csv", "native", "row 1, column 'turn': expected a whole number >= 0, got 1.5"),
    ("native_not_utf8.csv", "native", "not a text (UTF-8) CSV file: invalid start byte at byte 49"),
    # native Parquet
    ("not_parquet.parquet", "native", "not a readable Parquet file (no Parquet footer: a truncated or partial file, or another format named .parquet)"),
    ("truncated.parquet", "native", "not a readable Parquet file (no Parquet footer: a truncated or partial file, or another format named .parquet)"),
    ("prefix_as_int.parquet", "native", "column 'prefix_hashes': expected lists of hashes (whole numbers >= 0), found int64"),
    ("string_prompt.parquet", "native", "row 1, column 'prompt_tokens': expected a number, got 'abc'"),
    ("bool_prompt.parquet", "native", "column 'prompt_tokens': expected numbers, found bool"),
    ("zero_rows.parquet", "native", "the trace has no rows (a header only, or an empty file)"),
    ("null_arrival.parquet", "native", "row 2, column 'arrival_s': expected a number, got an empty cell"),
    # BurstGPT
    ("burstgpt_missing_columns.csv", "burstgpt", "missing column(s) ['Response tokens', 'Log Type'] for format 'burstgpt'; found ['Timestamp', 'Model', 'Request tokens']"),
    ("burstgpt_text_tokens.csv", "burstgpt", "row 2, column 'Request tokens': expected a number, got 'many'"),
    ("burstgpt_negative_response.csv", "burstgpt", "row 1, column 'Response tokens': expected a whole number >= 0, got -3"),
    ("burstgpt_time_back.csv", "burstgpt", "row 2, column 'Timestamp': expected non-decreasing times, got 45 after 50"),
    ("burstgpt_header_only.csv", "burstgpt", "the trace has no rows (a header only, or an empty file)"),
    # Azure
    ("azure_bad_timestamp.csv", "azure", "row 2, column 'TIMESTAMP': expected a date and time like 2023-11-16 18:17:03.97, got 'yesterday'"),
    ("azure_out_of_order.csv", "azure", "row 2, column 'TIMESTAMP': expected non-decreasing times, got 2023-11-16 18:16:59.67 after 2023-11-16 18:17:03.97"),
    ("azure_zero_context.csv", "azure", "row 1, column 'ContextTokens': expected a whole number >= 1, got 0"),
    ("azure_missing_columns.csv", "azure", "missing column(s) ['GeneratedTokens'] for format 'azure'; found ['TIMESTAMP', 'ContextTokens']"),
    # Mooncake
    ("mooncake_invalid_json.jsonl", "mooncake", "line 2: not valid JSON (Unterminated string starting at, column 18)"),
    ("mooncake_type_change.jsonl", "mooncake", "line 2, field 'input_length': expected a number as on line 1, got a string \"10\""),
    ("mooncake_array_line.jsonl", "mooncake", "line 1: expected a JSON object, got a list"),
    ("mooncake_empty.jsonl", "mooncake", "the trace has no rows (an empty file)"),
    ("mooncake_negative_hash.jsonl", "mooncake", "row 1, column 'hash_ids': expected hashes as whole numbers >= 0, got -2"),
    ("mooncake_zero_input.jsonl", "mooncake", "row 1, column 'input_length': expected a whole number >= 1, got 0"),
    ("mooncake_time_back.jsonl", "mooncake", "row 2, column 'timestamp': expected non-decreasing times, got 3 after 5"),
    ("mooncake_missing_columns.jsonl", "mooncake", "missing column(s) ['output_length'] for format 'mooncake'; found ['timestamp', 'input_length']"),
    # agent spans
    ("agent_end_before_start.jsonl", "agent", "row 1, column 'end_time_s': expected a time >= start_time_s (10), got 5"),
    ("agent_negative_tokens.jsonl", "agent", "row 1, column 'input_tokens': expected a whole number >= 0, got -1"),
    ("agent_missing_columns.jsonl", "agent", "missing column(s) ['end_time_s', 'input_tokens', 'output_tokens'] for format 'agent'; found ['session_id', 'span_index', 'start_time_s']"),
    ("agent_fraction_span.jsonl", "agent", "row 1, column 'span_index': expected a whole number >= 0, got 0.5"),
    # paths
    (".", "native", "is a directory; expected a trace file"),
    ("no_such_file.csv", "native", "trace file not found"),
]


@pytest.mark.parametrize(("name", "fmt", "message"), TRACES, ids=[c[0] for c in TRACES])
def test_bad_trace_gives_its_message(name: str, fmt: str, message: str) -> None:
    path = CORPUS / name
    with pytest.raises(TraceError) as err:
        list(read(path, fmt))
    assert str(err.value) == f"{path}: {message}"


def test_unknown_format_lists_the_choices() -> None:
    with pytest.raises(TraceError) as err:
        list(read(CORPUS / "good.csv", "splitwise"))
    assert str(err.value) == "unknown trace format 'splitwise'; valid choices: native, burstgpt, azure, mooncake, agent, servegen, inference_perf"


def test_servegen_window_of_too_many_requests_is_named(tmp_path) -> None:
    # A rate of 1e9 req/s over a 10 s window asked numpy for 74.5 GiB (an internal error).
    (tmp_path / "chunk-0-trace.csv").write_text("0,1e9,1.0,Gamma,1.0,0.5\n10,0,0,,0,0\n")
    (tmp_path / "chunk-0-dataset.json").write_text(json.dumps(
        {"0": {"input_tokens": "{100: 1.0}", "output_tokens": "{10: 1.0}"}}))
    with pytest.raises(TraceError) as err:
        list(read(tmp_path, "servegen"))
    assert str(err.value) == (f"{tmp_path / 'chunk-0-trace.csv'}: row 1, column 'rate': 1e+09 "
                              f"req/s over its 10 s window is 10,000,000,000 requests; expected "
                              f"at most 10,000,000 per window")


def test_natural_encodings_are_accepted(tmp_path) -> None:
    # Text in Parquet (as a CSV converted by hand would give): 'yes'/'no' and "1 2" / "[1, 3]".
    (c,) = list(read(CORPUS / "text_encodings.parquet"))
    assert c.failed.tolist() == [True, False]
    assert c.prefix == [(1, 2), (1, 3)]
    csv = tmp_path / "t.csv"
    csv.write_text("arrival_s,prompt_tokens,output_tokens,failed,prefix_hashes\n"
                   "0,10,5,YES,\"[4, 5]\"\n1,10,5,0,4;6\n2,10,5,,\n")
    (c,) = list(read(csv))
    assert c.failed.tolist() == [True, False, False]
    assert c.prefix == [(4, 5), (4, 6), None]


# (overrides, message): {corpus} stands for the corpus folder.
CONFIGS = [
    (["cluster.replicas=0"], "cluster.replicas: expected a finite number >= 1, got 0"),
    (["cluster.tensor_parallel=0"], "cluster.tensor_parallel: expected a finite number >= 1, got 0"),
    (["cluster.pipeline_parallel=0"], "cluster.pipeline_parallel: expected a finite number >= 1, got 0"),
    (["cluster.tensor_parallel=3"], "cluster.tensor_parallel: expected a divisor of model.num_heads (32), as vLLM requires, got 3"),
    (["cluster.pipeline_parallel=64"], "cluster.pipeline_parallel: expected at most model.num_layers (32), got 64"),
    (["kv.block_size=0"], "kv.block_size: expected a finite number >= 1, got 0"),
    (["kv.gpu_memory_utilization=1.5"], "kv.gpu_memory_utilization: expected a finite number > 0 and <= 1, got 1.5"),
    (["kv.prefix_block_tokens=0"], "kv.prefix_block_tokens: expected a finite number >= 1, got 0"),
    (["kv.prefix_block_tokens=500"], "kv.prefix_block_tokens (500) must be a multiple of kv.block_size (16)"),
    (["kv.num_gpu_blocks_override=0"], "kv.num_gpu_blocks_override: expected a finite number >= 1, got 0"),
    (["offload=dram", "memory.dram_gib=-1"], "memory.dram_gib: expected a finite number > 0, got -1.0"),
    (["memory.dram_gib=64"], "memory.dram_gib cannot act: offload=none has no dram tier (it has: none)"),
    (["offload=dram", "memory.lower_eviction=mru"], "memory.lower_eviction: unknown eviction 'mru'; valid choices: cost_aware, fifo, lfu, lru"),
    (["memory.lower_eviction=lfu"], "memory.lower_eviction cannot act: offload=none has no tier below HBM"),
    (["offload=ssd", "memory.csd_gib=10"], "memory.csd_gib cannot act: offload=ssd has no csd tier (it has: dram, ssd)"),
    (["engine.iteration_overhead_s=-0.001"], "engine.iteration_overhead_s: expected a finite number >= 0, got -0.001"),
    (["engine.max_fast_forward=0"], "engine.max_fast_forward: expected a finite number >= 1, got 0"),
    (["engine.livelock_iterations=0"], "engine.livelock_iterations: expected a finite number >= 1, got 0"),
    (["engine.per_sequence_overhead_s=nan"], "engine.per_sequence_overhead_s: expected a finite number >= 0, got nan"),
    (["engine.kv_padding_tokens=-16"], "engine.kv_padding_tokens: expected a finite number >= 0, got -16"),
    (["slo.ttft_s=0"], "slo.ttft_s: expected a finite number > 0, got 0.0"),
    (["slo.tpot_s=-1"], "slo.tpot_s: expected a finite number > 0, got -1.0"),
    (["output.row_group_size=0"], "output.row_group_size: expected a finite number >= 1 and <= 2147483647, got 0"),
    (["autoscaler=horizontal", "autoscaler.metric=latency"], "autoscaler.metric: expected one of arrival_rate, outstanding, kv_utilization, slo_attainment, got 'latency'"),
    (["autoscaler=horizontal", "autoscaler.interval_s=0"], "autoscaler.interval_s: expected a finite number > 0, got 0.0"),
    (["pools=h100_a100", "pools.h100.instances=-1"], "pools.h100.instances: expected a finite number >= 0, got -1"),
    (["moe.routing=random"], "moe.routing: expected one of uniform, zipf, file, got 'random'"),
    (["disagg.wire_fraction=2"], "disagg.wire_fraction: expected a finite number > 0 and <= 1, got 2.0"),
    (["seed=-1"], "seed: expected a finite number >= 0, got -1"),
    (["model.num_layers=0"], "model.num_layers: expected a finite number >= 1, got 0"),
    (["model.num_kv_heads=5"], "model.num_heads: model 'llama3_8b': num_heads (32) must be a multiple of num_kv_heads (5)"),
    (["model.max_model_len=1"], "model.max_model_len: expected a finite number >= 2 and <= 2147483647, got 1"),
    (["model.experts_per_token=2"], "model.experts_per_token: model 'llama3_8b': experts_per_token (2) exceeds num_experts (1)"),
    (["scheduler.max_num_seqs=0"], "scheduler.max_num_seqs: expected a finite number >= 1, got 0"),
    (["scheduler.max_num_batched_tokens=16"], "scheduler.max_num_batched_tokens (16) must be >= scheduler.max_num_seqs (256), as vLLM requires"),
    (["scheduler=static", "scheduler.max_batch_size=0"], "scheduler.max_batch_size: expected a finite number >= 1, got 0"),
    (["eviction=lfu", "kv.prefix_caching=false"], "eviction=lfu cannot act with kv.prefix_caching=false: nothing is cached to evict"),
    (["offload=dram", "kv.prefix_caching=false"], "offload=dram cannot act with kv.prefix_caching=false: only cached prefixes move between tiers; use offload=none, or turn the prefix cache on with the vllm scheduler"),
    (["offload=dram", "scheduler=static"], "offload=dram cannot act with scheduler=static (it does not use the prefix cache): only cached prefixes move between tiers; use offload=none, or turn the prefix cache on with the vllm scheduler"),
    (["tool_kv=ttl_pin", "tool_kv.quantile=0"], "tool_kv.quantile: expected a finite number > 0 and <= 1, got 0.0"),
    (["tool_kv=ttl_pin", "tool_kv.min_samples=600"], "tool_kv.min_samples (600) must be <= tool_kv.window (512): the TTL would never be derived from the gaps"),
    (["tool_kv=offload", "tool_kv.tier=nvme", "offload=dram"], "tool_kv.tier: expected one of dram, ssd, csd, got 'nvme'"),
    (["tool_kv=offload", "tool_kv.tier=ssd", "offload=dram"], "tool_kv=offload to 'ssd' needs that tier, which offload=dram does not have (it has: dram); choose e.g. offload=dram or offload=ssd"),
    (["tool_kv=ttl_pin", "scheduler=static"], "tool_kv=ttl_pin cannot act with scheduler=static (it does not use the prefix cache); use tool_kv=drop"),
    (["workload=poisson", "workload.rate=0"], "workload.rate: expected a finite number > 0, got 0.0"),
    (["workload=poisson", "workload.output_max=0"], "workload.output_max: expected a finite number >= 1 and <= 2147483647, got 0"),
    (["workload=poisson", "workload.prompt_sigma=-1"], "workload.prompt_sigma: expected a finite number >= 0, got -1.0"),
    (["workload.volume=replay"], "workload.volume=replay needs workload.volume_path (a BurstGPT burstgpt1_sessions_by_trace_hour_*.csv)"),
    (["workload.model_weights=[1]"], "workload.model_weights: expected one weight per entry of workload.models (2), got 1"),
    (["workload.failure_rate=1"], "workload.failure_rate: expected a finite number >= 0 and < 1, got 1.0"),
    (["workload.volume=hourly"], "workload.volume: expected one of gamma, replay, flat, profile, got 'hourly'"),
    (["workload=agent", "workload.calls_min=5", "workload.calls_max=2"], "workload.calls_min (5) must be <= workload.calls_max (2)"),
    (["workload=agent", "workload.reset_prob=1"], "workload.reset_prob: expected a finite number >= 0 and < 1, got 1.0"),
    (["workload=conversation", "workload.num_conversations=0"], "workload.num_conversations: expected a finite number >= 1, got 0"),
    (["workload=shared_prefix", "workload.block_tokens=256"], "workload.block_tokens (256) must equal kv.prefix_block_tokens (512): the workload's prefix ids stand for blocks of that many tokens"),
    (["workload=trace", "workload.path={corpus}/good.csv", "workload.format=csvish"], "workload.format: expected one of native, burstgpt, azure, mooncake, agent, servegen, inference_perf, got 'csvish'"),
    (["workload=trace", "workload.path={corpus}/good.csv", "workload.on_bad_row=ignore"], "workload.on_bad_row: expected one of error, skip, got 'ignore'"),
    (["workload=trace", "workload.path={corpus}/good.csv", "workload.sample=0"], "workload.sample: expected a finite number > 0 and <= 1, got 0.0"),
    (["workload=trace", "workload.path={corpus}/good.csv", "workload.speedup=0"], "workload.speedup: expected a finite number > 0, got 0.0"),
    (["workload=trace", "workload.path={corpus}/good.csv", "workload.start_s=5", "workload.end_s=1"], "workload.start_s (5.0) must be < workload.end_s (1.0): the window [start_s, end_s) would hold no request"),
    (["workload=trace", "workload.path={corpus}/models.csv", "workload.models=[GPT-5]"], "{corpus}/models.csv: no request is left after the filters (workload.models=['GPT-5']); nothing to simulate"),
    (["workload=trace", "workload.path={corpus}/good.csv", "workload.closed_loop=true"], "{corpus}/good.csv: workload.closed_loop=true needs the columns session and think_s, which this trace does not have"),
    (["workload=trace", "workload.path={corpus}/one_row.csv", "workload.target_rate=10"], "{corpus}/one_row.csv: cannot scale to workload.target_rate: the kept requests (1) span no time"),
    (["workload=trace", "workload.path={corpus}/hashes_512.parquet", "kv.prefix_block_tokens=256"], "{corpus}/hashes_512.parquet: its prefix hashes stand for 512-token blocks, but kv.prefix_block_tokens is 256; set kv.prefix_block_tokens=512 or regenerate the trace"),
    (["workload=trace", "workload.path={corpus}/native_text_prompt.csv"], "{corpus}/native_text_prompt.csv: row 2, column 'prompt_tokens': expected a number, got 'abc'"),
    (["hardware=[a100_80gb,h200]"], "hardware: expected one choice, got the list [a100_80gb,h200]; to run each, sweep: simkv -m hardware=a100_80gb,h200"),
    (["model=[llama3_8b,llama3_70b]"], "model: expected one choice, got the list [llama3_8b,llama3_70b]; to run each, sweep: simkv -m model=llama3_8b,llama3_70b"),
    (["faults.node_mtbf_h=0"], "faults.node_mtbf_h: expected a finite number > 0, got 0.0"),
    (["faults.detect_s=30"], "faults.detect_s cannot act: nothing fails (set faults.*_mtbf_h, faults.events or spot.pools)"),
    (["faults=llama3", "scheduler=static"], "faults: losing instances is not modelled with scheduler=static (it cannot hand running requests back); use the colocated default or turn faults off"),
    (["faults.events=[{time_s:1,kind:node,target:3}]"], "faults.events[0].target: node 3 does not exist (the cluster has one node, 0)"),
    (["spot.pools=[spot]"], "spot.pools cannot act: no preemption comes (set spot.preemptions_per_h, spot.times or a faults.events entry of kind preempt)"),
    (["spot.pools=[spot]", "spot.times=[10]"], "spot.pools: unknown pool 'spot'; the pools are default"),
    (["lora.rank=8"], "lora.rank cannot act: no adapters (set lora.adapters)"),
    (["lora.adapters=-1"], "lora.adapters: expected a finite number >= 0, got -1"),
    (["lora.adapters=4", "scheduler=static"], "lora: adapters need a continuous-batching scheduler (scheduler=static has no running batch to price)"),
    # Issues 18/24, the QA campaign: each ran (or crashed) before it was refused.
    # '' ran the GPU's default power model silently.
    (["energy.enabled=true", "energy.power=''"], "energy.power: expected a power model's name or file, got ''; leave it unset for the GPU's default model"),
    (["energy.enabled=true", "energy.power_path=''"], "energy.power_path: expected a power model's name or file, got ''; leave it unset for the GPU's default model"),
    # A pool named twice doubled its loss rate (its GPUs counted twice).
    (["faults.gpu_mtbf_h=1000", "faults.pools=[default,default]"], "faults.pools: pool 'default' is listed 2 times; name each pool once"),
    (["spot.pools=[default,default]", "spot.times=[10]"], "spot.pools: pool 'default' is listed 2 times; name each pool once"),
    # An internal error (AttributeError) at the first notice.
    (["scheduler=transformers", "spot.pools=[default]", "spot.times=[10]", "spot.on_preempt=migrate"], "spot.on_preempt=migrate moves running requests with their KV, which scheduler=transformers cannot hand over; use spot.on_preempt=finish, or a continuous-batching scheduler (scheduler=vllm)"),
    # No grace, no move: the run equalled on_preempt=finish.
    (["spot.pools=[default]", "spot.times=[3]", "spot.on_preempt=migrate", "spot.grace_s=0"], "spot.on_preempt=migrate cannot act with spot.grace_s=0: the instance is gone before any KV can leave it (the run equals on_preempt=finish); set spot.grace_s > 0, or leave spot.on_preempt unset"),
    # A moved request's adapter was never loaded where it went.
    (["lora.adapters=4", "migration=llumnix"], "lora: moving a request with its adapter (migration=llumnix) is not modelled; set migration=none"),
    # Failure-path settings the losses configured never reach (each ran unread).
    (["spot.pools=[default]", "spot.times=[5]", "faults.detect_s=60"], "faults.detect_s cannot act: only spot notices lose instances, and a notice needs no detection; set a failure (faults.*_mtbf_h, or a faults.events entry of another kind) or leave faults.detect_s unset"),
    (["faults.link_mtbf_h=1", "faults.replace=repair"], "faults.replace cannot act: no failure here takes an instance for good (a link failure reconnects); set a gpu, node or process failure, or leave faults.replace unset"),
    (["spot.pools=[default]", "spot.times=[5]", "faults.replace=none"], "faults.replace cannot act: no failure here takes an instance for good (a spot instance comes back with spot.reacquire_s); set a gpu, node or process failure, or leave faults.replace unset"),
    (["faults.gpu_mtbf_h=1", "faults.on_loss=fail", "faults.max_retries=5"], "faults.max_retries cannot act with faults.on_loss=fail: a request fails at its first loss; set faults.on_loss=resume or restart, or leave faults.max_retries unset"),
    # "max() arg is an empty sequence" mid-run.
    (["autoscaler=energy", "energy.enabled=true", "autoscaler.clocks=[]", "cluster.max_replicas=2"], "autoscaler.clocks: expected at least one SM clock fraction (e.g. [1, 0.8, 0.6]), got []"),
]


def _compose_and_run(overrides: list[str], out: Path) -> None:
    cfg = simkv.compose(["cluster.replicas=1", "output.plot=false", "output.progress=false", *overrides])
    simkv.simulate(cfg, out)


def _quick_sample(cases: list) -> list:
    """One case in four stays in the quick subset (`pytest -m "not slow"`); CI runs all."""
    return [c if i % 4 == 0 else pytest.param(*c, marks=pytest.mark.slow) for i, c in enumerate(cases)]


@pytest.mark.parametrize(("overrides", "message"), _quick_sample(CONFIGS),
                         ids=[" ".join(c[0])[:60] for c in CONFIGS])
def test_bad_config_gives_its_message(tmp_path, overrides: list[str], message: str) -> None:
    overrides = [o.replace("{corpus}", str(CORPUS)) for o in overrides]
    expected = message.replace("{corpus}", str(CORPUS))
    out = tmp_path / "run"
    with pytest.raises((ConfigError, TraceError)) as err:
        _compose_and_run(overrides, out)
    assert str(err.value) == expected
    if (out / "run.json").exists():  # the run got as far as its folder: it says why it failed
        run = json.loads((out / "run.json").read_text())
        assert (run["status"], run["error"]) == ("error", expected)
        assert not (out / "summary.json").exists()


# Issue 18: the living cluster's surfaces, refused before the run with the key (and pool)
# and what would make them valid (simkv/config/surfaces.py; docs/CONFIG.md lists them). Run
# without the cluster.replicas=1 of CONFIGS: pools and cluster.replicas do not combine.
SURFACES = [
    (["pools=pd_split", "pools.decode.instances=0"],
     "pools.decode.instances=0: the pool can never serve: nothing starts an instance (autoscaler=none); set pools.decode.instances >= 1, or an autoscaler with pools.decode.max_instances >= 1"),
    (["pools=pd_split", "pools.prefill.instances=0"],
     "pools.prefill.instances=0: the pool can never serve: nothing starts an instance (autoscaler=none); set pools.prefill.instances >= 1, or an autoscaler with pools.prefill.max_instances >= 1"),
    (["pools=h100_a100", "pools.h100.instances=0", "pools.a100.instances=0"],
     "pools.h100.instances=0: the pool can never serve: nothing starts an instance (autoscaler=none); set pools.h100.instances >= 1, or an autoscaler with pools.h100.max_instances >= 1"),
    (["pools=pd_split", "pools.decode.instances=0", "pools.decode.max_instances=2", "autoscaler=horizontal"],
     "pools.decode.instances=0: a decode pool must start with an instance: requests handed off while none serves wait where no autoscaler metric sees them; set pools.decode.instances >= 1"),
    (["pools=pd_split", "pools.decode.min_instances=0", "pools.decode.max_instances=2", "autoscaler=horizontal"],
     "pools.decode.min_instances=0: a decode pool scaled to zero never comes back (its waiting hand-offs are not an autoscaler metric); set pools.decode.min_instances >= 1"),
    (["kv_pool=distattention", "scheduler=static"],
     "kv_pool=distattention cannot act with scheduler=static: it never asks for more blocks than its own; use scheduler=vllm or continuum, or kv_pool=none"),
    (["kv_pool=distattention", "cluster.replicas=1"],
     "kv_pool=distattention cannot act: an instance borrows only from other instances of its pool, and no pool ever has two (cluster.replicas=1); set cluster.replicas (or pools.<name>.instances) >= 2, or kv_pool=none"),
    (["kv_pool=distattention", "cluster.replicas=2", "kv_pool.lender=oracle"],
     "kv_pool.lender: expected one of greedy, planned, got 'oracle'"),
    (["kv_pool=distattention", "cluster.replicas=2", "engine.max_fast_forward=64"],
     "engine.max_fast_forward=64 cannot act with kv_pool=distattention: its instances run one iteration at a time (their lending changes every iteration); leave engine.max_fast_forward unset"),
    (["memory.peer_hbm=true", "cluster.replicas=1"],
     "memory.peer_hbm cannot act: it reads another instance's HBM, and the cluster has one instance; set cluster.replicas >= 2, or memory.peer_hbm=false"),
    (["cluster.max_replicas=4"],
     "cluster.max_replicas cannot act: no autoscaler scales this pool (autoscaler=none); set an autoscaler (autoscaler=horizontal) or leave cluster.max_replicas unset"),
    (["cluster.min_replicas=1"],
     "cluster.min_replicas cannot act: no autoscaler scales this pool (autoscaler=none); set an autoscaler (autoscaler=horizontal) or leave cluster.min_replicas unset"),
    (["pools=h100_a100", "pools.h100.max_instances=4"],
     "pools.h100.max_instances cannot act: no autoscaler scales this pool (autoscaler=none); set an autoscaler (autoscaler=horizontal) or leave pools.h100.max_instances unset"),
    (["pools=h100_a100", "pools.h100.max_instances=4", "autoscaler=horizontal", "autoscaler.pools=[a100]"],
     "pools.h100.max_instances cannot act: no autoscaler scales this pool (autoscaler.pools (a100) leaves it out); set an autoscaler (autoscaler=horizontal) or leave pools.h100.max_instances unset"),
    (["moe.routing=zipf"],
     "moe.routing cannot act: model llama3_8b is dense (num_experts=1); choose an MoE model (e.g. model=qwen3_30b_a3b) or leave moe.* unset"),
    (["moe.routing=file", "moe.popularity_path={corpus}/moe_popularity_bad.txt"],
     "moe.routing cannot act: model llama3_8b is dense (num_experts=1); choose an MoE model (e.g. model=qwen3_30b_a3b) or leave moe.* unset"),
    (["model=qwen3_30b_a3b", "moe.popularity_path={corpus}/moe_popularity_bad.txt"],
     "moe.popularity_path cannot act with moe.routing=uniform: the file is read only with moe.routing=file"),
    (["model=qwen3_30b_a3b", "moe.zipf_exponent=2"],
     "moe.zipf_exponent cannot act with moe.routing=uniform: set moe.routing=zipf"),
    (["disagg.kv_streaming=true"],
     "disagg.kv_streaming cannot act: no pool has role prefill or decode (pools=pd_split has both); leave disagg.kv_streaming unset"),
    (["disagg.decode_router=round_robin"],
     "disagg.decode_router cannot act: no pool has role prefill or decode (pools=pd_split has both); leave disagg.decode_router unset"),
    (["weights.source=ssd"],
     "weights.source cannot act at weights.gpu_fraction=1 (every weight stays in HBM); set weights.gpu_fraction < 1, or leave weights.source unset"),
    (["weights.overlap=false"],
     "weights.overlap cannot act at weights.gpu_fraction=1 (every weight stays in HBM); set weights.gpu_fraction < 1, or leave weights.overlap unset"),
    (["tool_kv=prefetch", "offload=dram"],
     "tool_kv=prefetch cannot act with workload=burstgpt: its requests have no sessions, so no tool calls; use workload=agent (or a trace with sessions), or tool_kv=drop"),
    # A GPU group's pools are the serverless placer's (the advice was autoscaler=horizontal).
    (["pools=shared_models", "kv.prefix_caching=false"],
     "pools.chat.min_instances cannot act: no autoscaler scales this pool (autoscaler=none); set an autoscaler (autoscaler=serverless) or leave pools.chat.min_instances unset"),
    # Many models: a pool serving only models no request names never served (a typo; a
    # generator whose requests name no model), in runs that exited 0.
    (["pools=two_models", "kv.prefix_caching=false", "pools.chat.serves=[chatgpt]"],
     "pools.chat.serves: no request names model 'chatgpt' (workload.models: ChatGPT, GPT-4); name a model of the workload, or leave pools.chat.serves empty to serve every model"),
    (["pools=two_models", "kv.prefix_caching=false", "workload=poisson"],
     "pools.chat.serves cannot act: workload=poisson's requests name no model, so a pool serving only named models never serves; leave pools.chat.serves empty (every model) or use a workload whose requests name models (workload=burstgpt, or a trace with a model column)"),
    # A tensor-parallel range nothing resizes, and instance bounds under an autoscaler that
    # only resizes: each ran to exit 0 with the setting unread.
    (["cluster.max_tensor_parallel=2"],
     "cluster.max_tensor_parallel cannot act: no autoscaler resizes this pool's tensor-parallel degree (autoscaler=none); set autoscaler=elastic_tp (in place) or vertical (restarts), or leave cluster.max_tensor_parallel unset"),
    (["autoscaler=horizontal", "cluster.max_replicas=3", "cluster.max_tensor_parallel=2"],
     "cluster.max_tensor_parallel cannot act: no autoscaler resizes this pool's tensor-parallel degree (autoscaler=horizontal adds and removes instances); set autoscaler=elastic_tp (in place) or vertical (restarts), or leave cluster.max_tensor_parallel unset"),
    (["pools=h100_a100", "pools.a100.tensor_parallel=2", "pools.a100.min_tensor_parallel=1", "autoscaler=elastic_tp", "pools.h100.max_tensor_parallel=2", "autoscaler.pools=[h100]"],
     "pools.a100.min_tensor_parallel cannot act: no autoscaler resizes this pool's tensor-parallel degree (autoscaler.pools (h100) leaves it out); set autoscaler=elastic_tp (in place) or vertical (restarts), or leave pools.a100.min_tensor_parallel unset"),
    (["autoscaler=vertical", "cluster.max_replicas=3", "cluster.max_tensor_parallel=2"],
     "cluster.max_replicas cannot act: autoscaler=vertical resizes this pool's instances and never adds or removes one; use autoscaler=horizontal, or leave cluster.max_replicas unset"),
]

# ... and refused when the cluster is built, before any request runs (ValueError).
CLUSTER_BUILD = [
    # Without a prefix cache this one ran to exit 0 before, a 3B model decoding 8B KV.
    (["pools=pd_split", "pools.decode.model=llama3_2_3b", "kv.prefix_caching=false"],
     "pools.prefill and pools.decode: disaggregated serving hands every request's KV from a prefill to a decode instance, which needs one KV format; they differ in model llama3_8b vs llama3_2_3b, model.num_layers 32 vs 28: leave pools.decode.model unset, so that every pool runs the run's model (llama3_8b)"),
    (["pools=pd_split", "pools.decode.model=llama3_2_3b"],
     "pools.prefill and pools.decode: disaggregated serving hands every request's KV from a prefill to a decode instance, which needs one KV format; they differ in model llama3_8b vs llama3_2_3b, model.num_layers 32 vs 28: leave pools.decode.model unset, so that every pool runs the run's model (llama3_8b)"),
    (["pools=pd_split", "pools.decode.model=llama3_8b", "model.kv_bytes_per_element=1"],
     "pools.prefill and pools.decode: disaggregated serving hands every request's KV from a prefill to a decode instance, which needs one KV format; they differ in model.kv_bytes_per_element 1 vs 2: leave pools.decode.model unset, so that every pool runs the run's model (llama3_8b)"),
    (["pools=h100_a100", "pools.a100.model=llama3_8b", "model.kv_bytes_per_element=1"],
     "pools.h100 and pools.a100: prefix caching shares KV between the instances of every pool, which needs one KV format; they differ in model.kv_bytes_per_element 1 vs 2: set kv.prefix_caching=false, or leave pools.a100.model unset (every pool then runs the run's model)"),
    (["model=llama3_70b", "pools=h100_a100"],
     "pools.h100: llama3_70b on H100-SXM-80GB with tensor_parallel=1, pipeline_parallel=1 does not fit: per GPU 131.4 GiB of weights + 1.7 GiB of activations leave -61.39 GiB for KV out of 71.7 GiB (90% of 79.6 GiB); raise pools.h100.tensor_parallel or choose a larger GPU"),
    (["model=qwen3_30b_a3b", "pools=moe_ep", "pools.moe.expert_parallel=3"],
     "pools.moe.expert_parallel (3) must be 1 or tensor_parallel x data_parallel_attention (2)"),
    (["pools=h100_a100", "pools.h100.instances=3", "pools.h100.max_instances=2", "autoscaler=horizontal"],
     "pools.h100.instances (3) must lie within pools.h100.min_instances (3) and pools.h100.max_instances (2)"),
    # A pool listed twice was decided twice per tick (its window sampled twice).
    (["autoscaler=horizontal", "autoscaler.pools=[default,default]", "cluster.max_replicas=3"],
     "autoscaler.pools: pool 'default' is listed 2 times; name each pool once"),
    # Limits whose activations or logits fill the memory were told to raise tensor_parallel
    # (and a static batch to lower a token budget it does not have).
    (["scheduler.max_num_batched_tokens=100000000"],
     "llama3_8b on H100-SXM-80GB with tensor_parallel=1, pipeline_parallel=1 does not fit: per GPU 15.0 GiB of weights + 9536.9 GiB of activations leave -9480.14 GiB for KV out of 71.7 GiB (90% of 79.6 GiB); lower scheduler.max_num_batched_tokens (100,000,000 tokens' activations: 9536.7 GiB)"),
    (["scheduler=static", "scheduler.max_batch_size=10000000"],
     "llama3_8b on H100-SXM-80GB with tensor_parallel=1, pipeline_parallel=1 does not fit: per GPU 15.0 GiB of weights + 4778.7 GiB of activations leave -4721.96 GiB for KV out of 71.7 GiB (90% of 79.6 GiB); lower scheduler.max_batch_size (10,000,000 sequences' logits: 4777.9 GiB)"),
]


@pytest.mark.parametrize(("overrides", "message"), SURFACES + CLUSTER_BUILD,
                         ids=[" ".join(c[0])[:60] for c in SURFACES + CLUSTER_BUILD])
def test_refused_surface_gives_its_message(tmp_path, overrides: list[str], message: str) -> None:
    overrides = [o.replace("{corpus}", str(CORPUS)) for o in overrides]
    expected = message.replace("{corpus}", str(CORPUS))
    out = tmp_path / "run"
    cfg = simkv.compose(["output.plot=false", "output.progress=false", *overrides])
    with pytest.raises(ValueError, match=".") as err:
        simkv.simulate(cfg, out)
    assert str(err.value) == expected
    run = json.loads((out / "run.json").read_text())
    assert (run["status"], run["error"]) == ("error", expected)
    assert run.get("requests_recorded", 0) == 0  # refused before any request ran

def test_corpus_covers_every_reader_and_config_group() -> None:
    assert len(TRACES) + len(CONFIGS) >= 60
    assert {fmt for _, fmt, _ in TRACES} == {"native", "burstgpt", "azure", "mooncake", "agent"}
    groups = {o.split("=")[0].split(".")[0].lstrip("+") for overrides, _ in CONFIGS for o in overrides}
    assert {"cluster", "kv", "memory", "engine", "slo", "output", "seed", "model", "scheduler",
            "eviction", "offload", "tool_kv", "workload", "hardware", "autoscaler", "pools", "moe",
            "disagg"} <= groups


# --- on_bad_row=skip: every bad row dropped and counted ----------------------------------------------
def test_skip_drops_every_bad_row_of_every_kind(tmp_path, monkeypatch) -> None:
    from simkv.workload import readers

    # Two of each kind of bad row, in one batch and across batches (small CSV blocks): none
    # may be served, and each is counted once.
    monkeypatch.setattr(readers, "CSV_BLOCK_BYTES", 256)
    rows = ["Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type"]
    good_times = []
    t = 0.0
    for i in range(60):
        t += 1.0
        kind = i % 6
        if kind == 1:
            rows.append(f"{t},ChatGPT,-200,10,0,API log")  # negative prompt
        elif kind == 2:
            rows.append(f"{t},ChatGPT,,10,0,API log")  # empty cell (NaN)
        elif kind == 3:
            rows.append(f"{t - 40},ChatGPT,100,10,0,API log")  # 40 s in the past
        elif kind == 4:
            rows.append(f"{t},ChatGPT,1.5,10,0,API log")  # fraction
        else:
            rows.append(f"{t},ChatGPT,100,10,0,API log")
            good_times.append(t)
    path = tmp_path / "burst.csv"
    path.write_text("\n".join(rows) + "\n")
    wl = TraceWorkload(TraceWorkloadConfig(path=str(path), format="burstgpt", on_bad_row="skip",
                                           rebase=False))
    batches = list(wl.arrivals(np.random.default_rng(0)))
    assert len(batches) > 1, "the file must span several batches"
    kept = np.concatenate([b.arrival_s for b in batches])
    assert kept.tolist() == good_times
    assert np.concatenate([b.prompt_tokens for b in batches]).tolist() == [100] * len(good_times)
    assert wl.skipped_rows == 40
    res = simkv.simulate(simkv.compose([
        "cluster.replicas=1", "output.plot=false", "output.progress=false", "workload=trace",
        f"workload.path={path}", "workload.format=burstgpt", "workload.on_bad_row=skip"]), tmp_path / "run")
    assert res.summary["engine"]["skipped_trace_rows"] == 40
    assert res.summary["requests"]["total"] == len(good_times)

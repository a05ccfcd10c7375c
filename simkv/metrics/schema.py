"""Explicit Arrow schemas of the result files (the files are the API, not their names)."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

SCHEMA_VERSION = "1"
# Columns every table is written with a dictionary for: strings and int32 (few distinct
# values: names, instances, token counts). Times and ids (float64, int64) are nearly all
# distinct, so a dictionary only grows until Parquet gives it up: written plain they took
# 0.86 CPU s against 1.55 per 2M rows and 105 MB against 135 (shard merge), and 0.037 against
# 0.08 per 100k rows and 5.3 MB against 6.8 (the recorder, Vidur's workload); the same values
# read back.
DICTIONARY_TYPES = (pa.string(), pa.int32())


def dictionary_columns(arrow_schema: pa.Schema) -> list[str]:
    """The columns of ``arrow_schema`` written with a dictionary (``DICTIONARY_TYPES``)."""
    return [f.name for f in arrow_schema if f.type in DICTIONARY_TYPES]


def file_metadata(doc: dict[str, Any], digest: str, seed: int) -> dict[bytes, bytes]:
    """The key-value metadata of every result table: the schema and simkv versions, the
    run's config (canonical JSON), its hash and seed. One definition, so the files a
    sharded run merges (simkv/shard.py) carry exactly what a single run's carry."""
    from simkv import __version__

    return {
        b"simkv.schema_version": SCHEMA_VERSION.encode(),
        b"simkv.version": __version__.encode(),
        b"simkv.config": json.dumps(doc, sort_keys=True, separators=(",", ":")).encode(),
        b"simkv.config_hash": digest.encode(),
        b"simkv.seed": str(seed).encode(),
    }

REQUESTS = pa.schema([
    ("request_id", pa.int64()),
    ("session", pa.int64()),
    ("turn", pa.int32()),
    ("model", pa.string()),
    ("log_type", pa.string()),
    # The instance that served it (ids run over every instance ever started) and its pool.
    ("replica", pa.int32()),
    ("pool", pa.string()),
    ("status", pa.string()),  # finished | rejected | failed (lost with its instance)
    ("reject_reason", pa.string()),
    ("arrival_s", pa.float64()),
    ("first_scheduled_s", pa.float64()),
    ("first_token_s", pa.float64()),
    ("completion_s", pa.float64()),
    ("prompt_tokens", pa.int32()),
    ("output_tokens", pa.int32()),
    # Prompt tokens whose KV was found cached at first admission, and where: HBM, DRAM,
    # disk (SSD or CSD); remote is the part read from another node's store.
    ("cached_tokens", pa.int32()),
    ("cached_hbm_tokens", pa.int32()),
    ("cached_dram_tokens", pa.int32()),
    ("cached_disk_tokens", pa.int32()),
    ("cached_remote_tokens", pa.int32()),
    # Seconds spent waiting for cached KV to arrive from below HBM (all admissions).
    ("kv_wait_s", pa.float64()),
    ("preemptions", pa.int32()),
    ("ttft_s", pa.float64()),
    ("tpot_s", pa.float64()),
    ("e2e_s", pa.float64()),
    ("slo_met", pa.bool_()),
    # Disaggregated serving: the prefill instance (-1: prefilled where it decoded), and the
    # seconds from its first token there to its KV landing on the decode instance (waiting
    # for a decode slot included).
    ("prefill_replica", pa.int32()),
    ("kv_transfer_s", pa.float64()),
    # Priority class (0 normal), live migrations between instances and the seconds the
    # request was paused for their last stages (engine/migration.py).
    ("priority", pa.int32()),
    ("migrations", pa.int32()),
    ("migration_pause_s", pa.float64()),
    # The instance that produced the first token: `replica` unless a restart, drain or live
    # migration moved the request after its first token (disaggregated: the decode instance).
    ("first_token_replica", pa.int32()),
])

ITERATIONS = pa.schema([
    ("replica", pa.int32()),
    ("start_s", pa.float64()),
    ("duration_s", pa.float64()),
    # A row is a run of `iterations` identical-composition iterations (fast-forward).
    ("iterations", pa.int32()),
    ("prefill_tokens", pa.int32()),
    ("decode_sequences", pa.int32()),
    ("kv_blocks_used", pa.int32()),
    ("kv_blocks_total", pa.int32()),
])

TRANSFERS = pa.schema([
    ("start_s", pa.float64()),
    ("end_s", pa.float64()),
    ("bytes", pa.float64()),
    # What moved: load, swap in, swap out, demote, demote dram->ssd, write through, offload.
    ("what", pa.string()),
    # The links crossed, comma-separated (pcie3, dram_read0, nic1, ...).
    ("links", pa.string()),
])

INSTANCES = pa.schema([
    # One row per lifecycle transition of an instance (engine/lifecycle.py).
    ("time_s", pa.float64()),
    ("instance", pa.int32()),
    ("pool", pa.string()),
    ("from_state", pa.string()),  # none | provisioning | loading | serving | scaling | draining
    ("to_state", pa.string()),
    # GPUs the instance holds after the transition, and its data-parallel degree.
    ("gpus", pa.int32()),
    ("data_parallel", pa.int32()),
    # The scaling action it belongs to (-1: the initial instances).
    ("action", pa.int32()),
    ("reason", pa.string()),
])

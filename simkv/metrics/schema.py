"""Explicit Arrow schemas of the result files (the files are the API, not their names)."""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = "1"

REQUESTS = pa.schema([
    ("request_id", pa.int64()),
    ("session", pa.int64()),
    ("turn", pa.int32()),
    ("model", pa.string()),
    ("log_type", pa.string()),
    ("replica", pa.int16()),
    ("status", pa.string()),  # finished | rejected
    ("reject_reason", pa.string()),
    ("arrival_s", pa.float64()),
    ("first_scheduled_s", pa.float64()),
    ("first_token_s", pa.float64()),
    ("completion_s", pa.float64()),
    ("prompt_tokens", pa.int32()),
    ("output_tokens", pa.int32()),
    ("cached_tokens", pa.int32()),
    ("preemptions", pa.int32()),
    ("ttft_s", pa.float64()),
    ("tpot_s", pa.float64()),
    ("e2e_s", pa.float64()),
    ("slo_met", pa.bool_()),
])

ITERATIONS = pa.schema([
    ("replica", pa.int16()),
    ("start_s", pa.float64()),
    ("duration_s", pa.float64()),
    # A row is a run of `iterations` identical-composition iterations (fast-forward).
    ("iterations", pa.int32()),
    ("prefill_tokens", pa.int32()),
    ("decode_sequences", pa.int32()),
    ("kv_blocks_used", pa.int32()),
    ("kv_blocks_total", pa.int32()),
])

"""A run's tables are written with a dictionary only where it pays (metrics/schema.py's
DICTIONARY_TYPES: strings and int32), as the shards' merge writes them: a dictionary of
nearly distinct times and ids cost 0.04 of 0.08 CPU s per 100k rows and made the file 28%
larger."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

import simkv
from simkv.metrics import schema
from tests.conftest import small


def test_times_and_ids_are_written_plain_strings_and_int32_with_a_dictionary(tmp_path: Path) -> None:
    simkv.simulate(small(), tmp_path)
    for name, table_schema in (("requests", schema.REQUESTS), ("instances", schema.INSTANCES)):
        meta = pq.ParquetFile(tmp_path / f"{name}.parquet").metadata
        assert meta.num_rows > 0
        for j, field in enumerate(table_schema):
            if field.type == pa.bool_():
                continue  # Parquet has no dictionary for booleans
            chunk = meta.row_group(0).column(j)
            assert chunk.has_dictionary_page == (field.type in schema.DICTIONARY_TYPES), (name, field.name)

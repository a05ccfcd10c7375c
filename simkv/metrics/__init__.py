"""Results: column recording, Parquet files, summary.json, plots."""

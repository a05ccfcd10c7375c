"""The one-pool colocated run is unchanged by engine redesigns: every column of the golden
runs (tests/golden/, made before instance pools existed) comes out identical; columns added
since are not compared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.golden.make_golden import CASES, run


@pytest.mark.parametrize("name", sorted(CASES))
def test_one_pool_run_matches_golden(name: str, tmp_path: Path) -> None:
    golden = pq.read_table(Path(__file__).parent / "golden" / f"{name}.parquet")
    got = pq.read_table(run(name, tmp_path))
    assert got.num_rows == golden.num_rows
    for col in golden.column_names:
        # NOTE: numpy's comparison treats NaN (a rejected request's times) as equal to NaN.
        np.testing.assert_array_equal(got.column(col).to_numpy(), golden.column(col).to_numpy(),
                                      err_msg=f"{name}: column {col} differs")

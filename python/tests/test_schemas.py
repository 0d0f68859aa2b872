"""Rows and blocks with different columns or types: the union of columns, promoted types
(as ``pd.DataFrame(rows)`` and ``pa.concat_tables(promote_options="permissive")`` give),
and an error naming the column and both types on a real conflict."""

from __future__ import annotations

import pandas as pd
import pytest

import millstream as md


def assert_frames_equal(out: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Same columns, dtypes and values; a missing string is None in one and NaN in the
    other, so values are compared with every missing value as None."""
    assert list(out.columns) == list(expected.columns)
    assert list(out.dtypes) == list(expected.dtypes)

    def normal(df):
        return df.astype(object).where(df.notna(), None)

    pd.testing.assert_frame_equal(normal(out), normal(expected))


# ---- rows with different keys (union of keys, missing values null) -------------------


def test_from_items_rows_with_different_keys():
    rows = [{"a": 1}, {"a": 2, "b": 3}, {"c": "x", "a": 4}]
    out = md.from_items(rows, override_num_blocks=1).to_pandas()
    assert_frames_equal(out, pd.DataFrame(rows))


def test_from_items_key_only_in_later_row_of_many_blocks():
    rows = [{"a": i} for i in range(10)] + [{"a": 10, "late": "z"}]
    out = md.from_items(rows, override_num_blocks=1).to_pandas()
    assert_frames_equal(out, pd.DataFrame(rows))


def test_map_rows_with_different_keys():
    def f(row):
        i = row["id"]
        return {"id": i, "even": i} if i % 2 == 0 else {"id": i, "odd": str(i)}

    out = md.range(6, override_num_blocks=1).map(f).to_pandas()
    assert_frames_equal(out, pd.DataFrame([f({"id": i}) for i in range(6)]))


def test_flat_map_rows_with_different_keys():
    def f(row):
        i = row["id"]
        return [{"id": i}, {"id": i, "extra": i * 10}]

    out = md.range(3, override_num_blocks=1).flat_map(f).to_pandas()
    expected = pd.DataFrame([r for i in range(3) for r in f({"id": i})])
    assert_frames_equal(out, expected)

"""Row order: calls that collect every row return input order; take/limit return the
first rows; only streaming iteration may reorder (unless preserve_order).

Early blocks are made the slowest, so that an engine handing blocks on as they finish
would return them last: every order assertion here fails on such an engine."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import millstream as md
from conftest import make_table

N, BLOCKS = 1000, 25


def slow_first(batch):
    """Sleeps longer the earlier the batch's rows (up to 25 ms)."""
    first = batch["key"][0] if "key" in batch else batch["id"][0]
    time.sleep(max(0.0, (N - first) / N) * 0.025)
    return batch


@pytest.fixture
def table():
    return make_table(N, seed=11)


@pytest.fixture
def ds(table):
    return md.from_arrow(table, override_num_blocks=BLOCKS).map_batches(slow_first)


def rows_table(rows):
    """Rows as a Table of the reference's schema (from_pylist alone would infer int64)."""
    return pa.Table.from_pylist(rows, schema=make_table(0).schema)


COLLECTING = {
    "take_all": lambda ds: rows_table(ds.take_all()),
    "to_arrow": lambda ds: ds.to_arrow(),
    "to_pandas": lambda ds: pa.Table.from_pandas(ds.to_pandas(), preserve_index=False),
    "materialize": lambda ds: ds.materialize().to_arrow(),
    "materialize_take_all": lambda ds: rows_table(ds.materialize().take_all()),
}


@pytest.mark.parametrize("call", COLLECTING)
def test_collecting_calls_return_input_order(ds, table, call):
    assert COLLECTING[call](ds).equals(table)


FIRST_ROWS = {
    "take": lambda ds, k: rows_table(ds.take(k)),
    "take_batch": lambda ds, k: ds.take_batch(k, batch_format="pyarrow"),
    "limit_take_all": lambda ds, k: rows_table(ds.limit(k).take_all()),
    "limit_to_arrow": lambda ds, k: ds.limit(k).to_arrow(),
}


@pytest.mark.parametrize("call", FIRST_ROWS)
@pytest.mark.parametrize("k", [5, 57])
def test_take_and_limit_return_the_first_rows(ds, table, call, k):
    assert FIRST_ROWS[call](ds, k).equals(table.slice(0, k))


def test_take_on_range_is_the_first_rows():
    for _ in range(3):
        assert md.range(1000, override_num_blocks=50).take(5) == [{"id": i} for i in range(5)]
        slow = md.range(1000, override_num_blocks=50).map_batches(slow_first)
        assert [r["id"] for r in slow.take(5)] == list(range(5))


def test_show_prints_the_first_rows(ds, table, capsys):
    ds.show(3)
    assert capsys.readouterr().out.splitlines() == [str(r) for r in table.slice(0, 3).to_pylist()]


def test_streaming_a_limit_gives_the_first_rows_in_some_order(ds, table):
    rows = list(ds.limit(40).iter_rows())
    assert sorted(r["key"] for r in rows) == table["key"].to_pylist()[:40]


def test_streaming_may_reorder_but_keeps_every_row(ds, table):
    out = pa.concat_tables(list(ds.iter_batches(batch_size=None, batch_format="pyarrow")))
    assert out.sort_by("key").equals(table)


def test_streaming_with_preserve_order_is_in_input_order(ctx, ds, table):
    ctx.execution_options.preserve_order = True
    out = pa.concat_tables(list(ds.iter_batches(batch_size=64, batch_format="pyarrow")))
    assert out.equals(table)


def test_from_pandas_frames_to_pandas_round_trip_in_order():
    frames = [pd.DataFrame({"a": np.arange(i * 100, (i + 1) * 100), "b": [f"r{i}"] * 100}) for i in range(10)]
    expected = pd.concat(frames, ignore_index=True)
    pd.testing.assert_frame_equal(md.from_pandas(frames).map_batches(slow_a).to_pandas(), expected)
    pd.testing.assert_frame_equal(md.from_pandas(expected, override_num_blocks=20).to_pandas(), expected)


def test_from_arrow_tables_to_arrow_in_order():
    tables = [pa.table({"a": np.arange(i * 100, (i + 1) * 100)}) for i in range(10)]
    expected = pa.concat_tables(tables)
    assert md.from_arrow(tables).map_batches(slow_a).to_arrow().equals(expected)
    assert md.from_arrow(expected, override_num_blocks=30).map_batches(slow_a).to_arrow().equals(expected)


def slow_a(batch):
    time.sleep(max(0.0, (1000 - batch["a"][0]) / 1000) * 0.02)
    return batch


@pytest.mark.parametrize("make", [
    lambda: md.range(1000, override_num_blocks=100).map_batches(slow_first).materialize(),
    lambda: md.from_arrow([pa.table({"id": list(range(i * 10, i * 10 + 10))}) for i in range(100)]),
], ids=["materialize", "from_arrow"])
def test_streaming_a_materialized_dataset_gives_its_blocks_in_order(make):
    # Its blocks are already computed (as in Ray): iterating them has nothing to reorder.
    m = make()
    for _ in range(5):
        assert [r["id"] for r in m.iter_rows()] == list(range(1000))
        assert [i for b in m.iter_batches(batch_size=None) for i in b["id"]] == list(range(1000))

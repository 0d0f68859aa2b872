"""repartition(target_num_rows_per_block=..., strict=...): a streaming repartition to a row
count, with Ray's argument rules; block sizes worked out by hand from the documented rule."""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa
import pytest

import millstream as md


def block_rows(ds) -> list:
    return [b.num_rows for b in ds._batches(None, ordered=True)]


def test_strict_gives_exact_blocks_but_the_last():
    # Blocks of 7, 1, 30, 2, 5 rows (45 in all) cut into 10-row blocks.
    sizes = [7, 1, 30, 2, 5]
    starts = np.cumsum([0] + sizes)
    ds = md.from_blocks([pa.table({"id": np.arange(starts[i], starts[i + 1])}) for i in range(len(sizes))])
    out = ds.repartition(target_num_rows_per_block=10, strict=True)
    assert block_rows(out) == [10, 10, 10, 10, 5]
    assert out.to_arrow().column("id").to_pylist() == list(range(45))


def test_strict_over_a_lazy_pipeline_keeps_every_row():
    ds = md.range(10_007, override_num_blocks=13).map_batches(lambda b: {"id": b["id"], "sq": b["id"] ** 2})
    out = ds.repartition(target_num_rows_per_block=1000, strict=True)
    rows = block_rows(out)
    assert rows == [1000] * 10 + [7]
    table = out.to_arrow()
    assert table.column("id").to_pylist() == list(range(10_007))
    np.testing.assert_array_equal(table.column("sq").to_numpy(), np.arange(10_007) ** 2)


def test_not_strict_blocks_are_at_most_the_target_and_bundled():
    # 10 blocks of 25 rows; tasks bundle blocks until they hold >= 60 rows (75): each
    # gives one block of 60 and one of 15, the last (25 rows left) one of 25.
    ds = md.range(250, override_num_blocks=10).map_batches(lambda b: b)
    out = ds.repartition(target_num_rows_per_block=60)
    rows = block_rows(out)
    assert max(rows) <= 60 and sum(rows) == 250
    assert rows == [60, 15, 60, 15, 60, 15, 25]
    assert out.to_arrow().column("id").to_pylist() == list(range(250))


def test_large_blocks_are_cut_without_copies():
    table = pa.table({"x": np.arange(100_000, dtype=np.int64)})
    ds = md.from_arrow(table)
    source = table.column("x").chunk(0).buffers()[1]
    blocks = list(ds.repartition(target_num_rows_per_block=30_000)._batches(None, ordered=True))
    assert [b.num_rows for b in blocks] == [30_000, 30_000, 30_000, 10_000]
    for b in blocks:
        data = b.column(0).buffers()[1]
        assert source.address <= data.address < source.address + source.size


def test_count_and_empty():
    assert md.range(1234).repartition(target_num_rows_per_block=100).count() == 1234
    empty = md.from_arrow(pa.table({"a": pa.array([], pa.int64())}))
    out = empty.repartition(target_num_rows_per_block=5, strict=True)
    assert out.count() == 0 and out.to_arrow().column_names == ["a"]


def test_ray_argument_rules():
    ds = md.range(10)
    with pytest.raises(ValueError, match="Either `num_blocks` or `target_num_rows_per_block` must be set"):
        ds.repartition()
    with pytest.raises(ValueError, match="Only one of `num_blocks` or `target_num_rows_per_block`"):
        ds.repartition(2, target_num_rows_per_block=3)
    with pytest.raises(ValueError, match="`shuffle` must be False"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.repartition(target_num_rows_per_block=3, shuffle=True)
    with pytest.warns(UserWarning, match="`keys` is ignored"):
        ds.repartition(target_num_rows_per_block=3, keys=["id"])
    with pytest.warns(UserWarning, match="`strict` is ignored"):
        ds.repartition(2, strict=True)
    with pytest.raises(ValueError, match="target_num_rows_per_block"):
        ds.repartition(target_num_rows_per_block=0)
    with pytest.raises(TypeError, match="strict"):
        ds.repartition(target_num_rows_per_block=3, strict="yes")

"""Blocks are immutable once produced: memory the user still holds (a UDF's reused output
buffer, the arrays given to from_numpy / from_pandas) is copied, so changing it later
changes no block. Expected values are numpy / pandas copies taken before the change."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import millstream as md
from millstream import _batch

N = 64
# UDFs sharing one buffer run one task at a time (concurrency=1): calls racing on a shared
# buffer would be the UDF's own race, not what these tests are about.


def _column(ds, name):
    return np.sort(ds.to_arrow()[name].to_numpy())


@pytest.mark.parametrize("zero_copy_batch", [True, False])
def test_udf_reusing_its_output_buffer(zero_copy_batch):
    buffer = np.empty(8, dtype=np.int64)

    def fill(batch):
        np.multiply(batch["id"], 10, out=buffer[: len(batch["id"])])
        return {"id": buffer[: len(batch["id"])]}

    def fill_whole(batch):
        buffer[:] = batch["id"] * 10
        return {"id": buffer}

    expected = np.arange(N) * 10
    for fn in (fill, fill_whole):
        ds = md.range(N, override_num_blocks=N // 8).map_batches(
            fn, batch_size=8, zero_copy_batch=zero_copy_batch, concurrency=1)
        np.testing.assert_array_equal(_column(ds, "id"), expected)


def test_callable_class_reusing_its_output_dict():
    class Fill:
        def __init__(self):
            self.out = {"id": np.empty(8, dtype=np.int64)}

        def __call__(self, batch):
            self.out["id"][:] = batch["id"] * 10
            return self.out

    ds = md.range(N, override_num_blocks=N // 8).map_batches(Fill, batch_size=8, concurrency=1)
    np.testing.assert_array_equal(_column(ds, "id"), np.arange(N) * 10)


def test_udf_keeping_the_writable_input_it_returns():
    kept = []

    def double(batch):
        batch["id"] *= 2
        kept.append(batch["id"])
        return batch

    out = md.range(N, override_num_blocks=N // 8).map_batches(double, batch_size=8, zero_copy_batch=False)
    table = out.materialize()
    for arr in kept:
        arr[:] = -1
    np.testing.assert_array_equal(_column(table, "id"), np.arange(N) * 2)


def test_generator_udf_reusing_its_buffer():
    buffer = np.empty(4, dtype=np.int64)

    def halves(batch):
        for start in (0, 4):
            buffer[:] = batch["id"][start:start + 4]
            yield {"id": buffer}

    ds = md.range(N, override_num_blocks=N // 8).map_batches(halves, batch_size=8, concurrency=1)
    np.testing.assert_array_equal(_column(ds, "id"), np.arange(N))


def test_pandas_udf_reusing_its_frame():
    frame = pd.DataFrame({"id": np.zeros(8, dtype=np.int64)})

    def fill(batch):
        frame["id"].to_numpy()[:] = batch["id"].to_numpy() * 10  # in place
        return frame

    ds = md.range(N, override_num_blocks=N // 8).map_batches(fill, batch_size=8, batch_format="pandas", concurrency=1)
    np.testing.assert_array_equal(_column(ds, "id"), np.arange(N) * 10)


def test_from_numpy_then_mutate_source():
    source = np.arange(N, dtype=np.float64)
    expected = source.copy()
    ds = md.from_numpy(source)
    source[:] = -1
    np.testing.assert_array_equal(_column(ds, "data"), expected)


def test_from_numpy_tensor_then_mutate_source():
    source = np.arange(N * 3, dtype=np.int32).reshape(N, 3)
    expected = source.copy()
    ds = md.from_numpy(source)
    source[:] = -1
    out = np.stack([row["data"] for row in ds.take_all()])
    np.testing.assert_array_equal(out, expected)


def test_from_pandas_then_mutate_source():
    source = pd.DataFrame({"a": np.arange(N, dtype=np.int64), "b": np.arange(N) * 0.5, "s": [str(i) for i in range(N)]})
    expected = source.copy()
    ds = md.from_pandas(source)
    source.iloc[:, 0] = -1
    source["b"].to_numpy()[:] = -1.0
    out = ds.to_pandas().sort_values("a").reset_index(drop=True)
    pd.testing.assert_frame_equal(out, expected)


def test_materialize_then_mutate_source():
    source = np.arange(N, dtype=np.int64)
    expected = source.copy()
    materialized = md.from_numpy(source).materialize()
    mapped = md.from_numpy(source).map_batches(lambda b: b).materialize()
    source[:] = -1
    np.testing.assert_array_equal(_column(materialized, "data"), expected)
    np.testing.assert_array_equal(_column(mapped, "data"), expected)


def test_fresh_udf_output_is_taken_without_copy():
    """The common case keeps zero-copy: a fresh array made by the UDF becomes the block."""
    made = []

    def fresh(batch):
        out = batch["x"] * 2
        made.append(out.ctypes.data)
        return {"y": out}

    batch = pa.record_batch({"x": np.arange(16, dtype=np.float64)})
    table = _batch.batch_adapter(fresh, "numpy", "f", False)(batch)
    assert table["y"].chunk(0).buffers()[1].address == made[0]

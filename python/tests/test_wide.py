"""Wide tables: the numpy batch adapter does work linear in the number of columns."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

import millstream as md
from millstream import _batch

COLUMNS = 2000


class CountingBatch:
    """A RecordBatch that counts how often its whole-batch accessors are used (each
    ``schema`` / ``columns`` access builds an object of O(columns) size)."""

    def __init__(self, batch: pa.RecordBatch):
        self._batch = batch
        self.whole_batch_accesses = 0

    @property
    def schema(self):
        self.whole_batch_accesses += 1
        return self._batch.schema

    @property
    def columns(self):
        self.whole_batch_accesses += 1
        return self._batch.columns

    def column(self, i):
        return self._batch.column(i)

    @property
    def num_rows(self):
        return self._batch.num_rows


def _wide_batch() -> pa.RecordBatch:
    return pa.record_batch({f"c{i}": np.arange(4, dtype=np.float64) + i for i in range(COLUMNS)})


def test_numpy_adapter_is_linear_in_columns():
    batch = CountingBatch(_wide_batch())
    calls = []

    def add_one(b):
        calls.append(len(b))
        return {k: v + 1 for k, v in b.items()}

    out = _batch.batch_adapter(add_one, "numpy", "f", False)(batch)
    # A constant number of O(columns) accesses per batch, not one per column.
    assert batch.whole_batch_accesses <= 4
    expected = {k: (np.asarray(v) + 1).tolist() for k, v in batch._batch.to_pydict().items()}
    assert out.to_pydict() == expected
    assert calls == [COLUMNS]


def test_numpy_adapter_unchanged_columns_are_linear():
    batch = CountingBatch(_wide_batch())
    out = _batch.batch_adapter(lambda b: b, "numpy", "f", False)(batch)
    assert batch.whole_batch_accesses <= 4
    assert out.equals(pa.Table.from_batches([batch._batch]))


def test_wide_table_through_map_batches():
    table = pa.Table.from_batches([_wide_batch()])
    out = md.from_arrow(table).map_batches(lambda b: b).to_arrow()
    assert out.equals(table)

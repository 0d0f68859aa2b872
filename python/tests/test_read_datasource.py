"""read_datasource and write_datasink with Ray's Datasource / ReadTask / Datasink API."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import millstream as md


class SquaresDatasource(md.Datasource):
    """n rows {"i": i, "sq": i*i} split into `parallelism` read tasks, blocks of mixed kinds."""

    def __init__(self, n: int):
        self.n = n

    def estimate_inmemory_data_size(self):
        return self.n * 16

    def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
        bounds = np.linspace(0, self.n, parallelism + 1).astype(int)
        tasks = []
        for k, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
            def read(lo=lo, hi=hi, k=k):
                ids = np.arange(lo, hi)
                half = (lo + hi) // 2
                if k % 2:
                    yield pd.DataFrame({"i": ids[: half - lo], "sq": ids[: half - lo] ** 2})
                else:
                    yield pa.table({"i": ids[: half - lo], "sq": ids[: half - lo] ** 2})
                yield {"i": ids[half - lo:], "sq": ids[half - lo:] ** 2}
            tasks.append(md.ReadTask(read, md.BlockMetadata(num_rows=int(hi - lo), size_bytes=None)))
        return tasks


def test_read_datasource():
    ds = md.read_datasource(SquaresDatasource(1000), override_num_blocks=7)
    table = ds.to_arrow()
    assert table["i"].to_pylist() == list(range(1000))
    assert table["sq"].to_pylist() == [i * i for i in range(1000)]
    assert "ReadSquares" in ds._explain_str()
    assert md.read_datasource(SquaresDatasource(10)).count() == 10
    with pytest.raises(TypeError, match="Datasource"):
        md.read_datasource(object())


def test_read_datasource_error_reaches_the_caller():
    class Broken(md.Datasource):
        def get_read_tasks(self, parallelism, **kwargs):
            def read():
                raise ConnectionError("source down")
                yield  # noqa: unreachable (a generator)
            return [md.ReadTask(read, md.BlockMetadata())]

    with pytest.raises(ConnectionError, match="source down"):
        md.read_datasource(Broken()).to_arrow()


class CollectingDatasink(md.Datasink):
    def __init__(self, fail_at=None):
        self.lock = threading.Lock()
        self.rows = []
        self.events = []
        self.fail_at = fail_at

    def on_write_start(self, schema=None):
        self.events.append(("start", schema.names if schema is not None else None))

    def write(self, blocks, ctx):
        n = 0
        for block in blocks:
            if self.fail_at is not None and self.fail_at in block.column("id").to_pylist():
                raise ValueError("cannot write")
            with self.lock:
                self.rows.extend(block.column("id").to_pylist())
            n += block.num_rows
        return (ctx.task_idx, n)

    def on_write_complete(self, write_result):
        self.events.append(("complete", write_result.num_rows, sorted(write_result.write_returns)))

    def on_write_failed(self, error):
        self.events.append(("failed", type(error).__name__))


def test_write_datasink():
    sink = CollectingDatasink()
    md.range(100, override_num_blocks=4).write_datasink(sink)
    assert sorted(sink.rows) == list(range(100))
    assert sink.events[0] == ("start", ["id"])
    kind, rows, returns = sink.events[1]
    assert kind == "complete" and rows == 100
    assert sum(n for _, n in returns) == 100 and sorted(i for i, _ in returns) == list(range(len(returns)))


def test_write_datasink_failure_calls_on_write_failed():
    sink = CollectingDatasink(fail_at=50)
    with pytest.raises(ValueError, match="cannot write"):
        md.range(100, override_num_blocks=4).write_datasink(sink)
    assert sink.events[-1] == ("failed", "ValueError")

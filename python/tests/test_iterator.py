"""DataIterator and prefetching: a background thread keeps prefetch_batches batches ready
and stops (no thread left) however the loop ends."""

from __future__ import annotations

import _thread
import threading
import time

import numpy as np
import pyarrow as pa
import pytest

import millstream as md


def _prefetch_threads():
    return [t for t in threading.enumerate() if t.name == "millstream-prefetch"]


def _wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)
    return predicate()


@pytest.mark.parametrize("prefetch", [0, 1, 3])
def test_prefetch_keeps_that_many_batches_ready(prefetch):
    made = []
    ds = md.range(10_000, override_num_blocks=20)
    it = ds.iter_batches(batch_size=100, prefetch_batches=prefetch,
                         _collate_fn=lambda b: made.append(1) or b)
    next(it)
    # The consumer sleeps: the thread formats ahead until prefetch batches wait for it.
    _wait_for(lambda: len(made) >= 1 + prefetch)
    time.sleep(0.3)
    assert len(made) == 1 + prefetch
    next(it)
    _wait_for(lambda: len(made) >= 2 + prefetch)
    time.sleep(0.1)
    assert len(made) == 2 + prefetch
    it.close()
    assert _wait_for(lambda: not _prefetch_threads())


@pytest.mark.parametrize("prefetch", [0, 1, 4])
def test_prefetch_changes_no_result(prefetch):
    table = pa.table({"a": np.arange(1234), "b": np.arange(1234) * 0.5})
    ds = md.from_arrow(table, override_num_blocks=7)
    got = pa.concat_tables(ds.iter_batches(batch_size=100, batch_format="pyarrow",
                                           prefetch_batches=prefetch))
    assert got.sort_by("a").equals(table)


def test_break_stops_the_thread_and_the_execution():
    def slow(batch):
        time.sleep(0.2)
        return batch

    ds = md.range(100, override_num_blocks=20).map_batches(slow)
    for _ in ds.iter_batches(batch_size=5, prefetch_batches=2):
        break
    assert _wait_for(lambda: not _prefetch_threads())
    # The engine stays usable.
    assert md.range(10).count() == 10


def test_error_reaches_the_loop_with_its_type():
    def bad(batch):
        raise ZeroDivisionError("boom in udf")

    with pytest.raises(ZeroDivisionError, match="boom in udf"):
        for _ in md.range(10).map_batches(bad).iter_batches(prefetch_batches=2):
            pass
    assert _wait_for(lambda: not _prefetch_threads())


def test_ctrl_c_while_waiting_stops_cleanly():
    def slow(batch):
        time.sleep(0.5)
        return batch

    ds = md.range(1000, override_num_blocks=50).map_batches(slow)
    timer = threading.Timer(0.3, _thread.interrupt_main)
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        for _ in ds.iter_batches(batch_size=10, prefetch_batches=2):
            pass
    timer.join()
    assert _wait_for(lambda: not _prefetch_threads())
    assert md.range(5).count() == 5


def test_iterator_api():
    table = pa.table({"x": np.arange(100), "y": np.arange(100) % 7})
    ds = md.from_arrow(table)
    it = ds.iterator()
    assert isinstance(it, md.DataIterator)
    assert it.schema() == ds.schema()
    got = pa.concat_tables(it.iter_batches(batch_size=30, batch_format="pyarrow"))
    assert got.sort_by("x").equals(table)
    assert sorted(r["x"] for r in it.iter_rows()) == list(range(100))
    assert "Dataset has not been executed" not in it.stats()
    assert it.materialize().to_arrow().sort_by("x").equals(table)


def test_iterator_iter_torch_batches():
    torch = pytest.importorskip("torch")
    batches = list(md.range(10).iterator().iter_torch_batches(batch_size=5))
    assert torch.equal(torch.cat([b["id"] for b in batches]).sort().values, torch.arange(10))


def test_bad_prefetch_batches_raise():
    with pytest.raises(ValueError, match="prefetch_batches"):
        md.range(3).iterator().iter_batches(prefetch_batches=-1)


def test_first_string_batches_do_not_wait_for_pandas(tmp_path):
    import subprocess
    import sys

    import pyarrow.parquet as pq

    words = [f"w{i % 97}" for i in range(5000)]
    pq.write_table(pa.table({"s": words, "i": np.arange(5000)}), tmp_path / "f.parquet")
    code = ("import sys, millstream as md\n"
            f"ds = md.read_parquet({str(tmp_path)!r})\n"
            "it = ds.iter_batches(batch_size=100, batch_format='numpy')\n"
            "first = next(it)\n"
            "loaded = 'pandas' in sys.modules\n"
            "rest = [first] + list(it)\n"
            "print(loaded, [str(v) for b in rest for v in b['s']] == [f'w{i % 97}' for i in range(5000)],\n"
            "      all(b['s'].dtype == object for b in rest))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "True", "True"]


def _blocks_of(table, sizes):
    out, start = [], 0
    for size in sizes:
        out.append(table.slice(start, size))
        start += size
    return out


@pytest.mark.parametrize("batch_size", [1, 7, 1000, 70_000])
@pytest.mark.parametrize("drop_last", [False, True])
def test_numpy_batches_are_the_rows_cut_in_order(batch_size, drop_last):
    # Blocks of uneven sizes (some smaller than a batch, one larger than a bulk conversion),
    # a string column of few values with nulls, one of distinct values, a tensor column.
    import pandas  # noqa: F401  (the pyarrow conversion of strings, as after the first batches)

    n = 150_000
    words = pa.array([None if i % 11 == 0 else f"w{i % 5}" for i in range(n)])
    table = pa.table({"i": np.arange(n), "s": words, "u": [f"u{i}" for i in range(n)],
                      "t": pa.FixedShapeTensorArray.from_numpy_ndarray(
                          np.arange(n * 2, dtype=np.float32).reshape(n, 2))})
    ds = md.from_arrow(_blocks_of(table, [3, 5, 70_001, 1000, 2, 78_989]))
    batches = list(ds.iter_batches(batch_size=batch_size, batch_format="numpy", drop_last=drop_last))
    keep = n // batch_size * batch_size if drop_last else n
    sizes = [len(b["i"]) for b in batches]
    assert sizes == [batch_size] * (keep // batch_size) + ([keep % batch_size] if keep % batch_size else [])
    got = {name: np.concatenate([b[name] for b in batches]) for name in table.column_names}
    want = table.slice(0, keep)
    np.testing.assert_array_equal(got["i"], np.arange(keep))
    assert got["s"].tolist() == want["s"].to_pylist()
    assert got["u"].tolist() == want["u"].to_pylist()
    np.testing.assert_array_equal(got["t"], want["t"].combine_chunks().to_numpy_ndarray())
    assert all(b["s"].dtype == object and not b["i"].flags.writeable for b in batches)


def test_repeated_strings_share_one_object_a_value():
    import pandas  # noqa: F401

    values = [f"value-{i % 3}" for i in range(5000)]
    batch = next(md.from_arrow(pa.table({"s": values})).iter_batches(batch_size=5000, batch_format="numpy"))
    assert batch["s"].tolist() == values
    assert len({id(v) for v in batch["s"]}) == 3


@pytest.mark.parametrize("arrow_type", [pa.string(), pa.large_string(), pa.binary(), pa.large_binary()])
def test_string_and_binary_columns_convert_as_pyarrow_does(arrow_type):
    # Few values with nulls (shared objects), then mostly distinct values (past the 256
    # shared ones), non-ASCII text and empty values; batches that start inside a block.
    text = pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)
    few = [None if i % 13 == 0 else ["", "é", "日本", "a b"][i % 4] for i in range(3000)]
    many = [f"ünï-{i}" if i % 17 else None for i in range(3000)]
    values = few + many
    if not text:
        values = [None if v is None else v.encode() for v in values]
    table = pa.table({"s": pa.array(values, arrow_type)})
    batches = list(md.from_arrow(table).iter_batches(batch_size=700, batch_format="numpy"))
    got = np.concatenate([b["s"] for b in batches])
    assert got.dtype == object
    assert got.tolist() == table["s"].to_pylist()
    assert {type(v) for v in got if v is not None} == {str if text else bytes}
    assert len({id(v) for v in batches[0]["s"] if v is not None}) == 4


def test_mostly_distinct_strings_are_each_their_own_value():
    values = [f"u{i}" for i in range(5000)]
    batch = next(md.from_arrow(pa.table({"s": values})).iter_batches(batch_size=5000, batch_format="numpy"))
    assert batch["s"].tolist() == values


def test_strings_given_to_a_numpy_udf_are_those_of_the_block():
    values = [None if i % 5 == 0 else f"k{i % 3}" for i in range(2000)]
    out = md.from_arrow(pa.table({"s": values})).map_batches(
        lambda b: {"s": b["s"], "n": np.array([len(v) if v else -1 for v in b["s"]])},
        batch_format="numpy").take_all()
    assert [r["s"] for r in out] == values
    assert [r["n"] for r in out] == [len(v) if v else -1 for v in values]


def test_a_string_column_that_is_not_utf8_raises():
    # Arrow's string type promises UTF-8; bytes that are not (made without validation)
    # raise UnicodeDecodeError naming the column, nothing half-made is left behind.
    data = b"okay\xff\xfe"
    bad = pa.Array.from_buffers(pa.string(), 2, [None, pa.py_buffer(np.array([0, 4, 6], np.int32).tobytes()),
                                                 pa.py_buffer(data)])
    with pytest.raises(UnicodeDecodeError, match="in column 's'"):
        next(md.from_arrow(pa.table({"s": bad})).iter_batches(batch_size=2, batch_format="numpy"))


def test_repeated_strings_with_nulls_give_none_whatever_pandas_infers():
    import pandas as pd

    values = [None if i % 7 == 0 else f"v{i % 3}" for i in range(3000)]
    ds = md.from_arrow(pa.table({"s": values}))
    for infer in (False, True):
        with pd.option_context("future.infer_string", infer):
            batch = next(ds.iter_batches(batch_size=3000, batch_format="numpy"))
        assert batch["s"].dtype == object and batch["s"].tolist() == values

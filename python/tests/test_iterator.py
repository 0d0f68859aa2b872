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

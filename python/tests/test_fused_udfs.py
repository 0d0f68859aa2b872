"""Consecutive Python UDFs fused into one operator run as one step: one call into Python
per block on threads, one round trip to a worker per block in worker processes.

Expected values are computed here with pyarrow / numpy / plain Python on the same input,
never taken from millstream's output.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import millstream as md
from millstream import _workers

N = 1000
BLOCKS = 10


class Calls:
    """Counts the calls of each step (thread mode: the UDFs run in this process)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}

    def hit(self, name):
        with self.lock:
            self.counts[name] = self.counts.get(name, 0) + 1


def _sorted_ids(rows):
    return sorted(rows, key=lambda r: r["id"])


def test_three_fused_pyarrow_udfs_match_pyarrow_and_run_once_per_block(ctx):
    calls = Calls()

    def double(t):
        calls.hit("double")
        return t.append_column("x", pc.multiply(t["id"], 2))

    def keep_thirds(t):
        calls.hit("keep")
        return t.filter(pc.equal(pc.bit_wise_and(t["x"], 3), 0))

    def plus_one(t):
        calls.hit("plus")
        return t.set_column(1, "x", pc.add(t["x"], 1))

    ds = (md.range(N, override_num_blocks=BLOCKS)
          .map_batches(double, batch_format="pyarrow")
          .map_batches(keep_thirds, batch_format="pyarrow")
          .map_batches(plus_one, batch_format="pyarrow"))
    got = _sorted_ids(ds.take_all())
    ids = np.arange(N)
    x = ids * 2
    keep = (x & 3) == 0
    assert [r["id"] for r in got] == ids[keep].tolist()
    assert [r["x"] for r in got] == (x[keep] + 1).tolist()
    # Each UDF saw each block once (none of the outputs is empty or cut in pieces).
    assert calls.counts == {"double": BLOCKS, "keep": BLOCKS, "plus": BLOCKS}


def test_fused_udfs_keep_the_operator_name_of_each_step(ctx, capsys):
    def f(t):
        return t

    def g(t):
        return t

    ds = md.range(10).map_batches(f, batch_format="pyarrow").map_batches(g, batch_format="pyarrow")
    ds.explain()
    assert "MapBatches(f)->MapBatches(g)" in capsys.readouterr().out
    assert "MapBatches(f)->MapBatches(g)" in ds.materialize().stats()


def test_the_next_udf_is_called_once_per_chunk_and_never_on_an_empty_output(ctx):
    seen = []
    lock = threading.Lock()

    def split_in_two(t):
        # Two chunks for even blocks, an empty table for odd ones.
        if t["id"][0].as_py() // 100 % 2:
            return t.slice(0, 0)
        half = t.num_rows // 2
        return pa.Table.from_batches(t.slice(0, half).to_batches() + t.slice(half).to_batches())

    def record(t):
        with lock:
            seen.append(t.num_rows)
        return t

    rows = (md.range(N, override_num_blocks=BLOCKS)
            .map_batches(split_in_two, batch_format="pyarrow")
            .map_batches(record, batch_format="pyarrow").take_all())
    expected = [i for i in range(N) if i // 100 % 2 == 0]
    assert sorted(r["id"] for r in rows) == expected
    assert sorted(seen) == [50] * 10  # 5 even blocks, 2 chunks each; odd blocks: no call


def test_mixed_formats_and_a_row_map_fused_match_the_reference(ctx):
    ds = (md.range(N, override_num_blocks=BLOCKS)
          .map_batches(lambda b: {"id": b["id"], "sq": b["id"] ** 2}, batch_format="numpy")
          .map_batches(lambda df: df.assign(neg=-df["sq"]), batch_format="pandas")
          .map(lambda r: {**r, "s": str(r["id"])})
          .filter(lambda r: r["id"] % 3 == 0))
    got = _sorted_ids(ds.take_all())
    expected = [{"id": i, "sq": i * i, "neg": -i * i, "s": str(i)} for i in range(N) if i % 3 == 0]
    assert got == expected


def test_fn_args_and_kwargs_reach_a_fused_udf(ctx):
    def scale(t, k, *, offset):
        return t.set_column(0, "id", pc.add(pc.multiply(t["id"], k), offset))

    ds = (md.range(20, override_num_blocks=4)
          .map_batches(lambda t: t, batch_format="pyarrow")
          .map_batches(scale, batch_format="pyarrow", fn_args=(3,), fn_kwargs={"offset": 7}))
    assert sorted(r["id"] for r in ds.take_all()) == [3 * i + 7 for i in range(20)]


def test_a_later_batch_size_still_gets_its_batches(ctx):
    sizes = []
    lock = threading.Lock()

    def record(t):
        with lock:
            sizes.append(t.num_rows)
        return t

    ds = (md.range(100, override_num_blocks=2)
          .map_batches(lambda t: t, batch_format="pyarrow")
          .map_batches(record, batch_format="pyarrow", batch_size=20))
    assert sorted(r["id"] for r in ds.take_all()) == list(range(100))
    assert max(sizes) == 20 and sum(sizes) == 100  # batches of 20 (a task's last may be shorter)


@pytest.mark.parametrize("workers, where", [("threads", ""), ("processes", "[processes]")])
def test_an_error_in_a_fused_udf_names_its_own_operator(ctx, workers, where):
    ctx.python_udf_workers = workers

    def fine(t):
        return t

    def broken(t):
        raise KeyError("missing thing")

    ds = (md.range(10).map_batches(fine, batch_format="pyarrow")
          .map_batches(broken, batch_format="pyarrow"))
    with pytest.raises(KeyError, match="missing thing") as info:
        ds.take_all()
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert f"MapBatches(broken){where}" in notes and "MapBatches(fine)" not in notes, notes
    assert ("worker process" in notes) == (workers == "processes"), notes


def test_a_fused_udf_returning_something_else_is_refused(ctx):
    ds = (md.range(10).map_batches(lambda t: t, batch_format="pyarrow")
          .map_batches(lambda t: 42, batch_format="pyarrow"))
    with pytest.raises(TypeError):
        ds.take_all()


# ---- worker processes -------------------------------------------------------------------


@pytest.fixture
def processes(ctx):
    ctx.python_udf_workers = "processes"
    yield ctx


def test_fused_process_udfs_make_one_round_trip_per_block(processes, monkeypatch):
    requests = []
    lock = threading.Lock()
    original = _workers._Worker.request

    def counted(self, message, out_path=None):
        with lock:
            requests.append(message[0])
        return original(self, message, out_path)

    monkeypatch.setattr(_workers._Worker, "request", counted)

    def double(t):
        return t.append_column("x", pc.multiply(t["id"], 2))

    def pid(t):
        return t.append_column("pid", pa.array([os.getpid()] * t.num_rows))

    ds = (md.range(N, override_num_blocks=BLOCKS)
          .map_batches(double, batch_format="pyarrow")
          .map(lambda r: {**r, "y": r["x"] + 1})
          .map_batches(pid, batch_format="pyarrow"))
    got = _sorted_ids(ds.take_all())
    assert [(r["id"], r["x"], r["y"]) for r in got] == [(i, 2 * i, 2 * i + 1) for i in range(N)]
    assert os.getpid() not in {r["pid"] for r in got}
    assert requests == ["chain"] * BLOCKS  # not one per UDF


def test_workers_see_the_drivers_data_context(processes):
    processes.target_max_block_size = 12345678
    processes.max_errored_blocks = 3

    def settings(b):
        current = md.DataContext.get_current()
        n = len(b["id"])
        return {"id": b["id"], "size": np.full(n, current.target_max_block_size),
                "errored": np.full(n, current.max_errored_blocks), "pid": np.full(n, os.getpid())}

    rows = md.range(40, override_num_blocks=4).map_batches(settings).take_all()
    assert {r["size"] for r in rows} == {12345678}
    assert {r["errored"] for r in rows} == {3}
    assert os.getpid() not in {r["pid"] for r in rows}
    # A change before the next execution reaches the workers too.
    processes.target_max_block_size = 7654321
    rows = md.range(40, override_num_blocks=4).map_batches(settings).take_all()
    assert {r["size"] for r in rows} == {7654321}


class ContextActor:
    def __init__(self):
        self.at_start = md.DataContext.get_current().target_max_block_size

    def __call__(self, b):
        return {"id": b["id"], "at_start": np.full(len(b["id"]), self.at_start)}


def test_a_process_actor_constructor_sees_the_drivers_data_context(processes):
    processes.target_max_block_size = 2222222
    rows = md.range(20, override_num_blocks=2).map_batches(ContextActor, concurrency=1).take_all()
    assert {r["at_start"] for r in rows} == {2222222}


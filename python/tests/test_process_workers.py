"""Python UDFs in worker processes: DataContext.python_udf_workers = "processes".

Expected values are computed here by plain Python on the same input (the reference), never
taken from millstream's output; thread mode is checked against the same reference.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time

import numpy as np
import psutil
import pyarrow as pa
import pytest

import millstream as md
from millstream import _workers

N = 600
BLOCKS = 6


@pytest.fixture
def processes(ctx):
    ctx.python_udf_workers = "processes"
    before = _children()
    yield ctx
    # Nothing is left behind: no shared-memory block, no worker process.
    assert _wait_until(lambda: not _shm_blocks()), _shm_blocks()
    assert _wait_until(lambda: not (_children() - before)), _children() - before


def _shm_blocks():
    prefix = os.path.basename(_workers.shm_prefix())
    return [name for name in os.listdir(_workers.SHM_DIR) if name.startswith(prefix)]


def _children():
    return {p.pid for p in psutil.Process().children(recursive=True)
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE}


def _wait_until(check, limit_s=10.0):
    """Polls ``check`` (cleanup on other threads may take a moment); no timing is asserted."""
    deadline = time.monotonic() + limit_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def slow_square(row):
    total = 0
    for _ in range(50):  # pure Python: keeps the GIL busy
        total += row["id"] * row["id"]
    return {"id": row["id"], "sq": total // 50, "pid": os.getpid()}


def test_every_kind_of_udf_matches_the_reference_in_processes_and_threads(ctx):
    ids = list(range(N))
    expected_map = [{"id": i, "sq": i * i} for i in ids]
    expected_flat = [{"v": i} for i in ids for _ in range(i % 3)]
    expected_filter = [i for i in ids if i % 7 == 0]
    expected_batches = [i * 2 + 1 for i in ids]
    results = {}
    for mode in ("threads", "processes"):
        ctx.python_udf_workers = mode
        ds = md.range(N, override_num_blocks=BLOCKS)
        mapped = ds.map(slow_square).take_all()
        assert [{"id": r["id"], "sq": r["sq"]} for r in mapped] == expected_map
        pids = {r["pid"] for r in mapped}
        if mode == "threads":
            assert pids == {os.getpid()}
        else:
            assert os.getpid() not in pids  # every row was computed in a worker process
        assert ds.flat_map(lambda r: [{"v": r["id"]}] * (r["id"] % 3)).take_all() == expected_flat
        assert [r["id"] for r in ds.filter(lambda r: r["id"] % 7 == 0).take_all()] == expected_filter
        pandas = ds.map_batches(lambda df: df.assign(x=df["id"] * 2 + 1), batch_format="pandas",
                                batch_size=64).to_pandas()
        assert pandas["x"].tolist() == expected_batches
        results[mode] = [(r["id"], r["sq"]) for r in mapped]
    assert results["threads"] == results["processes"]
    assert _wait_until(lambda: not _shm_blocks())


def test_workers_are_child_processes_that_exit_with_the_execution(processes):
    before = _children()
    seen = []

    def record(batch):
        n = len(batch["id"])
        return {"pid": np.full(n, os.getpid()), "parent": np.full(n, os.getppid())}

    for batch in md.range(200, override_num_blocks=4).map_batches(record).iter_batches(batch_size=None):
        seen += list(batch["pid"])
        assert set(batch["parent"]) == {os.getpid()}  # the workers are this process's children
    assert set(seen) and os.getpid() not in seen
    assert _wait_until(lambda: not (_children() - before))
    assert _workers.live_worker_pids() == []


class Counter:
    def __init__(self, start):
        self.calls = start
        self.pid = os.getpid()

    def __call__(self, batch):
        self.calls += 1
        n = len(batch["id"])
        return {"id": batch["id"], "call": np.full(n, self.calls), "pid": np.full(n, self.pid)}


def test_an_actor_is_one_process_constructed_once_that_keeps_its_state(processes):
    rows = md.range(100, override_num_blocks=10).map_batches(
        Counter, fn_constructor_args=(100,), concurrency=1, batch_size=10).take_all()
    assert sorted(r["id"] for r in rows) == list(range(100))
    assert len({r["pid"] for r in rows}) == 1 and rows[0]["pid"] != os.getpid()
    # Ten calls on one instance: its counter went 101..110, one value per batch.
    assert sorted({r["call"] for r in rows}) == list(range(101, 111))


def test_each_actor_of_a_pool_keeps_its_own_state(processes):
    rows = md.range(200, override_num_blocks=20).map_batches(
        Counter, fn_constructor_args=(0,), concurrency=2, batch_size=10).take_all()
    assert sorted(r["id"] for r in rows) == list(range(200))
    by_pid = {}
    for r in rows:
        by_pid.setdefault(r["pid"], set()).add(r["call"])
    assert os.getpid() not in by_pid
    for calls in by_pid.values():  # each actor counted its own calls 1..k
        assert calls == set(range(1, len(calls) + 1))
    assert sum(len(c) for c in by_pid.values()) == 20


class Gpus:
    def __call__(self, batch):
        return {"gpu": np.array([os.environ.get("CUDA_VISIBLE_DEVICES", "")] * len(batch["id"]))}


def test_gpu_actors_get_their_own_cuda_visible_devices(processes, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    processes.execution_options.resource_limits.gpu = 2
    rows = md.range(40, override_num_blocks=8).map_batches(
        Gpus, concurrency=2, num_gpus=1, batch_size=5).take_all()
    assert len(rows) == 40
    assert {r["gpu"] for r in rows} <= {"0", "1"}
    # Both actors ran (8 calls on 2 actors that each hold one GPU): GPUs 0 and 1.
    assert {r["gpu"] for r in rows} == {"0", "1"}


class GpuIds:
    def __init__(self):
        self.ids = md.get_gpu_ids()

    def __call__(self, batch):
        n = len(batch["id"])
        return {"ids": [",".join(map(str, self.ids))] * n,
                "env": [os.environ.get("CUDA_VISIBLE_DEVICES", "")] * n}


def test_a_process_actor_sees_its_gpus_in_get_gpu_ids(processes, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    processes.execution_options.resource_limits.gpu = 2
    rows = md.range(40, override_num_blocks=8).map_batches(
        GpuIds, concurrency=2, num_gpus=1, batch_size=5).take_all()
    assert {(r["ids"], r["env"]) for r in rows} == {("0", "0"), ("1", "1")}


def test_gpu_ids_come_from_the_parents_cuda_visible_devices(processes, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    processes.execution_options.resource_limits.gpu = 2
    rows = md.range(8, override_num_blocks=2).map_batches(
        Gpus, concurrency=1, num_gpus=2, batch_size=4).take_all()
    assert {r["gpu"] for r in rows} == {"5,7"}


def _crash(how):
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "exit":
        os._exit(3)
    else:  # a segfault in C code
        ctypes.string_at(0)


@pytest.mark.parametrize("how", ["sigkill", "exit", "segfault"])
def test_a_task_whose_worker_dies_is_retried_and_the_output_is_identical(processes, tmp_path, how):
    marker = str(tmp_path / "crashed")

    def fragile(row):
        if row["id"] == 123 and not os.path.exists(marker):
            open(marker, "w").close()
            _crash(how)
        return {"id": row["id"], "neg": -row["id"]}

    out = md.range(300, override_num_blocks=5).map(fragile).take_all()
    assert os.path.exists(marker)  # it did crash once
    assert out == [{"id": i, "neg": -i} for i in range(300)]


def test_a_task_fails_naming_the_operator_when_its_retries_are_used_up(processes):
    def always_dies(row):
        os._exit(7)

    with pytest.raises(md.WorkerDiedError, match=r"Map\(always_dies\)\[processes\].*exited with status 7.*max_retries=1"):
        md.range(10, override_num_blocks=1).map(always_dies, max_retries=1).take_all()


class FragileCounter(Counter):
    def __call__(self, batch):
        marker = os.environ["FRAGILE_MARKER"]
        if 50 in batch["id"] and not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return super().__call__(batch)


def test_an_actor_whose_process_dies_is_restarted_and_its_call_retried(processes, tmp_path, monkeypatch):
    marker = tmp_path / "crashed"
    monkeypatch.setenv("FRAGILE_MARKER", str(marker))
    rows = md.range(100, override_num_blocks=10).map_batches(
        FragileCounter, fn_constructor_args=(0,), concurrency=1, batch_size=10).take_all()
    assert marker.exists()
    assert sorted(r["id"] for r in rows) == list(range(100))
    assert len({r["pid"] for r in rows}) == 2  # the restarted actor is a new process


class AlwaysDies:
    def __call__(self, batch):
        os._exit(9)


def test_an_actor_fails_naming_the_operator_when_max_restarts_are_used_up(processes):
    with pytest.raises(md.WorkerDiedError, match=r"MapBatches\(AlwaysDies\)\[processes\].*max_restarts=1"):
        md.range(10, override_num_blocks=2).map_batches(AlwaysDies, concurrency=1, max_restarts=1).take_all()


def bad_udf(row):
    if row["id"] == 7:
        raise ValueError(f"bad row {row['id']}")
    return row


def test_a_udf_exception_propagates_with_its_worker_traceback_and_the_operator(processes):
    with pytest.raises(ValueError, match="bad row 7") as info:
        md.range(20, override_num_blocks=2).map(bad_udf).take_all()
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "Traceback in worker process" in notes
    assert "in bad_udf" in notes  # the UDF's own frame, from the worker
    assert "Map(bad_udf)[processes]" in notes


class BadInit:
    def __init__(self):
        raise RuntimeError("cannot load the model")

    def __call__(self, batch):
        return batch


def test_an_actor_constructor_error_propagates(processes):
    with pytest.raises(RuntimeError, match="cannot load the model"):
        md.range(10).map_batches(BadInit, concurrency=1).take_all()


def test_the_gil_is_released_while_waiting_for_a_worker(processes, tmp_path):
    # The worker waits until a Python thread of this process answers; that thread can only
    # run if the engine thread waiting for the worker does not hold the GIL.
    started, answered = str(tmp_path / "started"), str(tmp_path / "answered")
    done = threading.Event()

    def answer():
        while not done.is_set():
            if os.path.exists(started):
                open(answered, "w").close()
                return
            time.sleep(0.01)

    def wait_for_answer(batch):
        open(started, "w").close()
        deadline = time.monotonic() + 30
        while not os.path.exists(answered) and time.monotonic() < deadline:
            time.sleep(0.01)
        return {"answered": np.array([os.path.exists(answered)] * len(batch["id"]))}

    helper = threading.Thread(target=answer)
    helper.start()
    try:
        rows = md.range(4, override_num_blocks=1).map_batches(wait_for_answer).take_all()
    finally:
        done.set()
        helper.join()
    assert [r["answered"] for r in rows] == [True] * 4


def test_ctrl_c_stops_the_workers_and_leaves_no_shared_memory(processes, tmp_path):
    started = str(tmp_path / "started")

    def stuck(batch):
        open(started, "w").close()
        time.sleep(30)  # never finishes on its own within the test
        return batch

    def interrupt():
        if _wait_until(lambda: os.path.exists(started), 30):
            os.kill(os.getpid(), signal.SIGINT)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    helper = threading.Thread(target=interrupt)
    try:
        helper.start()
        with pytest.raises(KeyboardInterrupt):  # 400 KB blocks: they travel as files
            md.range(200_000, override_num_blocks=4).map_batches(stuck).take_all()
    finally:
        helper.join()
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("rows", [50, 100_000], ids=["inline", "files"])
def test_a_failed_execution_leaves_no_shared_memory_or_workers(processes, rows):
    # Small blocks travel inside the socket messages, larger ones (here 160 KB) as files.
    with pytest.raises(ValueError):
        md.range(rows, override_num_blocks=5).map_batches(
            lambda b: b if 7 not in b["id"] else bad_udf({"id": 7})).take_all()
    # The fixture checks /dev/shm and the children; a new execution runs normally.
    assert md.range(5).map(lambda r: {"x": r["id"] + 1}).take_all() == [{"x": i + 1} for i in range(5)]


def test_blocks_of_a_dead_driver_are_removed(processes):
    stale = os.path.join(_workers.SHM_DIR, f"{_workers.SHM_PREFIX}999999999-0")
    open(stale, "w").close()
    try:
        assert len(md.range(3).map(lambda r: r).take_all()) == 3
        assert not os.path.exists(stale)
    finally:
        if os.path.exists(stale):
            os.unlink(stale)


def test_explain_and_stats_say_where_each_operator_ran(processes, capsys):
    ds = md.range(10).map(lambda r: r)
    ds.explain()
    assert "Map(<lambda>)[processes]" in capsys.readouterr().out
    ds.materialize()
    processes.python_udf_workers = "threads"
    on_threads = md.range(10).filter(lambda r: True)
    on_threads.explain()
    text = capsys.readouterr().out
    assert "Filter(<lambda>)" in text and "[processes]" not in text
    materialized = ds.materialize()
    assert "Map(<lambda>)[processes]" in materialized.stats()


def test_the_mode_is_checked(ctx):
    ctx.python_udf_workers = "forks"
    with pytest.raises(ValueError, match="python_udf_workers"):
        md.range(3).map(lambda r: r)


def test_engine_steps_in_python_stay_on_threads(processes, tmp_path):
    # A datasink's write runs in this process even in process mode (it keeps its state here).
    from millstream.datasource import Datasink

    class Collect(Datasink):
        def __init__(self):
            self.rows = []

        def write(self, blocks, ctx):
            for block in blocks:
                self.rows += pa.table(block).column("id").to_pylist()
            return os.getpid()

    sink = Collect()
    md.range(30, override_num_blocks=3).map(lambda r: {"id": r["id"] * 3}).write_datasink(sink)
    assert sorted(sink.rows) == [i * 3 for i in range(30)]


_KILLED_DRIVER = """
import os, sys, time
import millstream as md

md.DataContext.get_current().python_udf_workers = "processes"
STARTED = sys.argv[1]  # travels with the UDF (a worker has its own argv)

def stuck(batch):
    open(os.path.join(STARTED, str(os.getpid())), "w").close()
    time.sleep(60)
    return batch

md.range(200_000, override_num_blocks=2).map_batches(stuck).take_all()  # 800 KB blocks: files
"""


def test_a_killed_driver_leaves_no_workers_or_shared_memory(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "driver.py"
    script.write_text(_KILLED_DRIVER)
    started = tmp_path / "started"
    started.mkdir()
    driver = subprocess.Popen([sys.executable, str(script), str(started)])
    try:
        assert _wait_until(lambda: len(os.listdir(started)) >= 1, 30)
        prefix = f"{_workers.SHM_PREFIX}{driver.pid}-"
        assert any(n.startswith(prefix) for n in os.listdir(_workers.SHM_DIR))  # a block in flight
    finally:
        driver.kill()
        driver.wait()
    workers = [int(name) for name in os.listdir(started)]

    def gone(pid):
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    assert _wait_until(lambda: all(gone(pid) for pid in workers), 10)
    assert _wait_until(lambda: not [n for n in os.listdir(_workers.SHM_DIR) if n.startswith(prefix)], 10)


def test_a_limit_stops_the_workers_early_and_keeps_the_first_rows(processes):
    assert md.range(10_000, override_num_blocks=50).map(lambda r: {"x": r["id"] * 2}).take(3) == [
        {"x": 0}, {"x": 2}, {"x": 4}]


class Box:
    def __init__(self, v):
        self.v = v

    def __eq__(self, other):
        return isinstance(other, Box) and other.v == self.v


def test_every_kind_of_column_travels_to_workers_and_back(processes):
    import asyncio

    rows = md.range(6, override_num_blocks=2).map(lambda r: {
        "obj": Box(r["id"]),                                # pickled Python objects
        "s": "x" * r["id"],
        "ragged": np.arange(r["id"] % 3 + 1, dtype=np.float64),  # variable-shape tensors
        "fixed": np.full((2, 2), r["id"]),                  # fixed-shape tensors
    }).take_all()
    assert [r["obj"] for r in rows] == [Box(i) for i in range(6)]
    assert [r["s"] for r in rows] == ["x" * i for i in range(6)]
    for i, r in enumerate(rows):
        np.testing.assert_array_equal(r["ragged"], np.arange(i % 3 + 1, dtype=np.float64))
        np.testing.assert_array_equal(r["fixed"], np.full((2, 2), i))

    async def plus_one(row):
        await asyncio.sleep(0)
        return {"y": row["id"] + 1}

    assert md.range(4).map(plus_one).take_all() == [{"y": i + 1} for i in range(4)]

    def twice(batch):  # a generator UDF: two batches per input batch
        yield {"z": batch["id"]}
        yield {"z": batch["id"] * 10}

    assert sorted(r["z"] for r in md.range(3).map_batches(twice).take_all()) == [0, 0, 1, 2, 10, 20]
    assert md.range(3).add_column("w", lambda df: df["id"] * 2).take_all() == [
        {"id": i, "w": 2 * i} for i in range(3)]


def test_blocks_from_workers_are_counted_in_the_memory_budget(processes):
    MiB = 1 << 20
    limit, block = 16 * MiB, 2 * MiB
    processes.execution_options.resource_limits.object_store_memory = limit

    def inflate(batch):  # 2 MiB out per one-row block, made in a worker
        return {"v": np.full(block // 8, batch["id"][0], dtype=np.int64)}

    ds = md.range(24, override_num_blocks=24).map_batches(inflate)
    total = 0
    for batch in ds.iter_batches(batch_size=None):
        total += int(batch["v"].sum())
        time.sleep(0.01)  # a slow consumer: the engine holds blocks while it waits
        assert len(_shm_blocks()) <= 2 * 2  # at most an input and an output per running task
    assert total == sum(i * (block // 8) for i in range(24))
    peak = ds._last_stats.peak_bytes
    # The mapped results are the blocks: counted (at least one) and within the promise.
    assert block <= peak <= limit + 2 * block, peak / MiB
    del batch
    # Freed with the blocks: no mapping of a (removed) block file is left in this process.
    assert _wait_until(lambda: not _mapped_blocks()), _mapped_blocks()


def _mapped_blocks():
    with open("/proc/self/maps") as maps:
        return [line for line in maps if _workers.SHM_PREFIX in line]


def test_a_udf_that_cannot_be_pickled_is_refused_naming_the_operator(processes):
    lock = threading.Lock()

    def uses_a_lock(row):
        with lock:
            return row

    with pytest.raises(TypeError, match=r"Map\(uses_a_lock\)\[processes\].*cannot be sent to a worker process"):
        md.range(3).map(uses_a_lock)

"""DataContext.python_udf_workers = "auto": function UDFs measured on threads, moved to
worker processes when the GIL holds them back.

The verdict's rule is checked on calls whose timings are written here by hand; the
end-to-end tests run a pure-Python UDF (which holds the GIL) and a numpy sort (which
releases it) and check where each ran, with results against plain Python's.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

import millstream as md
from millstream import _auto_workers as auto

MS = 1_000_000  # ns


def pairs(count, wall_ms, oncpu_ms, runq_ms=0.0, at_a_time=2):
    """``count`` calls of ``wall_ms`` each, ``at_a_time`` running side by side."""
    samples = []
    for k in range(count):
        start = (k // at_a_time) * wall_ms * MS
        samples.append((int(start), int(start + wall_ms * MS), int(oncpu_ms * MS), int(runq_ms * MS)))
    return samples


def test_two_calls_at_a_time_asleep_half_their_time_on_one_core_go_to_processes():
    verdict, reason = auto.judge(pairs(16, 10, 5), 16)
    assert verdict == "processes"
    assert "2.00 calls at a time" in reason and "asleep 50%" in reason and "1.00 cores" in reason


def test_calls_that_keep_a_core_each_stay_on_threads_once_enough_were_seen():
    samples = pairs(16, 10, 9.5)
    assert auto.judge(samples, 16)[0] is None  # undecided: still measuring
    verdict, reason = auto.judge(samples, auto.SAMPLE_MAX)
    assert verdict == "threads" and "not held back by the GIL" in reason


def test_time_waiting_for_a_cpu_counts_as_busy_not_asleep():
    # Other programs share the machine: the calls wait to be run, not for the GIL.
    verdict, reason = auto.judge(pairs(16, 10, 5, runq_ms=4.5), auto.SAMPLE_MAX)
    assert verdict == "threads" and "asleep 5%" in reason


def test_calls_waiting_for_io_stay_on_threads():
    verdict, _ = auto.judge(pairs(16, 10, 1.5), auto.SAMPLE_MAX)
    assert verdict == "threads"  # 0.3 cores busy: nothing a process would speed up


def test_calls_one_at_a_time_stay_on_threads():
    verdict, _ = auto.judge(pairs(16, 10, 5, at_a_time=1), auto.SAMPLE_MAX)
    assert verdict == "threads"


def test_calls_too_short_for_a_round_trip_stay_on_threads_at_once():
    verdict, reason = auto.judge(pairs(8, 0.4, 0.2), 8)
    assert verdict == "threads" and "too short" in reason


def test_fewer_calls_than_the_minimum_give_no_verdict():
    assert auto.judge(pairs(auto.SAMPLE_MIN - 1, 10, 5), auto.SAMPLE_MIN - 1)[0] is None


def test_long_calls_are_judged_after_fewer_of_them():
    assert auto.SAMPLE_MIN_LONG < auto.SAMPLE_MIN
    long_ms = auto.LONG_WINDOW_S * 1000  # two rounds of two calls span twice this
    assert auto.judge(pairs(auto.SAMPLE_MIN_LONG, long_ms, long_ms / 2), auto.SAMPLE_MIN_LONG)[0] == "processes"
    assert auto.judge(pairs(auto.SAMPLE_MIN_LONG - 1, long_ms, long_ms / 2), 3)[0] is None
    short = pairs(auto.SAMPLE_MIN_LONG, 10, 5)  # 20 ms in all: too little to go on
    assert auto.judge(short, auto.SAMPLE_MIN_LONG)[0] is None


def gil_bound(row):
    total = 0
    for k in range(3000):  # pure Python: holds the GIL
        total = (total + row["id"] * k) % 1000003
    return {"id": row["id"], "acc": total, "pid": os.getpid()}


def reference_acc(x):
    total = 0
    for k in range(3000):
        total = (total + x * k) % 1000003
    return total


VALUES = np.random.default_rng(7).random(1 << 21)  # a sort of about 20 ms


def sorts(batch):
    smallest = np.sort(VALUES)[0]  # numpy releases the GIL while it sorts
    return {"id": batch["id"], "low": np.full(len(batch["id"]), smallest),
            "pid": np.full(len(batch["id"]), os.getpid())}


@pytest.fixture
def auto_mode(ctx):
    if len(os.sched_getaffinity(0)) < 2 or not auto.schedstat_available():
        pytest.skip("needs two cores and /proc/thread-self/schedstat")
    ctx.python_udf_workers = "auto"
    ctx.execution_options.resource_limits.cpu = 2
    return ctx


ROWS = 3000  # 50 rows a block: calls of about 15 ms, long enough to overlap


def test_a_pure_python_udf_moves_to_worker_processes(auto_mode):
    ds = md.range(ROWS, override_num_blocks=60).map(gil_bound)
    assert "Map(gil_bound)[auto: threads, measuring]" in ds._explain_str()
    rows = ds.take_all()
    assert sorted((r["id"], r["acc"]) for r in rows) == [(i, reference_acc(i)) for i in range(ROWS)]
    stats = ds.stats()
    assert "Map(gil_bound)[auto: processes]" in stats, stats
    assert "(the GIL kept them to one core)" in stats
    assert {r["pid"] for r in rows} - {os.getpid()}  # rows after the verdict came from workers


def test_a_numpy_udf_stays_on_threads(auto_mode):
    ds = md.range(2 * auto.SAMPLE_MAX, override_num_blocks=2 * auto.SAMPLE_MAX).map_batches(sorts)
    rows = ds.take_all()
    assert sorted(r["id"] for r in rows) == list(range(2 * auto.SAMPLE_MAX))
    assert {r["low"] for r in rows} == {VALUES.min()}
    stats = ds.stats()
    assert "MapBatches(sorts)[auto: threads]" in stats, stats
    assert {r["pid"] for r in rows} == {os.getpid()}
    assert "not held back by the GIL" in stats


class Counter:
    def __init__(self):
        self.calls = 0

    def __call__(self, batch):
        self.calls += 1
        return {"id": batch["id"], "pid": np.full(len(batch["id"]), os.getpid())}


def test_a_callable_class_stays_on_threads_unmarked(auto_mode):
    ds = md.range(40, override_num_blocks=4).map_batches(Counter, concurrency=1)
    assert "[auto" not in ds._explain_str()
    assert {r["pid"] for r in ds.take_all()} == {os.getpid()}


def test_a_udf_cloudpickle_cannot_send_stays_on_threads_and_says_why():
    lock = threading.Lock()

    def guarded(batch):
        with lock:
            return batch

    udf = auto.AutoUdf(guarded, lambda: guarded, "MapBatches(guarded)[auto]", {})
    udf._settle("processes", "measured")
    assert udf.verdict == "threads" and "cannot pickle" in udf.reason
    assert udf("a batch") == "a batch"


def test_without_the_kernels_counters_udfs_stay_on_threads(monkeypatch):
    monkeypatch.setattr(auto, "SCHEDSTAT", "/nonexistent/schedstat")
    udf = auto.AutoUdf(lambda b: b, lambda: (lambda b: b), "Map(f)[auto]", {})
    assert udf.verdict == "threads" and "/nonexistent/schedstat" in udf.reason


def test_a_bad_max_retries_is_refused_when_the_transform_is_added(auto_mode):
    with pytest.raises(ValueError, match="max_retries"):
        md.range(3).map(gil_bound, max_retries=-5)


def test_marks_name_the_whole_operator_not_a_longer_one():
    udf = auto.AutoUdf(lambda b: b, lambda: (lambda b: b), "Map(g)[auto]", {})
    udf._settle("threads", "measured")
    text = auto.annotate("FlatMap(g)[auto]\nMap(g)[auto]\n", [udf])
    assert text.startswith("FlatMap(g)[auto]\nMap(g)[auto: threads]\n")


def test_stats_speak_only_of_the_datasets_own_udfs(auto_mode):
    other = md.range(4, override_num_blocks=1).map(gil_bound)  # same name, never run
    ds = md.range(ROWS, override_num_blocks=60).map(gil_bound).filter(lambda r: r["id"] % 2 == 0)
    ds.take_all()
    stats = ds.stats()
    assert stats.count("Map(gil_bound): ") == 1, stats  # one note: its own UDF's
    assert "Map(gil_bound)[auto: threads, measuring]" in other._explain_str()


def test_a_materialized_dataset_passes_no_udf_on(auto_mode):
    done = md.range(40, override_num_blocks=4).map(gil_bound).materialize()
    assert "python_udf_workers='auto'" in done.stats()
    again = done.map(lambda r: r)
    again.take_all()
    assert "gil_bound" not in again.stats()

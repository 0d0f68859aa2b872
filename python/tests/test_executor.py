"""The executor under a budget: resources, backpressure, actor pools, stats.

Speeds of the stages vary from test to test; the memory promise, liveness and the
actor pool bounds must hold in every combination. Nothing here asserts a timing beyond
"finishes" and "fails fast" (whole seconds of slack)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import psutil
import pyarrow as pa
import pytest

import millstream as md
from conftest import ConcurrencyProbe

MiB = 1 << 20


def _inflate(nbytes):
    def inflate(batch):
        return {"v": np.ones(nbytes // 8, dtype=np.int64)}
    return inflate


def _sleep(seconds):
    def sleep(batch):
        time.sleep(seconds)
        return batch
    return sleep


def _stat(ds, pattern):
    found = re.findall(pattern, ds.stats())
    assert found, ds.stats()
    return found


# ---- memory ---------------------------------------------------------------------------


@pytest.mark.parametrize("producer_s,middle_s,consumer_s", [
    (0.0, 0.0, 0.02),    # fast producer, slow consumer
    (0.0, 0.02, 0.0),    # slow middle stage
    (0.01, 0.0, 0.01),   # everything slow-ish
])
def test_accounted_memory_stays_under_the_limit(producer_s, middle_s, consumer_s):
    limit, block = 48 * MiB, 4 * MiB
    ctx = md.DataContext.get_current()
    ctx.execution_options.resource_limits.object_store_memory = limit
    ds = (md.range(60, override_num_blocks=60)
          .map_batches(lambda b: (time.sleep(producer_s), _inflate(block)(b))[1])
          .map_batches(_sleep(middle_s), num_cpus=0.5))  # its own operator
    it = ds._execute(None, False)
    peak_accounted = 0
    rows = 0
    try:
        while True:
            batch = it.next()
            if batch is None:
                break
            rows += batch.num_rows
            peak_accounted = max(peak_accounted, it.accounted_bytes())
            time.sleep(consumer_s)
        totals = it.stats()
    finally:
        it.close()
    assert rows == 60 * block // 8
    # The promise: the limit plus one task's input and output.
    assert totals.peak_bytes <= limit + 2 * block
    assert peak_accounted <= limit + 2 * block


def test_a_local_parquet_reads_file_bytes_count_and_are_read_a_window_at_a_time(tmp_path):
    # Six row groups of 8 MiB (random float64, uncompressed), read by one task with a
    # filter that keeps nothing (no statistics to skip row groups by): what the task holds is the file's bytes it read ahead.
    # They count as its memory (they come from the engine's pool), and it reads them a
    # window of 16 MiB at a time, not the whole 48 MiB file before decoding any.
    import pyarrow.parquet as pq

    path = tmp_path / "wide.parquet"
    rows = 6 * 2**20
    pq.write_table(pa.table({"x": np.random.default_rng(0).random(rows)}), path,
                   row_group_size=2**20, compression="none", write_statistics=False)
    ds = md.read_parquet(str(path)).filter(expr="x < -1.0")
    assert ds.count() == 0
    (read,) = ds._last_stats.operators
    assert read.tasks == 1
    scratch = read.peak_task_scratch_bytes
    assert 8 * MiB <= scratch <= 16 * MiB + 2 * MiB, scratch / MiB


def test_first_task_sizes_the_others(ctx):
    # Tiny inputs, 48 MiB outputs, 4 CPU slots, a 16 MiB limit: before any task finished
    # nothing tells how much a task makes, so one runs first (not one per CPU: 192 MiB).
    limit, block = 16 * MiB, 48 * MiB
    ctx.execution_options.resource_limits.object_store_memory = limit
    ctx.execution_options.resource_limits.cpu = 4
    ctx.target_max_block_size = 2 * block  # one block per task

    def inflate(batch):
        out = _inflate(block)(batch)
        time.sleep(0.05)  # tasks launched together would overlap
        return out

    ds = md.range(6, override_num_blocks=6).map_batches(inflate)
    rows = sum(len(b["v"]) for b in ds.iter_batches(batch_size=None))
    assert rows == 6 * block // 8
    totals = ds._last_stats
    # The promise: the limit plus one task's input (8 bytes) and output.
    assert totals.peak_bytes <= limit + block + 1024, totals.peak_bytes / MiB


def test_resident_memory_follows_a_stalled_consumer():
    limit, block = 64 * MiB, 8 * MiB
    md.DataContext.get_current().execution_options.resource_limits.object_store_memory = limit
    ds = md.range(200, override_num_blocks=200).map_batches(_inflate(block))  # 1.6 GB in all
    proc = psutil.Process()
    before = proc.memory_info().rss
    it = iter(ds.iter_batches(batch_size=None))
    next(it)
    time.sleep(1.5)  # the consumer stalls; the pipeline must stop growing
    grown = proc.memory_info().rss - before
    it.close()
    assert grown < limit + 6 * block, f"RSS grew {grown / MiB:.0f} MiB with a {limit / MiB:.0f} MiB limit"


_RSS_SCRIPT = textwrap.dedent("""
    import gc, sys, time
    import numpy as np, psutil
    import millstream as md

    MiB = 1 << 20
    mode = sys.argv[1]
    proc = psutil.Process()

    def make(batch):  # 8 MiB of numpy per block, 200 blocks: 1.68 GB a run
        return {"v": np.full(MiB, float(batch["id"][0]))}

    ds = md.range(200, override_num_blocks=200).map_batches(make)
    md.range(10).map_batches(lambda b: b).count()  # threads and imports warmed up
    gc.collect()
    start = proc.memory_info().rss
    for run in range(3):
        if mode == "iter_batches":
            produced = sum(b["v"].nbytes for b in ds.iter_batches(batch_size=None))
        elif mode == "materialize":
            m = ds.materialize()
            produced = m.to_arrow().nbytes
            del m
        elif mode == "to_pandas":
            df = ds.to_pandas()
            produced = int(df.memory_usage(index=False).sum())
            del df
        else:
            t = ds.to_arrow()
            produced = t.nbytes
            del t
        assert produced == 200 * 8 * MiB, produced
        gc.collect()
    grown = []
    for _ in range(40):  # the last run's memory may take a second to go back
        grown.append(proc.memory_info().rss - start)
        if grown[-1] < 300e6:
            break
        time.sleep(0.1)
    print(f"grown {grown[-1] / 1e6:.0f} MB (first look {grown[0] / 1e6:.0f} MB)", flush=True)
""")


@pytest.mark.parametrize("mode", ["iter_batches", "materialize", "to_pandas", "to_arrow"])
def test_resident_memory_returns_after_executions(tmp_path, mode):
    # Three runs of 1.68 GB of numpy output each used to leave the process 1.6-3.3 GB
    # larger with nothing alive: freed memory stayed in the allocators. In a subprocess,
    # so the measure starts from a known state.
    script = tmp_path / "rss.py"
    script.write_text(_RSS_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    grown = float(re.search(r"grown (-?\d+) MB", proc.stdout).group(1))
    assert grown < 300, proc.stdout


# ---- resources --------------------------------------------------------------------------


def test_impossible_gpu_request_fails_at_once():
    start = time.monotonic()
    with pytest.raises(ValueError, match="num_gpus"):
        md.range(10).map_batches(lambda b: b, num_gpus=1).take_all()
    assert time.monotonic() - start < 5


def test_num_cpus_above_the_limit_fails_at_once():
    md.DataContext.get_current().execution_options.resource_limits.cpu = 2
    with pytest.raises(ValueError, match="num_cpus"):
        md.range(10).map_batches(lambda b: b, num_cpus=3).take_all()


def test_logical_gpus_bound_concurrency():
    ctx = md.DataContext.get_current()
    ctx.execution_options.resource_limits.gpu = 2
    ctx.execution_options.resource_limits.cpu = 4
    on_gpu = ConcurrencyProbe(0.02)
    out = md.range(400, override_num_blocks=20).map_batches(on_gpu, num_gpus=1, num_cpus=0).take_all()
    assert sorted(r["id"] for r in out) == list(range(400))
    assert on_gpu.peak == 2  # two logical GPUs, one per task


def test_concurrency_caps_tasks_in_flight():
    track = ConcurrencyProbe(0.01)
    md.DataContext.get_current().execution_options.resource_limits.cpu = 4
    assert md.range(200, override_num_blocks=20).map_batches(track, concurrency=1, num_cpus=0.25).count() == 200
    assert track.peak == 1


def test_exclude_resources_reduces_the_limit():
    ctx = md.DataContext.get_current()
    ctx.execution_options.resource_limits.cpu = 2
    ctx.execution_options.exclude_resources.cpu = 1
    with pytest.raises(ValueError, match="num_cpus"):
        md.range(10).map_batches(lambda b: b, num_cpus=2).take_all()


# ---- actor pools ------------------------------------------------------------------------


class _Counted:
    lock = threading.Lock()
    constructed = 0

    def __init__(self, delay=0.0):
        with _Counted.lock:
            _Counted.constructed += 1
        self.delay = delay

    def __call__(self, batch):
        time.sleep(self.delay)
        return {"id": batch["id"] * 2}


@pytest.fixture
def counted():
    _Counted.constructed = 0
    return _Counted


def test_autoscaling_pool_grows_to_max_under_load_and_no_further(counted):
    ds = md.range(3000, override_num_blocks=150).map_batches(
        counted, fn_constructor_args=(0.004,), concurrency=(1, 3), num_cpus=0.5)
    out = ds.take_all()
    assert sorted(r["id"] for r in out) == [2 * i for i in range(3000)]
    assert counted.constructed == 3
    assert int(_stat(ds, r"Actors: peak (\d+)")[0]) == 3


def test_autoscaling_pool_stays_at_min_when_input_trickles(counted):
    md.DataContext.get_current().execution_options.resource_limits.cpu = 1.5
    ds = (md.range(30, override_num_blocks=30)
          .map_batches(_sleep(0.02), concurrency=1)     # a slow, capped producer
          .map_batches(counted, concurrency=(1, 4), num_cpus=0.5))
    assert ds.count() == 30
    assert counted.constructed == 1


def test_fixed_pool_constructs_each_actor_once(counted):
    ds = md.range(2000, override_num_blocks=100).map_batches(counted, fn_constructor_args=(0.001,),
                                                             concurrency=2, num_cpus=0.5)
    assert ds.count() == 2000
    assert 1 <= counted.constructed <= 2


@pytest.mark.parametrize("max_concurrency", [1, 2])
def test_actors_taking_every_cpu_do_not_starve_upstream(counted, max_concurrency):
    md.DataContext.get_current().execution_options.resource_limits.cpu = 2
    ds = (md.range(500, override_num_blocks=25)
          .map_batches(_sleep(0.001), concurrency=1)    # upstream tasks need a CPU too
          .map_batches(counted, concurrency=2, num_cpus=1, max_concurrency=max_concurrency))
    done = []
    t = threading.Thread(target=lambda: done.append(ds.count()), daemon=True)
    t.start()
    t.join(30)
    assert done == [500], "the pipeline hung: actors starved their upstream"


def test_autoscaling_config_fields_steer_the_pool(counted):
    md.DataContext.get_current().autoscaling_config.actor_pool_util_upscaling_threshold = 1e9
    ds = md.range(1000, override_num_blocks=50).map_batches(counted, concurrency=(1, 4), num_cpus=0.5)
    assert ds.count() == 1000
    assert counted.constructed == 1  # never busy enough to grow


class _Reentry:
    """A stateful model that records how many calls were inside this instance at once
    (each call sleeps to widen the window) and stamps the peak on its rows."""

    def __init__(self, seconds=0.003):
        self.seconds, self.lock, self.inside, self.peak = seconds, threading.Lock(), 0, 0

    def __call__(self, batch):
        with self.lock:
            self.inside += 1
            self.peak = max(self.peak, self.inside)
        time.sleep(self.seconds)
        with self.lock:
            self.inside -= 1
        return {"id": batch["id"], "peak": np.full(len(batch["id"]), self.peak)}


def _peak_inside_one_actor(**kwargs):
    rows = md.range(1500, override_num_blocks=150).map_batches(_Reentry, **kwargs).take_all()
    assert sorted(r["id"] for r in rows) == list(range(1500))
    return max(r["peak"] for r in rows)


@pytest.mark.parametrize("concurrency", [1, 2, (1, 3)])
def test_an_actor_runs_one_call_at_a_time(concurrency):
    md.DataContext.get_current().execution_options.resource_limits.cpu = 8  # threads to spare
    assert _peak_inside_one_actor(concurrency=concurrency, num_cpus=0.5) == 1


def test_actors_of_a_pool_run_side_by_side():
    probe = ConcurrencyProbe(0.005)

    class Model:
        def __call__(self, batch):
            return probe(batch)

    md.DataContext.get_current().execution_options.resource_limits.cpu = 4
    assert md.range(400, override_num_blocks=40).map_batches(Model, concurrency=2).count() == 400
    assert probe.peak == 2


def test_max_concurrency_runs_tasks_together_but_calls_one_at_a_time():
    # As Ray's ActorPoolStrategy without enable_true_multi_threading: up to max_concurrency
    # tasks on one actor (here a fused function of theirs overlaps), one call in its model.
    prepare = ConcurrencyProbe(0.02)
    md.DataContext.get_current().execution_options.resource_limits.cpu = 8
    rows = (md.range(600, override_num_blocks=60).map_batches(prepare)
            .map_batches(_Reentry, concurrency=1, max_concurrency=3).take_all())
    assert len(rows) == 600
    assert max(r["peak"] for r in rows) == 1
    assert prepare.peak == 3


def test_true_multi_threading_lets_max_concurrency_calls_in():
    md.DataContext.get_current().execution_options.resource_limits.cpu = 8
    pool = md.ActorPoolStrategy(size=1, enable_true_multi_threading=True)
    assert _peak_inside_one_actor(compute=pool, max_concurrency=3, fn_constructor_args=(0.01,)) == 3
    assert _peak_inside_one_actor(compute=pool) == 1  # max_concurrency=1: one at a time still


@pytest.mark.parametrize("make", [
    lambda: md.ActorPoolStrategy(max_tasks_in_flight_per_actor=0),
    lambda: md.ActorPoolStrategy(size=0),
    lambda: md.ActorPoolStrategy(min_size=0),
    lambda: md.ActorPoolStrategy(min_size=3, max_size=2),
    lambda: md.ActorPoolStrategy(min_size=2, max_size=4, initial_size=5),
    lambda: md.ActorPoolStrategy(size=2, initial_size=2),
    lambda: md.range(3).map_batches(_Reentry, concurrency=1, max_concurrency=0),
    lambda: md.range(3).map_batches(lambda b: b, max_concurrency=2),
])
def test_invalid_actor_pool_settings_raise(make):
    with pytest.raises(ValueError):
        make()


def test_invalid_pool_settings_name_the_argument():
    with pytest.raises(ValueError, match="max_tasks_in_flight_per_actor"):
        md.ActorPoolStrategy(max_tasks_in_flight_per_actor=0)
    with pytest.raises(ValueError, match="max_concurrency"):
        md.range(3).map_batches(_Reentry, concurrency=1, max_concurrency=0)
    with pytest.raises(TypeError, match="enable_true_multi_threading"):
        md.ActorPoolStrategy(enable_true_multi_threading="yes")
    md.DataContext.get_current().max_tasks_in_flight_per_actor = 0
    with pytest.raises(ValueError, match="max_tasks_in_flight_per_actor"):
        md.range(3).map_batches(_Reentry, concurrency=1)


def test_constructor_failure_names_the_class():
    class Broken:
        def __init__(self):
            raise RuntimeError("weights missing")

        def __call__(self, batch):
            return batch

    with pytest.raises(RuntimeError, match="weights missing") as info:
        md.range(10).map_batches(Broken, concurrency=1).take_all()
    assert "Broken" in " ".join(getattr(info.value, "__notes__", []))


# ---- failures tolerated -----------------------------------------------------------------


def test_max_errored_blocks_skips_failed_blocks(caplog):
    def picky(batch):
        if batch["id"][0] % 300 == 0:
            raise ValueError("bad block")
        return batch

    ds = md.range(1000, override_num_blocks=10).map_batches(picky)
    with pytest.raises(ValueError, match="bad block"):
        ds.take_all()
    md.DataContext.get_current().max_errored_blocks = 4
    rows = ds.take_all()
    expected = [i for i in range(1000) if (i // 100 * 100) % 300 != 0]
    assert sorted(r["id"] for r in rows) == expected
    assert "failed and were skipped" in caplog.text


# ---- stats ------------------------------------------------------------------------------


def test_stats_before_and_after_execution():
    ds = md.range(1000, override_num_blocks=10).map_batches(_sleep(0.001)).filter(expr="id < 250")
    assert "not been executed" in ds.stats()
    assert ds.count() == 250
    text = ds.stats()
    rows_in = [int(x) for x in re.findall(r"Rows in: (\d+)", text)]
    rows_out = [int(x) for x in re.findall(r"rows out: (\d+)", text)]
    assert rows_in[0] == 1000 and rows_out[-1] == 250
    udf = float(re.findall(r"in UDFs: ([0-9.]+) s", text)[0])
    assert udf >= 0.009  # ten calls of at least 1 ms
    assert "ReadRange->MapBatches(sleep)->Filter" in text


def test_map_stats_rows_out_equal_rows_in_for_row_preserving_maps():
    ds = (md.range(500, override_num_blocks=5).map_batches(lambda b: b, num_cpus=0.5)
          .map(lambda r: r))  # different resources: two operators
    assert len(ds.take_all()) == 500
    rows_in = [int(x) for x in re.findall(r"Rows in: (\d+)", ds.stats())]
    rows_out = [int(x) for x in re.findall(r"rows out: (\d+)", ds.stats())]
    assert rows_in == [500, 500] and rows_out == [500, 500]


def test_stats_come_back_as_typed_objects():
    """The last execution's counters are the engine's typed ExecutionStats / OperatorStats;
    Dataset.stats() prints their summary."""
    from millstream import _core

    ds = (md.range(500, override_num_blocks=5).map_batches(lambda b: b, num_cpus=0.5)
          .map(lambda r: r))  # different resources: two operators
    assert len(ds.take_all()) == 500
    stats = ds._last_stats
    assert isinstance(stats, _core.ExecutionStats) and stats.finished
    assert [type(op) for op in stats.operators] == [_core.OperatorStats] * 2
    assert [op.rows_in for op in stats.operators] == [500, 500]
    assert [op.rows_out for op in stats.operators] == [500, 500]
    assert [op.blocks_in for op in stats.operators][0] == 5
    assert all(op.done and op.errored_tasks == 0 for op in stats.operators)
    assert stats.operators[0].display_name.startswith("ReadRange->MapBatches(")
    assert stats.wall_s > 0 and stats.peak_bytes > 0 and stats.memory_limit > 0
    assert ds.stats() == stats.to_string()


def test_typed_stats_take_keyword_arguments():
    from millstream import _core

    op = _core.OperatorStats(name="LimitOperator[3]", rows_out=3, done=True)
    assert (op.name, op.rows_out, op.done, op.estimated_rows_out, op.tasks) == ("LimitOperator[3]", 3, True, -1, 0)
    with pytest.raises(TypeError, match="rows_outt"):
        _core.OperatorStats(rows_outt=3)
    with pytest.raises(TypeError):
        _core.OperatorStats(rows_out="three")
    stats = _core.ExecutionStats(operators=[op], wall_s=1.5, finished=True)
    assert (stats.operators[0].rows_out, stats.wall_s, stats.held_bytes) == (3, 1.5, 0)
    with pytest.raises(TypeError):
        _core.ExecutionStats([op])  # keywords only
    assert "LimitOperator[3]" in stats.to_string()


# ---- DataContext ------------------------------------------------------------------------


def test_every_ray_field_exists_with_its_default():
    ctx = md.DataContext()
    # A sample across categories, values from Ray Data 2.58's DataContext().
    assert ctx.autoscaling_config.actor_pool_util_upscaling_threshold == 1.75
    assert ctx.autoscaling_config.actor_pool_util_downscaling_threshold == 0.5
    assert ctx.autoscaling_config.actor_pool_max_upscaling_delta == 1
    assert ctx.downstream_capacity_backpressure_ratio == 2.0
    assert ctx.max_tasks_in_flight_per_actor is None
    assert ctx.streaming_read_buffer_size == 32 * MiB
    assert ctx.execution_no_progress_timeout_s == 1800
    assert "scheduling_strategy" in md.DataContext.cluster_only_fields()
    assert "target_max_block_size" not in md.DataContext.cluster_only_fields()


def test_misspelled_field_names_the_nearest():
    ctx = md.DataContext.get_current()
    with pytest.raises(AttributeError, match="actor_pool_util_upscaling_threshold"):
        ctx.autoscaling_config.actor_pool_upscaling_threshold = 2.0
    with pytest.raises(AttributeError, match="op_resource_reservation_ratio"):
        ctx.op_resource_reservation_ration = 0.3


def test_memory_per_task_is_held_against_the_limit():
    ctx = md.DataContext.get_current()
    ctx.execution_options.resource_limits.cpu = 4
    ctx.execution_options.resource_limits.object_store_memory = 100 * MiB
    heavy = ConcurrencyProbe(0.02)
    ds = md.range(400, override_num_blocks=20).map_batches(heavy, num_cpus=0.5, memory=40 * MiB)
    assert ds.count() == 400
    assert 1 <= heavy.peak <= 2  # three tasks would hold 120 MiB of a 100 MiB limit


def test_memory_request_above_the_limit_fails_at_once():
    md.DataContext.get_current().execution_options.resource_limits.object_store_memory = 10 * MiB
    with pytest.raises(ValueError, match="memory"):
        md.range(10).map_batches(lambda b: b, memory=20 * MiB).take_all()


def test_auto_log_stats_totals_or_verbose(caplog):
    import logging

    caplog.set_level(logging.INFO, logger="millstream")
    ctx = md.DataContext.get_current()
    ctx.enable_auto_log_stats = True
    ds = md.range(100, override_num_blocks=4).map_batches(lambda b: b)
    assert ds.count() == 100
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "millstream")
    assert "100 rows out" in logged and "Operator 0" not in logged
    caplog.clear()
    ctx.verbose_stats_logs = True
    assert ds.count() == 100
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "millstream")
    assert "Operator 0" in logged and "Rows in: 100" in logged


def test_compute_strategies_as_in_ray(counted):
    ds = md.range(600, override_num_blocks=30).map_batches(
        counted, fn_constructor_args=(0.002,), compute=md.ActorPoolStrategy(size=2), num_cpus=0.5)
    assert sorted(r["id"] for r in ds.take_all()) == [2 * i for i in range(600)]
    assert 1 <= counted.constructed <= 2
    probe = ConcurrencyProbe(0.005)
    md.DataContext.get_current().execution_options.resource_limits.cpu = 4
    assert md.range(100, override_num_blocks=10).map_batches(
        probe, compute=md.TaskPoolStrategy(size=1), num_cpus=0.25).count() == 100
    assert probe.peak == 1
    with pytest.raises(ValueError, match="callable class"):
        md.range(10).map_batches(lambda b: b, compute=md.ActorPoolStrategy(size=1))
    with pytest.raises(ValueError, match="min_size"):
        md.ActorPoolStrategy(min_size=3, max_size=2)

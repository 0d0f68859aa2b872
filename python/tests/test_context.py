"""DataContext: singleton, Ray's defaults, strict fields, and the knobs being honoured."""

from __future__ import annotations

import re
import threading
import time

import numpy as np
import psutil
import pyarrow as pa
import pytest

import millstream as md
from conftest import ConcurrencyProbe

MiB = 1 << 20


def test_get_current_is_a_singleton():
    a = md.DataContext.get_current()
    b = md.DataContext.get_current()
    assert a is b
    seen = []
    t = threading.Thread(target=lambda: seen.append(md.DataContext.get_current()))
    t.start()
    t.join()
    assert seen[0] is a
    a.target_min_block_size = 2 * MiB
    assert md.DataContext.get_current().target_min_block_size == 2 * MiB


def test_context_restored_between_tests():
    # The autouse fixture put back the value changed by the previous test.
    assert md.DataContext.get_current().target_min_block_size == 1 * MiB


# Ray Data 2.58's defaults (ray.data.DataContext()), for the fields millstream shares.
RAY_DEFAULTS = {
    "target_max_block_size": 128 * MiB,
    "target_min_block_size": 1 * MiB,
    "read_op_min_num_blocks": 200,
    "op_resource_reservation_enabled": True,
    "op_resource_reservation_ratio": 0.5,
    "enable_progress_bars": True,
    "enable_operator_progress_bars": True,
    "enable_auto_log_stats": False,
    "verbose_stats_logs": False,
    "max_errored_blocks": 0,
    "eager_free": False,
    "scheduling_strategy": "SPREAD",
    "scheduling_strategy_large_args": "DEFAULT",
    "large_args_threshold": 50 * MiB,
    "use_push_based_shuffle": False,
    "enable_tensor_extension_casting": True,
}


@pytest.mark.parametrize("name", sorted(RAY_DEFAULTS))
def test_defaults_match_ray(name):
    assert getattr(md.DataContext(), name) == RAY_DEFAULTS[name]
    assert getattr(md.DataContext.get_current(), name) == RAY_DEFAULTS[name]


def test_execution_options_defaults():
    opts = md.DataContext.get_current().execution_options
    assert isinstance(opts, md.ExecutionOptions)
    assert opts.preserve_order is False
    assert opts.locality_with_output is False
    assert opts.actor_locality_enabled is True
    assert opts.verbose_progress is True
    assert isinstance(opts.resource_limits, md.ExecutionResources)
    ex = opts.exclude_resources
    assert (ex.cpu, ex.gpu, ex.object_store_memory, ex.memory) == (0, 0, 0, 0)
    zero = md.ExecutionResources.zero()
    assert (zero.cpu, zero.gpu, zero.object_store_memory, zero.memory) == (0, 0, 0, 0)
    lim = md.ExecutionResources.for_limits(cpu=2, object_store_memory=5)
    assert (lim.cpu, lim.gpu, lim.object_store_memory) == (2, None, 5)


@pytest.mark.parametrize("obj_path,bad,good", [
    ("", "target_max_blok_size", "target_max_block_size"),
    ("", "op_resource_reservation_ration", "op_resource_reservation_ratio"),
    ("execution_options", "preserve_ordr", "preserve_order"),
    ("execution_options.resource_limits", "object_store_memor", "object_store_memory"),
])
def test_unknown_attribute_names_nearest_field(obj_path, bad, good):
    obj = md.DataContext.get_current()
    for part in filter(None, obj_path.split(".")):
        obj = getattr(obj, part)
    with pytest.raises(AttributeError) as info:
        setattr(obj, bad, 1)
    assert good in str(info.value)
    assert bad in str(info.value)
    assert not hasattr(obj, bad)


def test_known_fields_are_settable(ctx):
    ctx.target_max_block_size = 4 * MiB
    ctx.execution_options.preserve_order = True
    ctx.execution_options.resource_limits.object_store_memory = 100 * MiB
    assert md.DataContext.get_current().target_max_block_size == 4 * MiB
    assert md.DataContext.get_current().execution_options.resource_limits.object_store_memory == 100 * MiB


def test_target_max_block_size_splits_read_blocks(ctx):
    ctx.target_max_block_size = 1 * MiB
    n = 1_000_000  # 8 MB of int64 in one read task
    blocks = list(md.range(n, override_num_blocks=1).iter_batches(batch_size=None, batch_format="pyarrow"))
    assert sum(b.num_rows for b in blocks) == n
    assert len(blocks) >= 6
    assert all(b.nbytes <= 1.5 * MiB for b in blocks), [b.nbytes for b in blocks]
    ids = np.sort(np.concatenate([b["id"].to_numpy() for b in blocks]))
    np.testing.assert_array_equal(ids, np.arange(n))


def test_target_max_block_size_splits_udf_output(ctx):
    ctx.target_max_block_size = 1 * MiB

    def grow(batch):  # one row in, 8 MiB out
        return {"x": np.full(1 << 20, float(batch["id"][0]))}

    blocks = list(md.range(3, override_num_blocks=3).map_batches(grow)
                  .iter_batches(batch_size=None, batch_format="pyarrow"))
    assert sum(b.num_rows for b in blocks) == 3 << 20
    assert all(b.nbytes <= 1.5 * MiB for b in blocks), [b.nbytes for b in blocks]
    assert len(blocks) >= 3 * 6


def test_large_default_block_size_keeps_blocks_whole():
    blocks = list(md.range(1_000_000, override_num_blocks=1).iter_batches(batch_size=None))
    assert len(blocks) == 1


def _parse_size(text: str) -> float:
    value, unit = text.split()
    return float(value) * {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}[unit]


def _peak_and_limit(stats: str) -> tuple[float, float]:
    m = re.search(r"peak ([\d.]+ \w+) of blocks held \(limit ([\d.]+ \w+)\)", stats)
    assert m, stats
    return _parse_size(m.group(1)), _parse_size(m.group(2))


def _eight_mib(batch):
    return {"x": np.full(1 << 20, float(batch["id"][0]))}


def test_object_store_memory_limit_reported_and_held(ctx):
    ctx.execution_options.resource_limits.object_store_memory = 48 * MiB
    ds = md.range(64, override_num_blocks=64).map_batches(_eight_mib)  # 512 MiB in all
    it = ds.iter_batches(batch_size=None)
    next(it)
    time.sleep(0.5)
    it.close()
    peak, limit = _peak_and_limit(ds.stats())
    assert limit == 48 * MiB
    assert peak <= 48 * MiB + 2 * 8 * MiB


def test_exclude_resources_reduces_limit(ctx):
    ctx.execution_options.resource_limits.object_store_memory = 96 * MiB
    ctx.execution_options.exclude_resources.object_store_memory = 32 * MiB
    ds = md.range(10)
    ds.take_all()
    _, limit = _peak_and_limit(ds.stats())
    assert limit == 64 * MiB


def test_stalled_consumer_memory_stays_bounded(ctx):
    ctx.execution_options.resource_limits.object_store_memory = 64 * MiB
    proc = psutil.Process()
    # Warm up threads and allocators first so the baseline is honest.
    md.range(4, override_num_blocks=4).map_batches(_eight_mib).materialize()
    base = proc.memory_info().rss
    n_blocks = 160  # 160 x 8 MiB = 1.25 GiB if nothing held producers back
    ds = md.range(n_blocks, override_num_blocks=n_blocks).map_batches(_eight_mib)
    it = ds.iter_batches(batch_size=None)
    try:
        first = next(it)
        assert first["x"].nbytes == 8 * MiB
        time.sleep(2.0)
        growth = proc.memory_info().rss - base
    finally:
        it.close()
    total = n_blocks * 8 * MiB
    assert growth < 64 * MiB + 4 * 8 * MiB + 32 * MiB, f"RSS grew {growth / MiB:.0f} MiB of {total / MiB:.0f} MiB"


@pytest.mark.parametrize("cpus", [1, 2])
def test_cpu_limit_caps_concurrent_tasks(ctx, cpus):
    ctx.execution_options.resource_limits.cpu = cpus
    slow = ConcurrencyProbe(0.01)
    out = md.range(400, override_num_blocks=40).map_batches(slow).take_all()
    assert sorted(r["id"] for r in out) == list(range(400))
    assert 1 <= slow.peak <= cpus


def test_small_task_outputs_are_combined():
    # 100 UDF outputs of 10 rows per task are far under target_min_block_size (1 MiB):
    # each task hands over one combined block.
    blocks = list(md.range(1000, override_num_blocks=2).map_batches(lambda b: b, batch_size=10)
                  .iter_batches(batch_size=None, batch_format="pyarrow"))
    assert sorted(b.num_rows for b in blocks) == [500, 500]
    ids = np.sort(np.concatenate([b["id"].to_numpy() for b in blocks]))
    np.testing.assert_array_equal(ids, np.arange(1000))


def test_min_block_size_zero_keeps_outputs_apart(ctx):
    ctx.target_min_block_size = 1
    blocks = list(md.range(1000, override_num_blocks=2).map_batches(lambda b: b, batch_size=100)
                  .iter_batches(batch_size=None, batch_format="pyarrow"))
    assert sum(b.num_rows for b in blocks) == 1000
    assert len(blocks) == 10


@pytest.mark.parametrize("obj_path,bad,meant", [
    ("", "preserve_order", "execution_options.preserve_order"),
    ("", "resource_limits", "execution_options.resource_limits"),
    ("", "cpu", "execution_options.resource_limits.cpu"),
    ("", "object_store_memory", "execution_options.resource_limits.object_store_memory"),
    ("execution_options", "cpu", "resource_limits.cpu"),
])
def test_field_of_a_nested_options_object_is_named_with_its_path(obj_path, bad, meant):
    # ctx.preserve_order = True sets nothing in Ray either: the field is on execution_options.
    obj = md.DataContext.get_current()
    for part in filter(None, obj_path.split(".")):
        obj = getattr(obj, part)
    with pytest.raises(AttributeError, match=re.escape(f"did you mean '{meant}'?")):
        setattr(obj, bad, True)


def test_typed_core_context_mirrors_the_python_one(ctx):
    """The engine gets a typed DataContext (keyword arguments only), built in one place."""
    from millstream import _core

    ctx.target_min_block_size = 3 * MiB
    ctx.target_max_block_size = None  # Ray's "no limit"
    ctx.execution_options.resource_limits.cpu = 2
    ctx.execution_options.resource_limits.object_store_memory = 64 * MiB
    ctx.execution_options.exclude_resources.gpu = 1
    ctx.execution_options.preserve_order = True
    ctx.autoscaling_config.actor_pool_max_upscaling_delta = 3
    ctx.max_errored_blocks = -1
    core = ctx._to_core()
    assert isinstance(core, _core.DataContext)
    assert core.target_min_block_size == 3 * MiB
    assert core.target_max_block_size == 2**63 - 1
    assert core.read_op_min_num_blocks == 200
    limits = core.execution_options.resource_limits
    assert (limits.cpu, limits.gpu, limits.object_store_memory) == (2.0, None, 64 * MiB)
    exclude = core.execution_options.exclude_resources
    assert (exclude.cpu, exclude.gpu, exclude.object_store_memory) == (0.0, 1.0, 0)
    assert core.execution_options.preserve_order is True
    assert core.autoscaling_config.actor_pool_max_upscaling_delta == 3
    assert core.autoscaling_config.actor_pool_util_upscaling_threshold == 1.75
    assert core.op_resource_reservation_ratio == 0.5
    assert core.max_errored_blocks == -1
    # Nested parts are edited in place, as on the Python side.
    core.execution_options.preserve_order = False
    assert core.execution_options.preserve_order is False


def test_typed_core_context_takes_keywords_only_and_validates():
    from millstream import _core

    with pytest.raises(TypeError):
        _core.DataContext(1024)
    with pytest.raises(TypeError):
        _core.DataContext(target_max_blok_size=1024)
    core = _core.DataContext(target_max_block_size=0)
    with pytest.raises(ValueError, match="target_max_block_size"):
        core.validate()
    _core.DataContext().validate()  # the defaults are valid
    with pytest.raises(ValueError, match="target_max_block_size"):
        md.range(10)._core.execute(core, None, False)

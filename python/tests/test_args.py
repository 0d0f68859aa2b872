"""Argument checking of the public API: misspelt names, passthroughs, numbers, OS errors."""

import errno
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import millstream as md


# ---- misspelt DataContext fields name the field the user meant ------------------------

@pytest.mark.parametrize("bad,good", [
    ("enable_op_resource_reservation", "op_resource_reservation_enabled"),
    ("op_resource_reservation_ration", "op_resource_reservation_ratio"),
    ("reservation_ratio", "op_resource_reservation_ratio"),
    ("max_block_size", "target_max_block_size"),
    ("min_block_size", "target_min_block_size"),
    ("progress_bars", "enable_progress_bars"),
    ("auto_log_stats", "enable_auto_log_stats"),
    ("enable_verbose_stats_logs", "verbose_stats_logs"),
    ("errored_blocks_max", "max_errored_blocks"),
    ("max_tasks_in_flight", "max_tasks_in_flight_per_actor"),
])
def test_misspelt_context_field_suggests_the_meant_one(bad, good):
    ctx = md.DataContext.get_current()
    with pytest.raises(AttributeError) as info:
        setattr(ctx, bad, True)
    assert f"did you mean '{good}'?" in str(info.value)


def test_far_off_context_field_suggests_nothing():
    with pytest.raises(AttributeError) as info:
        md.DataContext.get_current().zzz = 1
    assert "did you mean" not in str(info.value)


# ---- every public callable: a misspelt keyword names the one meant ----------------------

def _public_callables():
    """(label, callable) for every public function, method and constructor."""
    from millstream.context import AutoscalingConfig

    out = [(name, getattr(md, name)) for name in md.__all__
           if inspect.isfunction(getattr(md, name))]
    for cls in (md.Dataset, md.DataIterator):
        out += [(f"{cls.__name__}.{name}", member) for name, member in vars(cls).items()
                if inspect.isfunction(member) and not name.startswith("_")]
    for cls in (md.DataContext, md.ExecutionOptions, md.ExecutionResources, AutoscalingConfig,
                md.ActorPoolStrategy, md.TaskPoolStrategy):
        out.append((cls.__name__, cls))
    out.append(("ExecutionResources.for_limits", md.ExecutionResources.for_limits))
    return out


def _misspelt(name: str) -> str:
    """``name`` with one letter dropped (or, when short, a stray underscore added)."""
    return name[:-2] + name[-1] if len(name) >= 4 else name + "_"


def _keyword_cases():
    cases = []
    for label, fn in _public_callables():
        params = inspect.signature(fn).parameters.values()
        keywords = [p.name for p in params if p.name != "self"
                    and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        cases += [pytest.param(fn, name, id=f"{label}-{name}") for name in keywords]
        if not keywords:
            cases.append(pytest.param(fn, None, id=f"{label}-(none)"))
    return cases


def test_every_public_callable_is_checked():
    for label, fn in _public_callables():
        if isinstance(fn, type):
            fn = fn.__init__
        assert hasattr(fn, "__wrapped__"), f"{label} is not wrapped by _args.public"


@pytest.mark.parametrize("fn,name", _keyword_cases())
def test_misspelt_keyword_names_the_nearest(fn, name):
    bad = _misspelt(name) if name else "zzz_not_a_keyword"
    args = () if isinstance(fn, type) or not _is_method(fn) else (object(),)
    with pytest.raises(TypeError) as info:
        fn(*args, **{bad: 1})
    message = str(info.value)
    assert f"'{bad}'" in message
    if name:
        assert f"did you mean '{name}'?" in message


def _is_method(fn) -> bool:
    params = list(inspect.signature(fn).parameters)
    return bool(params) and params[0] == "self"


@pytest.mark.parametrize("call,meant", [
    (lambda: md.read_parquet("x.parquet", colums=["a"]), "columns"),
    (lambda: md.range(3).map_batches(lambda b: b, batchsize=2), "batch_size"),
    (lambda: md.range(3).write_parquet("/nonexistent", compresion="snappy"), "compression"),
    (lambda: md.range(3).map_batches(lambda b: b, num_cpu=1), "num_cpus"),
    (lambda: md.range(3).map_batches(lambda b: b, schedulng_strategy="SPREAD"), "scheduling_strategy"),
    (lambda: md.read_parquet("x.parquet", ray_remote_args={"scheduling_strategi": "SPREAD"}), "scheduling_strategy"),
    (lambda: md.range(3).write_csv("/nonexistent", write_option=None), "write_options"),
    (lambda: md.ExecutionResources(cpus=2), "cpu"),
], ids=["read_parquet-colums", "map_batches-batchsize", "write_parquet-compresion", "remote-num_cpu",
        "remote-scheduling", "read-ray_remote_args", "csv-write_option", "ExecutionResources-cpus"])
def test_issue_examples_name_the_nearest(call, meant):
    with pytest.raises(TypeError, match=f"did you mean '{meant}'"):
        call()


def test_key_that_is_not_a_ray_remote_option_is_rejected():
    # max_tasks_in_flight_per_actor belongs to ActorPoolStrategy, not to Ray's remote options.
    with pytest.raises(TypeError, match="max_tasks_in_flight_per_actor"):
        md.range(3).map_batches(lambda b: b, max_tasks_in_flight_per_actor=2)


# ---- passthroughs: honoured, no effect here, or NotImplementedError ---------------------

def test_cluster_only_remote_args_are_accepted():
    expected = list(range(10))
    out = md.range(10).map_batches(lambda b: b, scheduling_strategy="SPREAD", max_retries=3,
                                   label_selector={"zone": "a"}, accelerator_type=None).take_all()
    assert sorted(r["id"] for r in out) == expected


def test_remote_resources_reach_the_scheduler_through_add_column():
    md.DataContext.get_current().execution_options.resource_limits.cpu = 2
    with pytest.raises(ValueError, match="num_cpus"):
        md.range(10).add_column("x", lambda df: df["id"], num_cpus=3).take_all()
    out = md.range(4).add_column("x", lambda df: df["id"] * 2, num_cpus=1).take_all()
    assert sorted(r["x"] for r in out) == [0, 2, 4, 6]


def test_compute_strings_as_in_ray():
    class Double:
        def __call__(self, batch):
            return {"id": batch["id"] * 2}

    out = md.range(5).map_batches(Double, compute="actors").take_all()
    assert sorted(r["id"] for r in out) == [0, 2, 4, 6, 8]
    out = md.range(5).map_batches(lambda b: b, compute="tasks").take_all()
    assert sorted(r["id"] for r in out) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="callable class"):
        md.range(5).map_batches(lambda b: b, compute="actors")
    with pytest.raises(ValueError, match="'actor'"):
        md.range(5).map_batches(Double, compute="actor")


@pytest.mark.parametrize("call,name", [
    (lambda ds, d: ds.write_parquet(d, mode="upsert"), "upsert"),
    (lambda ds, d: ds.write_parquet(d, compression={"id": "zstd"}), "compression"),
    (lambda ds, d: ds.write_parquet(d, use_dictionary=["id"]), "use_dictionary"),
    (lambda ds, d: ds.write_parquet(d, use_byte_stream_split=True), "use_byte_stream_split"),
    (lambda ds, d: ds.write_parquet(d, arrow_parquet_args_fn=lambda: {"coerce_timestamps": "ms"}),
     "coerce_timestamps"),
    (lambda ds, d: ds.write_csv(d, arrow_open_stream_args={"buffer_size": 1 << 20}), "buffer_size"),
    (lambda ds, d: ds.write_parquet(d, filesystem=object()), "filesystem"),
    (lambda ds, d: ds.write_parquet(d, ray_remote_args={"num_cpus": 2}), "num_cpus"),
    (lambda ds, d: ds.write_json(d, orient="columns"), "orient"),
    (lambda ds, d: md.read_parquet(d, filesystem=object()), "filesystem"),
    (lambda ds, d: md.read_parquet(d, dataset_kwargs={}), "dataset_kwargs"),
    (lambda ds, d: md.read_parquet(d, num_cpus=2), "num_cpus"),
    (lambda ds, d: md.range(3, concurrency=2), "concurrency"),
    (lambda ds, d: ds.map_batches(lambda b: b, resources={"special": 1}), "resources"),
    (lambda ds, d: ds.map_batches(lambda b: b, runtime_env={"env_vars": {"A": "1"}}), "runtime_env"),
    (lambda ds, d: ds.map_batches(lambda b: b, retry_exceptions=True), "retry_exceptions"),
    (lambda ds, d: ds.map_batches(lambda b: b, ray_remote_args_fn=dict), "ray_remote_args_fn"),
    (lambda ds, d: ds.select_columns(["id"], num_cpus=2), "num_cpus"),
    (lambda ds, d: ds.select_columns(["id"], concurrency=2), "concurrency"),
    (lambda ds, d: ds.filter(expr="id > 1", num_cpus=2), "num_cpus"),
    (lambda ds, d: md.ActorPoolStrategy(min_size=1, max_size=4, initial_size=2), "initial"),
])
def test_not_implemented_parameters_say_so(tmp_path, call, name):
    ds = md.range(3)

    class Identity:
        def __call__(self, batch):
            return batch

    with pytest.raises(NotImplementedError, match=name):
        out = call(ds, str(tmp_path / "out"))
        if isinstance(out, md.ActorPoolStrategy):  # refused when used by a map
            ds.map_batches(Identity, compute=out)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_defaults_of_not_implemented_parameters_are_accepted(tmp_path):
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    md.range(5).write_parquet(str(out), mode="append", compression="snappy", filesystem=None,
                              num_rows_per_file=None, try_create_dir=True)
    table = pq.read_table(out)
    assert sorted(table["id"].to_pylist()) == [0, 1, 2, 3, 4]
    assert pq.ParquetFile(next(out.glob("*.parquet"))).metadata.row_group(0).column(0).compression == "SNAPPY"
    assert md.read_parquet(str(out), include_paths=False, ignore_missing_paths=False,
                           ray_remote_args={"scheduling_strategy": "SPREAD"}).count() == 5


# ---- numbers: past 64 bits, numpy integers, bools, nan -------------------------------

BIG = 2**63


@pytest.mark.parametrize("call,name", [
    (lambda: md.range(BIG), "n"),
    (lambda: md.range(3).limit(BIG), "limit"),
    (lambda: md.range(3).take(BIG), "limit"),
    (lambda: md.range(3).take_all(limit=2**64), "limit"),
    (lambda: md.range(3).map_batches(lambda b: b, batch_size=BIG), "batch_size"),
    (lambda: md.range(3).iter_batches(batch_size=BIG), "batch_size"),
    (lambda: md.range(3).take_batch(BIG), "batch_size"),
    (lambda: md.range(3).map_batches(lambda b: b, memory=BIG), "memory"),
    (lambda: md.range(3).map_batches(lambda b: b, memory=float(BIG)), "memory"),
    (lambda: md.range(3, override_num_blocks=BIG), "override_num_blocks"),
    (lambda: md.from_items([1, 2], override_num_blocks=BIG), "override_num_blocks"),
    (lambda: md.ActorPoolStrategy(size=BIG), "size"),
    (lambda: md.range(3).iter_batches(local_shuffle_buffer_size=BIG), "local_shuffle_buffer_size"),
], ids=["range", "limit", "take", "take_all", "map_batches-batch_size", "iter_batches-batch_size",
        "take_batch", "memory", "memory-float", "override_num_blocks", "from_items", "actor_pool", "shuffle"])
def test_integers_past_int64_are_value_errors_naming_the_argument(call, name):
    with pytest.raises(ValueError) as info:
        call()
    assert name in str(info.value)
    assert "2**63-1" in str(info.value) or "9.22337e+18" in str(info.value)


def test_context_integers_past_int64_fail_naming_the_field(ctx):
    ctx.target_max_block_size = 2**64
    with pytest.raises(ValueError, match="target_max_block_size"):
        md.range(3).take_all()


def test_numpy_integers_are_accepted_where_an_int_is():
    n = np.int64(10)
    assert sorted(r["id"] for r in md.range(n, override_num_blocks=np.int32(2)).iter_rows()) == list(range(10))
    assert md.range(10).limit(np.int64(4)).count() == 4
    assert len(md.range(10).take(np.uint8(3))) == 3
    sizes = []

    def record(batch):
        sizes.append(len(batch["id"]))
        return batch

    md.range(10, override_num_blocks=1).map_batches(record, batch_size=np.int64(4)).take_all()
    assert sizes == [4, 4, 2]
    batches = list(md.range(10).iter_batches(batch_size=np.int16(5), batch_format="numpy"))
    assert sorted(len(b["id"]) for b in batches) == [5, 5]
    assert md.range(10).map_batches(lambda b: b, concurrency=np.int64(2), num_cpus=np.float32(0.5)).count() == 10


@pytest.mark.parametrize("call,error", [
    (lambda: md.range(3).take(True), TypeError),
    (lambda: md.range(3).limit(2.0), TypeError),
    (lambda: md.range("3"), TypeError),
    (lambda: md.range(3).map_batches(lambda b: b, batch_size=2.5), TypeError),
    (lambda: md.range(3).map_batches(lambda b: b, num_cpus=float("nan")), ValueError),
    (lambda: md.range(3).map_batches(lambda b: b, num_gpus=float("inf")), ValueError),
    (lambda: md.range(3).map_batches(lambda b: b, memory=float("nan")), ValueError),
    (lambda: md.range(3).map_batches(lambda b: b, num_cpus="1"), TypeError),
    (lambda: md.range(3).iter_batches(prefetch_batches=-1), ValueError),
    (lambda: md.range(3).iter_batches(prefetch_batches=1.5), TypeError),
], ids=["bool", "float-limit", "str-range", "float-batch", "nan-cpus", "inf-gpus", "nan-memory",
        "str-cpus", "prefetch-neg", "prefetch-float"])
def test_odd_numbers_are_refused_at_the_call(call, error):
    with pytest.raises(error):
        call()


def test_nan_resource_limit_is_refused(ctx):
    ctx.execution_options.resource_limits.cpu = float("nan")
    with pytest.raises(ValueError, match="resource_limits.cpu"):
        md.range(3).take_all()


def _set(path, value):
    def apply(ctx):
        *parents, name = path.split(".")
        obj = ctx
        for parent in parents:
            obj = getattr(obj, parent)
        setattr(obj, name, value)
    return apply


@pytest.mark.parametrize("path,value,field", [
    ("target_max_block_size", 0, "target_max_block_size"),
    ("target_min_block_size", -1, "target_min_block_size"),
    ("execution_options.resource_limits.cpu", 0, "resource_limits.cpu"),
    ("execution_options.resource_limits.cpu", -2, "resource_limits.cpu"),
    ("execution_options.resource_limits.gpu", -1, "resource_limits.gpu"),
    ("execution_options.resource_limits.object_store_memory", -1, "resource_limits.object_store_memory"),
    ("execution_options.exclude_resources.cpu", -1, "exclude_resources.cpu"),
    ("op_resource_reservation_ratio", 1.5, "op_resource_reservation_ratio"),
    ("autoscaling_config.actor_pool_max_upscaling_delta", 0, "actor_pool_max_upscaling_delta"),
    ("max_errored_blocks", -2, "max_errored_blocks"),
], ids=lambda v: str(v))
def test_invalid_context_value_raises_naming_the_field(ctx, path, value, field):
    # These used to kill the process (SIGFPE in the block shaper for a 0 block size).
    _set(path, value)(ctx)
    with pytest.raises(ValueError, match=re.escape(field)):
        md.range(10).map_batches(lambda b: b).count()


def test_cluster_sized_cpu_limit_runs(ctx):
    # Ray accepts cpu=40000 for a cluster; here it keeps its logical slots on a capped
    # thread pool instead of aborting while starting 40000 threads.
    ctx.execution_options.resource_limits.cpu = 40000
    assert md.range(1000, override_num_blocks=50).map_batches(lambda b: b).count() == 1000


@pytest.mark.parametrize("prefetch", [0, 1, 8])
def test_prefetch_batches_changes_no_result(prefetch):
    # The executor runs ahead of the consumer anyway (README, "Arguments").
    batches = md.range(100, override_num_blocks=4).iter_batches(
        batch_size=10, prefetch_batches=prefetch, batch_format="numpy")
    assert sorted(np.concatenate([b["id"] for b in batches]).tolist()) == list(range(100))


# ---- OS errors keep their errno, class and path ---------------------------------------

@pytest.fixture
def scratch_dir():
    """A scratch directory; the modes the test takes away are given back for cleanup."""
    path = tempfile.mkdtemp(prefix="millstream-args-")
    yield path
    for root, dirs, _ in os.walk(path):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o755)
    shutil.rmtree(path)


def _failure_as_unprivileged(code: str) -> dict:
    """Runs ``code`` (which must raise) in a fresh interpreter without root's right to
    ignore permissions (as root: with every capability dropped); returns the exception's class, errno, filename and text."""
    script = textwrap.dedent("""
        import json, sys
        import millstream as md
        try:
            {code}
        except OSError as e:
            print(json.dumps({{"cls": type(e).__name__, "errno": e.errno,
                              "filename": e.filename, "text": str(e)}}))
            sys.exit(0)
        sys.exit("no OSError raised")
    """).format(code=code)
    command = [sys.executable, "-c", script]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: permissions cannot be tested")
        # Root without capabilities: permission bits apply to it as to any owner, and the
        # interpreter (wherever it is installed) still starts.
        command = ["setpriv", "--bounding-set=-all", "--inh-caps=-all"] + command
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd="/")
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_writing_into_a_read_only_directory_is_permission_error(scratch_dir):
    out = os.path.join(scratch_dir, "out")
    os.mkdir(out)
    os.chmod(out, 0o555)
    error = _failure_as_unprivileged(f"md.range(10).write_parquet({out!r})")
    assert error["cls"] == "PermissionError"
    assert error["errno"] == errno.EACCES
    assert error["filename"].startswith(out + "/")
    assert out in error["text"] and "Permission denied" in error["text"]


@pytest.mark.parametrize("target", ["file", "directory"])
def test_reading_without_permission_is_permission_error(scratch_dir, target):
    data = os.path.join(scratch_dir, "data")
    os.mkdir(data)
    path = os.path.join(data, "part.parquet")
    pq.write_table(pa.table({"a": [1, 2, 3]}), path)
    denied = path if target == "file" else data
    os.chmod(denied, 0)
    error = _failure_as_unprivileged(f"md.read_parquet({data!r}).take_all()")
    assert error["cls"] == "PermissionError"
    assert error["errno"] == errno.EACCES
    assert error["filename"] == denied
    assert denied in error["text"]


@pytest.fixture
def tiny_disk():
    """A 1 MiB tmpfs (needs root; skipped elsewhere)."""
    path = tempfile.mkdtemp(prefix="millstream-full-")
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", path], capture_output=True, timeout=30).returncode == 0
    if not mounted:
        os.rmdir(path)
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield path
    subprocess.run(["umount", path], check=True, timeout=30)
    os.rmdir(path)


def test_disk_full_keeps_errno_and_names_the_file(tiny_disk):
    out = os.path.join(tiny_disk, "out")
    noise = md.range(2_000_000).map_batches(
        lambda b: {"x": np.random.default_rng(int(b["id"][0])).random(len(b["id"]))})
    with pytest.raises(OSError) as info:
        noise.write_parquet(out)
    assert info.value.errno == errno.ENOSPC
    assert "No space left on device" in str(info.value)
    assert info.value.filename.startswith(out + "/")


@pytest.mark.parametrize("call,name", [
    (lambda: md.range(3).drop_columns([None]), "cols"),
    (lambda: md.range(3).add_column(1, lambda df: df["id"]), "col"),
    (lambda: md.read_parquet("x.parquet", file_extensions=[1]), "file_extensions"),
    (lambda: md.range(3).write_parquet("/nonexistent", partition_cols=[1]), "partition_cols"),
], ids=["drop", "add_column", "file_extensions", "partition_cols"])
def test_column_names_that_are_not_strings_are_type_errors(call, name):
    with pytest.raises(TypeError, match=name):
        call()


def test_file_extensions_may_be_one_string(tmp_path):
    pq.write_table(pa.table({"a": [1, 2]}), tmp_path / "one.parquet")
    pq.write_table(pa.table({"a": [3]}), tmp_path / "two.pq")
    assert md.read_parquet(str(tmp_path), file_extensions="pq").count() == 1


def _everything_public():
    """(label, callable) for every public callable reachable with dir(): module functions
    and classes, and the methods (class and static ones included) of the objects a user holds."""
    ds = md.range(3)
    ctx = md.DataContext.get_current()
    holders = {"millstream": md, "Dataset": ds, "MaterializedDataset": ds.materialize(),
               "DataIterator": ds.iterator(), "Schema": ds.schema(), "DataContext": ctx,
               "ExecutionOptions": ctx.execution_options, "ExecutionResources": md.ExecutionResources(),
               "AutoscalingConfig": ctx.autoscaling_config, "ActorPoolStrategy": md.ActorPoolStrategy(size=1),
               "TaskPoolStrategy": md.TaskPoolStrategy()}
    out = []
    for label, holder in holders.items():
        for name in dir(holder):
            member = getattr(holder, name, None)
            if name.startswith("_") or not callable(member) or inspect.ismodule(member):
                continue
            if inspect.isclass(member) and holder is not md:
                continue
            out.append(pytest.param(member, id=f"{label}.{name}"))
    return out


@pytest.mark.parametrize("fn", _everything_public())
def test_every_public_callable_rejects_an_unknown_keyword_naming_it(fn):
    with pytest.raises(TypeError, match="'colums'"):
        fn(colums=1)

"""The Ray backend (DataContext.execution_backend = "ray") on a local 2-node Ray cluster.

One cluster for the module (ray.cluster_utils.Cluster: a head and a worker node, one CPU
each, small object stores). Expected values come from pyarrow, pandas and numpy on the
same data.
"""

from __future__ import annotations

import faulthandler
import os
import re
import sys
import threading
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import millstream as md
from conftest import allow_seconds, make_table

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

pytestmark = pytest.mark.ray

NODE = {"num_cpus": 1, "object_store_memory": 80 << 20}


@pytest.fixture(scope="module")
def cluster():
    faulthandler.cancel_dump_traceback_later()  # starting nodes takes longer than a test may
    cluster = Cluster(initialize_head=True, head_node_args=dict(NODE))
    worker = cluster.add_node(**NODE)
    ray.init(address=cluster.address, log_to_driver=False)
    # The UDFs below travel by value: the workers cannot import this test module.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cluster.wait_for_nodes()
    cluster.worker_node = worker
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture
def on_ray(cluster, ctx):
    ctx.execution_backend = "ray"
    ctx.enable_progress_bars = False
    yield cluster
    ctx.execution_backend = "local"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """8 Parquet files of 250 rows; returns (directory, the whole table)."""
    root = tmp_path_factory.mktemp("ray_data")
    tables = [make_table(250, seed=i, start=i * 250) for i in range(8)]
    for i, t in enumerate(tables):
        pq.write_table(t, root / f"part-{i:03d}.parquet")
    return str(root), pa.concat_tables(tables)


def _revenue(batch):
    return {**batch, "revenue": batch["price"] * batch["qty"]}


def test_not_initialized_raises_naming_the_option(ctx, monkeypatch):
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    ctx.execution_backend = "ray"
    with pytest.raises(RuntimeError, match="execution_backend.*ray.init"):
        md.range(10).take_all()


def test_backend_from_environment_and_checked(monkeypatch, ctx):
    monkeypatch.setenv("MILLSTREAM_BACKEND", "ray")
    assert md.DataContext().execution_backend == "ray"
    monkeypatch.delenv("MILLSTREAM_BACKEND")
    assert md.DataContext().execution_backend == "local"
    ctx.execution_backend = "spark"
    with pytest.raises(ValueError, match="execution_backend must be 'local' or 'ray'"):
        md.range(3).take_all()


def test_read_map_filter_matches_pyarrow(on_ray, files):
    path, table = files
    ds = (md.read_parquet(path, columns=["key", "qty", "price"]).filter(expr="qty > 20")
          .map_batches(_revenue, batch_format="numpy").filter(lambda r: r["key"] % 2 == 0))
    out = ds.to_arrow()
    ref = table.select(["key", "qty", "price"]).to_pandas()
    ref = ref[(ref.qty > 20) & (ref.key % 2 == 0)].copy()
    ref["revenue"] = ref.price * ref.qty
    assert out.column_names == ["key", "qty", "price", "revenue"]
    pd.testing.assert_frame_equal(out.to_pandas(), ref.reset_index(drop=True))  # input order kept
    assert ds.count() == len(ref)
    assert "task(s)" in ds.stats() and "Ray" in ds.stats()


def test_iter_batches_take_and_limit(on_ray, files):
    path, table = files
    ds = md.read_parquet(path).map_batches(_revenue)
    sizes = [len(b["key"]) for b in ds.iter_batches(batch_size=300)]
    assert sum(sizes) == table.num_rows and all(s == 300 for s in sizes[:-1])
    assert [r["key"] for r in ds.take(5)] == table["key"].to_pylist()[:5]
    assert ds.limit(260).to_arrow()["key"].to_pylist() == table["key"].to_pylist()[:260]


def test_explain_shows_stages_and_driver_fallback(on_ray, files, capsys):
    path, table = files
    ds = (md.read_parquet(path).map_batches(_revenue).sort("price").groupby("cat")
          .map_groups(_FirstOfGroup, concurrency=1))
    ds.explain()
    text = capsys.readouterr().out
    assert "Stage 0: read_parquet[8 file(s)" in text and "map_batches(_revenue)" in text
    assert "Exchange[sort 'price'" in text
    # A callable class needs an actor pool: the driver runs it.
    assert "map_groups" in text and "local engine over the fetched blocks" in text
    assert ds.count() == 4


class _FirstOfGroup:
    def __call__(self, group):
        return {"cat": group["cat"][:1]}


def _group_summary(group):
    return {"cat": group["cat"][:1], "qty": group["qty"][:1], "n": [len(group["key"])],
            "price_sum": [float(np.sum(group["price"]))]}


def test_map_groups_runs_in_the_exchanges_reduce_tasks(on_ray, files, capsys):
    path, table = files
    ds = md.read_parquet(path).groupby(["cat", "qty"]).map_groups(_group_summary)
    ds.explain()
    assert "Exchange[groupby ['cat', 'qty'].map_groups: partitioned by key range, millstream map_groups" \
        in capsys.readouterr().out
    out = ds.to_pandas()
    expected = (table.to_pandas().groupby(["cat", "qty"])
                .agg(n=("key", "size"), price_sum=("price", "sum")).reset_index())
    # Sorted by the first key, as Ray Data's: the partitions are key ranges, in order.
    assert out["cat"].is_monotonic_increasing
    out = out.sort_values(["cat", "qty"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(out[["cat", "qty", "n"]], expected[["cat", "qty", "n"]], check_dtype=False)
    np.testing.assert_allclose(out["price_sum"], expected["price_sum"])
    # The whole dataset as one group, and pandas batches.
    whole = md.read_parquet(path).groupby(None).map_groups(
        lambda g: pd.DataFrame({"n": [len(g)], "qty": [int(g["qty"].sum())]}), batch_format="pandas")
    assert whole.to_pandas().to_dict("records") == [{"n": table.num_rows, "qty": int(pc_sum(table["qty"]))}]


def pc_sum(column) -> int:
    return int(np.sum(column.to_numpy()))


class _Scale:
    def __init__(self, factor):
        self.factor = factor
        self.pid = os.getpid()

    def __call__(self, batch):
        return {"key": batch["key"], "scaled": batch["qty"] * self.factor,
                "pid": np.full(len(batch["key"]), self.pid)}


def test_actor_pool_keeps_the_constructed_callable(on_ray, files):
    path, table = files
    ds = md.read_parquet(path).map_batches(_Scale, fn_constructor_args=(3,), concurrency=2, batch_size=100)
    out = ds.to_arrow()
    assert out["key"].to_pylist() == table["key"].to_pylist()
    np.testing.assert_array_equal(out["scaled"].to_numpy(), table["qty"].to_numpy() * 3)
    assert 1 <= len(set(out["pid"].to_pylist())) <= 2  # two actors at most, each constructed once
    assert "ActorPool[map_batches(_Scale)]" in ds._explain_str()


def test_write_parquet_on_workers(on_ray, files, tmp_path):
    path, table = files
    out_dir = tmp_path / "out"
    md.read_parquet(path).map_batches(_revenue).write_parquet(str(out_dir))
    written = [f for f in os.listdir(out_dir) if f.endswith(".parquet")]
    assert len(written) >= 2  # one or more per task
    back = pq.read_table(out_dir).sort_by("key")
    ref = table.to_pandas()
    ref["revenue"] = ref.price * ref.qty
    pd.testing.assert_frame_equal(back.to_pandas(), ref)
    with pytest.raises(ValueError, match="out"):
        md.read_parquet(path).write_parquet(str(out_dir), mode="error")
    md.read_parquet(path).limit(10).write_parquet(str(out_dir), mode="overwrite")
    assert pq.read_table(out_dir).num_rows == 10
    md.read_parquet(path).write_parquet(str(tmp_path / "parts"), partition_cols=["cat"], compression="zstd")
    parts = pq.read_table(tmp_path / "parts", partitioning="hive")
    assert sorted(os.listdir(tmp_path / "parts")) == ["cat=a", "cat=b", "cat=c", "cat=d"]
    assert sorted(parts["key"].to_pylist()) == table["key"].to_pylist()


def test_write_csv_and_json_on_workers(on_ray, files, tmp_path):
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson

    path, table = files
    ds = md.read_parquet(path).select_columns(["key", "cat"])
    ds.write_csv(str(tmp_path / "csv"), write_options=pacsv.WriteOptions(delimiter=";"))
    ds.write_json(str(tmp_path / "json"))
    csv_files = sorted((tmp_path / "csv").iterdir())
    back = pa.concat_tables([pacsv.read_csv(f, parse_options=pacsv.ParseOptions(delimiter=";")) for f in csv_files])
    assert sorted(back["key"].to_pylist()) == table["key"].to_pylist()
    back = pa.concat_tables([pajson.read_json(f) for f in sorted((tmp_path / "json").iterdir())])
    assert sorted(zip(back["key"].to_pylist(), back["cat"].to_pylist())) == \
        sorted(zip(table["key"].to_pylist(), table["cat"].to_pylist()))


class _TaskNamed:
    """A FilenameProvider naming each write task's files by the write's uuid and its index."""

    def get_filename_for_task(self, write_uuid, task_index):
        return f"{write_uuid}_task{task_index:05d}.csv"


class _AddOne:
    def __call__(self, batch):
        return {"key": batch["key"] + 1}


def _names(directory):
    """(uuids, task indices) of the files _TaskNamed named in ``directory``."""
    uuids, indices = set(), []
    for name in os.listdir(directory):
        stem = name.split(".")[0]
        uuid, _, rest = stem.partition("_task")
        uuids.add(uuid)
        indices.append(int(rest))
    return uuids, indices


def test_filename_provider_names_every_write_task_once(on_ray, files, tmp_path):
    import pyarrow.csv as pacsv

    path, table = files
    keys = sorted(table["key"].to_pylist())
    writes = {
        "read_tasks": md.read_parquet(path).select_columns(["key"]),
        "actor_pool": md.read_parquet(path).select_columns(["key"]).map_batches(_AddOne, concurrency=2),
        "sort_reduce": md.read_parquet(path).select_columns(["key"]).sort("key"),
    }
    for label, ds in writes.items():
        out = tmp_path / label
        ds.write_csv(str(out), filename_provider=_TaskNamed())
        uuids, indices = _names(out)
        assert len(uuids) == 1 and len(next(iter(uuids))) == 32, (label, uuids)  # one write, one uuid
        assert len(indices) == len(set(indices)) >= 2, (label, indices)  # no file replaced another
        back = pa.concat_tables([pacsv.read_csv(f) for f in sorted(out.iterdir())])
        want = [k + 1 for k in keys] if label == "actor_pool" else keys
        assert sorted(back["key"].to_pylist()) == want, label


class _ParquetNamed:
    def __init__(self, with_uuid):
        self.with_uuid = with_uuid

    def get_filename_for_task(self, write_uuid, task_index):
        return f"{write_uuid}-{task_index}.parquet" if self.with_uuid else f"part{task_index}.parquet"


def test_parquet_filename_provider_on_ray_follows_rays_rules(on_ray, files, tmp_path):
    path, table = files
    ds = md.read_parquet(path).select_columns(["key"])
    ds.write_parquet(str(tmp_path / "a"), filename_provider=_ParquetNamed(True))
    names = sorted(os.listdir(tmp_path / "a"))
    uuid = names[0].split("-")[0]
    # Ray's Parquet names: "<name>-{i}.parquet", i numbering a task's files from 0.
    assert all(n.startswith(uuid + "-") and n.endswith("-0.parquet") for n in names), names
    assert len({n.split("-")[1] for n in names}) == len(names)
    assert sorted(pq.read_table(tmp_path / "a")["key"].to_pylist()) == table["key"].to_pylist()
    # Appending with names that do not hold the write's uuid could replace files: refused.
    with pytest.raises(ValueError, match="Write UUID .* missing from filename template"):
        ds.write_parquet(str(tmp_path / "b"), filename_provider=_ParquetNamed(False))
    ds.write_parquet(str(tmp_path / "c"), filename_provider=_ParquetNamed(False), mode="overwrite")
    assert sorted(os.listdir(tmp_path / "c"))[0] == "part0-0.parquet"


def test_sort_matches_pandas(on_ray, files):
    path, table = files
    out = md.read_parquet(path).sort(["cat", "price"], descending=[False, True]).to_pandas()
    ref = table.to_pandas().sort_values(["cat", "price"], ascending=[True, False], kind="stable")
    pd.testing.assert_frame_equal(out, ref.reset_index(drop=True))
    out = md.read_parquet(path).sort("qty", descending=True).to_pandas()
    ref = table.to_pandas().sort_values("qty", ascending=False, kind="stable")
    assert out["qty"].tolist() == ref["qty"].tolist()


def test_sort_nulls_and_boundaries_as_local(on_ray, ctx):
    values = [3.0, None, 1.0, float("nan"), 2.0, None, 5.0, 4.0] * 25
    tables = [pa.table({"x": values[i::4], "i": list(range(i, 200, 4))}) for i in range(4)]
    for descending in (False, True):
        ray_out = md.from_arrow(tables).sort("x", descending=descending).to_arrow()
        ctx.execution_backend = "local"
        local_out = md.from_arrow(tables).sort("x", descending=descending).to_arrow()
        ctx.execution_backend = "ray"
        # (NaN != NaN: pandas compares them as equal)
        pd.testing.assert_frame_equal(ray_out.to_pandas(), local_out.to_pandas())
        x = ray_out["x"].to_pylist()
        assert x[-50:] == [None] * 50 and all(np.isnan(v) for v in x[-75:-50])
    blocks = md.from_arrow(tables).sort("x", boundaries=[2, 4]).materialize()
    ctx.execution_backend = "local"
    local = md.from_arrow(tables).sort("x", boundaries=[2, 4]).materialize()
    local_sizes = [len(b["x"]) for b in local.iter_batches(batch_size=None)]
    ctx.execution_backend = "ray"
    assert blocks.num_blocks() == local.num_blocks() == 3
    assert [len(b["x"]) for b in blocks.iter_batches(batch_size=None)] == local_sizes
    pd.testing.assert_frame_equal(blocks.to_pandas(), local.to_pandas())


def test_random_shuffle_is_a_permutation(on_ray, files):
    path, table = files
    first = md.read_parquet(path).random_shuffle(seed=7).to_arrow()
    again = md.read_parquet(path).random_shuffle(seed=7).to_arrow()
    assert first["key"].to_pylist() == again["key"].to_pylist()  # seeded: the same order
    assert first["key"].to_pylist() != table["key"].to_pylist()
    assert first.sort_by("key").equals(table)
    unseeded = md.read_parquet(path).random_shuffle().to_arrow()
    assert sorted(unseeded["key"].to_pylist()) == table["key"].to_pylist()


def test_repartition_counts_and_keys(on_ray, files):
    path, table = files
    m = md.read_parquet(path).repartition(5).materialize()
    assert m.num_blocks() == 5
    assert m.to_arrow().equals(table)
    sizes = [b.num_rows for b in m.iter_batches(batch_size=None, batch_format="pyarrow")]
    assert sizes == [len(a) for a in np.array_split(np.arange(table.num_rows), 5)]
    by_key = list(md.read_parquet(path).repartition(3, keys="cat").iter_batches(batch_size=None, batch_format="pandas"))
    cats = [set(b["cat"]) for b in by_key]
    assert sum(len(c) for c in cats) == 4  # each category in exactly one block
    assert sorted(pd.concat(by_key)["key"]) == table["key"].to_pylist()


def test_groupby_matches_pandas(on_ray, files):
    path, table = files
    frame = table.to_pandas()
    out = md.read_parquet(path).groupby("cat").count().to_pandas()
    ref = frame.groupby("cat").size().reset_index(name="count()")
    pd.testing.assert_frame_equal(out, ref)
    out = md.read_parquet(path).groupby(["cat", "qty"]).sum("price").to_pandas()
    ref = frame.groupby(["cat", "qty"])["price"].sum().reset_index(name="sum(price)")
    pd.testing.assert_frame_equal(out, ref, check_exact=False, rtol=1e-12)
    from millstream.aggregate import Max, Mean, Std

    out = md.read_parquet(path).groupby("qty").aggregate(Mean("price"), Std("price"), Max("key")).to_pandas()
    ref = frame.groupby("qty").agg(**{"mean(price)": ("price", "mean"), "std(price)": ("price", "std"),
                                      "max(key)": ("key", "max")}).reset_index()
    pd.testing.assert_frame_equal(out, ref, check_exact=False, rtol=1e-9)
    assert md.read_parquet(path).sum("qty") == int(frame["qty"].sum())


def test_scheduling_knobs_reach_ray(on_ray, files):
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    path, _ = files
    target = on_ray.worker_node.node_id

    def where(batch):
        context = ray.get_runtime_context()
        cpus = context.get_assigned_resources().get("CPU", 0)
        n = len(batch["key"])
        return {"node": np.array([context.get_node_id()] * n), "cpu": np.full(n, cpus)}

    out = (md.read_parquet(path)
           .map_batches(where, num_cpus=0.5,
                        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=target, soft=False))
           .to_pandas())
    assert set(out["node"]) == {target}
    assert set(out["cpu"]) == {0.5}


def _slow_double(batch):
    time.sleep(0.3)
    return {"key": batch["key"], "double": batch["qty"] * 2}


def test_survives_losing_a_node(on_ray, files):
    path, table = files
    extra = on_ray.add_node(**NODE)
    on_ray.wait_for_nodes()
    ds = md.read_parquet(path).map_batches(_slow_double, batch_size=50).random_shuffle(seed=3)
    removed = threading.Event()

    def remove():
        time.sleep(1.0)
        on_ray.remove_node(extra)
        removed.set()

    threading.Thread(target=remove, daemon=True).start()
    out = ds.to_arrow()
    removed.wait(30)
    assert removed.is_set()
    ref = table.select(["key", "qty"]).to_pandas()
    got = out.to_pandas().sort_values("key").reset_index(drop=True)
    assert got["key"].tolist() == ref["key"].tolist()
    assert got["double"].tolist() == (ref["qty"] * 2).tolist()


def test_groupby_partial_aggregation_with_nulls_as_local(on_ray, ctx):
    from millstream.aggregate import Count, Max, Min, Sum

    tables = [pa.table({"k": pa.array(["x", "y", None, "x", "z"] * 4),
                        "v": pa.array([1, None, 3, None, 5] * 4, pa.int64()),
                        "w": pa.array([None, None, 2.5, None, 1.0] * 4)}) for _ in range(3)]
    aggs = (Count(), Count("v", ignore_nulls=True), Sum("v"), Sum("w", ignore_nulls=False), Min("w"), Max("v"))
    ds = md.from_arrow(tables).groupby("k").aggregate(*aggs)
    assert "partial aggregates per block" in ds._explain_str()
    out = ds.to_pandas()
    ctx.execution_backend = "local"
    local = md.from_arrow(tables).groupby("k").aggregate(*aggs).to_pandas()
    ctx.execution_backend = "ray"
    pd.testing.assert_frame_equal(out, local)
    # By hand: per table, "x" twice per 5 rows (v 1 and null), "y" once (v null), "z" once (v 5).
    assert out["count()"].tolist() == [24, 12, 12, 12]  # x, y, z, then the null key
    assert out["sum(v)"][0] == 12 and np.isnan(out["sum(v)"][1]) and out["sum(v)"][2] == 60


def test_hive_partitions_and_materialized_sources(on_ray, files, tmp_path, ctx):
    path, table = files
    pq.write_to_dataset(table, str(tmp_path / "hive"), partition_cols=["cat"])
    ds = md.read_parquet(str(tmp_path / "hive")).filter(expr="cat == 'b'")
    tasks = re.search(r"\[(\d+) file\(s\) in (\d+) task\(s\)\]", ds._explain_str())
    assert tasks and int(tasks.group(2)) > 1, ds._explain_str()  # split like any read
    out = ds.to_pandas().sort_values("key").reset_index(drop=True)
    ref = table.to_pandas()
    ref = ref[ref.cat == "b"].reset_index(drop=True)
    assert out["key"].tolist() == ref["key"].tolist() and set(out["cat"]) == {"b"}
    # Every partition column back from every task, as pyarrow's hive reading gives them.
    whole = md.read_parquet(str(tmp_path / "hive")).to_arrow()
    expected = pq.read_table(tmp_path / "hive", partitioning="hive")
    assert whole.num_rows == expected.num_rows
    assert sorted(zip(whole["key"].to_pylist(), whole["cat"].to_pylist())) == sorted(
        zip(expected["key"].to_pylist(), [str(c) for c in expected["cat"].to_pylist()]))
    ctx.execution_backend = "local"  # materialized in this process: a source on the driver
    m = md.read_parquet(path).map_batches(_revenue).materialize()
    ctx.execution_backend = "ray"
    doubled = m.map_batches(lambda b: {"key": b["key"], "r2": b["revenue"] * 2})
    assert "Source[MaterializedDataset]" in doubled._explain_str()
    got = doubled.to_pandas()
    np.testing.assert_allclose(got["r2"], table["price"].to_numpy() * table["qty"].to_numpy() * 2)


def _fails_on_key_600(batch):
    if (batch["key"] == 600).any():
        raise ValueError("bad row 600")
    return batch


def test_udf_error_keeps_its_type(on_ray, files):
    path, _ = files
    with pytest.raises(ValueError, match="bad row 600"):
        md.read_parquet(path).map_batches(_fails_on_key_600).take_all()


def test_actor_pool_strategy_and_driver_fallbacks(on_ray, files):
    path, table = files
    ds = md.read_parquet(path).map_batches(_Scale, fn_constructor_kwargs={"factor": 2},
                                           compute=md.ActorPoolStrategy(min_size=1, max_size=2),
                                           max_restarts=1)
    out = ds.to_arrow()
    np.testing.assert_array_equal(out["scaled"].to_numpy(), table["qty"].to_numpy() * 2)
    # map_groups of a function with a resource argument: the driver runs it on the fetched blocks.
    sizes = md.read_parquet(path).groupby("cat").map_groups(lambda g: {"cat": g["cat"][:1], "n": [len(g["cat"])]},
                                                            num_cpus=0.5)
    counts = dict(zip(*[sizes.to_pandas()[c] for c in ("cat", "n")]))
    assert counts == table.to_pandas().groupby("cat").size().to_dict()


class _SlowScale(_Scale):
    def __call__(self, batch):
        time.sleep(0.05)  # a queue forms behind the first actor
        return super().__call__(batch)


def test_actor_pool_scales_up_from_min_to_max_when_blocks_wait(on_ray, files):
    path, table = files
    ds = md.read_parquet(path).map_batches(_SlowScale, fn_constructor_args=(2,), concurrency=(1, 2),
                                           num_cpus=0.5, batch_size=50)
    out = ds.to_arrow()
    np.testing.assert_array_equal(out["scaled"].to_numpy(), table["qty"].to_numpy() * 2)
    assert len(set(out["pid"].to_pylist())) == 2  # the second actor took blocks too
    assert "scaled up to 2 actor(s) of at most 2" in ds.stats()
    # A fixed size never scales.
    fixed = md.read_parquet(path).map_batches(_SlowScale, fn_constructor_args=(2,), concurrency=1,
                                              num_cpus=0.5, batch_size=50)
    assert len(set(fixed.to_arrow()["pid"].to_pylist())) == 1
    assert "scaled up" not in fixed.stats()


def test_actor_pool_follows_the_autoscaling_config(on_ray, files, ctx):
    path, table = files

    def run():
        ds = md.read_parquet(path).map_batches(_SlowScale, fn_constructor_args=(2,), concurrency=(1, 2),
                                               num_cpus=0.5, batch_size=50)
        out = ds.to_arrow()
        np.testing.assert_array_equal(out["scaled"].to_numpy(), table["qty"].to_numpy() * 2)
        return ds.stats(), len(set(out["pid"].to_pylist()))

    ctx.autoscaling_config.actor_pool_util_upscaling_threshold = 1000.0  # never reached
    stats, actors = run()
    assert actors == 1 and "scaled up" not in stats
    # Retire an idle actor whenever utilization is at most 1 (always, once it answered):
    # the pool grows, then shrinks back to its minimum as the input ends.
    ctx.autoscaling_config.actor_pool_util_upscaling_threshold = 1.0
    ctx.autoscaling_config.actor_pool_util_downscaling_threshold = 1.0
    stats, actors = run()
    assert "scaled up to 2" in stats and "scaled down to 1 actor(s)" in stats, stats


def test_stopping_early_releases_the_actor_pool(on_ray, files):
    path, table = files

    def free_cpus_reach(target, wait_s):
        # The raylet reports freed CPUs late on a loaded machine: wait for them.
        deadline = time.time() + wait_s
        while ray.available_resources().get("CPU", 0) < target and time.time() < deadline:
            time.sleep(0.2)
        return ray.available_resources().get("CPU", 0)

    allow_seconds(240)  # the two waits below have deadlines of their own
    # What earlier tests' executions still hold is given back first (or taken as is).
    baseline = free_cpus_reach(2, 60)
    ds = md.read_parquet(path).map_batches(_Scale, fn_constructor_args=(1,), concurrency=1)
    for batch in ds.iter_batches(batch_size=10):
        assert len(batch["key"]) == 10
        break
    # The pool's actor is killed: its CPU comes back.
    assert free_cpus_reach(baseline, 120) >= baseline
    assert ds.count() == table.num_rows  # and the next execution runs


# ---- joins, unions and zips across nodes --------------------------------------------------


def _sorted(frame, by):
    return frame.sort_values(by, kind="stable").reset_index(drop=True)


BROADCASTS = {"inner": "right", "left_outer": "right", "left_semi": "right", "left_anti": "right",
              "right_outer": "left", "right_semi": "left", "right_anti": "left"}  # the small side


@pytest.mark.parametrize("strategy", ["broadcast", "exchange"])
@pytest.mark.parametrize("how", ["inner", "left_outer", "right_outer", "full_outer",
                                 "left_semi", "right_semi", "left_anti", "right_anti"])
def test_join_matches_pandas(on_ray, files, ctx, how, strategy):
    # Both sides are small: broadcast where the join type allows it (the right side when
    # it may, else the left), unless the object store budget makes the cap (1/8 of it)
    # smaller than either side.
    if strategy == "exchange":
        ctx.execution_options.resource_limits.object_store_memory = 16 << 10
    path, table = files
    rng = np.random.default_rng(7)
    # Right keys: some match once, some many times, some nowhere, some null (so pandas
    # would see floats: the partitioning must still send them where the left's go).
    keys = np.concatenate([rng.choice(2000, 300), np.arange(2000, 2050)])
    right = pa.table({"key": pa.array([int(k) for k in keys] + [None] * 5, pa.int64()),
                      "label": [f"r{i}" for i in range(len(keys) + 5)]})
    ds = md.read_parquet(path).join(md.from_arrow(right).repartition(3), how, 4, on=("key",))
    assert "Exchange[join " + how in ds._explain_str()
    got = ds.to_pandas()
    ref = table.join(right, "key", join_type=how.replace("_", " ")).to_pandas()
    sort_by = [c for c in ("key", "label", "qty") if c in ref.columns]
    assert sorted(got.columns) == sorted(ref.columns)
    pd.testing.assert_frame_equal(_sorted(got[ref.columns.tolist()], sort_by), _sorted(ref, sort_by),
                                  check_dtype=False)
    built = re.search(r"broadcast, build=(\w+)", ds.stats())
    if strategy == "broadcast" and how in BROADCASTS:
        assert built and built.group(1) == BROADCASTS[how], ds.stats()
    else:
        assert built is None, ds.stats()


def test_join_with_maps_after_and_an_empty_side(on_ray, files):
    path, table = files
    right = md.from_arrow(pa.table({"cat": ["a", "b"], "label": ["A", "B"]}))
    ds = (md.read_parquet(path).join(right, "inner", 2, on=("cat",))
          .map_batches(lambda b: {**b, "label2": np.char.lower(b["label"].astype(str))}))
    got = _sorted(ds.to_pandas(), "key")
    ref = table.to_pandas().merge(right.to_pandas(), on="cat")
    assert got["key"].tolist() == sorted(ref["key"]) and (got["label2"] == got["cat"]).all()
    # A side that makes no blocks at all (its schema known from the plan).
    outer = md.read_parquet(path).join(md.range(0), "left_outer", 2, on=("key",), right_on=("id",))
    assert sorted(outer.to_pandas()["key"]) == table["key"].to_pylist()
    assert md.range(0).join(md.read_parquet(path), "inner", 2, on=("id",), right_on=("key",)).count() == 0


def test_union_streams_every_input(on_ray, files):
    path, table = files
    ds = md.read_parquet(path).union(md.range(5).map(lambda r: {"key": r["id"] + 10_000}),
                                     md.read_parquet(path).filter(expr="key < 10"))
    assert "Union[3 inputs]" in ds._explain_str()
    keys = ds.select_columns(["key"]).to_pandas()["key"].tolist()
    assert sorted(keys) == sorted(table["key"].to_pylist() + list(range(10_000, 10_005)) + list(range(10)))
    assert ds.take_all()[:3] == [dict(r) for r in table.slice(0, 3).to_pylist()]  # in order when it matters


def test_zip_lines_up_rows_across_block_boundaries(on_ray, files):
    path, table = files
    other = md.range(table.num_rows, override_num_blocks=3).map(lambda r: {"twice": r["id"] * 2})
    out = md.read_parquet(path).zip(other).to_arrow()
    assert out["twice"].to_pylist() == [2 * k for k in table["key"].to_pylist()]
    assert out.num_rows == table.num_rows
    with pytest.raises(ValueError, match="Cannot zip datasets of different number of rows"):
        md.read_parquet(path).zip(md.range(3)).take_all()


def test_repartition_by_an_integer_key_with_nulls_keeps_each_key_together(on_ray):
    # One block's key column has nulls (so pandas would see floats), the other's not: the
    # same key must still land in the same block.
    a = pa.table({"k": pa.array([1, 2, None, 3], pa.int64())})
    b = pa.table({"k": pa.array([1, 2, 3, 3], pa.int64())})
    blocks = md.from_arrow([a, b]).repartition(4, keys=["k"]).iter_batches(batch_size=None, batch_format="pyarrow")
    homes = {}
    for i, block in enumerate(blocks):
        for k in block["k"].to_pylist():
            if k is not None:
                homes.setdefault(k, set()).add(i)
    assert sorted(homes) == [1, 2, 3] and all(len(v) == 1 for v in homes.values())


def test_random_sample_runs_in_the_tasks_reproducibly(on_ray, files):
    path, table = files
    ds = md.read_parquet(path).random_sample(0.3, seed=5)
    assert "read_parquet[8 file(s) in" in ds._explain_str() and "->random_sample" in ds._explain_str()
    first, again = ds.to_arrow()["key"].to_pylist(), ds.to_arrow()["key"].to_pylist()
    assert first == again and 0.2 * table.num_rows < len(first) < 0.4 * table.num_rows
    assert set(first) <= set(table["key"].to_pylist()) and first == sorted(first)
    # Each file's 250 rows: the tasks draw different rows, not the same offsets.
    offsets = [frozenset(k % 250 for k in first if k // 250 == f) for f in range(8)]
    assert len(set(offsets)) == 8
    other = md.read_parquet(path).random_sample(0.3, seed=6).to_arrow()["key"].to_pylist()
    assert other != first


def test_random_seed_config_reseeds_each_execution_reproducibly(on_ray, files):
    # RandomSeedConfig(seed) (reseed_after_execution=True): each execution of the dataset
    # its own order (or sample), the same sequence for a dataset made the same way;
    # reseed_after_execution=False: the same every time.
    path, table = files
    keys = sorted(table["key"].to_pylist())

    def two_epochs(make):
        ds = make()
        return [ds.to_arrow()["key"].to_pylist() for _ in range(2)]

    shuffled = two_epochs(lambda: md.read_parquet(path).random_shuffle(seed=md.RandomSeedConfig(7)))
    assert all(sorted(epoch) == keys for epoch in shuffled)  # permutations of the rows
    assert shuffled[0] != shuffled[1] and shuffled[0] != keys
    assert two_epochs(lambda: md.read_parquet(path).random_shuffle(seed=md.RandomSeedConfig(7))) == shuffled
    fixed = two_epochs(lambda: md.read_parquet(path).random_shuffle(
        seed=md.RandomSeedConfig(7, reseed_after_execution=False)))
    assert fixed[0] == fixed[1] and sorted(fixed[0]) == keys

    make_sample = lambda: md.read_parquet(path).random_sample(0.3, seed=md.RandomSeedConfig(3))  # noqa: E731
    text = make_sample()._explain_str()
    assert "->random_sample" in text and "runs on the driver" not in text  # in the read tasks
    sampled = two_epochs(make_sample)
    assert sampled[0] != sampled[1] and all(set(epoch) <= set(keys) for epoch in sampled)
    assert all(0.2 * len(keys) < len(epoch) < 0.4 * len(keys) for epoch in sampled)
    assert two_epochs(make_sample) == sampled

    blocks = two_epochs(lambda: md.read_parquet(path).randomize_block_order(seed=md.RandomSeedConfig(11)))
    assert blocks == two_epochs(lambda: md.read_parquet(path).randomize_block_order(seed=md.RandomSeedConfig(11)))


@pytest.mark.parametrize("case", range(8))
def test_random_plans_match_pandas_on_ray(on_ray, ctx, case, tmp_path, monkeypatch):
    # The executor's random plans (maps, limits, sorts, shuffles, repartitions, unions under
    # random memory limits, failing UDFs and abandoned iterators), run on the cluster.
    import test_random_plans

    ray.cloudpickle.register_pickle_by_value(test_random_plans)
    allow_seconds(150)  # the plan's own watchdog (90 s) says which plan hung
    test_random_plans.check_random_plan(case, ctx, tmp_path, monkeypatch, watchdog_s=90.0)


def test_materialize_keeps_the_blocks_on_the_cluster(on_ray, files, ctx, monkeypatch):
    path, table = files
    mat = md.read_parquet(path).filter(expr="qty >= 50").materialize()
    expected = table.filter(pa.compute.greater_equal(table["qty"], 50))
    fetched = []
    real_get = ray.get
    monkeypatch.setattr(ray, "get", lambda *a, **k: fetched.append(a) or real_get(*a, **k))
    assert mat.count() == expected.num_rows and mat.num_blocks() == 4 and mat.size_bytes() > 0
    assert mat.schema().names == table.column_names
    assert fetched == []  # counts from the blocks' metadata: nothing came to the driver
    monkeypatch.setattr(ray, "get", real_get)
    ds = mat.map_batches(_revenue)
    assert "materialized on the cluster" in ds._explain_str()
    got = ds.to_pandas().sort_values("key").reset_index(drop=True)
    ref = expected.to_pandas().sort_values("key").reset_index(drop=True)
    ref["revenue"] = ref.price * ref.qty
    pd.testing.assert_frame_equal(got, ref)
    assert mat.join(mat.select_columns(["key"]), "left_semi", 2, on=("key",)).count() == expected.num_rows
    ctx.execution_backend = "local"  # read back by the local engine, which fetches the blocks
    assert mat.to_arrow().sort_by("key").equals(expected.sort_by("key"))


def test_write_parquet_to_s3_from_the_workers(on_ray, files):
    moto_server = pytest.importorskip("moto.server")
    import uuid

    import pyarrow.fs as pafs

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        fs = pafs.S3FileSystem(endpoint_override=f"http://{host}:{port}", access_key="testing",
                               secret_key="testing", region="us-east-1", allow_bucket_creation=True)
        bucket = f"b-{uuid.uuid4().hex[:12]}"
        fs.create_dir(bucket)
        path, table = files
        fs.create_dir(f"{bucket}/out")
        with fs.open_output_stream(f"{bucket}/out/stale.parquet") as f:
            f.write(b"old")
        md.read_parquet(path).filter(expr="qty < 50").write_parquet(f"s3://{bucket}/out", filesystem=fs,
                                                                     mode="overwrite")
        objects = [i.path for i in fs.get_file_info(pafs.FileSelector(f"{bucket}/out", recursive=True))]
        assert f"{bucket}/out/stale.parquet" not in objects and len(objects) >= 2  # several write tasks
        back = pq.read_table(f"{bucket}/out", filesystem=fs).sort_by("key")
        expected = table.filter(pa.compute.less(table["qty"], 50)).sort_by("key")
        assert back.select(expected.column_names).equals(expected)
    finally:
        server.stop()
    import fsspec

    with pytest.raises(NotImplementedError, match="in-memory filesystem"):
        md.range(3).write_parquet("/x", filesystem=fsspec.filesystem("memory"))


def _made_on(batch):
    # 1 KiB a row: blocks big enough for Ray's object store (small ones travel inline,
    # with no node of their own).
    node = ray.get_runtime_context().get_node_id()
    return {**batch, "made_on": np.array([node] * len(batch["key"])), "pad": np.zeros((len(batch["key"]), 128))}


class _ProcessedOn:
    def __call__(self, batch):
        node = ray.get_runtime_context().get_node_id()
        return {**batch, "processed_on": np.array([node] * len(batch["key"]))}


def test_locality_knobs_mean_what_they_mean_in_ray(on_ray, files, ctx):
    path, table = files
    driver_node = ray.get_runtime_context().get_node_id()
    ctx.execution_options.locality_with_output = True  # every task on the driver's node
    out = md.read_parquet(path).map_batches(_made_on).sort("key").to_pandas()
    assert set(out["made_on"]) == {driver_node} and out["key"].tolist() == table["key"].to_pylist()
    ctx.execution_options.locality_with_output = [on_ray.worker_node.node_id]  # or on the nodes listed
    out = md.read_parquet(path).map_batches(_made_on).to_pandas()
    assert set(out["made_on"]) == {on_ray.worker_node.node_id}
    # actor_locality_enabled (the default): a block goes to an actor on the node holding it.
    # locality_with_output places the tasks and actors in turn on the nodes listed: the
    # pool's two actors (made first) on the driver's node and the worker's, the four read
    # tasks on worker, driver, driver, worker; handing blocks out in turn would then send
    # most to the other node's actor.
    worker = on_ray.worker_node.node_id
    ctx.execution_options.locality_with_output = [driver_node, worker, worker, driver_node]
    ctx.max_tasks_in_flight_per_actor = 100  # room on every actor: locality alone decides
    out = (md.read_parquet(path).map_batches(_made_on, num_cpus=0.25)
           .map_batches(_ProcessedOn, concurrency=2, num_cpus=0.5).to_pandas())
    assert len(set(out["made_on"])) == 2
    assert (out["made_on"] == out["processed_on"]).all()


def test_large_udf_arguments_travel_once(on_ray, ctx, monkeypatch):
    weights = np.arange(2_000_000, dtype=np.float64)  # 16 MB captured by the UDF
    ctx.large_args_threshold = 1 << 20
    puts = []
    real_put = ray.put
    monkeypatch.setattr(ray, "put", lambda value, **k: puts.append(value) or real_put(value, **k))
    ds = md.range(40, override_num_blocks=8).map_batches(lambda b: {"id": b["id"], "w": weights[b["id"]]})
    out = ds.to_pandas()
    np.testing.assert_array_equal(out.sort_values("id")["w"].to_numpy(), weights[:40])
    big = [v for v in puts if isinstance(v, list) and v and getattr(v[0], "method", None) == "map_batches"]
    assert len(big) == 1  # the stage's calls put once, not sent with each of the 8 tasks

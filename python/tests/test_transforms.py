"""Transforms: map, map_batches, flat_map, filter, column ops, limit."""

from __future__ import annotations

import re
import threading
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import millstream as md
from conftest import ConcurrencyProbe, assert_tables_equal, make_table, sorted_rows


@pytest.fixture
def table():
    return make_table(1000, seed=7)


@pytest.fixture
def ds(table):
    return md.from_arrow(table, override_num_blocks=8)


# ---- map ------------------------------------------------------------------------------


def test_map(ds, table):
    def f(row):
        return {"key": row["key"], "total": row["qty"] * row["price"], "cat": row["cat"].upper()}

    expected = pa.table({
        "key": table["key"],
        "total": pc.multiply(table["qty"].cast(pa.float64()), table["price"]),
        "cat": pc.utf8_upper(table["cat"]),
    })
    out = ds.map(f).to_arrow()
    assert out.column_names == ["key", "total", "cat"]
    out = out.sort_by("key")
    assert out["key"].to_pylist() == expected["key"].to_pylist()
    np.testing.assert_allclose(out["total"].to_numpy(), expected["total"].to_numpy())
    assert out["cat"].to_pylist() == expected["cat"].to_pylist()


def test_map_fn_args_kwargs():
    def f(row, a, b=0):
        return {"id": row["id"] * a + b}

    out = md.range(100).map(f, fn_args=(3,), fn_kwargs={"b": 7}).take_all()
    assert sorted(r["id"] for r in out) == list(np.arange(100) * 3 + 7)


def test_map_row_is_dict():
    kinds = []
    md.range(5).map(lambda r: kinds.append(type(r)) or {"id": r["id"]}).take_all()
    assert kinds and all(issubclass(k, dict) for k in kinds)


# ---- map_batches ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["default", "numpy", "pandas", "pyarrow", None])
def test_map_batches_formats(ds, table, fmt):
    seen = []

    def f(batch):
        seen.append(type(batch))
        if fmt in ("default", "numpy"):
            return {"key": batch["key"], "v": batch["price"] * 2}
        if fmt == "pandas":
            return pd.DataFrame({"key": batch["key"], "v": batch["price"] * 2})
        return pa.table({"key": batch["key"], "v": pc.multiply(batch["price"], 2)})

    out = ds.map_batches(f, batch_format=fmt).to_arrow()
    # None: the native block, a pyarrow Table (Ray Data's documented meaning).
    expected_type = {"default": dict, "numpy": dict, None: pa.Table, "pandas": pd.DataFrame, "pyarrow": pa.Table}[fmt]
    assert seen and all(issubclass(t, expected_type) for t in seen)
    expected = pa.table({"key": table["key"], "v": pc.multiply(table["price"], 2)})
    assert_tables_equal(out, expected)


def test_map_batches_numpy_values_are_ndarrays(ds):
    kinds = []

    def f(batch):
        kinds.extend(type(v) for v in batch.values())
        return batch

    ds.map_batches(f, batch_format="numpy").materialize()
    assert kinds and all(k is np.ndarray for k in kinds)


def test_map_batches_batch_size_exact_when_blocks_divide():
    sizes = []
    lock = threading.Lock()

    def f(batch):
        with lock:
            sizes.append(len(batch["id"]))
        return batch

    ds = md.range(1024, override_num_blocks=4).map_batches(f, batch_size=64)
    assert sorted(r["id"] for r in ds.take_all()) == list(range(1024))
    assert sizes == [64] * 16


def _short_calls_and_tasks(ds_factory, n, batch_size):
    sizes, lock = [], threading.Lock()

    def f(batch):
        with lock:
            sizes.append(len(batch["id"]))
        return batch

    ds = ds_factory().map_batches(f, batch_size=batch_size)
    ids = np.sort(np.concatenate([b["id"] for b in ds.iter_batches(batch_size=None)]))
    np.testing.assert_array_equal(ids, np.arange(n))
    assert sum(sizes) == n
    assert max(sizes) <= batch_size
    tasks = int(re.search(r"MapBatches\(f\)[^\n]*: (\d+) tasks", ds.stats()).group(1))
    return sizes, tasks


def test_map_batches_batch_size_last_per_task():
    # 4 blocks of 250 rows: each task gets one block: 3 batches of 64 then one of 58.
    sizes, tasks = _short_calls_and_tasks(lambda: md.range(1000, override_num_blocks=4), 1000, 64)
    short = [s for s in sizes if s != 64]
    assert len(short) <= tasks
    assert sizes.count(64) >= 1000 // 64 - tasks


def test_map_batches_batch_size_bundles_small_blocks():
    # 100 blocks of 10 rows, batch_size 64: small blocks are bundled so a UDF call sees
    # 64 rows; only the last call of each task may be short, and a task holds >= 64 rows.
    sizes, tasks = _short_calls_and_tasks(lambda: md.range(1000, override_num_blocks=100), 1000, 64)
    short = [s for s in sizes if s != 64]
    assert len(short) <= tasks
    assert tasks <= -(-1000 // 64)
    assert sizes.count(64) >= 1000 // 64 - tasks


def test_map_batches_batch_size_none_is_whole_blocks():
    sizes = []
    md.range(1000, override_num_blocks=5).map_batches(lambda b: sizes.append(len(b["id"])) or b).materialize()
    assert sorted(sizes) == [200] * 5


def test_map_batches_fn_args_kwargs():
    def f(batch, mult, offset=0):
        return {"id": batch["id"] * mult + offset}

    ds = md.range(200).map_batches(f, fn_args=(5,), fn_kwargs={"offset": -3})
    np.testing.assert_array_equal(np.sort(ds.take_batch(200)["id"]), np.arange(200) * 5 - 3)


def test_map_batches_generator():
    def gen(batch):
        yield {"id": batch["id"]}
        yield {"id": batch["id"] + 10_000}

    ds = md.range(300, override_num_blocks=3).map_batches(gen, batch_size=50)
    got = sorted(r["id"] for r in ds.take_all())
    assert got == sorted(list(range(300)) + list(range(10_000, 10_300)))


def test_map_batches_changes_row_count():
    def keep_even(batch):
        return {"id": batch["id"][batch["id"] % 2 == 0]}

    got = sorted(r["id"] for r in md.range(500, override_num_blocks=5).map_batches(keep_even).take_all())
    assert got == list(range(0, 500, 2))


def test_map_batches_zero_copy_false_gives_writable_copy():
    def inplace(batch):
        batch["id"] += 1  # must be allowed on a copy
        return batch

    ds = md.range(100).map_batches(inplace, zero_copy_batch=False)
    assert sorted(r["id"] for r in ds.take_all()) == list(range(1, 101))
    # The source is untouched by the in-place edit.
    src = md.range(100)
    src.map_batches(inplace, zero_copy_batch=False).materialize()
    assert sorted(r["id"] for r in src.take_all()) == list(range(100))


def test_map_batches_zero_copy_true_does_not_corrupt_source():
    table = pa.table({"x": np.arange(100, dtype=np.int64)})
    src = md.from_arrow(table)

    def f(batch):
        return {"x": batch["x"] * 2}

    out = sorted(r["x"] for r in src.map_batches(f, zero_copy_batch=True).take_all())
    assert out == list(np.arange(100) * 2)
    assert sorted(r["x"] for r in src.take_all()) == list(range(100))


class _Scaler:
    lock = threading.Lock()
    constructed = 0
    instances = set()

    def __init__(self, factor, offset=0):
        with _Scaler.lock:
            _Scaler.constructed += 1
        self.factor = factor
        self.offset = offset
        self.calls = 0

    def __call__(self, batch):
        with _Scaler.lock:
            _Scaler.instances.add(id(self))
        self.calls += 1
        return {"id": batch["id"] * self.factor + self.offset}


@pytest.fixture
def scaler():
    _Scaler.constructed = 0
    _Scaler.instances = set()
    return _Scaler


@pytest.mark.parametrize("n_actors", [1, 2])
def test_map_batches_callable_class(scaler, n_actors):
    ds = md.range(2000, override_num_blocks=40).map_batches(
        scaler, concurrency=n_actors, batch_size=50,
        fn_constructor_args=(3,), fn_constructor_kwargs={"offset": 1})
    got = np.sort(np.concatenate([b["id"] for b in ds.iter_batches(batch_size=None)]))
    np.testing.assert_array_equal(got, np.arange(2000) * 3 + 1)
    # Once per actor (40 calls at least, but at most n_actors constructions).
    assert 1 <= scaler.constructed <= n_actors
    assert len(scaler.instances) <= scaler.constructed
    assert scaler.constructed == n_actors


def test_map_batches_callable_class_autoscaling_pool(scaler):
    ds = md.range(1000, override_num_blocks=20).map_batches(scaler, concurrency=(1, 2), fn_constructor_args=(2,))
    assert sorted(r["id"] for r in ds.take_all()) == list(np.arange(1000) * 2)
    assert 1 <= scaler.constructed <= 2


def test_callable_class_in_map_and_filter(scaler):
    class KeepMultiples:
        def __init__(self, k):
            self.k = k

        def __call__(self, row):
            return row["id"] % self.k == 0

    class AddK:
        def __init__(self, k):
            self.k = k

        def __call__(self, row):
            return {"id": row["id"] + self.k}

    out = (md.range(100).filter(KeepMultiples, concurrency=1, fn_constructor_args=(7,))
           .map(AddK, concurrency=1, fn_constructor_args=(1000,)).take_all())
    assert sorted(r["id"] for r in out) == [i + 1000 for i in range(100) if i % 7 == 0]


# ---- flat_map ------------------------------------------------------------------------


def test_flat_map():
    def f(row):
        return [{"id": row["id"], "copy": j} for j in range(row["id"] % 3)]

    out = md.range(50).flat_map(f).take_all()
    expected = [{"id": i, "copy": j} for i in range(50) for j in range(i % 3)]
    key = lambda r: (r["id"], r["copy"])  # noqa: E731
    assert sorted(out, key=key) == sorted(expected, key=key)


def test_flat_map_fn_args():
    out = md.range(10).flat_map(lambda r, n: [{"id": r["id"]}] * n, fn_args=(2,)).take_all()
    assert sorted(r["id"] for r in out) == sorted(list(range(10)) * 2)


# ---- filter --------------------------------------------------------------------------


def test_filter_callable(ds, table):
    out = ds.filter(lambda r: r["qty"] > 50 and r["cat"] != "b").to_arrow()
    expected = table.filter((pc.field("qty") > 50) & (pc.field("cat") != "b"))
    assert_tables_equal(out, expected)


def test_filter_expr_string(ds, table):
    out = ds.filter(expr="qty > 50 and cat != 'b' or price < 5").to_arrow()
    expected = table.filter(((pc.field("qty") > 50) & (pc.field("cat") != "b")) | (pc.field("price") < 5))
    assert_tables_equal(out, expected)


def test_filter_expr_arithmetic_and_not(ds, table):
    out = ds.filter(expr="not (qty * 2 + 1 >= 101)").to_arrow()
    expected = table.filter(~(pc.field("qty") * 2 + 1 >= 101))
    assert_tables_equal(out, expected)


def test_filter_expr_division_is_true_division(ds, table):
    # Python's `/`, as pandas computes it: 21 / 2 is 10.5 (Arrow's integer divide gives 10).
    out = ds.filter(expr="qty / 2 > 10").to_arrow()
    expected = pa.Table.from_pandas(table.to_pandas().query("qty / 2 > 10"), preserve_index=False)
    assert_tables_equal(out, expected)


def test_filter_expr_pyarrow(ds, table):
    expr = pc.field("cat").isin(["a", "d"]) & (pc.field("price") >= 33.3)
    assert_tables_equal(ds.filter(expr=expr).to_arrow(), table.filter(expr))


@pytest.mark.parametrize("expr, kind", [("0", "int64"), ("1 - 1", "int64"), ("0.0", "double"),
                                        ("'a'", "string"), ("None", "null"), ("qty + 1", "number"),
                                        ("qty > 1 and 5", "int64"), ("not 1", "int64")])
def test_filter_expr_string_that_is_not_boolean_raises(ds, expr, kind):
    # A number is no predicate: "0" used to keep rows by whatever its bytes read as.
    with pytest.raises(TypeError, match=re.escape(repr(expr)) + f".*of type {kind}, not boolean"):
        ds.filter(expr=expr)


@pytest.mark.parametrize("expr, kind", [(pc.scalar(0), "int64"), (pc.scalar(0.0), "double"),
                                        (pc.field("qty") * 2, "int32"), (pc.field("cat"), "string")])
def test_filter_expression_that_is_not_boolean_raises_when_run(ds, expr, kind):
    # Checked by the engine against the blocks' types (C++ users get the same check).
    with pytest.raises(TypeError, match=f"of type {kind}, not boolean"):
        ds.filter(expr=expr).take_all()


def test_filter_on_a_boolean_column_and_boolean_literals(ds, table):
    flagged = ds.add_column("big", lambda df: df["qty"] > 50)
    expected = table.filter(pc.field("qty") > 50)
    assert_tables_equal(flagged.filter(expr="big").drop_columns(["big"]).to_arrow(), expected)
    assert ds.filter(expr="True").count() == table.num_rows
    assert ds.filter(expr="False").count() == 0


def test_filter_fn_args():
    out = md.range(30).filter(lambda r, lo: r["id"] >= lo, fn_args=(25,)).take_all()
    assert sorted(r["id"] for r in out) == list(range(25, 30))


def test_filter_needs_exactly_one():
    with pytest.raises(ValueError):
        md.range(3).filter()
    with pytest.raises(ValueError):
        md.range(3).filter(lambda r: True, expr="id > 1")


def test_filter_everything_out(ds, table):
    assert ds.filter(expr="qty > 1000").take_all() == []
    assert ds.filter(expr="qty > 1000").count() == 0


# ---- columns -------------------------------------------------------------------------


def test_select_columns(ds, table):
    out = ds.select_columns(["price", "key"])
    assert out.columns() == ["price", "key"]
    assert_tables_equal(out.to_arrow(), table.select(["price", "key"]))
    assert md.from_arrow(table).select_columns("cat").columns() == ["cat"]


def test_select_columns_after_udf(table):
    ds = md.from_arrow(table).map_batches(lambda b: b)
    assert_tables_equal(ds.select_columns(["cat", "key"]).to_arrow(), table.select(["cat", "key"]))


def test_drop_columns(ds, table):
    out = ds.drop_columns(["qty", "cat"])
    assert out.columns() == ["key", "price"]
    assert_tables_equal(out.to_arrow(), table.drop_columns(["qty", "cat"]))
    assert md.from_arrow(table).drop_columns("cat").columns() == ["key", "qty", "price"]


def test_drop_columns_after_udf(table):
    ds = md.from_arrow(table).map_batches(lambda b: b).drop_columns(["price"])
    assert_tables_equal(ds.to_arrow(), table.drop_columns(["price"]))


@pytest.mark.parametrize("fmt", ["pandas", "numpy", "pyarrow"])
def test_add_column(ds, table, fmt):
    def f(batch):
        if fmt == "pyarrow":
            return pc.multiply(batch["qty"], 10)
        return batch["qty"] * 10

    out = ds.add_column("qty10", f, batch_format=fmt).to_arrow()
    if fmt == "pandas":
        ref = pa.array(table["qty"].to_pandas() * 10)
    elif fmt == "numpy":
        ref = pa.array(table["qty"].to_numpy() * 10)
    else:
        ref = pc.multiply(table["qty"], 10)
    expected = table.append_column("qty10", ref)
    assert_tables_equal(out, expected)


def test_add_column_default_format_is_pandas(ds):
    kinds = []
    ds.add_column("k2", lambda df: kinds.append(type(df)) or df["key"] * 2).materialize()
    assert kinds and all(k is pd.DataFrame for k in kinds)


def test_add_column_overwrites(ds, table):
    out = ds.add_column("qty", lambda df: df["qty"] + 1).to_arrow()
    expected = table.set_column(1, "qty", pa.array(table["qty"].to_pandas() + 1))
    assert_tables_equal(out, expected)


def test_rename_columns_dict(ds, table):
    out = ds.rename_columns({"qty": "quantity", "cat": "category"})
    assert out.columns() == ["key", "quantity", "price", "category"]
    assert_tables_equal(out.to_arrow(), table.rename_columns(["key", "quantity", "price", "category"]))


def test_rename_columns_list(ds, table):
    names = ["k", "q", "p", "c"]
    out = ds.rename_columns(names)
    assert out.columns() == names
    assert_tables_equal(out.to_arrow(), table.rename_columns(names), key="k")
    with pytest.raises(ValueError):
        ds.rename_columns(["only", "two"])


@pytest.mark.parametrize("names, clash", [({"qty": "price"}, "price"),
                                          ({"qty": "n", "cat": "n"}, "n"),
                                          (["a", "b", "a", "c"], "a")])
def test_rename_columns_to_a_name_twice_raises(ds, names, clash):
    # Two columns of one name: one of them would be unreachable (pyarrow allows it; we don't).
    with pytest.raises(ValueError, match=f"'{clash}'"):
        ds.rename_columns(names)


def test_rename_columns_to_a_name_twice_after_udf_raises_when_run(ds):
    after_udf = ds.map_batches(lambda b: b).rename_columns({"qty": "price"})
    with pytest.raises(ValueError, match="'price'"):
        after_udf.take_all()


def test_rename_columns_swap_is_allowed(ds, table):
    out = ds.rename_columns({"qty": "price", "price": "qty"}).to_arrow()
    assert_tables_equal(out, table.rename_columns(["key", "price", "qty", "cat"]))


def test_column_ops_on_parquet(tmp_path, table):
    import pyarrow.parquet as pq

    pq.write_table(table, tmp_path / "t.parquet", row_group_size=100)
    ds = (md.read_parquet(str(tmp_path / "t.parquet"))
          .rename_columns({"price": "p"}).select_columns(["key", "p"]).drop_columns("p"))
    assert ds.columns() == ["key"]
    assert_tables_equal(ds.to_arrow(), table.select(["key"]))


# ---- limit ---------------------------------------------------------------------------


@pytest.mark.parametrize("k", [0, 1, 17, 999, 1000, 5000])
def test_limit(table, k):
    ds = md.from_arrow(table, override_num_blocks=8)
    out = ds.limit(k).to_arrow()
    assert out.num_rows == min(k, 1000)
    assert ds.limit(k).count() == min(k, 1000)
    # Rows are real rows of the table (all distinct).
    keys = out["key"].to_pylist()
    assert len(set(keys)) == len(keys) and set(keys) <= set(range(1000))


def test_limit_is_first_rows_in_order(ctx):
    ctx.execution_options.preserve_order = True
    assert [r["id"] for r in md.range(1000, override_num_blocks=10).limit(25).take_all()] == list(range(25))


def test_limit_after_map():
    out = md.range(1000, override_num_blocks=10).map(lambda r: {"id": r["id"], "sq": r["id"] ** 2}).limit(30).take_all()
    assert len(out) == 30
    assert all(r["sq"] == r["id"] ** 2 for r in out)


def test_limit_then_map():
    calls = []
    ds = md.range(1000, override_num_blocks=10).limit(30).map(lambda r: calls.append(1) or {"id": -r["id"]})
    assert len(ds.take_all()) == 30
    assert len(calls) == 30


def test_limit_stops_upstream_early():
    calls = []
    lock = threading.Lock()

    def f(batch):
        with lock:
            calls.append(len(batch["id"]))
        return batch

    ds = md.range(10**6, override_num_blocks=1000).map_batches(f).limit(10)
    out = ds.take_all()
    assert len(out) == 10
    assert len(calls) < 100, f"{len(calls)} UDF calls for limit(10) over 1000 blocks"


def test_limit_zero_runs_nothing_upstream():
    calls = []
    out = md.range(1000, override_num_blocks=100).map_batches(lambda b: calls.append(1) or b).limit(0).take_all()
    assert out == [] and calls == []


def test_limit_chained():
    assert md.range(100).limit(50).limit(10).count() == 10
    assert md.range(100).limit(10).limit(50).count() == 10


def test_limit_pushed_ahead_of_row_preserving_map():
    rows_seen = []
    lock = threading.Lock()

    def f(row):
        with lock:
            rows_seen.append(row["id"])
        return {"id": row["id"] + 1}

    out = md.range(1000, override_num_blocks=10).map(f).limit(5).take_all()
    assert len(out) == 5
    assert len(rows_seen) == 5
    assert sorted(r["id"] for r in out) == sorted(i + 1 for i in rows_seen)


def test_limit_pushed_ahead_of_row_preserving_map_batches():
    seen = []
    lock = threading.Lock()

    def f(batch):
        with lock:
            seen.append(len(batch["id"]))
        return {"id": batch["id"]}

    ds = md.range(1000, override_num_blocks=1).map_batches(f, udf_modifying_row_count=False).limit(7)
    assert len(ds.take_all()) == 7
    assert sum(seen) == 7


def test_function_concurrency_caps_tasks(ctx):
    ctx.execution_options.resource_limits.cpu = 8
    slow = ConcurrencyProbe(0.01)
    out = md.range(300, override_num_blocks=30).map_batches(slow, concurrency=1).take_all()
    assert sorted(r["id"] for r in out) == list(range(300))
    assert slow.peak == 1


def test_num_cpus_reserves_slots(ctx):
    ctx.execution_options.resource_limits.cpu = 4
    slow = ConcurrencyProbe(0.01)
    out = md.range(300, override_num_blocks=30).map_batches(slow, num_cpus=2).take_all()
    assert sorted(r["id"] for r in out) == list(range(300))
    assert 1 <= slow.peak <= 2


def test_negative_num_cpus_rejected():
    with pytest.raises(ValueError):
        md.range(3).map_batches(lambda b: b, num_cpus=-1)


def test_numpy_udf_in_place_changes_to_converted_columns_are_kept():
    # String columns reach numpy as writable object arrays; a UDF that edits one in place
    # and returns it must see its edit in the output (no stale reuse of the Arrow column).
    table = pa.table({"s": ["a", "b", "c", "d"], "x": [1, 2, 3, 4]})

    def shout(batch):
        batch["s"][:] = [v.upper() for v in batch["s"]]
        return batch

    out = md.from_arrow(table).map_batches(shout, zero_copy_batch=False).to_arrow()
    expected = pa.compute.utf8_upper(table["s"]).to_pylist()
    assert sorted(out["s"].to_pylist()) == sorted(expected)
    out = md.from_arrow(table).map_batches(shout).to_arrow()
    assert sorted(out["s"].to_pylist()) == sorted(expected)


def test_numpy_udf_returning_columns_untouched_keeps_types():
    table = pa.table({"s": pa.array(["x", None, "z"], pa.string()), "n": pa.array([1, 2, 3], pa.int32())})
    out = md.from_arrow(table).map_batches(lambda b: b).to_arrow()
    assert out.schema == table.schema
    assert out.sort_by("n").equals(table)


def test_numpy_udf_single_element_edit_of_a_string_column_is_kept():
    table = pa.table({"s": ["a", "b", "c"], "n": [1, 2, 3]})

    def edit(batch):
        batch["s"][batch["n"] == 2] = "changed"
        return batch

    out = md.from_arrow(table).map_batches(edit).to_arrow().sort_by("n")
    assert out["s"].to_pylist() == ["a", "changed", "c"]



@pytest.mark.parametrize("dtype", ["int8", "uint16", "int32", "int64", "float16", "float32", "float64"])
def test_numeric_columns_round_trip_through_numpy_udfs(dtype):
    # Sliced blocks (offsets into Arrow buffers), copies and views all convert exactly.
    values = (np.arange(1000) % 100).astype(dtype)
    table = pa.table({"v": values})
    out = (md.from_arrow(table, override_num_blocks=7)
           .map_batches(lambda b: {"v": b["v"], "w": b["v"][::-1][::-1].copy(),
                                   "n": b["v"][: len(b["v"])]}, batch_size=64)
           .to_arrow())
    assert out.schema.field("v").type == table.schema.field("v").type
    for name in ["v", "w", "n"]:
        assert sorted(out[name].to_pylist()) == sorted(values.tolist())


def test_numpy_results_that_are_strided_views_are_copied_correctly():
    table = pa.table({"v": np.arange(100, dtype=np.int64)})
    out = md.from_arrow(table).map_batches(lambda b: {"even": b["v"][::2]}).to_arrow()
    assert out["even"].to_pylist() == list(range(0, 100, 2))


def test_numeric_pipeline_does_not_import_pandas():
    import subprocess
    import sys

    # Batches of 64 rows are slices (offsets) of 334-row blocks: the direct views must honour them.
    code = ("import sys, millstream as md\n"
            "rows = md.range(1000, override_num_blocks=3).map_batches(\n"
            "    lambda b: {'id': b['id'] * 2, 'x': b['id'] * 0.5}, batch_size=64).take_all()\n"
            "assert sorted(r['id'] for r in rows) == list(range(0, 2000, 2))\n"
            "assert sorted(r['x'] for r in rows) == [i * 0.5 for i in range(1000)]\n"
            "print('pandas' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"

"""Calls that behave as in Ray Data 2.58: each expected value is Ray Data's documented
behaviour or what Ray 2.58 gives for the same call (noted where so)."""

from __future__ import annotations

import asyncio
import pathlib

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import millstream as md


# ---- paths -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["parquet", "csv", "json"])
def test_writes_take_a_pathlib_path(tmp_path, fmt):
    out = tmp_path / "out"
    getattr(md.range(5), f"write_{fmt}")(out)
    assert sorted(p.suffix for p in out.iterdir()) and all(p.suffix == f".{fmt}" for p in out.iterdir())


def test_read_parquet_takes_pathlib_paths(tmp_path):
    table = pa.table({"a": [1, 2, 3]})
    pq.write_table(table, tmp_path / "f.parquet")
    assert md.read_parquet(pathlib.Path(tmp_path)).to_arrow().equals(table)
    assert md.read_parquet([tmp_path / "f.parquet"]).count() == 3


# ---- DataContext -------------------------------------------------------------------------


def test_target_max_block_size_none_is_no_limit(tmp_path):
    # Ray's field is Optional[int]; None: blocks are not split by size.
    ctx = md.DataContext.get_current()
    ctx.target_max_block_size = None
    assert md.range(1000).count() == 1000
    blocks = list(md.range(1000, override_num_blocks=1).iter_batches(batch_size=None, batch_format="pyarrow"))
    assert [b.num_rows for b in blocks] == [1000]
    pq.write_table(pa.table({"a": np.arange(10)}), tmp_path / "f.parquet")
    assert md.read_parquet(str(tmp_path)).map_batches(lambda b: b).take(2) == [{"a": 0}, {"a": 1}]


# ---- columns edge cases ------------------------------------------------------------------


def test_read_parquet_with_no_columns_keeps_rows_and_no_columns(tmp_path):
    pq.write_table(pa.table({"a": [1, 2, 3], "b": ["x", "y", "z"]}), tmp_path / "f.parquet")
    ds = md.read_parquet(str(tmp_path), columns=[])
    assert ds.columns() == []
    assert ds.count() == 3
    assert ds.take_all() == [{}, {}, {}]


def test_select_no_columns_keeps_rows():
    # Ray 2.58: select_columns([]) runs and keeps the 3 rows (with no real column).
    ds = md.range(3).select_columns([])
    assert ds.count() == 3
    assert ds.columns() == []


@pytest.mark.parametrize("make", [
    lambda: md.from_items([{"a": 1, "b": 2}] * 3),
    lambda: md.range(3).map(lambda r: {"a": r["id"], "b": 0}),   # schema unknown until run
], ids=["known-schema", "udf"])
def test_dropping_every_column_leaves_no_rows(make):
    # Ray 2.58: take_all() == [], count() == 0, to_pandas() has shape (0, 0).
    ds = make().drop_columns(["a", "b"])
    assert ds.take_all() == []
    assert ds.count() == 0
    assert ds.to_pandas().shape == (0, 0)


def test_drop_no_columns_is_the_same_dataset():
    assert md.range(2).drop_columns([]).take_all() == [{"id": 0}, {"id": 1}]


# ---- validation with Ray's error types ---------------------------------------------------


@pytest.mark.parametrize("call,error", [
    (lambda: md.range(3).select_columns(("id",)), TypeError),
    (lambda: md.range(3).select_columns(1), TypeError),
    (lambda: md.range(3).select_columns([1]), ValueError),
    (lambda: md.range(3).select_columns(["id", "id"]), ValueError),
    (lambda: md.range(3).drop_columns(["id", "id"]), ValueError),
    (lambda: md.from_items([{"a": 1, "b": 2}]).rename_columns({"a": "c", "b": "c"}), ValueError),
    (lambda: md.range(3).rename_columns({}), ValueError),
    (lambda: md.range(3).rename_columns([]), ValueError),
    (lambda: md.range(3).rename_columns({1: "a"}), ValueError),
    (lambda: md.range(3).rename_columns([1]), ValueError),
    (lambda: md.range(3).rename_columns(("x",)), TypeError),
    (lambda: md.range(3).rename_columns("x"), TypeError),
    (lambda: md.range(3).rename_columns(["x", "y"]), ValueError),
    (lambda: md.range(3).filter(), ValueError),
    (lambda: md.range(3).filter(lambda r: True, expr="id > 0"), ValueError),
    (lambda: md.range(3).filter(3), ValueError),
    (lambda: md.range(3).filter(expr="id > 0", fn_args=(1,)), ValueError),
    (lambda: md.range(3).filter(expr="id > 0", fn_kwargs={}), ValueError),
], ids=["select-tuple", "select-int", "select-int-element", "select-dup", "drop-dup", "rename-two-to-one",
        "rename-empty-dict", "rename-empty-list", "rename-int-key", "rename-int-name", "rename-tuple",
        "rename-str", "rename-length", "filter-neither", "filter-both", "filter-not-callable",
        "filter-expr-fn_args", "filter-expr-fn_kwargs"])
def test_argument_errors_have_rays_types(call, error):
    # The types Ray 2.58 raises for the same calls.
    with pytest.raises(error):
        call()


@pytest.mark.parametrize("call,words", [
    (lambda: md.range(3).select_columns(("id",)), "select_columns requires 'cols' to be a string or a list of strings"),
    (lambda: md.range(3).select_columns([1]), "select_columns requires all elements of 'cols' to be strings"),
    (lambda: md.range(3).select_columns(["id", "id"]), "select_columns expected unique column names"),
    (lambda: md.range(3).drop_columns(["id", "id"]), "drop_columns expects unique column names"),
    (lambda: md.range(3).rename_columns({}), "rename_columns received 'names' with no entries"),
    (lambda: md.range(3).rename_columns([]), "rename_columns requires 'names' with at least one column name"),
    (lambda: md.range(3).rename_columns({"a": "c", "b": "c"}), "rename_columns received duplicate values in the 'names'"),
    (lambda: md.range(3).rename_columns({1: "a"}), "rename_columns requires both keys and values in the 'names' to be strings"),
    (lambda: md.range(3).rename_columns([1]), "rename_columns requires all elements in the 'names' to be strings"),
    (lambda: md.range(3).rename_columns(("x",)), "rename_columns expected names to be either List"),
    (lambda: md.range(3).rename_columns(["x", "y"]), "rename_columns requires 'names'"),
    (lambda: md.range(3).filter(), "Exactly one of 'fn' or 'expr' must be provided"),
    (lambda: md.range(3).filter(3), "fn must be a UserDefinedFunction, but got int instead"),
    (lambda: md.range(3).filter(expr="id > 0", fn_args=(1,)), "when 'expr' is used, 'fn_args/fn_kwargs'"),
])
def test_argument_errors_have_rays_words(call, words):
    # Ray 2.58's messages for the same calls, so code matching on them keeps working.
    with pytest.raises((TypeError, ValueError)) as info:
        call()
    assert words in str(info.value)


# ---- types through row UDFs --------------------------------------------------------------


def test_map_keeps_nanosecond_timestamps():
    table = pa.table({"t": pa.array([1, 2], pa.timestamp("ns"))})
    assert md.from_arrow(table).map(lambda r: r).schema().types == [pa.timestamp("ns")]


def test_array_cells_are_ndarrays_in_rows():
    seen = []
    ds = md.from_items([{"a": np.zeros((2, 2))}, {"a": np.ones((2, 2))}])
    out = ds.map(lambda r: seen.append(type(r["a"])) or {"a": r["a"] + 1}).take_all()
    assert seen == [np.ndarray, np.ndarray]
    np.testing.assert_array_equal(out[0]["a"], np.ones((2, 2)))
    np.testing.assert_array_equal(out[1]["a"], np.full((2, 2), 2.0))
    # A Python list stays a list (as in Ray).
    assert md.from_items([{"a": [1, 2]}]).map(lambda r: {"t": type(r["a"]).__name__}).take_all() == [{"t": "list"}]


def test_from_numpy_multi_dimensional_is_a_tensor_column():
    arr = np.arange(24).reshape(4, 2, 3)
    ds = md.from_numpy(arr)
    batch = ds.take_batch(4)
    np.testing.assert_array_equal(batch["data"], arr)
    rows = ds.take_all()
    assert len(rows) == 4 and all(isinstance(r["data"], np.ndarray) and r["data"].shape == (2, 3) for r in rows)
    np.testing.assert_array_equal(rows[3]["data"], arr[3])
    frame = ds.to_pandas()
    np.testing.assert_array_equal(frame["data"][1], arr[1])


def test_from_pandas_with_array_cells():
    cells = [np.zeros((2, 2)), np.ones((2, 2))]
    ds = md.from_pandas(pd.DataFrame({"a": cells, "b": [1, 2]}))
    batch = ds.take_batch()
    np.testing.assert_array_equal(batch["a"], np.stack(cells))
    np.testing.assert_array_equal(batch["b"], [1, 2])


def test_ragged_array_cells_come_back_as_object_arrays_of_arrays():
    cells = [np.zeros(2), np.ones(3)]
    for ds in [md.from_pandas(pd.DataFrame({"a": cells})),
               md.from_items([{"a": c} for c in cells]),
               md.range(2).map(lambda r: {"a": cells[r["id"]]}),
               md.range(2).map_batches(lambda b: {"a": [cells[i] for i in b["id"]]}, batch_size=1)]:
        out = ds.take_batch()["a"]
        assert out.dtype == object and len(out) == 2
        np.testing.assert_array_equal(out[0], cells[0])
        np.testing.assert_array_equal(out[1], cells[1])


def test_ragged_multi_dimensional_cells_keep_their_shapes():
    # Ray 2.58 keeps them as a variable-shaped tensor column: ndarrays of each cell's shape.
    cells = [np.zeros((2, 2)), np.ones((3, 1))]
    ds = md.from_pandas(pd.DataFrame({"a": cells, "b": [1, 2]}))
    out = ds.take_batch()["a"]
    assert out.dtype == object and [c.shape for c in out] == [(2, 2), (3, 1)]
    np.testing.assert_array_equal(out[1], cells[1])
    rows = ds.filter(expr="b == 2").take_all()
    np.testing.assert_array_equal(rows[0]["a"], cells[1])
    frame = ds.to_pandas()
    assert [c.shape for c in frame["a"]] == [(2, 2), (3, 1)]
    out = md.from_numpy([np.zeros((2, 2)), np.ones((3, 3))]).take_batch(5)["data"]
    assert [c.shape for c in out] == [(2,), (2,), (3,), (3,), (3,)]
    np.testing.assert_array_equal(out[4], np.ones(3))


def test_ragged_cells_round_trip_through_parquet(tmp_path):
    cells = [np.arange(i + 1, dtype=np.float32) for i in range(4)]
    md.from_items([{"a": c, "k": i} for i, c in enumerate(cells)]).write_parquet(str(tmp_path / "out"))
    rows = sorted(md.read_parquet(str(tmp_path / "out")).take_all(), key=lambda r: r["k"])
    for row, cell in zip(rows, cells):
        assert row["a"].dtype == np.float32
        np.testing.assert_array_equal(row["a"], cell)


def test_map_batches_list_of_lists_is_a_list_column():
    out = md.range(2, override_num_blocks=1).map_batches(lambda b: {"a": [[1, 2], [3]]}).take_all()
    assert out == [{"a": [1, 2]}, {"a": [3]}]


# ---- inputs Ray accepts ------------------------------------------------------------------


def test_from_items_takes_a_numpy_array():
    ds = md.from_items(np.arange(3))
    assert ds.take_all() == [{"item": 0}, {"item": 1}, {"item": 2}]
    assert ds.schema().types == [pa.int64()]
    rows = md.from_items(np.zeros((2, 3))).take_all()
    assert len(rows) == 2 and isinstance(rows[0]["item"], np.ndarray)
    np.testing.assert_array_equal(rows[0]["item"], np.zeros(3))


def test_filter_string_with_dotted_column_names():
    # Ray's expression parser reads `sepal.length` as the column "sepal.length".
    ds = md.from_items([{"sepal.length": 1.0, "b": 2}, {"sepal.length": 5.0, "b": 3}])
    assert ds.filter(expr="sepal.length > 2").take_all() == [{"sepal.length": 5.0, "b": 3}]
    assert ds.filter(expr="sepal.length > 2 or b == 2").count() == 2


async def _twice(batch):
    for i in range(2):
        await asyncio.sleep(0)
        yield {"id": batch["id"] * 10 + i}


class _AsyncGen:
    async def __call__(self, batch):
        await asyncio.sleep(0)
        yield {"id": batch["id"] + 100}


class _AsyncReturn:
    async def __call__(self, batch):
        await asyncio.sleep(0)
        return {"id": batch["id"] + 1}


def test_async_udfs():
    ds = md.range(3)
    assert sorted(r["id"] for r in ds.map_batches(_twice).take_all()) == [0, 1, 10, 11, 20, 21]
    assert sorted(r["id"] for r in ds.map_batches(_AsyncGen, concurrency=1).take_all()) == [100, 101, 102]
    assert sorted(r["id"] for r in ds.map_batches(_AsyncReturn, concurrency=1).take_all()) == [1, 2, 3]
    assert sorted(r["id"] for r in ds.map(_AsyncReturn, concurrency=1).take_all()) == [1, 2, 3]
    assert sorted(r["id"] for r in ds.flat_map(_AsyncGen, concurrency=1).take_all()) == [100, 101, 102]


# ---- consumption -------------------------------------------------------------------------


def test_batch_format_none_is_the_native_block():
    ds = md.range(3)
    assert all(isinstance(b, pa.Table) for b in ds.iter_batches(batch_format=None))
    assert isinstance(ds.take_batch(batch_format=None), pa.Table)
    kinds = []
    ds.map_batches(lambda b: kinds.append(type(b)) or b, batch_format=None).materialize()
    assert kinds and all(k is pa.Table for k in kinds)


@pytest.mark.parametrize("fmt", [None, "pyarrow", "pandas"])
def test_a_table_or_frame_udf_may_return_a_dict_of_columns(fmt):
    out = md.range(3, override_num_blocks=1).map_batches(lambda b: {"n": [len(b)] * len(b)}, batch_format=fmt).take_all()
    assert out == [{"n": 3}] * 3


@pytest.mark.parametrize("call", ["take", "show", "take_batch"])
def test_stats_after_take_and_show_report_that_execution(call):
    ds = md.range(10).map(lambda r: r)
    getattr(ds, call)()
    assert "not been executed" not in ds.stats()
    assert "Map(<lambda>)" in ds.stats()


class _LoopRecorder:
    loops: list = []

    def __init__(self):
        self.lock = None

    async def __call__(self, batch):
        # State bound to the event loop, made on the first call and used on every later one.
        if self.lock is None:
            self.lock = asyncio.Lock()
        async with self.lock:
            _LoopRecorder.loops.append(id(asyncio.get_running_loop()))
        return batch


def test_an_async_actor_keeps_its_event_loop_between_calls():
    _LoopRecorder.loops = []
    out = md.range(20, override_num_blocks=10).map_batches(_LoopRecorder, concurrency=1).count()
    assert out == 20
    assert len(_LoopRecorder.loops) == 10 and len(set(_LoopRecorder.loops)) == 1


def test_async_filter_fn():
    async def keep(row):
        await asyncio.sleep(0)
        return row["id"] % 2 == 0

    assert md.range(6).filter(keep).take_all() == [{"id": 0}, {"id": 2}, {"id": 4}]


def test_blocks_with_different_tensor_shapes_meet_as_ragged():
    # Two blocks: cells of shape (1,), then (2,); re-batched together in the engine.
    ds = md.range(4, override_num_blocks=2).map(lambda r: {"a": np.zeros(r["id"] // 2 + 1)})
    for run in [lambda: [c for b in ds.iter_batches(batch_size=4) for c in b["a"]],
                lambda: [r["a"] for r in ds.map_batches(lambda b: b, batch_size=4).take_all()],
                lambda: list(ds.take_batch(4)["a"])]:
        cells = run()
        assert sorted(c.shape for c in cells) == [(1,), (1,), (2,), (2,)]


def test_range_tensor():
    # Ray Data's docstring example for range_tensor.
    ds = md.range_tensor(1000, shape=(2, 2))
    out = ds.map_batches(lambda row: {"data": row["data"] * 2}).take(2)
    assert len(out) == 2
    np.testing.assert_array_equal(out[0]["data"], np.zeros((2, 2), dtype=np.int64))
    np.testing.assert_array_equal(out[1]["data"], np.full((2, 2), 2, dtype=np.int64))
    assert ds.count() == 1000
    assert ds.take_batch(3)["data"].shape == (3, 2, 2)


@pytest.mark.parametrize("expr,expected", [
    ("is_null(a)", ["y"]),
    ("is_valid(a)", ["x", "z"]),
    ("is_not_null(a)", ["x", "z"]),
    ("is_nan(a)", ["z"]),
    ('is_in(b, ["x", "z"])', ["x", "z"]),
    ('not is_null(a) and b != "x"', ["z"]),
])
def test_filter_string_functions(expr, expected):
    # The functions Ray's expression parser knows; results as Ray 2.58 gives them.
    ds = md.from_items([{"a": 1.0, "b": "x"}, {"a": None, "b": "y"}, {"a": float("nan"), "b": "z"}])
    assert [r["b"] for r in ds.filter(expr=expr).take_all()] == expected


def test_filter_string_unknown_function_names_the_known_ones():
    with pytest.raises(ValueError, match="is_null"):
        md.range(3).filter(expr="foo(id)")

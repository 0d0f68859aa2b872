"""Errors: UDF exceptions, missing paths, unknown columns, bad arguments, corrupt files."""

from __future__ import annotations

import traceback

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import millstream as md
from conftest import make_table


class MyError(Exception):
    pass


def _notes(e: BaseException) -> str:
    return "\n".join(getattr(e, "__notes__", []))


def _frames(e: BaseException) -> list[str]:
    return [f.name for f in traceback.extract_tb(e.__traceback__)]


def test_udf_exception_type_message_frame_and_operator():
    def bad(batch):
        if batch["id"].max() >= 500:
            raise MyError("boom at 500")
        return batch

    with pytest.raises(MyError, match="boom at 500") as info:
        md.range(1000, override_num_blocks=10).map_batches(bad).take_all()
    assert "bad" in _frames(info.value)
    assert "MapBatches(bad)" in _notes(info.value)


@pytest.mark.parametrize("consume", ["take_all", "iter_batches", "iter_rows", "count", "to_arrow",
                                     "materialize", "write_parquet", "take", "schema"])
def test_udf_exception_reaches_every_consumer(tmp_path, consume):
    def bad(batch):
        raise ZeroDivisionError("no division today")

    ds = md.range(100, override_num_blocks=2).map_batches(bad)
    with pytest.raises(ZeroDivisionError, match="no division today") as info:
        if consume == "iter_batches":
            list(ds.iter_batches())
        elif consume == "iter_rows":
            list(ds.iter_rows())
        elif consume == "write_parquet":
            ds.write_parquet(str(tmp_path / "out"))
        else:
            getattr(ds, consume)()
    assert "bad" in _frames(info.value)
    assert "MapBatches(bad)" in _notes(info.value)


def test_row_udf_exceptions_name_operator():
    def bad_map(row):
        return {"id": row["id"] // 0}

    def bad_pred(row):
        raise KeyError("missing_thing")

    def bad_flat(row):
        raise ValueError("flat failed")

    with pytest.raises(ZeroDivisionError) as info:
        md.range(10).map(bad_map).take_all()
    assert "Map(bad_map)" in _notes(info.value) and "bad_map" in _frames(info.value)
    with pytest.raises(KeyError, match="missing_thing") as info:
        md.range(10).filter(bad_pred).take_all()
    assert "Filter(bad_pred)" in _notes(info.value) and "bad_pred" in _frames(info.value)
    with pytest.raises(ValueError, match="flat failed") as info:
        md.range(10).flat_map(bad_flat).take_all()
    assert "FlatMap(bad_flat)" in _notes(info.value) and "bad_flat" in _frames(info.value)


def test_callable_class_constructor_error():
    class Broken:
        def __init__(self):
            raise MyError("cannot construct")

        def __call__(self, batch):
            return batch

    with pytest.raises(MyError, match="cannot construct") as info:
        md.range(10).map_batches(Broken, concurrency=1).take_all()
    assert "MapBatches(Broken)" in _notes(info.value)
    # The traceback reaches into the constructor, like any other UDF frame.
    assert "__init__" in _frames(info.value)


def test_error_in_second_of_fused_udfs_names_it():
    def fine(batch):
        return batch

    def second(batch):
        raise MyError("second failed")

    with pytest.raises(MyError) as info:
        md.range(10).map_batches(fine).map_batches(second).take_all()
    assert "MapBatches(second)" in _notes(info.value)


def test_dataset_usable_after_error():
    state = {"fail": True}

    def flaky(batch):
        if state["fail"]:
            raise MyError("first run fails")
        return batch

    ds = md.range(100, override_num_blocks=4).map_batches(flaky)
    with pytest.raises(MyError):
        ds.take_all()
    state["fail"] = False
    assert sorted(r["id"] for r in ds.take_all()) == list(range(100))


def test_udf_wrong_return_type_is_type_error():
    def wrong(batch):
        return 42

    with pytest.raises(TypeError) as info:
        md.range(10).map_batches(wrong).take_all()
    assert "MapBatches(wrong)" in str(info.value) + _notes(info.value)

    def wrong_row(row):
        return [row["id"]]

    with pytest.raises(TypeError) as info:
        md.range(10).map(wrong_row).take_all()
    assert "Map(wrong_row)" in str(info.value) + _notes(info.value)


def test_missing_path_file_not_found(tmp_path):
    missing = tmp_path / "nope" / "data.parquet"
    with pytest.raises(FileNotFoundError) as info:
        md.read_parquet(str(missing)).take_all()
    assert str(missing) in str(info.value)
    missing_dir = tmp_path / "no_such_dir"
    with pytest.raises(FileNotFoundError) as info:
        md.read_parquet(str(missing_dir)).count()
    assert str(missing_dir) in str(info.value)


def test_unknown_column_in_read_parquet(tmp_path):
    pq.write_table(make_table(10), tmp_path / "t.parquet")
    with pytest.raises(KeyError) as info:
        md.read_parquet(str(tmp_path), columns=["key", "no_such_col"]).take_all()
    assert "no_such_col" in str(info.value)


def test_unknown_column_in_select_columns(tmp_path):
    with pytest.raises(KeyError) as info:
        md.range(10).select_columns(["id", "ghost"]).take_all()
    assert "ghost" in str(info.value)
    pq.write_table(make_table(10), tmp_path / "t.parquet")
    with pytest.raises(KeyError) as info:
        md.read_parquet(str(tmp_path)).select_columns("phantom").take_all()
    assert "phantom" in str(info.value)
    with pytest.raises(KeyError) as info:
        md.range(10).map_batches(lambda b: b).select_columns(["spectre"]).take_all()
    assert "spectre" in str(info.value)


def test_unknown_column_in_drop_columns():
    with pytest.raises(KeyError) as info:
        md.range(10).drop_columns(["ghost"]).take_all()
    assert "ghost" in str(info.value)


def test_unknown_column_in_filter_expr():
    with pytest.raises(Exception) as info:
        md.range(10).filter(expr="ghost > 3").take_all()
    assert "ghost" in str(info.value)


@pytest.mark.parametrize("make", [
    lambda ds: ds.map_batches(lambda b: b, batch_format="xml"),
    lambda ds: ds.iter_batches(batch_format="xml").__next__(),
    lambda ds: ds.take_batch(3, batch_format="xml"),
    lambda ds: ds.add_column("c", lambda b: b["id"], batch_format="xml"),
    lambda ds: ds.map_batches(lambda b: b, batch_size=0),
    lambda ds: ds.map_batches(lambda b: b, batch_size=-5),
    lambda ds: ds.iter_batches(batch_size=0).__next__(),
    lambda ds: ds.limit(-1),
    lambda ds: ds.map_batches(lambda b: b, concurrency=0),
    lambda ds: ds.map(lambda r: r, concurrency=0),
    lambda ds: ds.filter(expr="id >"),
    lambda ds: ds.filter(expr="id.attr() > 3"),
    lambda ds: ds.map_batches(lambda b: b, fn_constructor_args=(1,)),
    lambda ds: ds.select_columns(["id", "id"]),
], ids=["fmt-map_batches", "fmt-iter_batches", "fmt-take_batch", "fmt-add_column",
        "batch_size-0", "batch_size-neg", "iter-batch_size-0", "limit-neg", "concurrency-0",
        "map-concurrency-0", "bad-expr", "bad-expr-syntax", "ctor-args-on-fn", "dup-select"])
def test_bad_arguments_value_error(make):
    with pytest.raises(ValueError):
        make(md.range(10))


def test_bad_argument_types():
    with pytest.raises(TypeError):
        md.range(10).map_batches("not callable")
    with pytest.raises(TypeError):
        md.from_items(iter([1, 2]))  # no length: Ray raises TypeError too
    with pytest.raises(TypeError):
        md.from_arrow(42)
    with pytest.raises(TypeError):
        md.read_parquet("x.parquet", columns="key")


def test_corrupt_parquet_is_os_error_naming_file(tmp_path):
    good = tmp_path / "good.parquet"
    pq.write_table(make_table(100), good)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"this is not parquet at all" * 100)
    with pytest.raises(OSError) as info:
        md.read_parquet(str(tmp_path)).take_all()
    assert str(bad) in str(info.value)


def test_truncated_parquet_is_os_error_naming_file(tmp_path):
    src = tmp_path / "full.parquet"
    pq.write_table(make_table(1000), src)
    data = src.read_bytes()
    src.unlink()
    bad = tmp_path / "truncated.parquet"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError) as info:
        md.read_parquet(str(bad)).count()
    assert str(bad) in str(info.value)


def test_udf_returning_ragged_dict_is_value_error():
    def ragged(batch):
        return {"a": np.arange(3), "b": np.arange(4)}

    with pytest.raises(ValueError) as info:
        md.range(10).map_batches(ragged).take_all()
    assert "MapBatches(ragged)" in str(info.value) + _notes(info.value)


def test_actor_call_error_names_operator():
    class Fails:
        def __call__(self, batch):
            raise MyError("actor call failed")

    with pytest.raises(MyError, match="actor call failed") as info:
        md.range(100, override_num_blocks=4).map_batches(Fails, concurrency=2).take_all()
    assert "MapBatches(Fails)" in _notes(info.value)
    assert "__call__" in _frames(info.value)


# ---- a column name twice in a table handed in raises, as from_pandas does ------------------

def _twice() -> pa.Table:
    return pa.table([pa.array([1, 2]), pa.array([3, 4])], names=["a", "a"])


@pytest.mark.parametrize("make", [
    lambda: md.from_arrow(_twice()),
    lambda: md.from_arrow([_twice()]),
    lambda: md.range(2).map_batches(lambda t: _twice(), batch_format="pyarrow").take_all(),
    lambda: md.range(2).map_batches(lambda t: _twice().to_batches()[0], batch_format="pyarrow").to_arrow(),
], ids=["from_arrow", "from_arrow-list", "udf-table", "udf-record-batch"])
def test_table_with_a_column_name_twice_raises_naming_it(make):
    # Rows as dicts would keep one of the two columns: the other's values would be lost.
    with pytest.raises(ValueError, match="'a'"):
        make()


def test_misspelt_column_in_filter_expr_names_it_the_columns_and_the_meant_one():
    ds = md.range(3).add_column("price", lambda df: df["id"])
    with pytest.raises(ValueError) as info:
        ds.filter(expr="prise > 1").take_all()
    message = str(info.value)
    assert "column 'prise' not found (did you mean 'price'?); the columns are: id, price" in message
    assert "\n" not in message


def test_column_in_filter_expr_far_from_every_column_suggests_none():
    with pytest.raises(ValueError) as info:
        md.range(3).filter(expr="x > 1").take_all()
    assert "column 'x' not found; the columns are: id" in str(info.value)


@pytest.mark.parametrize("columns", [None, ["a"]])
def test_parquet_file_with_a_column_name_twice_raises_naming_it(tmp_path, columns):
    pq.write_table(_twice(), tmp_path / "f.parquet")
    with pytest.raises(ValueError, match=r"has more than one column named 'a'"):
        md.read_parquet(tmp_path, columns=columns).take_all()

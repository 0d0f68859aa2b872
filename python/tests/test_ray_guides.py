"""The shapes of Ray Data's "Aggregating data", "Joining data" and splitting examples, run
with ``ray.data`` and with ``millstream`` (only the import differs) and compared: Ray's
answers are the reference.

Each case is a function of the library module; it returns plain Python values (rows
sorted where Ray promises no order). Ray runs locally (two CPUs, no dashboard), started
once for the module and shut down after it.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pyarrow.compute as pc
import pytest

import millstream as md

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    import faulthandler

    faulthandler.cancel_dump_traceback_later()  # starting Ray takes longer than a test may
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 << 20)
    # The functions below travel by value: Ray's workers cannot import this test module.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


def _aggregate_module(lib):
    return md.aggregate if lib is md else ray.data.aggregate


def _plain(value):
    """``value`` with numpy scalars and arrays as Python values, floats rounded to 9
    significant digits (the engines add in different orders), NaN as the string "nan"."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return "nan" if math.isnan(value) else float(f"{value:.9g}")
    return value


def _rows(ds, *keys):
    """Every row of ``ds``, plain, sorted by ``keys`` (None last)."""
    rows = [_plain(r) for r in ds.take_all()]
    return sorted(rows, key=lambda r: tuple((r[k] is None, r[k] if r[k] is not None else 0) for k in keys))


def _same(case):
    """``case(ray.data)`` and ``case(millstream)`` give the same answer."""
    want = case(ray.data)
    got = case(md)
    assert got == want


def _grouped(lib):
    return lib.range(100).add_column("group_key", lambda batch: batch["id"] % 3, batch_format="numpy")


def test_basic_aggregations_on_a_dataset_and_per_group():
    _same(lambda lib: [_plain(_grouped(lib).max("id")),
                       _rows(_grouped(lib).groupby("group_key").min("id"), "group_key"),
                       _plain(_grouped(lib).sum("id")), _plain(_grouped(lib).mean("id")),
                       _plain(_grouped(lib).std("id")), _plain(_grouped(lib).min(["id", "group_key"]))])


def test_aggregation_objects_whole_and_grouped():
    def case(lib):
        agg = _aggregate_module(lib)
        ds = _grouped(lib)
        return [
            _plain(ds.aggregate(agg.Count())),
            _rows(ds.groupby("group_key").aggregate(agg.Mean(on="id")), "group_key"),
            _rows(ds.groupby("group_key").aggregate(agg.Quantile(q=0.75, on="id")), "group_key"),
            _rows(ds.groupby("group_key").aggregate(agg.Std(on="id", ddof=0), agg.AbsMax(on="id"),
                                                    agg.Sum(on="id", alias_name="total")), "group_key"),
            _plain(ds.aggregate(agg.Min("id"), agg.Max("id"), agg.Count("id"))),
        ]

    _same(case)


def test_unique_values_sorted():
    _same(lambda lib: sorted(_plain(_grouped(lib).unique("group_key"))))


def test_grouped_shortcuts_with_nulls_and_ignore_nulls():
    items = [{"k": i % 4, "v": None if i % 5 == 0 else float(i)} for i in range(40)]

    def case(lib):
        grouped = lib.from_items(items).groupby("k")
        return [_rows(grouped.count(), "k"), _rows(grouped.sum("v"), "k"),
                _rows(grouped.mean("v", ignore_nulls=False), "k"), _rows(grouped.max("v"), "k"),
                _rows(grouped.std("v", ddof=1), "k")]

    _same(case)


def test_a_deprecated_aggregate_fn_product():
    def case(lib):
        agg = _aggregate_module(lib)
        product = agg.AggregateFn(init=lambda key: 1, accumulate_row=lambda acc, row: acc * row["number"],
                                  merge=lambda a, b: a * b, name="prod")
        return _plain(lib.from_items([{"number": i} for i in range(1, 10)]).aggregate(product))

    _same(case)


def test_a_custom_aggregate_fn_v2_per_group():
    def case(lib):
        agg = _aggregate_module(lib)

        class SumOfSquares(agg.AggregateFnV2):
            def __init__(self, on):
                super().__init__(f"sum_sq({on})", on=on, ignore_nulls=True, zero_factory=lambda: 0)

            def aggregate_block(self, block):
                column = block[self._target_col_name]
                return pc.sum(pc.multiply(column, column)).as_py() or 0

            def combine(self, current, new):
                return current + new

        return _rows(_grouped(lib).groupby("group_key").aggregate(SumOfSquares("id")), "group_key")

    _same(case)


def test_map_groups_normalises_each_group():
    def normalise(df):
        df["centered"] = df["id"] - df["id"].mean()
        return df

    _same(lambda lib: _rows(_grouped(lib).groupby("group_key").map_groups(normalise, batch_format="pandas"),
                            "id"))


def _sides(lib):
    doubles = lib.range(6).map(lambda row: {"id": row["id"], "double": int(row["id"]) * 2})
    squares = lib.range(6).map(lambda row: {"id": row["id"] + 3, "square": (int(row["id"]) + 3) ** 2})
    return doubles, squares


@pytest.mark.parametrize("join_type", ["inner", "left_outer", "right_outer", "full_outer", "left_semi",
                                       "right_semi", "left_anti", "right_anti"])
def test_joins_of_the_guide(join_type):
    def case(lib):
        doubles, squares = _sides(lib)
        return _rows(doubles.join(squares, join_type=join_type, num_partitions=2, on=("id",)), "id")

    _same(case)


def test_a_join_on_differently_named_keys_with_suffixes():
    def case(lib):
        left = lib.from_items([{"id": i, "v": i * 10} for i in range(5)])
        right = lib.from_items([{"key": i, "v": i * 100} for i in range(2, 7)])
        joined = left.join(right, join_type="inner", num_partitions=2, on=("id",), right_on=("key",),
                           left_suffix="_l", right_suffix="_r")
        return [sorted(joined.columns()), _rows(joined, "id")]

    _same(case)


def test_split_family_row_counts_and_contents():
    def case(lib):
        ds = lib.range(10)
        ids = lambda part: sorted(r["id"] for r in part.take_all())  # noqa: E731
        return [
            [ids(p) for p in ds.split(3, equal=True)],
            sum(p.count() for p in ds.split(3)),
            [ids(p) for p in ds.split_at_indices([2, 5])],
            [ids(p) for p in ds.split_proportionately([0.2, 0.5])],
            [ids(p) for p in ds.train_test_split(test_size=0.3)],
            [ids(p) for p in ds.train_test_split(test_size=3)],
        ]

    _same(case)


def test_union_and_zip():
    def case(lib):
        a, b = lib.range(4), lib.range(3).map(lambda row: {"id": row["id"] + 100})
        zipped = lib.range(5).zip(lib.range(5).map(lambda row: {"double": row["id"] * 2}))
        return [sorted(r["id"] for r in a.union(b).take_all()), _rows(zipped, "id")]

    _same(case)

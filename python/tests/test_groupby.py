"""groupby / aggregate: differential against pandas (and by hand) on generated data."""

from __future__ import annotations

import math
import os
import tempfile

import hypothesis
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import strategies as st

import millstream as md
from millstream.aggregate import AbsMax, Count, Max, Mean, Min, Std, Sum


def _table(n: int, seed: int = 0, groups: int = 7) -> pa.Table:
    """k1 int (5% null), k2 string (5% null), v int (10% null), x float (10% null)."""
    rng = np.random.default_rng(seed)
    k1 = rng.integers(0, groups, n)
    k2 = rng.choice(["a", "b", "c"], n)
    v = rng.integers(-100, 100, n)
    x = rng.normal(10.0, 3.0, n)
    return pa.table({
        "k1": pa.array(k1, mask=rng.random(n) < 0.05),
        "k2": pa.array(k2, mask=rng.random(n) < 0.05),
        "v": pa.array(v, mask=rng.random(n) < 0.1),
        "x": pa.array(x, mask=rng.random(n) < 0.1),
    })


def _blocks(table: pa.Table, n: int) -> list:
    step = max(1, math.ceil(table.num_rows / n))
    return [table.slice(i, step) for i in range(0, table.num_rows, step)] or [table]



def _expected(table: pa.Table, keys) -> pd.DataFrame:
    """pandas: groups sorted by key with nulls last (dropna=False)."""
    df = table.to_pandas()
    g = df.groupby(keys, dropna=False, sort=True)
    out = pd.DataFrame({
        "count()": g.size(),
        "count(v)": g["v"].count(),
        "sum(v)": g["v"].sum(min_count=1),
        "min(v)": g["v"].min(),
        "max(v)": g["v"].max(),
        "mean(x)": g["x"].mean(),
        "std(x)": g["x"].std(ddof=1),
        "std(v)": g["v"].std(ddof=0),
    })
    out["abs_max(v)"] = np.maximum(g["v"].min().abs(), g["v"].max().abs())
    return out.reset_index()


_AGGS = (Count(), Count("v", ignore_nulls=True), Sum("v"), Min("v"), Max("v"), Mean("x"), Std("x"),
         Std("v", ddof=0), AbsMax("v"))


def _check(table: pa.Table, keys, blocks: int = 8, source=None):
    ds = md.from_arrow(source if source is not None else _blocks(table, blocks)).groupby(keys).aggregate(*_AGGS)
    return _compare(ds, table, keys)


def _compare(ds, table: pa.Table, keys):
    """``ds`` (a groupby(keys).aggregate(*_AGGS) of ``table``) against pandas."""
    got = pa.Table.from_pylist(ds.take_all()).to_pandas()
    want = _expected(table, keys)
    got = got[list(want.columns)]
    key_list = [keys] if isinstance(keys, str) else keys
    for k in key_list:  # a null key: None in both frames
        got[k] = got[k].astype(object).where(got[k].notna(), None)
        want[k] = want[k].astype(object).where(want[k].notna(), None)
    for c in want.columns.difference(key_list):  # an all-null group's null (Ray's None) as pandas' NaN
        got[c] = pd.to_numeric(got[c])
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want, check_dtype=False, rtol=1e-9,
                                  check_index_type=False)
    return ds


def test_one_int_key_with_nulls_matches_pandas():
    _check(_table(5000, seed=1), "k1")


def test_string_key_and_multi_column_keys_match_pandas():
    table = _table(4000, seed=2)
    _check(table, "k2")
    _check(table, ["k1", "k2"])


def test_dictionary_key_groups_by_value():
    table = _table(3000, seed=3)
    encoded = table.set_column(1, "k2", table["k2"].dictionary_encode())
    _check(table, "k2", source=_blocks(encoded, 6))


def test_one_group_and_many_groups():
    _check(_table(2000, seed=4, groups=1), "k1")
    _check(_table(300_000, seed=5, groups=100_000), "k1", blocks=12)


def test_many_groups_spill_under_a_tiny_memory_limit(ctx):
    ctx.execution_options.resource_limits.object_store_memory = 8 << 20
    ds = _check(_table(400_000, seed=6, groups=100_000), "k1", blocks=40)
    spilled = {op.name: op.spilled_bytes for op in ds._last_stats.operators}
    assert any(name.startswith("AllToAllOperator[Aggregate") and n > 0 for name, n in spilled.items()), spilled


def test_results_sorted_by_key_nulls_last():
    rows = md.from_items([{"k": k} for k in [3, None, 1, 2, 1, None, 3]]).groupby("k").count().take_all()
    assert rows == [{"k": 1, "count()": 2}, {"k": 2, "count()": 1}, {"k": 3, "count()": 2},
                    {"k": None, "count()": 2}]


def test_grouped_shortcuts_and_ray_column_names():
    items = [{"A": i % 3, "B": i, "C": i ** 2} for i in range(100)]
    df = pd.DataFrame(items)
    ds = md.from_items(items)
    assert ds.groupby("A").count().take_all() == [
        {"A": a, "count()": int(n)} for a, n in df.groupby("A").size().items()]
    got = ds.groupby("A").sum(["B", "C"]).take_all()
    assert got == [{"A": a, "sum(B)": int(r.B), "sum(C)": int(r.C)} for a, r in df.groupby("A").sum().iterrows()]
    # on=None: every column but the key.
    got = ds.groupby("A").max().take_all()
    assert got == [{"A": a, "max(B)": int(r.B), "max(C)": int(r.C)} for a, r in df.groupby("A").max().iterrows()]
    got = ds.groupby("A").min("B").take_all()
    assert [r["min(B)"] for r in got] == [0, 1, 2]
    got = ds.groupby("A").mean("B").take_all()
    assert [r["mean(B)"] for r in got] == pytest.approx(list(df.groupby("A")["B"].mean()))
    got = ds.groupby("A").std("C", ddof=0).take_all()
    assert [r["std(C)"] for r in got] == pytest.approx(list(df.groupby("A")["C"].std(ddof=0)))
    got = ds.groupby("A").aggregate(Sum("B", alias_name="total")).take_all()
    assert list(got[0]) == ["A", "total"]


def test_ignore_nulls_false_makes_a_group_with_a_null_null():
    ds = md.from_items([{"k": "a", "v": 1}, {"k": "a", "v": None}, {"k": "b", "v": 2}, {"k": "b", "v": 5}])
    assert ds.groupby("k").sum("v", ignore_nulls=False).take_all() == [{"k": "a", "sum(v)": None},
                                                                     {"k": "b", "sum(v)": 7}]
    assert ds.groupby("k").sum("v").take_all() == [{"k": "a", "sum(v)": 1}, {"k": "b", "sum(v)": 7}]
    # Count counts nulls unless asked not to (Ray's default).
    got = ds.groupby("k").aggregate(Count("v"), Count("v", ignore_nulls=True, alias_name="n")).take_all()
    assert got == [{"k": "a", "count(v)": 2, "n": 1}, {"k": "b", "count(v)": 2, "n": 2}]


def test_nan_is_a_value():
    ds = md.from_items([{"k": 1, "x": 1.0}, {"k": 1, "x": float("nan")}, {"k": 2, "x": 2.0}])
    got = ds.groupby("k").sum("x").take_all()
    assert math.isnan(got[0]["sum(x)"]) and got[1]["sum(x)"] == 2.0


def test_whole_dataset_aggregates_match_numpy():
    assert md.range(100).sum("id") == 4950
    items = [{"A": i, "B": i ** 2} for i in range(100)]
    ds = md.from_items(items)
    a = np.arange(100)
    assert ds.sum(["A", "B"]) == {"sum(A)": int(a.sum()), "sum(B)": int((a ** 2).sum())}
    assert ds.min("A") == 0 and ds.max("B") == 99 ** 2
    assert ds.mean("A") == pytest.approx(a.mean())
    assert ds.std("A") == pytest.approx(np.std(a, ddof=1))
    assert ds.std("A", ddof=0) == pytest.approx(np.std(a, ddof=0))
    assert ds.aggregate(Count(), Sum("A"), AbsMax("B")) == {"count()": 100, "sum(A)": 4950, "abs_max(B)": 99 ** 2}
    assert ds.groupby(None).count().take_all() == [{"count()": 100}]


def test_empty_dataset():
    empty = md.range(10).filter(expr="id > 100")
    assert empty.sum("id") is None
    assert empty.aggregate(Count()) is None
    assert empty.groupby("id").count().take_all() == []


def test_errors_name_what_is_wrong():
    ds = md.from_items([{"k": 1, "v": 2}])
    with pytest.raises(ValueError, match="'nope'"):
        ds.groupby("nope")
    with pytest.raises(ValueError, match="'w'"):
        ds.groupby("k").sum("w")
    with pytest.raises(ValueError, match="Sum"):
        Sum()
    with pytest.raises(TypeError, match="num_partition"):
        ds.groupby("k", num_partition=2)
    with pytest.raises(ValueError, match="num_partitions"):
        ds.groupby("k", num_partitions=0)
    with pytest.raises(NotImplementedError, match="zero_factory"):
        Min("v", zero_factory=lambda: 0)
    with pytest.raises(NotImplementedError, match="zero_factory"):
        AbsMax("v", True, None, lambda: 0)
    with pytest.raises(ValueError, match="alias_name"):
        ds.groupby("k").aggregate(Sum("v"), Sum("v")).take_all()
    with pytest.raises(TypeError, match="aggregations"):
        ds.groupby("k").aggregate("sum")
    with pytest.raises(Exception, match="needs numbers"):
        md.from_items([{"k": 1, "s": "a"}]).groupby("k").mean("s").take_all()


def test_blocks_with_different_key_types_and_dictionaries_meet():
    a = pa.table({"k": pa.array([1, 2], pa.int32()), "v": [1.0, 2.0]})
    b = pa.table({"k": pa.array([2, 3], pa.int64()), "v": [3.0, 4.0]})
    assert md.from_arrow([a, b]).groupby("k").sum("v").take_all() == [
        {"k": 1, "sum(v)": 1.0}, {"k": 2, "sum(v)": 5.0}, {"k": 3, "sum(v)": 4.0}]
    c = pa.table({"k": pa.array(["x", "y"]).dictionary_encode(), "v": [1, 2]})
    d = pa.table({"k": pa.array(["y", "z", "y"]).dictionary_encode(), "v": [3, 4, 5]})
    assert md.from_arrow([c, d]).groupby("k").sum("v").take_all() == [
        {"k": "x", "sum(v)": 1}, {"k": "y", "sum(v)": 10}, {"k": "z", "sum(v)": 4}]


def test_missing_key_found_at_run_time_names_it():
    ds = md.range(10).map_batches(lambda b: b).groupby("nope").count()
    with pytest.raises(KeyError, match="'nope'"):
        ds.take_all()


def test_num_partitions_sets_the_reduce_tasks():
    table = _table(20_000, seed=7, groups=500)
    for n in (1, 3, 16):
        ds = md.from_arrow(_blocks(table, 5)).groupby("k1", num_partitions=n).count()
        got = ds.take_all()
        want = table.to_pandas().groupby("k1", dropna=False).size()
        assert [r["count()"] for r in got] == list(want)


def test_string_keys_read_from_parquet_group_by_their_dictionaries(tmp_path):
    table = _table(6000, seed=11)
    # Files with and without dictionary pages, several row groups each.
    pq.write_table(table.slice(0, 2500), tmp_path / "a.parquet", row_group_size=1000)
    pq.write_table(table.slice(2500, 2000), tmp_path / "b.parquet", row_group_size=700, use_dictionary=False)
    pq.write_table(table.slice(4500), tmp_path / "c.parquet", row_group_size=1500)
    for keys in ("k2", ["k1", "k2"]):
        ds = md.read_parquet(str(tmp_path)).groupby(keys).aggregate(*_AGGS)
        assert "ReadParquet[dictionary=[k2]]" in ds._explain_str()
        assert ds.schema().base_schema.field("k2").type == pa.string()
        _compare(ds, table, keys)


def test_a_filter_on_a_dictionary_read_key_still_applies(tmp_path):
    table = _table(3000, seed=12)
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=1000)
    ds = md.read_parquet(str(tmp_path)).filter(expr="k2 == 'b'").groupby("k2").count()
    assert "dictionary=[k2]" in ds._explain_str()
    want = sum(1 for k in table["k2"].to_pylist() if k == "b")
    assert ds.take_all() == [{"k2": "b", "count()": want}]


def test_a_dictionary_holding_a_value_twice_makes_one_group():
    keys = pa.DictionaryArray.from_arrays(pa.array([0, 1, 2, 2, None, 0], pa.int32()), ["a", "b", "a"])
    ds = md.from_arrow(pa.table({"k": keys, "v": [1, 2, 3, 4, 5, 6]})).groupby("k").sum("v")
    # By hand: a = 1 + 3 + 4 + 6, b = 2, the null key 5.
    assert ds.take_all() == [{"k": "a", "sum(v)": 14}, {"k": "b", "sum(v)": 2}, {"k": None, "sum(v)": 5}]


def test_partition_and_path_keys_are_not_read_as_dictionaries(tmp_path):
    for part, values in (("x", [1, 2]), ("y", [3])):
        (tmp_path / f"p={part}").mkdir()
        pq.write_table(pa.table({"v": values}), tmp_path / f"p={part}" / "f.parquet")
    ds = md.read_parquet(str(tmp_path)).groupby("p").sum("v")
    assert "dictionary" not in ds._explain_str()
    assert ds.take_all() == [{"p": "x", "sum(v)": 3}, {"p": "y", "sum(v)": 3}]
    ds = md.read_parquet(str(tmp_path), include_paths=True).groupby("path").count()
    assert "dictionary" not in ds._explain_str()
    assert sorted(r["count()"] for r in ds.take_all()) == [1, 2]


def _filtered(table: pa.Table, predicate) -> pa.Table:
    """The rows where ``predicate`` is true (a null drops the row), by pyarrow."""
    return table.filter(predicate)


@pytest.mark.parametrize("keys", ["k1", ["k1", "k2"], "k2"])
def test_a_read_filter_is_folded_into_the_group_by_and_still_prunes_row_groups(tmp_path, keys):
    table = _table(6000, seed=13).append_column("day", pa.array(range(6000), pa.int64()))
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=1000)
    # v has nulls: a null v drops its row, as a filter does. day >= 2500 rules out the first
    # two row groups by their statistics.
    ds = md.read_parquet(str(tmp_path)).filter(expr="day >= 2500 and v >= 0").groupby(keys).aggregate(*_AGGS)
    optimized = ds._explain_str().split("(Optimized)")[1].split("Physical Plan")[0]
    assert "filter=((day >= 2500) and (v >= 0))]" in optimized and "prune=((day >= 2500)" in optimized, optimized
    _compare(ds, _filtered(table, (pc.field("day") >= 2500) & (pc.field("v") >= 0)), keys)
    first_operator = ds.stats().split("Operator 1")[0]
    assert "Rows in: 4000," in first_operator or "Rows out: 4000," in first_operator, first_operator


def test_a_folded_filter_keeps_a_whole_dataset_aggregate_and_many_keys_right(tmp_path):
    n = 20_000
    table = pa.table({"k": pa.array(np.arange(n) % 5000, pa.int64()) * 1_000_003, "v": pa.array(np.arange(n), pa.int64())})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=4000)
    # Keys too wide to index directly: the hash aggregation over the filtered rows.
    ds = md.read_parquet(str(tmp_path)).filter(expr="v > 1000 and v < 15_000").groupby("k").sum("v")
    assert "filter=" in ds._explain_str().split("(Optimized)")[1].split("PartialAggregate[")[1].split("]")[0]
    want = _filtered(table, (pc.field("v") > 1000) & (pc.field("v") < 15_000)).group_by("k").aggregate([("v", "sum")])
    got = pa.Table.from_pylist(ds.take_all())
    assert dict(zip(got["k"].to_pylist(), got["sum(v)"].to_pylist())) == dict(
        zip(want["k"].to_pylist(), want["v_sum"].to_pylist()))
    # Every row dropped: no group, and a whole-dataset sum of no rows.
    assert md.read_parquet(str(tmp_path)).filter(expr="v < -1").groupby("k").count().take_all() == []
    assert md.read_parquet(str(tmp_path)).filter(expr="v >= 19_999").sum("v") == 19_999


def test_a_filter_on_columns_the_read_leaves_out_stays_in_the_read(tmp_path):
    table = _table(3000, seed=14)
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=1000)
    ds = md.read_parquet(str(tmp_path), columns=["k1", "v"], filter=pc.field("x") > 10.0).groupby("k1").sum("v")
    optimized = ds._explain_str().split("(Optimized)")[1].split("Physical Plan")[0]
    assert "prune=" not in optimized and "; filter=" not in optimized, optimized
    want = table.filter(pc.field("x") > 10.0).to_pandas().groupby("k1", dropna=False)["v"].sum(min_count=1)
    got = {r["k1"]: r["sum(v)"] for r in ds.take_all()}
    assert got == {(None if pd.isna(k) else int(k)): (None if pd.isna(s) else int(s)) for k, s in want.items()}


def test_a_folded_filter_converts_only_the_kept_rows_and_means_of_big_integers_are_numpys(tmp_path):
    from millstream.aggregate import Quantile

    big = 2**60 + 1
    pq.write_table(pa.table({"k": [1, 1, 2, 1, 1], "v": pa.array([big, 3, 5, 1, 2], pa.int64()),
                             "u": pa.array([2**63 + 5, 1, 5, 2, 3], pa.uint64()), "day": [0, 5, 5, 5, 5]}),
                   tmp_path / "t.parquet")
    ds = md.read_parquet(str(tmp_path)).filter(expr="day >= 1").groupby("k").aggregate(Mean("v"), Quantile("u"))
    assert "; filter=(day >= 1)]" in ds._explain_str()
    # By hand: the row of day 0 is dropped before any value is converted.
    assert ds.take_all() == [{"k": 1, "mean(v)": 2.0, "quantile(u)": 2}, {"k": 2, "mean(v)": 5.0, "quantile(u)": 5}]
    # An int64 past 2**53 kept: its mean is numpy's (each value rounded to a double).
    got = md.read_parquet(str(tmp_path)).groupby("k").mean("v").take_all()
    assert got[0]["mean(v)"] == np.array([big, 3, 1, 2], dtype=np.float64).mean()


# Deterministic (a fixed seed, no example database, no shrinking), as test_differential.
@hypothesis.seed(11)
@hypothesis.settings(max_examples=40, deadline=None, database=None,
                     phases=(hypothesis.Phase.explicit, hypothesis.Phase.generate),
                     suppress_health_check=[hypothesis.HealthCheck.too_slow, hypothesis.HealthCheck.data_too_large])
@hypothesis.given(data=st.data(), n=st.integers(0, 300), groups=st.integers(1, 40), hot=st.floats(0, 0.9),
                  blocks=st.integers(1, 6), keys=st.sampled_from(["k1", "k2", ["k1", "k2"]]),
                  via=st.sampled_from(["from_arrow", "parquet", "parquet_filtered", "map"]))
def test_random_group_bys_match_pandas(data, n, groups, hot, blocks, keys, via):
    # Nulls in keys and values, a hot key taking a share `hot` of the rows, and the
    # partial aggregation run by the read (Parquet, with and without a folded filter),
    # by a task-pool map, or by the exchange (an in-memory source's blocks).
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    k1 = np.where(rng.random(n) < hot, 3, rng.integers(0, groups, n))
    table = pa.table({
        "k1": pa.array(k1, pa.int64(), mask=rng.random(n) < 0.1),
        "k2": pa.array(rng.choice(["a", "b", "c", "dd"], n), mask=rng.random(n) < 0.1),
        "v": pa.array(rng.integers(-100, 100, n), pa.int64(), mask=rng.random(n) < 0.2),
        "x": pa.array(rng.normal(10.0, 3.0, n), mask=rng.random(n) < 0.2),
    })
    with tempfile.TemporaryDirectory() as folder:
        if via == "from_arrow":
            ds = md.from_arrow(_blocks(table, blocks))
        elif via == "map":
            ds = md.from_arrow(_blocks(table, blocks)).map_batches(lambda b: b, batch_format="pyarrow")
        else:
            pq.write_table(table, os.path.join(folder, "t.parquet"), row_group_size=max(1, n // blocks))
            ds = md.read_parquet(folder)
        if via == "parquet_filtered":
            ds = ds.filter(expr="v >= 0")
            table = table.filter(pc.field("v") >= 0)
        ds = ds.groupby(keys).aggregate(*_AGGS)
        if table.num_rows == 0:
            assert ds.take_all() == []
        else:
            _compare(ds, table, keys)

"""Quantile / Unique / CountDistinct, user-defined aggregations (AggregateFn,
AggregateFnV2), Dataset.unique and GroupedData.map_groups: differential against pandas
(and by hand) on generated data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import millstream as md
from millstream.aggregate import (AggregateFn, AggregateFnV2, Count, CountDistinct, Mean, Quantile, Sum,
                                  Unique)


def _table(n: int, seed: int = 0, groups: int = 7) -> pa.Table:
    """k1 int (5% null), k2 string (5% null), v int (10% null), x float (10% null, 3% NaN)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(10.0, 3.0, n)
    x[rng.random(n) < 0.03] = np.nan
    return pa.table({
        "k1": pa.array(rng.integers(0, groups, n), mask=rng.random(n) < 0.05),
        "k2": pa.array(rng.choice(["a", "b", "c"], n), mask=rng.random(n) < 0.05),
        "v": pa.array(rng.integers(-20, 20, n), mask=rng.random(n) < 0.1),
        "x": pa.array(x, mask=rng.random(n) < 0.1),
    })


def _blocks(table: pa.Table, n: int) -> list:
    step = max(1, math.ceil(table.num_rows / n))
    return [table.slice(i, step) for i in range(0, table.num_rows, step)] or [table]


def _ray_quantile(values, q):
    """Ray's Quantile by hand: linear interpolation, an interpolated value rounded to 5 places."""
    values = sorted(v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v)))
    if not values:
        return None
    k = (len(values) - 1) * q
    f, c = math.floor(k), math.ceil(k)
    return float(values[int(k)]) if f == c else round(values[f] * (c - k) + values[c] * (k - f), 5)


def _key(value):
    return tuple("\0null" if v is None or (isinstance(v, float) and math.isnan(v)) else v
                 for v in (value if isinstance(value, tuple) else (value,)))


# ---- Quantile / Unique / CountDistinct ------------------------------------------------

@pytest.mark.parametrize("keys", ["k1", "k2", ["k1", "k2"]])
def test_quantile_unique_count_distinct_match_pandas(keys):
    table = _table(3000, seed=1)
    out = (md.from_arrow(_blocks(table, 8)).groupby(keys)
           .aggregate(Quantile("x"), Quantile("v", q=0.25, alias_name="q25"), Unique("v"),
                      CountDistinct("v"), CountDistinct("k2", ignore_nulls=False), Count())
           .to_pandas())
    df = table.to_pandas()
    g = df.groupby(keys, dropna=False, sort=True)
    expected = g["x"].quantile(0.5).reset_index()
    assert len(out) == len(expected)
    key_list = [keys] if isinstance(keys, str) else keys
    for (_, row), (_, exp) in zip(out.iterrows(), expected.iterrows()):
        for k in key_list:
            assert (pd.isna(row[k]) and pd.isna(exp[k])) or row[k] == exp[k]
        # pandas interpolates linearly too; Ray rounds the interpolated value to 5 places.
        assert row["quantile(x)"] == pytest.approx(exp["x"], abs=1e-5)
    by_key = {(_key(name)): grp for name, grp in g}
    for _, row in out.iterrows():
        group = by_key[_key(tuple(None if pd.isna(row[k]) else row[k] for k in key_list)
                            if len(key_list) > 1 else (None if pd.isna(row[key_list[0]]) else row[key_list[0]]))]
        v = [None if pd.isna(x) else int(x) for x in group["v"]]
        assert row["q25"] == pytest.approx(_ray_quantile(v, 0.25), abs=1e-9)
        got = [None if pd.isna(x) else int(x) for x in row["unique(v)"]]
        assert len(got) == len(set(got))
        assert sorted(got, key=lambda x: (x is None, x or 0)) == sorted(set(v), key=lambda x: (x is None, x or 0))
        assert row["count_distinct(v)"] == group["v"].nunique(dropna=True)
        assert row["count_distinct(k2)"] == group["k2"].nunique(dropna=False)
        assert row["count()"] == len(group)


def test_quantile_by_hand_and_ray_rounding():
    ds = md.from_items([{"k": i % 2, "v": v} for i, v in enumerate([1, 10, 2, 20, 4, 40, 3, None])])
    rows = ds.groupby("k").aggregate(Quantile("v"), Quantile("v", q=0.0, alias_name="lo"),
                                     Quantile("v", q=1.0, alias_name="hi"),
                                     Quantile("v", q=0.5, ignore_nulls=False, alias_name="strict")).take_all()
    # k=0: 1, 2, 4, 3 -> sorted 1 2 3 4, median 2.5; k=1: 10, 20, 40 (null skipped) -> 20.
    assert rows == [{"k": 0, "quantile(v)": 2.5, "lo": 1.0, "hi": 4.0, "strict": 2.5},
                    {"k": 1, "quantile(v)": 20.0, "lo": 10.0, "hi": 40.0, "strict": None}]
    # 1/3 between 0 and 1: Ray rounds to 5 decimals.
    assert md.from_items([{"v": 0.0}, {"v": 1.0}, {"v": 2.0}, {"v": 3.0}]).aggregate(
        Quantile("v", q=1 / 9))["quantile(v)"] == 0.33333
    assert md.from_items([{"v": float("nan")}, {"v": 5.0}]).aggregate(Quantile("v"))["quantile(v)"] == 5.0
    strict = md.from_items([{"v": float("nan")}, {"v": 5.0}]).aggregate(Quantile("v", ignore_nulls=False))
    assert math.isnan(strict["quantile(v)"])


def test_quantile_output_type_follows_rays_values():
    # Ray's finalize returns the value at a whole rank (n - 1) * q as it is (an int for an
    # integer column) and a rounded float when it interpolates; the column's type is what
    # pyarrow infers from those values: int64 when every group's value is an int.
    data = {"k": [0, 0, 0, 1, 1, 1, 1], "v": pa.array([3, 1, 2, 7, 5, 4, 6], pa.int32()),
            "f": [3.0, 1.0, 2.0, 7.0, 5.0, 4.0, 6.0]}
    ds = md.from_arrow(pa.table(data))
    # Ranks 2 * 0.5 = 1 and 3 * 0.5 = 1.5: group 1 interpolates, so float64 for both.
    median = ds.groupby("k").aggregate(Quantile("v")).to_arrow()
    assert median.schema.field("quantile(v)").type == pa.float64()
    assert median["quantile(v)"].to_pylist() == [float(np.quantile([3, 1, 2], 0.5)),
                                                 float(np.quantile([7, 5, 4, 6], 0.5))] == [2.0, 5.5]
    # q = 0 and 1 are whole ranks in every group: the integers themselves, int64.
    for q, fn in ((0.0, min), (1.0, max)):
        out = ds.groupby("k").aggregate(Quantile("v", q=q)).to_arrow()
        assert out.schema.field("quantile(v)").type == pa.int64()
        assert out["quantile(v)"].to_pylist() == [fn([3, 1, 2]), fn([7, 5, 4, 6])]
    # Three values per group at q = 0.5: rank 1 in both, the middle int.
    odd = md.from_arrow(pa.table({"k": [0, 0, 0, 1, 1, 1], "v": [9, 3, 5, 2, 8, 4]}))
    out = odd.groupby("k").aggregate(Quantile("v")).to_arrow()
    assert out.schema.field("quantile(v)").type == pa.int64()
    assert out["quantile(v)"].to_pylist() == [int(np.quantile([9, 3, 5], 0.5)), int(np.quantile([2, 8, 4], 0.5))]
    # Whole dataset: Ray's value, an int at a whole rank, else a float.
    whole = ds.aggregate(Quantile("v", q=0.5), Quantile("v", q=0.25, alias_name="q25"))
    assert whole["quantile(v)"] == 4 and isinstance(whole["quantile(v)"], int)
    assert whole["q25"] == float(np.quantile([3, 1, 2, 7, 5, 4, 6], 0.25)) == 2.5
    # A float column stays float64 even at whole ranks.
    out = ds.groupby("k").aggregate(Quantile("f", q=1.0)).to_arrow()
    assert out.schema.field("quantile(f)").type == pa.float64()
    assert out["quantile(f)"].to_pylist() == [3.0, 7.0]


def test_quantile_of_booleans_is_a_boolean_at_a_whole_rank():
    # Ray sorts the Python values (False < True) and returns the one at a whole rank as it
    # is; between ranks it interpolates with True as 1.
    ds = md.from_arrow(pa.table({"k": [0, 0, 0, 1], "b": [True, False, True, False]}))
    out = ds.groupby("k").aggregate(Quantile("b")).to_arrow()
    assert out.schema.field("quantile(b)").type == pa.bool_()
    assert out["quantile(b)"].to_pylist() == [True, False]  # sorted [F, T, T] rank 1; [F] rank 0
    whole = ds.aggregate(Quantile("b"), Quantile("b", q=1.0, alias_name="top"))
    assert whole == {"quantile(b)": 0.5, "top": True}  # [F, F, T, T]: rank 1.5, then rank 3
    assert isinstance(whole["top"], bool)


def test_quantile_checks_its_arguments():
    with pytest.raises(ValueError, match="q must be"):
        Quantile("v", q=1.5)
    with pytest.raises(ValueError, match="Column to aggregate on"):
        Quantile()
    with pytest.raises(Exception, match="needs numbers"):
        md.from_items([{"k": 1, "s": "a"}]).groupby("k").aggregate(Quantile("s")).take_all()
    with pytest.raises(NotImplementedError, match="encode_lists"):
        Unique("v", encode_lists=True)


def test_unique_nulls_nan_and_types():
    ds = md.from_arrow([pa.table({"k": ["a", "a", "b"], "x": [1.0, float("nan"), None]}),
                        pa.table({"k": ["a", "b", "b"], "x": [float("nan"), 2.0, 2.0]})])
    rows = ds.groupby("k").aggregate(Unique("x"), Unique("x", ignore_nulls=True, alias_name="u"),
                                     CountDistinct("x"), CountDistinct("x", ignore_nulls=False, alias_name="n")).take_all()
    a, b = rows
    assert a["k"] == "a" and a["unique(x)"][0] == 1.0 and math.isnan(a["unique(x)"][1]) and len(a["unique(x)"]) == 2
    assert b["unique(x)"] == [None, 2.0] and b["u"] == [2.0]
    assert (a["count_distinct(x)"], b["count_distinct(x)"], b["n"]) == (2, 1, 2)
    # NaN of either sign is one value, and so are 0.0 and -0.0 (as in Python's set).
    signs = md.from_items([{"x": float("nan")}, {"x": -float("nan")}, {"x": 0.0}, {"x": -0.0}, {"x": 1.5}])
    assert signs.aggregate(CountDistinct("x"))["count_distinct(x)"] == 3
    assert len(signs.unique("x")) == 3
    schema = ds.groupby("k").aggregate(Unique("x"), CountDistinct("x")).materialize().schema().base_schema
    assert schema.field("unique(x)").type == pa.list_(pa.float64())
    assert schema.field("count_distinct(x)").type == pa.int64()


def test_unique_of_list_values():
    ds = md.from_items([{"k": 1, "l": [1, 2]}, {"k": 1, "l": [1, 2]}, {"k": 2, "l": [3]}, {"k": 2, "l": None}])
    assert ds.groupby("k").aggregate(Unique("l"), CountDistinct("l")).take_all() == [
        {"k": 1, "unique(l)": [[1, 2]], "count_distinct(l)": 1},
        {"k": 2, "unique(l)": [[3], None], "count_distinct(l)": 1}]
    assert sorted(ds.unique("l", ignore_nulls=True)) == [[1, 2], [3]]
    # Type unknown until it runs: a clear error naming the column.
    with pytest.raises(Exception, match="Unique of column 'l'"):
        ds.map_batches(lambda b: b).unique("l")


def test_dataset_unique_and_aggregate_whole_dataset():
    table = _table(2000, seed=3)
    ds = md.from_arrow(_blocks(table, 6))
    df = table.to_pandas()
    got = ds.unique("k2")
    assert sorted(got, key=lambda s: (s is None, s or "")) == ["a", "b", "c", None]
    assert sorted(ds.unique("k2", ignore_nulls=True)) == ["a", "b", "c"]
    assert sorted(md.from_items([1, 2, 3, 2, 3]).unique("item")) == [1, 2, 3]
    result = ds.aggregate(Quantile("x", q=0.9), CountDistinct("v"), Sum("v"))
    assert result["quantile(x)"] == pytest.approx(df["x"].quantile(0.9), abs=1e-5)
    assert result["count_distinct(v)"] == df["v"].nunique()
    assert result["sum(v)"] == df["v"].sum()
    assert md.from_items([{"x": 1}]).filter(expr="x > 5").unique("x") is None


def test_dictionary_and_many_groups_spill(ctx):
    ctx.execution_options.resource_limits.object_store_memory = 8 << 20
    n = 200_000
    rng = np.random.default_rng(5)
    k = rng.integers(0, 50_000, n)
    v = rng.integers(0, 5, n)
    ds = md.from_arrow(_blocks(pa.table({"k": k, "v": v}), 16))
    grouped = ds.groupby("k").aggregate(CountDistinct("v"), Quantile("v"))
    out = grouped.to_pandas()
    spilled = {op.name: op.spilled_bytes for op in grouped._last_stats.operators}
    assert any(name.startswith("AllToAllOperator[Aggregate") and n > 0 for name, n in spilled.items()), spilled
    df = pd.DataFrame({"k": k, "v": v}).groupby("k")
    assert out["k"].tolist() == sorted(set(k.tolist()))
    assert out["count_distinct(v)"].tolist() == df["v"].nunique().tolist()
    np.testing.assert_allclose(out["quantile(v)"].to_numpy(), df["v"].quantile(0.5).to_numpy(), atol=1e-5)
    cat = pa.table({"k": pa.array(["x", "y", "x"]).dictionary_encode(), "s": pa.array(["p", "q", "p"]).dictionary_encode()})
    assert md.from_arrow(cat).groupby("k").aggregate(Unique("s")).take_all() == [
        {"k": "x", "unique(s)": ["p"]}, {"k": "y", "unique(s)": ["q"]}]


# ---- user-defined aggregations ---------------------------------------------------------

def test_legacy_aggregate_fn_row_and_block():
    count = AggregateFn(init=lambda k: 0, accumulate_row=lambda c, row: c + 1, merge=lambda a, b: a + b,
                        name="custom_count")
    ds = md.from_items([{"group": "A"}, {"group": "B"}, {"group": "A"}])
    assert ds.groupby("group").aggregate(count).take_all() == [
        {"group": "A", "custom_count": 2}, {"group": "B", "custom_count": 1}]
    table = _table(3000, seed=7)
    total = AggregateFn(init=lambda k: [0, 0], merge=lambda a, b: [a[0] + b[0], a[1] + b[1]],
                        accumulate_block=lambda acc, block: [acc[0] + (pa.compute.sum(block["v"]).as_py() or 0),
                                                             acc[1] + block.num_rows],
                        finalize=lambda acc: acc[0] / acc[1], name="avg0(v)")
    out = md.from_arrow(_blocks(table, 9)).groupby("k1").aggregate(total, Mean("v"), Count()).to_pandas()
    df = table.to_pandas()
    g = df.groupby("k1", dropna=False, sort=True)
    np.testing.assert_allclose(out["avg0(v)"].to_numpy(), (g["v"].sum() / g.size()).to_numpy())
    np.testing.assert_allclose(out["mean(v)"].to_numpy(), g["v"].mean().to_numpy())
    assert out["count()"].tolist() == g.size().tolist()
    assert out["k1"].isna().tolist() == [False] * (len(out) - 1) + [True]
    with pytest.raises(ValueError, match="Exactly one"):
        AggregateFn(init=lambda k: 0, merge=lambda a, b: a, name="x")


class _Product(AggregateFnV2):
    def __init__(self, on, ignore_nulls=True):
        super().__init__(f"product({on})", zero_factory=lambda: 1, on=on, ignore_nulls=ignore_nulls)

    def aggregate_block(self, block):
        column = block[self.get_target_column()]
        if column.null_count and not self._ignore_nulls:
            return None
        values = column.drop_null().to_pylist()
        return math.prod(values) if values else None

    def combine(self, current_accumulator, new):
        return current_accumulator * new


def test_aggregate_fn_v2_subclass_with_nulls_and_multi_keys():
    table = pa.table({"a": [1, 1, 2, 2, 2, None], "b": ["x", "x", "y", "y", "z", "x"],
                      "v": [2, 3, 4, None, 5, 7]})
    ds = md.from_arrow(_blocks(table, 3))
    rows = ds.groupby(["a", "b"]).aggregate(_Product("v"), Sum("v")).take_all()
    assert rows == [{"a": 1, "b": "x", "product(v)": 6, "sum(v)": 5},
                    {"a": 2, "b": "y", "product(v)": 4, "sum(v)": 4},
                    {"a": 2, "b": "z", "product(v)": 5, "sum(v)": 5},
                    {"a": None, "b": "x", "product(v)": 7, "sum(v)": 7}]
    strict = ds.groupby("a").aggregate(_Product("v", ignore_nulls=False)).take_all()
    assert strict == [{"a": 1, "product(v)": 6}, {"a": 2, "product(v)": None}, {"a": None, "product(v)": 7}]
    assert ds.aggregate(_Product("v")) == {"product(v)": 2 * 3 * 4 * 5 * 7}
    assert _Product("v").get_agg_name() == "product"


def test_user_aggregation_error_names_the_operator():
    bad = AggregateFn(init=lambda k: 0, accumulate_row=lambda c, row: 1 / 0, merge=lambda a, b: a + b, name="bad")
    with pytest.raises(Exception, match="AggregatePartial"):
        md.from_items([{"k": 1}]).groupby("k").aggregate(bad).take_all()


# ---- map_groups ------------------------------------------------------------------------

def _normalize(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(list(df.columns)).reset_index(drop=True)


@pytest.mark.parametrize("batch_format", ["pandas", "pyarrow", "numpy", "default"])
def test_map_groups_matches_pandas_apply(batch_format):
    table = _table(2000, seed=11)
    ds = md.from_arrow(_blocks(table, 7))

    def center(group, scale):
        if batch_format == "pandas":
            return pd.DataFrame({"k1": group["k1"], "d": (group["x"] - group["x"].mean()) * scale,
                                 "n": len(group)})
        if batch_format == "pyarrow":
            group = group.to_pandas()
            return pa.Table.from_pandas(pd.DataFrame({"k1": group["k1"], "d": (group["x"] - group["x"].mean()) * scale,
                                                      "n": len(group)}), preserve_index=False)
        x = group["x"].astype(float)
        return {"k1": group["k1"], "d": (x - np.nanmean(x)) * scale, "n": np.full(len(x), len(x))}

    out = ds.groupby("k1").map_groups(center, batch_format=batch_format, fn_args=(2.0,)).to_pandas()
    df = table.to_pandas()
    g = df.groupby("k1", dropna=False)
    expected = pd.DataFrame({"k1": df["k1"], "d": (df["x"] - g["x"].transform("mean")) * 2.0,
                             "n": g["x"].transform("size")})
    assert len(out) == len(df)
    a, b = _normalize(out.astype({"k1": float})), _normalize(expected.astype({"k1": float}))
    np.testing.assert_allclose(a["d"].to_numpy(dtype=float), b["d"].to_numpy(dtype=float), equal_nan=True)
    assert a["n"].tolist() == b["n"].tolist()


def test_map_groups_one_call_per_whole_group_sorted_within_a_partition():
    n = 5000
    rng = np.random.default_rng(2)
    table = pa.table({"k": pa.array(rng.choice(["p", "q", "r", "s"], n), mask=rng.random(n) < 0.1),
                      "j": rng.integers(0, 3, n), "v": np.arange(n)})
    ds = md.from_arrow(_blocks(table, 10))

    def summarize(group, tag=""):
        keys = {(k, j) for k, j in zip(group["k"], group["j"])}
        assert len(keys) == 1
        return {"k": group["k"][:1], "j": group["j"][:1], "n": np.array([len(group["v"])]),
                "first": group["v"][:1], "tag": np.array([tag])}

    out = ds.groupby(["k", "j"], num_partitions=3).map_groups(summarize, fn_kwargs={"tag": "t"}).to_pandas()
    df = table.to_pandas()
    g = df.groupby(["k", "j"], dropna=False)
    assert len(out) == g.ngroups
    assert sorted(zip(out["k"].fillna("~"), out["j"], out["n"], out["first"])) == sorted(
        (("~" if pd.isna(k) else k), j, len(grp), grp["v"].iloc[0]) for (k, j), grp in g)
    assert set(out["tag"]) == {"t"}


def test_map_groups_on_an_actor_pool():
    class AddOffset:
        def __init__(self, offset):
            self.offset = offset

        def __call__(self, group):
            assert list(group.index) == list(range(len(group)))  # a DataFrame of its own
            assert group["k"].nunique() == 1
            group["v"] = group["v"] + self.offset + group["v"].sum()
            return group

    ds = md.from_items([{"k": i % 3, "v": i} for i in range(30)])
    out = ds.groupby("k").map_groups(AddOffset, fn_constructor_args=(100,), concurrency=2,
                                     batch_format="pandas").to_pandas()
    df = pd.DataFrame({"k": [i % 3 for i in range(30)], "v": list(range(30))})
    sums = df.groupby("k")["v"].transform("sum")
    assert sorted(out["v"].tolist()) == sorted((df["v"] + 100 + sums).tolist())


def test_map_groups_whole_dataset_and_empty_groups_output():
    ds = md.from_items([{"v": i} for i in range(10)])
    assert ds.groupby(None).map_groups(lambda g: {"s": np.array([g["v"].sum()])}).take_all() == [{"s": 45}]
    # A UDF may drop a group (an empty batch).
    out = md.from_items([{"k": i % 4, "v": i} for i in range(20)]).groupby("k").map_groups(
        lambda g: g if g["k"][0] % 2 else {"k": g["k"][:0], "v": g["v"][:0]}).take_all()
    assert sorted(r["v"] for r in out) == [i for i in range(20) if i % 2]


def test_map_groups_udf_error_names_the_operator_and_bad_arguments():
    def boom(group):
        raise ValueError("bad group")

    with pytest.raises(Exception, match=r"MapGroups\(boom\)"):
        md.from_items([{"k": 1}]).groupby("k").map_groups(boom).take_all()
    ds = md.from_items([{"k": 1}])
    with pytest.raises(TypeError, match="batch_sze|unexpected keyword"):
        ds.groupby("k").map_groups(lambda g: g, batch_sze=3)
    with pytest.raises(NotImplementedError, match="ray_remote_args_fn"):
        ds.groupby("k").map_groups(lambda g: g, ray_remote_args_fn=lambda: {})
    with pytest.raises(ValueError):
        ds.groupby("k").map_groups(lambda g: g, batch_format="xml")


def test_map_groups_spills_under_a_tiny_memory_limit(ctx):
    ctx.execution_options.resource_limits.object_store_memory = 8 << 20
    n = 300_000
    rng = np.random.default_rng(9)
    k = rng.integers(0, 1000, n)
    ds = md.from_arrow(_blocks(pa.table({"k": k, "v": rng.random(n), "pad": rng.random(n)}), 30))
    out = ds.groupby("k").map_groups(lambda g: {"k": g["k"][:1], "n": np.array([len(g["k"])])})
    rows = out.to_pandas()
    assert sorted(zip(rows["k"], rows["n"])) == sorted(pd.Series(k).value_counts().items())
    spilled = {op.name: op.spilled_bytes for op in out._last_stats.operators}
    assert any(name.startswith("AllToAllOperator[Repartition[auto") and n > 0 for name, n in spilled.items()), spilled


def test_builtins_in_python_match_the_engine():
    """A user-defined aggregation in the call moves the built-ins to their Python forms:
    same results as the engine's."""
    from millstream.aggregate import AbsMax, Max, Min, Std

    table = _table(4000, seed=21)
    ds = md.from_arrow(_blocks(table, 9))
    builtins = [Count(), Count("v", ignore_nulls=True), Sum("v"), Min("k2"), Max("x"), Mean("x"), Std("x"),
                Std("v", ddof=0), AbsMax("v"), Sum("v", ignore_nulls=False, alias_name="strict"),
                Quantile("x", q=0.3), Quantile("v", ignore_nulls=False, alias_name="qs"), Unique("k2"),
                CountDistinct("v"), CountDistinct("v", ignore_nulls=False, alias_name="cdn")]
    rows = AggregateFn(init=lambda k: 0, accumulate_block=lambda a, b: a + b.num_rows,
                       merge=lambda a, b: a + b, name="rows")
    for keys in ("k1", ["k1", "k2"]):
        native = ds.groupby(keys).aggregate(*builtins).take_all()
        python = ds.groupby(keys).aggregate(*builtins, rows).take_all()
        assert len(native) == len(python)
        for a, b in zip(native, python):
            assert b.pop("rows") == a["count()"]
            for name, value in a.items():
                other = b[name]
                if isinstance(value, float) and math.isnan(value):
                    assert isinstance(other, float) and math.isnan(other), name
                elif isinstance(value, float):
                    assert other == pytest.approx(value, rel=1e-9), name
                elif isinstance(value, list):
                    assert sorted(value, key=repr) == sorted(other, key=repr), name
                else:
                    assert value == other, (name, value, other)


def test_grouped_with_column_keeps_every_row_grouped():
    from millstream.expressions import col

    table = pa.table({"g": [2, 1, 2, 1, 3], "v": [1, 2, 3, 4, 5]})
    out = md.from_arrow(_blocks(table, 3)).groupby("g").with_column("w", col("v") * 2).take_all()
    assert sorted((r["g"], r["v"], r["w"]) for r in out) == sorted((g, v, v * 2) for g, v in zip(table["g"].to_pylist(),
                                                                                                 table["v"].to_pylist()))
    # Rows of one group are contiguous.
    seen = [r["g"] for r in out]
    assert all(seen.index(g) + seen.count(g) - 1 == len(seen) - 1 - seen[::-1].index(g) for g in set(seen))
    with pytest.raises(TypeError, match="expr"):
        md.from_arrow(table).groupby("g").with_column("w", "v * 2")


def test_as_list_value_counter_missing_and_zero_percentages_match_pandas():
    from millstream.aggregate import (ApproximateQuantile, ApproximateTopK, AsList, MissingValuePercentage,
                                      ValueCounter, ZeroPercentage)

    table = pa.table({"g": ["a", "a", "b", "b", "b", "a", "c"],
                      "v": pa.array([0, 1, None, 0, 0, 2, None], pa.int64()),
                      "x": [1.0, float("nan"), None, 0.0, 2.0, None, 3.0]})
    ds = md.from_arrow(_blocks(table, 3))
    rows = ds.groupby("g").aggregate(AsList("v"), AsList("v", ignore_nulls=True, alias_name="vs"),
                                     ValueCounter("v"), MissingValuePercentage("x"), ZeroPercentage("v"),
                                     ZeroPercentage("v", ignore_nulls=False, alias_name="z_all")).take_all()
    df = table.to_pandas()
    for row in rows:
        group = df[df["g"] == row["g"]]
        v = [None if pd.isna(x) else int(x) for x in group["v"]]
        assert row["list(v)"] == v
        assert row["vs"] == [x for x in v if x is not None]
        counts = dict(zip(row["value_counter(v)"]["values"], row["value_counter(v)"]["counts"]))
        assert counts == {(None if pd.isna(k) else int(k)): c for k, c in group["v"].value_counts(dropna=False).items()}
        assert row["missing_pct(x)"] == pytest.approx(group["x"].isna().mean() * 100)
        valid = group["v"].dropna()
        assert row["zero_pct(v)"] == (None if len(valid) == 0 else pytest.approx((valid == 0).mean() * 100))
        assert row["z_all"] == pytest.approx((group["v"] == 0).sum() / len(group) * 100)
    with pytest.raises(NotImplementedError, match="datasketches"):
        ApproximateQuantile("x", quantiles=[0.5])
    with pytest.raises(NotImplementedError, match="datasketches"):
        ApproximateTopK("x", k=3)

"""sort, random_shuffle, randomize_block_order, repartition and union.

Expected orders come from pyarrow's ``sort_indices(null_placement="at_end")`` (stable, NaN
before nulls at the end in both directions, as Ray sorts) or pandas, on the same input.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import decimal
import io
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import millstream as md


def reference_sort(table: pa.Table, keys, descending) -> pa.Table:
    keys = [keys] if isinstance(keys, str) else list(keys)
    flags = [descending] * len(keys) if isinstance(descending, bool) else list(descending)
    order = [(k, "descending" if d else "ascending", "at_end") for k, d in zip(keys, flags)]
    indices = pc.sort_indices(table.combine_chunks(), sort_keys=order)
    return table.take(indices).combine_chunks()


def assert_same(actual: pa.Table, expected: pa.Table):
    """Same schema and the same rows in the same order (NaN equal to NaN)."""
    assert actual.schema == expected.schema, (actual.schema, expected.schema)
    if actual.equals(expected):
        return
    for name in expected.column_names:
        a = [_norm(v) for v in actual[name].to_pylist()]
        b = [_norm(v) for v in expected[name].to_pylist()]
        assert a == b, name


def collect(ds) -> pa.Table:
    return ds.to_arrow().combine_chunks()


def row_multiset(table: pa.Table) -> collections.Counter:
    cols = table.column_names
    data = table.to_pydict()
    return collections.Counter(tuple(_norm(data[c][i]) for c in cols) for i in range(table.num_rows))


def _norm(v):
    # NaN != NaN: give every NaN one comparable stand-in.
    if isinstance(v, float) and v != v:
        return "NaN"
    return v


def ids(ds, column="id"):
    return [r[column] for r in ds.take_all()]


def mixed_table(n=2000, seed=0) -> pa.Table:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 7, n).astype(np.int64)
    b = rng.random(n).round(2)
    b[rng.random(n) < 0.05] = np.nan
    a_mask = rng.random(n) < 0.05
    b_mask = rng.random(n) < 0.05
    words = np.array(["pear", "apple", "fig", "kiwi", "date"])
    return pa.table({
        "a": pa.array(a, mask=a_mask),
        "b": pa.array(b, mask=b_mask),
        "s": pa.array(words[rng.integers(0, 5, n)]),
        "row": np.arange(n, dtype=np.int64),  # unique: pins down the order of ties
    })


# ---- sort -----------------------------------------------------------------------------


@pytest.mark.parametrize("descending", [False, True])
def test_sort_one_int_key_matches_pyarrow(descending):
    table = mixed_table()
    ds = md.from_arrow(table, override_num_blocks=13)
    out = collect(ds.sort("a", descending=descending))
    assert_same(out, reference_sort(table, "a", descending))


@pytest.mark.parametrize("descending", [False, True, [False, True], [True, False]])
def test_sort_many_keys_per_key_descending(descending):
    table = mixed_table(seed=1)
    out = collect(md.from_arrow(table, override_num_blocks=9).sort(["a", "b"], descending=descending))
    assert_same(out, reference_sort(table, ["a", "b"], descending))


@pytest.mark.parametrize("descending", [False, True])
def test_sort_nulls_last_and_nan_before_them(descending):
    values = [3.0, None, float("nan"), -1.0, None, 2.5, float("nan"), 0.0]
    table = pa.table({"x": pa.array(values, pa.float64()), "row": np.arange(len(values))})
    out = collect(md.from_arrow(table, override_num_blocks=3).sort("x", descending=descending))
    xs = out["x"].to_pylist()
    finite = sorted([v for v in values if v is not None and v == v], reverse=descending)
    # By hand: the numbers in order, then the two NaNs, then the two nulls — both directions.
    assert xs[:4] == finite
    assert all(v != v for v in xs[4:6])
    assert xs[6:] == [None, None]
    assert_same(out, reference_sort(table, "x", descending))


@pytest.mark.parametrize("descending", [False, True])
def test_sort_strings(descending):
    table = mixed_table(seed=2).select(["s", "row"])
    out = collect(md.from_arrow(table, override_num_blocks=7).sort("s", descending=descending))
    assert_same(out, reference_sort(table, "s", descending))


def test_sort_timestamps_with_nulls():
    rng = np.random.default_rng(3)
    base = dt.datetime(2024, 1, 1)
    stamps = [None if rng.random() < 0.1 else base + dt.timedelta(seconds=int(s))
              for s in rng.integers(0, 10**6, 500)]
    table = pa.table({"t": pa.array(stamps, pa.timestamp("us")), "row": np.arange(500)})
    for descending in (False, True):
        out = collect(md.from_arrow(table, override_num_blocks=5).sort("t", descending=descending))
        assert_same(out, reference_sort(table, "t", descending))


def test_sort_dictionary_key_sorts_by_value():
    words = ["pear", "apple", "fig", "kiwi", None, "date"]
    rng = np.random.default_rng(4)
    picks = [words[i] for i in rng.integers(0, len(words), 400)]
    dictionary = pa.array(picks).dictionary_encode()
    table = pa.table({"w": dictionary, "row": np.arange(400)})
    out = collect(md.from_arrow(table, override_num_blocks=4).sort("w"))
    # By value (not by dictionary index): compare with the decoded strings, sorted by pandas.
    expected = pd.DataFrame({"w": picks, "row": np.arange(400)}).sort_values(
        "w", kind="stable", na_position="last")
    assert out["w"].to_pylist() == expected["w"].tolist()
    assert out["row"].to_pylist() == expected["row"].tolist()


def test_sort_ties_keep_input_order():
    n = 3000
    table = pa.table({"k": np.arange(n) % 3, "row": np.arange(n)})
    out = collect(md.from_arrow(table, override_num_blocks=17).sort("k"))
    expected = pd.DataFrame(table.to_pandas()).sort_values("k", kind="stable")
    assert out["row"].to_pylist() == expected["row"].tolist()
    out_desc = collect(md.from_arrow(table, override_num_blocks=17).sort("k", descending=True))
    expected_desc = table.to_pandas().sort_values("k", ascending=False, kind="stable")
    assert out_desc["row"].to_pylist() == expected_desc["row"].tolist()


def test_sort_empty_dataset():
    ds = md.range(100).filter(lambda r: r["id"] < 0).sort("id")
    assert ds.take_all() == []
    assert ds.count() == 0


def test_sort_after_filter_and_map():
    ds = (md.range(5000, override_num_blocks=20)
          .filter(lambda r: r["id"] % 3 != 0)
          .map_batches(lambda b: {"id": b["id"], "v": (b["id"] * 7919) % 1000}))
    out = ds.sort(["v", "id"], descending=[True, False]).to_pandas()
    ids_ = np.arange(5000)
    ids_ = ids_[ids_ % 3 != 0]
    expected = pd.DataFrame({"id": ids_, "v": (ids_ * 7919) % 1000}).sort_values(
        ["v", "id"], ascending=[False, True], kind="stable")
    assert out["id"].tolist() == expected["id"].tolist()
    assert out["v"].tolist() == expected["v"].tolist()


def test_sort_before_limit_and_take():
    rng = np.random.default_rng(5)
    values = rng.permutation(10000)
    ds = md.from_arrow(pa.table({"v": values}), override_num_blocks=25)
    assert [r["v"] for r in ds.sort("v").limit(7).take_all()] == sorted(values)[:7]
    assert [r["v"] for r in ds.sort("v", descending=True).take(5)] == sorted(values, reverse=True)[:5]


def test_sort_missing_key_names_it():
    with pytest.raises(ValueError, match="nope"):
        md.range(10).sort("nope")
    # Unknown schema until run (after a map): the error names the column when it runs.
    ds = md.range(10).map_batches(lambda b: {"x": b["id"]}).sort("nope")
    with pytest.raises(Exception, match="nope"):
        ds.take_all()


def test_sort_descending_length_mismatch():
    with pytest.raises(ValueError, match="descending"):
        md.range(10).sort(["id"], descending=[True, False])


# ---- random_shuffle -------------------------------------------------------------------


def expected_blocks(table: pa.Table, keys, descending, boundaries) -> list:
    """Ray's blocks for sort(keys, descending, boundaries), by hand: the rows in pyarrow's
    sorted order, split by the first key with numpy's searchsorted (rows below the
    smallest boundary first ...; descending, the same ranges reversed); null and NaN last."""
    ordered = reference_sort(table, keys, descending)
    first = keys if isinstance(keys, str) else keys[0]
    flag = descending if isinstance(descending, bool) else descending[0]
    bounds = np.array(sorted(set(boundaries)), dtype=np.float64)
    values = ordered[first].to_numpy(zero_copy_only=False).astype(np.float64)  # nulls -> NaN
    n = len(bounds) + 1
    part = np.searchsorted(bounds, values, side="right")
    if flag:
        part = n - 1 - part
    part[np.isnan(values)] = n - 1
    return [ordered.filter(pa.array(part == p)) for p in range(n)]


def sorted_blocks(ds) -> list:
    return [pa.Table.from_batches([b]) for b in ds.materialize()._batches(None, ordered=True, keep_empty=True)]


def test_sort_boundaries_ray_docstring_example():
    blocks = sorted_blocks(md.range(15).sort("id", descending=False, boundaries=[5, 10]))
    assert [b["id"].to_pylist() for b in blocks] == [list(range(5)), list(range(5, 10)), list(range(10, 15))]


@pytest.mark.parametrize("descending", [False, True, [False, True], [True, False]])
def test_sort_boundaries_split_the_first_key(descending):
    table = mixed_table(n=3000, seed=5)
    boundaries = [4.5, 2, 1, 2]  # unordered, a duplicate, an int key against a float
    ds = md.from_arrow(table, override_num_blocks=11).sort(["a", "row"], descending=descending,
                                                           boundaries=boundaries)
    actual, expected = sorted_blocks(ds), expected_blocks(table, ["a", "row"], descending, boundaries)
    assert len(actual) == len(expected) == 4
    for a, e in zip(actual, expected):
        assert_same(a.combine_chunks(), e.combine_chunks())
    assert ds.materialize().num_blocks() == 4


@pytest.mark.parametrize("descending", [False, True])
def test_sort_boundaries_float_key_with_nan_and_nulls(descending):
    table = mixed_table(n=2000, seed=6)  # b: floats in [0, 1] (2 places), 5% NaN, 5% null
    ds = md.from_arrow(table, override_num_blocks=5).sort("b", descending=descending, boundaries=[0.25, 0.5, 1.5])
    actual, expected = sorted_blocks(ds), expected_blocks(table, "b", descending, [0.25, 0.5, 1.5])
    assert [len(b) for b in actual] == [len(b) for b in expected]
    for a, e in zip(actual, expected):
        assert_same(a.combine_chunks(), e.combine_chunks())
    last = actual[-1]["b"].to_pylist()
    nan_or_null = sum(1 for v in table["b"].to_pylist() if v is None or v != v)
    # Ascending, the last block holds the values >= 1.5 (none) and every NaN and null;
    # descending, the values < 0.25 and then every NaN and null.
    assert sum(1 for v in last if v is None or v != v) == nan_or_null
    assert (len(last) == nan_or_null) == (not descending)


def test_sort_boundaries_keep_empty_blocks():
    ds = md.range(10, override_num_blocks=3).sort("id", boundaries=[-5, 3, 3, 100])
    blocks = sorted_blocks(ds)
    assert [b["id"].to_pylist() for b in blocks] == [[], [0, 1, 2], list(range(3, 10)), []]
    assert all(b.schema.names == ["id"] for b in blocks)
    mat = ds.materialize()
    assert mat.num_blocks() == 4
    assert [len(b["id"]) for b in mat.iter_batches(batch_size=None)] == [3, 7]  # no empty batch
    down = sorted_blocks(md.range(10).sort("id", descending=True, boundaries=[-5, 3, 100]))
    assert [b["id"].to_pylist() for b in down] == [[], list(range(9, 2, -1)), [2, 1, 0], []]
    # An empty dataset: one empty block per partition, as Ray's empty sorted blocks.
    empty = md.from_arrow(pa.table({"id": pa.array([], pa.int64())})).sort("id", boundaries=[1, 2])
    assert empty.materialize().num_blocks() == 3
    assert empty.count() == 0


@pytest.mark.parametrize("dtype,values,boundaries", [
    (pa.int32(), [5, -3, 0, 7, 2, 2, None, -8], [2.5, -1]),
    (pa.uint8(), [250, 3, 128, 0, 127, 255], [128, 3.5]),
    (pa.float32(), [0.5, -1.5, 2.0, float("nan"), 1.0, None, 3.25], [1, 2]),
    # Exact across types: 2**53 + 1 is no float64, but compares exactly with one.
    (pa.int64(), [2**53 + 1, 2**53, 2**53 - 1, 2**53 + 2], [float(2**53), 2**53 + 2]),
    (pa.int64(), [-2**63, 2**63 - 1, 0], [2**63 - 1, -2**63 + 1]),
])
def test_sort_boundaries_of_another_numeric_type(dtype, values, boundaries):
    table = pa.table({"x": pa.array(values, dtype), "row": np.arange(len(values))})
    ds = md.from_arrow(table, override_num_blocks=2).sort("x", boundaries=boundaries)
    got = [b["x"].to_pylist() for b in sorted_blocks(ds)]
    # By hand, with Python's exact int/float comparison.
    bounds = sorted(set(boundaries))
    want = [[] for _ in range(len(bounds) + 1)]
    for v in sorted(v for v in values if v is not None and v == v):
        want[sum(1 for b in bounds if b <= v)].append(v)
    want[-1] += [v for v in reference_sort(table, "x", False)["x"].to_pylist() if v is None or v != v]
    assert [[_norm(v) for v in b] for b in got] == [[_norm(v) for v in b] for b in want]


def test_sort_boundaries_errors():
    ds = md.from_arrow(pa.table({"s": ["b", "a"], "x": [1, 2]}))
    with pytest.raises(ValueError, match="must be int or float"):
        ds.sort("x", boundaries=["a"])
    with pytest.raises(ValueError, match="must be int or float"):
        ds.sort("x", boundaries=[np.int64(3)])  # as in Ray: only Python ints and floats
    with pytest.raises(ValueError, match="NaN"):
        ds.sort("x", boundaries=[float("nan")])
    with pytest.raises(ValueError, match="64-bit"):
        ds.sort("x", boundaries=[2**64])
    with pytest.raises(TypeError, match="boundaries must be a list"):
        ds.sort("x", boundaries=3)
    with pytest.raises(Exception, match="first key column 's'.*string"):
        ds.sort("s", boundaries=[1]).take_all()
    # Empty boundaries: sampled, as without them.
    assert [r["x"] for r in ds.sort("x", boundaries=[]).take_all()] == [1, 2]
    assert "boundaries=[1, 2.5]" in explain_text(ds.sort("x", boundaries=[2.5, 1]))


def shuffle_input(n=5000):
    return md.from_arrow(pa.table({"id": np.arange(n), "v": np.arange(n) * 2}), override_num_blocks=10)


def test_random_shuffle_is_a_permutation_not_in_input_order():
    out = ids(shuffle_input().random_shuffle())
    assert sorted(out) == list(range(5000))
    assert out != list(range(5000))
    # Rows move across blocks too: the first 500 (one input block) are not the first ids.
    assert set(out[:500]) != set(range(500))


def test_random_shuffle_keeps_rows_whole():
    table = mixed_table(seed=6)
    out = collect(md.from_arrow(table, override_num_blocks=8).random_shuffle(seed=1))
    assert row_multiset(out) == row_multiset(table)


def test_random_shuffle_int_seed_same_order_every_execution():
    ds = shuffle_input().random_shuffle(seed=42)
    first = ids(ds)
    assert ids(ds) == first
    assert ids(shuffle_input().random_shuffle(seed=42)) == first
    assert ids(shuffle_input().random_shuffle(seed=43)) != first


def test_random_shuffle_reseed_after_execution():
    ds = shuffle_input().random_shuffle(seed=md.RandomSeedConfig(7, reseed_after_execution=True))
    runs = [ids(ds) for _ in range(3)]
    assert len({tuple(r) for r in runs}) == 3  # a different order per execution
    for r in runs:
        assert sorted(r) == list(range(5000))
    # Reproducible per execution index: a fresh dataset with the same config repeats them.
    again = shuffle_input().random_shuffle(seed=md.RandomSeedConfig(7, reseed_after_execution=True))
    assert [ids(again) for _ in range(3)] == runs


def test_random_shuffle_seed_config_without_reseed_is_fixed():
    ds = shuffle_input().random_shuffle(seed=md.RandomSeedConfig(7, reseed_after_execution=False))
    assert ids(ds) == ids(ds)


def test_random_shuffle_timestamp_default_seed_is_fixed_per_dataset():
    # Ray's use_timestamp_as_default: no seed, the creation time is the seed.
    ds = shuffle_input().random_shuffle(
        seed=md.RandomSeedConfig(use_timestamp_as_default=True, reseed_after_execution=False))
    first = ids(ds)
    assert first == ids(ds)
    assert sorted(first) == list(range(5000)) and first != sorted(first)


def test_random_shuffle_without_seed_differs():
    ds = shuffle_input().random_shuffle()
    assert ids(ds) != ids(ds)


def test_random_shuffle_num_blocks_is_deprecated_as_in_ray():
    with pytest.raises(DeprecationWarning, match="repartition"):
        md.range(10).random_shuffle(num_blocks=2)


def test_random_shuffle_rejects_bad_seed_and_unknown_keyword():
    with pytest.raises(TypeError, match="seed"):
        md.range(10).random_shuffle(seed="x")
    with pytest.raises(TypeError, match="sed"):
        md.range(10).random_shuffle(sed=1)


# ---- randomize_block_order ------------------------------------------------------------


def test_randomize_block_order_keeps_blocks_whole():
    ds = md.range(1000, override_num_blocks=20).randomize_block_order(seed=3)
    blocks = [b["id"].tolist() for b in ds.iter_batches(batch_size=None, batch_format="numpy")]
    # Each block is a run of 50 consecutive ids (as range made it), in a permuted order.
    assert sorted(len(b) for b in blocks) == [50] * 20
    for b in blocks:
        assert b == list(range(b[0], b[0] + 50)) and b[0] % 50 == 0
    starts = [b[0] for b in blocks]
    assert sorted(starts) == list(range(0, 1000, 50))
    assert starts != sorted(starts)
    again = [b["id"][0] for b in ds.iter_batches(batch_size=None, batch_format="numpy")]
    assert again == starts  # same int seed: same order


# ---- repartition ----------------------------------------------------------------------


@pytest.mark.parametrize("num_blocks", [1, 3, 7, 40])
def test_repartition_exact_blocks_balanced_in_order(num_blocks):
    mat = md.range(1001, override_num_blocks=9).repartition(num_blocks).materialize()
    assert mat.num_blocks() == num_blocks
    sizes = [b.num_rows for b in mat.iter_batches(batch_size=None, batch_format="pyarrow")]
    assert len(sizes) == num_blocks and sum(sizes) == 1001
    assert max(sizes) - min(sizes) <= 1
    assert ids(mat) == list(range(1001))


def test_repartition_more_blocks_than_rows():
    mat = md.range(3).repartition(5).materialize()
    assert ids(mat) == [0, 1, 2]


def block_rows(mat) -> list:
    """Row counts of a materialized dataset's blocks, empty ones included (what Ray's
    ``iter_internal_ref_bundles`` metadata shows; batch iteration skips empty blocks)."""
    return [b.num_rows for b in mat._batches(None, ordered=True, keep_empty=True)]


@pytest.mark.parametrize("how", ["split", "keys"])
def test_repartition_keeps_empty_blocks_in_the_count(how):
    if how == "split":
        mat = md.range(3).repartition(5).materialize()
    else:
        mat = md.from_arrow(pa.table({"k": [1, 1, 2, 2]})).repartition(6, keys=["k"]).materialize()
    assert mat.num_blocks() == (5 if how == "split" else 6)


def test_repartition_fewer_rows_than_blocks_empty_blocks_last():
    # Ray's split repartition: indices int(i * 3 / 5) -> splits of 0, 1, 0, 1, 1 rows; the
    # non-empty ones are reduced and the empty ones appended: rows [1, 1, 1, 0, 0].
    mat = md.range(3, override_num_blocks=2).repartition(5).materialize()
    assert block_rows(mat) == [1, 1, 1, 0, 0]
    assert ids(mat) == [0, 1, 2]
    # The consumers that go by batches never see an empty one (Ray's Batcher skips them).
    assert [len(b["id"]) for b in mat.iter_batches(batch_size=None)] == [1, 1, 1]
    assert [len(b["id"]) for b in mat.iter_batches(batch_size=2)] == [2, 1]
    assert [len(b) for b in mat.iter_batches(batch_size=None, batch_format="pandas")] == [1, 1, 1]
    assert mat.count() == 3
    assert mat.to_pandas()["id"].tolist() == [0, 1, 2]
    # The empty blocks keep the schema.
    assert mat.schema().names == ["id"]
    # Straight from the pipeline (not materialized), the same.
    assert [len(b["id"]) for b in md.range(3).repartition(5).iter_batches(batch_size=None)] == [1, 1, 1]


def test_repartition_empty_blocks_survive_a_second_materialize():
    mat = md.from_arrow(pa.table({"k": [1, 1, 2, 2], "v": [1.0, 2.0, 3.0, 4.0]})).repartition(6, keys=["k"])
    once = mat.materialize()
    twice = once.materialize()
    assert once.num_blocks() == twice.num_blocks() == 6
    assert sorted(block_rows(twice)) == [0, 0, 0, 0, 2, 2]
    assert twice.schema().names == ["k", "v"]


def test_repartition_by_keys_puts_each_key_in_one_block():
    rng = np.random.default_rng(8)
    table = pa.table({"k": rng.integers(0, 25, 3000), "row": np.arange(3000)})
    mat = md.from_arrow(table, override_num_blocks=11).repartition(6, keys=["k"]).materialize()
    assert mat.num_blocks() == 6
    frames = [b.to_pandas().assign(block=i)
              for i, b in enumerate(mat.iter_batches(batch_size=None, batch_format="pyarrow"))]
    together = pd.concat(frames)
    blocks_per_key = together.groupby("k")["block"].nunique()
    assert (blocks_per_key == 1).all()
    assert sorted(together["row"]) == list(range(3000))
    expected_counts = table.to_pandas().groupby("k").size()
    assert together.groupby("k").size().equals(expected_counts)


def test_repartition_shuffle_is_a_permutation():
    mat = md.range(2000, override_num_blocks=4).repartition(5, shuffle=True).materialize()
    assert mat.num_blocks() == 5
    out = ids(mat)
    assert sorted(out) == list(range(2000))
    assert out != list(range(2000))


def test_repartition_keys_sort_sorts_each_block_by_the_keys():
    rng = np.random.default_rng(21)
    n = 3000
    table = pa.table({
        "k": pa.array(rng.integers(0, 40, n), mask=rng.random(n) < 0.05),
        "j": pa.array(rng.integers(0, 3, n)),
        "row": np.arange(n),
    })
    for keys in (["k"], ["k", "j"]):
        mat = md.from_arrow(table, override_num_blocks=7).repartition(5, keys=keys, sort=True).materialize()
        assert mat.num_blocks() == 5
        blocks = list(mat.iter_batches(batch_size=None, batch_format="pyarrow"))
        for block in blocks:
            block = block.combine_chunks() if isinstance(block, pa.Table) else pa.Table.from_batches([block])
            # A hash partition's rows come in input order (`row` ascending); sorted stably by
            # the keys, ascending with nulls last, as pyarrow sorts them.
            assert_same(block, reference_sort(block, keys + ["row"], False))
        together = pa.concat_tables([b if isinstance(b, pa.Table) else pa.Table.from_batches([b]) for b in blocks])
        assert sorted(together["row"].to_pylist()) == list(range(n))
        frame = together.to_pandas().assign(block=np.repeat(np.arange(len(blocks)), [len(b) for b in blocks]))
        assert (frame.groupby(keys, dropna=False)["block"].nunique() == 1).all()


def test_repartition_sort_needs_keys():
    with pytest.raises(ValueError, match="sort=True sorts each output block by `keys`"):
        md.range(10).repartition(2, sort=True)
    with pytest.raises(ValueError, match="sort=True"):
        md.range(10).repartition(2, shuffle=True, sort=True)
    with pytest.raises(TypeError, match="sort must be a bool"):
        md.range(10).repartition(2, keys=["id"], sort="yes")
    with pytest.warns(UserWarning, match="`sort` is ignored when `target_num_rows_per_block` is set"):
        ds = md.range(10).repartition(target_num_rows_per_block=4, sort=True)
    assert ids(ds) == list(range(10))
    assert "sort" in explain_text(md.range(10).repartition(2, keys=["id"], sort=True))


def test_repartition_argument_errors():
    with pytest.raises(ValueError, match="num_blocks"):
        md.range(10).repartition()
    with pytest.raises(ValueError, match="num_blocks"):
        md.range(10).repartition(0)
    with pytest.raises(TypeError, match="shufle"):
        md.range(10).repartition(2, shufle=True)
    with pytest.raises(ValueError, match="nope"):
        md.range(10).repartition(2, keys=["nope"])


# ---- union ----------------------------------------------------------------------------


def test_union_row_multiset():
    a, b = md.range(300, override_num_blocks=3), md.range(200, override_num_blocks=4)
    out = sorted(r["id"] for r in a.union(b).iter_rows())
    assert out == sorted(list(range(300)) + list(range(200)))


def test_union_order_self_first_then_others():
    a = md.range(300, override_num_blocks=6).map_batches(lambda b: {"id": b["id"], "src": np.full(len(b["id"]), 0)})
    b = md.range(100, override_num_blocks=2).map_batches(lambda b: {"id": b["id"], "src": np.full(len(b["id"]), 1)})
    c = md.range(50).map_batches(lambda b: {"id": b["id"], "src": np.full(len(b["id"]), 2)})
    rows = a.union(b, c).take_all()
    assert [(r["src"], r["id"]) for r in rows] == (
        [(0, i) for i in range(300)] + [(1, i) for i in range(100)] + [(2, i) for i in range(50)])


def test_union_preserve_order_when_iterating(ctx):
    ctx.execution_options.preserve_order = True
    a = md.range(100, override_num_blocks=5)
    b = md.range(40, override_num_blocks=4).map_batches(lambda t: {"id": t["id"] + 100})
    got = [r["id"] for r in a.union(b).iter_rows()]
    assert got == list(range(140))


def test_union_of_compatible_schemas():
    a = md.from_arrow(pa.table({"x": pa.array([1, 2], pa.int32())}))
    b = md.from_arrow(pa.table({"x": pa.array([3, None], pa.int32()), "y": ["p", "q"]}))
    out = collect(a.union(b))
    assert out.column("x").to_pylist() == [1, 2, 3, None]
    assert out.column("y").to_pylist() == [None, None, "p", "q"]


def test_union_with_limit():
    a, b = md.range(100), md.range(100).map_batches(lambda t: {"id": t["id"] + 1000})
    assert [r["id"] for r in a.union(b).limit(150).take_all()] == list(range(100)) + list(range(1000, 1050))
    assert a.union(b).limit(30).count() == 30


def test_union_rejects_non_datasets():
    with pytest.raises(TypeError, match="argument 0"):
        md.range(3).union([1, 2])


# ---- explain / stats ------------------------------------------------------------------


def explain_text(ds) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        ds.explain()
    return buf.getvalue()


def test_explain_shows_all_to_all_and_union():
    ds = md.range(10)
    assert "AllToAllOperator[Sort" in explain_text(ds.sort("id"))
    assert "AllToAllOperator[RandomShuffle" in explain_text(ds.random_shuffle())
    assert "AllToAllOperator[Repartition" in explain_text(ds.repartition(2))
    assert "AllToAllOperator[RandomizeBlockOrder" in explain_text(ds.randomize_block_order())
    text = explain_text(ds.union(md.range(5), md.range(6)))
    assert "UnionOperator[3 inputs]" in text


def test_stats_show_the_all_to_all_operators_rows():
    ds = md.range(1234, override_num_blocks=6).sort("id", descending=True)
    ds.take_all()
    stats = ds.stats()
    line = next(i for i, l in enumerate(stats.splitlines()) if "AllToAllOperator[Sort" in l)
    assert "Rows in: 1234, rows out: 1234" in stats.splitlines()[line + 1]


# ---- edge cases -----------------------------------------------------------------------


def test_union_with_itself_doubles_the_rows():
    ds = md.range(50, override_num_blocks=5).map_batches(lambda b: {"id": b["id"] * 2})
    assert [r["id"] for r in ds.union(ds).take_all()] == [2 * i for i in range(50)] * 2


def test_sort_union_of_sorted_branches():
    a = md.range(100, override_num_blocks=4).sort("id", descending=True)
    b = md.range(100, override_num_blocks=3).random_shuffle(seed=1)
    out = [r["id"] for r in a.union(b).sort("id").take_all()]
    assert out == sorted(list(range(100)) * 2)


@pytest.mark.parametrize("descending", [False, True])
def test_sort_all_null_and_bool_keys(descending):
    table = pa.table({"n": pa.array([None] * 6, pa.int64()),
                      "f": pa.array([True, None, False, True, False, None]),
                      "row": np.arange(6)})
    ds = md.from_arrow(table, override_num_blocks=3)
    assert_same(collect(ds.sort("n", descending=descending)), reference_sort(table, "n", descending))
    assert_same(collect(ds.sort(["f", "row"], descending=descending)),
                reference_sort(table, ["f", "row"], descending))


def test_shuffles_of_an_empty_dataset():
    empty = md.range(10).filter(lambda r: r["id"] > 100)
    assert empty.random_shuffle(seed=1).take_all() == []
    assert empty.randomize_block_order(seed=1).take_all() == []
    assert empty.repartition(3).take_all() == []
    assert empty.repartition(3, shuffle=True).count() == 0
    assert empty.repartition(3, keys=["id"]).count() == 0


def test_random_shuffle_then_limit_keeps_the_row_count():
    out = ids(md.range(1000, override_num_blocks=8).random_shuffle(seed=2).limit(17))
    assert len(out) == 17 and len(set(out)) == 17 and set(out) <= set(range(1000))


def test_sort_strings_with_nulls_descending():
    values = ["b", None, "a", "c", None, "a"]
    table = pa.table({"s": values, "row": np.arange(6)})
    out = collect(md.from_arrow(table, override_num_blocks=2).sort("s", descending=True))
    assert out["s"].to_pylist() == ["c", "b", "a", "a", None, None]
    assert out["row"].to_pylist() == [3, 0, 2, 5, 1, 4]  # by hand: ties in input order


def test_random_shuffle_is_uniform_over_seeds():
    # Every permutation of 3 rows (from 3 blocks) about equally often over 600 fixed seeds:
    # 100 expected each; the bounds are ~5 standard deviations wide.
    counts = collections.Counter()
    for seed in range(600):
        counts[tuple(ids(md.range(3, override_num_blocks=3).random_shuffle(seed=seed)))] += 1
    assert len(counts) == 6
    assert all(50 <= c <= 150 for c in counts.values()), counts


def block_starts(ds):
    return [int(b["id"][0]) for b in ds.iter_batches(batch_size=None, batch_format="numpy")]


def test_randomize_block_order_reseeds_per_execution():
    def make():
        return md.range(400, override_num_blocks=20).randomize_block_order(
            seed=md.RandomSeedConfig(11, reseed_after_execution=True))
    ds = make()
    runs = [block_starts(ds) for _ in range(3)]
    assert len({tuple(r) for r in runs}) == 3
    assert all(sorted(r) == list(range(0, 400, 20)) for r in runs)
    again = make()
    assert [block_starts(again) for _ in range(3)] == runs


def test_random_seed_config_checks_its_seed():
    with pytest.raises(TypeError, match="seed"):
        md.RandomSeedConfig("7")
    ds = shuffle_input().random_shuffle(seed=md.RandomSeedConfig())  # no seed: differs per run
    assert ids(ds) != ids(ds)


def _dtype_cases():
    rng = np.random.default_rng(9)
    n = 200_000  # 1.6 MB and more: several range partitions
    cases = {}
    for t in ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]:
        info = np.iinfo(t)
        vals = rng.integers(info.min, info.max, n, dtype=t, endpoint=True)
        vals[:4] = [info.min, info.max, 0, info.min]
        cases[t] = pa.array(vals, mask=rng.random(n) < 0.05)
        cases[t + "-ties"] = pa.array(rng.integers(0, 3, n).astype(t))
    for t in ["float32", "float64"]:
        vals = (rng.standard_normal(n) * 1e3).astype(t)
        vals[:8] = [np.inf, -np.inf, 0.0, -0.0, np.nan, -np.nan, np.finfo(t).max, np.finfo(t).min]
        vals[8:40] = np.where(np.arange(32) % 2, 0.0, -0.0)  # equal keys: input order kept
        cases[t] = pa.array(vals, mask=rng.random(n) < 0.05)
    cases["bool"] = pa.array(rng.random(n) < 0.5, mask=rng.random(n) < 0.1)
    cases["date32"] = pa.array(rng.integers(-10000, 20000, n).astype("int32")).cast(pa.date32())
    cases["timestamp-ns-utc"] = pa.array(rng.integers(-10**18, 10**18, n)).cast(pa.timestamp("ns", tz="UTC"))
    cases["duration"] = pa.array(rng.integers(-10**9, 10**9, n), pa.duration("s"))
    cases["large_string"] = pa.array([str(x) for x in rng.integers(0, 500, n)], pa.large_string())
    cases["binary"] = pa.array([bytes([x % 256, x // 256]) for x in rng.integers(0, 2000, n)], pa.binary())
    cases["decimal128"] = pa.array([decimal.Decimal(int(x)) / 100 for x in rng.integers(-10**6, 10**6, n)],
                                    pa.decimal128(12, 2))
    return cases


_DTYPES = _dtype_cases()


@pytest.mark.parametrize("name", sorted(_DTYPES))
@pytest.mark.parametrize("descending", [False, True])
def test_sort_key_types_match_pyarrow(name, descending, ctx):
    # Past a 1 MiB limit: several range partitions, runs spilled.
    ctx.execution_options.resource_limits.object_store_memory = 1024 * 1024
    table = pa.table({"k": _DTYPES[name], "row": np.arange(len(_DTYPES[name]))})
    out = collect(md.from_arrow(table, override_num_blocks=7).sort("k", descending=descending))
    assert_same(out, reference_sort(table, "k", descending))


@pytest.mark.parametrize("descending", [[False, False, False], [True, False, True], [False, True, False],
                                        [True, True, True]])
def test_sort_many_keys_across_partitions(descending, ctx):
    # Few distinct values per key, nulls and NaN in each: partition boundaries fall inside
    # runs of equal first keys, where the later keys (and input order) decide.
    ctx.execution_options.resource_limits.object_store_memory = 1024 * 1024
    rng = np.random.default_rng(12)
    n = 200_000
    b = rng.integers(0, 4, n).astype(np.float64)
    b[rng.random(n) < 0.1] = np.nan
    words = np.array(["x", "y", "z"])
    table = pa.table({
        "a": pa.array(rng.integers(0, 3, n), mask=rng.random(n) < 0.1),
        "b": pa.array(b, mask=rng.random(n) < 0.1),
        "s": pa.array(words[rng.integers(0, 3, n)], mask=rng.random(n) < 0.1),
        "row": np.arange(n),
    })
    ds = md.from_arrow(table, override_num_blocks=9).sort(["a", "b", "s"], descending=descending)
    out = collect(ds)
    assert_same(out, reference_sort(table, ["a", "b", "s"], descending))
    line = next(l for l in ds.stats().splitlines() if "AllToAllOperator[Sort" in l)
    assert int(re.search(r"(\d+) blocks produced", line).group(1)) > 1

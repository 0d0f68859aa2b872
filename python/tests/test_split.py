"""The split family (split, split_at_indices, split_proportionately, train_test_split),
random_sample and zip, with Ray Data's rules; expected values from numpy/pandas/pyarrow
or worked out by hand from Ray's documented rules."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import millstream as md


def ids(ds) -> list:
    return ds.to_arrow().column("id").to_pylist() if ds.count() else []


def _blocks(ds) -> list:
    return list(ds._batches(None, ordered=True))


# ---- split ------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 3, 4, 7])
def test_split_by_blocks_is_disjoint_ordered_and_complete(n):
    ds = md.range(100, override_num_blocks=10)
    splits = ds.split(n)
    assert len(splits) == n
    assert all(isinstance(s, md.MaterializedDataset) for s in splits)
    # np.array_split of the 10 blocks: consecutive blocks, the first 10 % n splits one more.
    expected_blocks = [len(g) for g in np.array_split(np.arange(10), n)]
    assert [s.num_blocks() for s in splits] == expected_blocks
    parts = [ids(s) for s in splits]
    assert sum(parts, []) == list(range(100))
    assert [len(p) for p in parts] == [10 * b for b in expected_blocks]


def test_split_more_splits_than_blocks_gives_empty_splits():
    ds = md.range(6, override_num_blocks=3)
    splits = ds.split(5)
    assert [s.count() for s in splits] == [2, 2, 2, 0, 0]
    assert splits[4].schema().names == ["id"]
    assert splits[4].take_all() == []


@pytest.mark.parametrize("total,n", [(100, 3), (10, 4), (7, 7), (5, 8), (0, 3)])
def test_split_equal_gives_count_div_n_rows_each_and_drops_the_rest(total, n):
    ds = md.range(total, override_num_blocks=3)
    splits = ds.split(n, equal=True)
    size = total // n
    assert len(splits) == n
    assert [s.count() for s in splits] == [size] * n
    assert sum((ids(s) for s in splits), []) == list(range(size * n))


def test_split_equal_across_uneven_blocks():
    blocks = [pa.table({"id": np.arange(a, b)}) for a, b in [(0, 1), (1, 9), (9, 10), (10, 23)]]
    ds = md.from_blocks(blocks)
    splits = ds.split(4, equal=True)
    assert [ids(s) for s in splits] == [list(range(i * 5, i * 5 + 5)) for i in range(4)]


def test_split_errors():
    with pytest.raises(ValueError, match="The number of splits 0 is not positive"):
        md.range(10).split(0)
    with pytest.raises(ValueError, match="not positive"):
        md.range(10).split(-2)
    with pytest.raises(NotImplementedError, match="locality_hints"):
        md.range(10).split(2, locality_hints=["a", "b"])
    with pytest.raises(TypeError, match="equal"):
        md.range(10).split(2, equal="yes")
    with pytest.raises(TypeError, match="unexpected keyword|nearest|did you mean"):
        md.range(10).split(2, equals=True)


def test_splits_are_zero_copy_slices_of_the_blocks():
    table = pa.table({"x": np.arange(1000, dtype=np.int64), "s": [str(i) for i in range(1000)]})
    ds = md.from_arrow(table)
    source = table.column("x").chunk(0).buffers()[1]
    lo, hi = source.address, source.address + source.size
    for part in ds.split_at_indices([123, 500, 777]) + ds.split(3, equal=True):
        for batch in _blocks(part):
            if batch.num_rows:
                data = batch.column(0).buffers()[1]
                assert lo <= data.address < hi, "a split copied its rows"


def test_split_of_a_lazy_dataset_executes_once(tmp_path):
    calls = []

    def tag(batch):
        calls.append(len(batch["id"]))
        return batch

    ds = md.range(50, override_num_blocks=5).map_batches(tag)
    splits = ds.split(2, equal=True)
    assert sum(calls) == 50  # one execution, then the splits only read its blocks
    assert [s.count() for s in splits] == [25, 25]
    assert sum(calls) == 50


# ---- split_at_indices --------------------------------------------------------------------


@pytest.mark.parametrize("indices", [[2, 5], [0], [0, 0, 3], [3, 3], [9, 10], [10], [4, 12, 30], [25]])
def test_split_at_indices_like_numpy_split(indices):
    ds = md.range(10, override_num_blocks=3)
    parts = [ids(s) for s in ds.split_at_indices(indices)]
    expected = [a.tolist() for a in np.split(np.arange(10), indices)]
    assert parts == expected


def test_split_at_indices_keeps_every_column_and_order():
    table = pa.table({"a": np.arange(20), "b": [f"v{i}" for i in range(20)]})
    ds = md.from_arrow(table).repartition(4)
    parts = ds.split_at_indices([3, 11])
    got = [p.to_arrow() for p in parts]
    for piece, (lo, hi) in zip(got, [(0, 3), (3, 11), (11, 20)]):
        assert piece.equals(table.slice(lo, hi - lo))


def test_split_at_indices_errors():
    ds = md.range(10)
    with pytest.raises(ValueError, match="indices must be at least of length 1"):
        ds.split_at_indices([])
    with pytest.raises(ValueError, match="indices must be sorted"):
        ds.split_at_indices([5, 2])
    with pytest.raises(ValueError, match="indices must be positive"):
        ds.split_at_indices([-1, 3])
    with pytest.raises(TypeError, match="indices"):
        ds.split_at_indices([1.5])


def test_split_at_indices_of_an_empty_dataset():
    ds = md.from_arrow(pa.table({"id": pa.array([], pa.int64())}))
    parts = ds.split_at_indices([0, 3])
    assert [p.count() for p in parts] == [0, 0, 0]
    assert all(p.schema().names == ["id"] for p in parts)


# ---- split_proportionately ---------------------------------------------------------------


def _ray_proportion_sizes(n, proportions):
    """Ray's documented rule, by hand: int(n * cumulative proportion), each split non-empty."""
    idx = [int(n * p) for p in np.cumsum(proportions)]
    subtract = 0
    for i in range(len(idx) - 2, -1, -1):
        idx[i] -= subtract
        if idx[i] == idx[i + 1]:
            subtract += 1
            idx[i] -= 1
    bounds = [0] + idx + [n]
    return [bounds[i + 1] - bounds[i] for i in range(len(bounds) - 1)]


@pytest.mark.parametrize("n,proportions", [(10, [0.2, 0.5]), (100, [0.1, 0.2, 0.3]),
                                           (20, [0.1, 0.11]), (7, [0.5])])
def test_split_proportionately_sizes(n, proportions):
    parts = md.range(n, override_num_blocks=4).split_proportionately(proportions)
    sizes = [p.count() for p in parts]
    assert sizes == _ray_proportion_sizes(n, proportions)
    assert all(s > 0 for s in sizes)
    assert sum((ids(p) for p in parts), []) == list(range(n))


def test_split_proportionately_docs_example():
    d1, d2, d3 = md.range(10).split_proportionately([0.2, 0.5])
    assert ids(d1) == [0, 1] and ids(d2) == [2, 3, 4, 5, 6] and ids(d3) == [7, 8, 9]


def test_split_proportionately_errors():
    ds = md.range(10)
    with pytest.raises(ValueError, match="proportions must sum to less than 1"):
        ds.split_proportionately([0.5, 0.5])
    with pytest.raises(ValueError, match="proportions must sum to less than 1"):
        ds.split_proportionately([1.2])
    with pytest.raises(ValueError, match="proportions must be bigger than 0"):
        ds.split_proportionately([0.5, 0])
    with pytest.raises(ValueError, match="at least of length 1"):
        ds.split_proportionately([])
    with pytest.raises(ValueError, match="Couldn't create non-empty splits"):
        md.range(2).split_proportionately([0.1, 0.1, 0.1])


# ---- train_test_split --------------------------------------------------------------------


@pytest.mark.parametrize("n,test_size", [(8, 0.25), (10, 0.3), (11, 0.5), (99, 0.1), (1000, 0.125)])
def test_train_test_split_float_sizes(n, test_size):
    train, test = md.range(n, override_num_blocks=3).train_test_split(test_size)
    # Ray splits proportionately at [1 - test_size]: train gets int(n * (1 - test_size)),
    # which for these sizes is sklearn's rule (test gets ceil(n * test_size)).
    assert train.count() == int(n * (1 - test_size)) == n - math.ceil(n * test_size)
    assert test.count() == math.ceil(n * test_size)
    assert ids(train) + ids(test) == list(range(n))


def test_train_test_split_int_and_docs_example():
    train, test = md.range(8).train_test_split(test_size=0.25)
    assert ids(train) == [0, 1, 2, 3, 4, 5] and ids(test) == [6, 7]
    train, test = md.range(10).train_test_split(3)
    assert ids(train) == list(range(7)) and ids(test) == [7, 8, 9]


def test_train_test_split_shuffle_is_a_seeded_permutation():
    train, test = md.range(200, override_num_blocks=4).train_test_split(0.2, shuffle=True, seed=7)
    got = ids(train) + ids(test)
    assert sorted(got) == list(range(200)) and got != list(range(200))
    assert (train.count(), test.count()) == (160, 40)
    again = md.range(200, override_num_blocks=4).train_test_split(0.2, shuffle=True, seed=7)
    assert ids(again[0]) == ids(train)


def test_train_test_split_errors():
    ds = md.range(10)
    with pytest.raises(TypeError, match="`test_size` must be int or float"):
        ds.train_test_split("0.2")
    for bad in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="If `test_size` is a float, it must be bigger than 0"):
            ds.train_test_split(bad)
    for bad in (0, 10, 11, -1):
        with pytest.raises(ValueError, match=r"If `test_size` is an int.*\(10\)"):
            ds.train_test_split(bad)
    with pytest.raises(ValueError, match="Cannot specify both 'shuffle=True' and 'stratify'"):
        ds.train_test_split(0.2, shuffle=True, stratify="id")


def test_train_test_split_stratified_keeps_class_proportions():
    rng = np.random.default_rng(3)
    labels = rng.choice(["a", "b", "c"], size=300, p=[0.5, 0.3, 0.2])
    df = pd.DataFrame({"x": np.arange(300), "label": labels})
    train, test = md.from_pandas(df).train_test_split(0.25, stratify="label")
    tr, te = train.to_pandas(), test.to_pandas()
    assert sorted(tr["x"].tolist() + te["x"].tolist()) == list(range(300))
    for label, group in df.groupby("label"):
        n = len(group)
        n_test = int(n * 0.25)
        # Of each class, the last int(n * test_size) rows (in input order) are test rows.
        assert te[te["label"] == label]["x"].tolist() == group["x"].tolist()[n - n_test:]
        assert tr[tr["label"] == label]["x"].tolist() == group["x"].tolist()[:n - n_test]
    # int test_size: a fraction of the whole dataset, applied per class.
    train, test = md.from_pandas(df).train_test_split(30, stratify="label")
    expected = sum(int(len(g) * 0.1) for _, g in df.groupby("label"))
    assert test.count() == expected and train.count() == 300 - expected
    with pytest.raises(ValueError, match="stratify column 'nope'"):
        md.from_pandas(df).train_test_split(0.2, stratify="nope")


# ---- random_sample -----------------------------------------------------------------------


def test_random_sample_fraction_within_bounds_and_order_kept():
    n, fraction = 100_000, 0.3
    got = ids(md.range(n, override_num_blocks=20).random_sample(fraction, seed=1))
    # Binomial(n, p): 6 standard deviations either side.
    sd = math.sqrt(n * fraction * (1 - fraction))
    assert abs(len(got) - n * fraction) < 6 * sd
    assert got == sorted(set(got))  # no duplicates, input order
    assert all(0 <= i < n for i in got)
    # Every block is sampled at about the fraction (not whole blocks kept or dropped).
    per_block = np.bincount(np.array(got) // 5000, minlength=20)
    sd_block = math.sqrt(5000 * fraction * (1 - fraction))
    assert np.all(np.abs(per_block - 5000 * fraction) < 6 * sd_block)


def test_random_sample_seed_is_deterministic_across_runs():
    ds = md.range(20_000, override_num_blocks=16).map_batches(lambda b: b).random_sample(0.1, seed=42)
    first = ids(ds)
    assert ids(ds) == first
    assert ids(md.range(20_000, override_num_blocks=16).map_batches(lambda b: b)
               .random_sample(0.1, seed=42)) == first
    other = ids(md.range(20_000, override_num_blocks=16).random_sample(0.1, seed=43))
    assert other != first
    # Unseeded samples differ from run to run (2000 draws each: equal by chance ~never).
    unseeded = md.range(20_000, override_num_blocks=4).random_sample(0.1)
    assert ids(unseeded) != ids(unseeded)


def test_random_sample_seed_independent_of_streaming_order(ctx):
    ds = md.range(30_000, override_num_blocks=30).random_sample(0.2, seed=5)
    expected = ids(ds)
    got = sorted(b for batch in ds.iter_batches(batch_size=None) for b in batch["id"].tolist())
    assert got == expected


def test_random_sample_reseed_after_execution():
    seed = md.RandomSeedConfig(seed=9, reseed_after_execution=True)
    ds = md.range(10_000, override_num_blocks=4).random_sample(0.5, seed=seed)
    a, b = ids(ds), ids(ds)
    assert a != b
    again = md.range(10_000, override_num_blocks=4).random_sample(
        0.5, seed=md.RandomSeedConfig(seed=9, reseed_after_execution=True))
    assert ids(again) == a  # reproducible: the first execution of a fresh dataset


def test_random_sample_edges_and_errors():
    ds = md.range(1000, override_num_blocks=3)
    assert ids(ds.random_sample(1.0)) == list(range(1000))
    assert ds.random_sample(0.0).count() == 0
    assert ds.random_sample(0).schema().names == ["id"]
    for bad in (-0.1, 1.1):
        with pytest.raises(ValueError, match="Fraction must be between 0 and 1"):
            ds.random_sample(bad)
    with pytest.raises(TypeError, match="fraction"):
        ds.random_sample("0.5")
    with pytest.raises(ValueError, match="Cannot sample from an empty Dataset"):
        md.range(0).random_sample(0.5)
    with pytest.raises(TypeError, match="seed"):
        ds.random_sample(0.5, seed="x")


def test_random_sample_of_empty_blocks_is_an_empty_dataset(tmp_path):
    # Ray raises only when the dataset makes no blocks at all; blocks without rows sample
    # to an empty dataset with the input's schema.
    schema = pa.schema([("a", pa.int64()), ("s", pa.string())])
    empty = pa.Table.from_pylist([], schema=schema)
    frame = empty.to_pandas()
    cases = {  # the dataset and the schema pyarrow gives its input
        "from_arrow": (md.from_arrow(empty), schema),
        "from_pandas": (md.from_pandas(frame), pa.Table.from_pandas(frame, preserve_index=False).schema),
        "limit(0)": (md.from_arrow(pa.table({"a": [1, 2, 3], "s": ["x", "y", "z"]})).limit(0), schema),
    }
    for name, (ds, expected) in cases.items():
        assert ds.count() == 0, name
        sample = ds.random_sample(0.5, seed=3)
        got = sample.to_arrow()
        assert got.num_rows == 0 and sample.count() == 0, name
        assert got.schema.equals(expected, check_metadata=False), (name, got.schema)
    # An execution that kept no row still made its (empty) blocks.
    done = md.range(10, override_num_blocks=2).filter(expr="id > 100").materialize()
    assert done.random_sample(0.5).to_arrow().schema.names == ["id"]
    assert done.random_sample(0.5).count() == 0
    # No blocks at all (an empty range, an empty file): Ray's error.
    pq.write_table(empty, tmp_path / "e.parquet")
    with pytest.raises(ValueError, match="Cannot sample from an empty Dataset"):
        md.read_parquet(str(tmp_path)).random_sample(0.5)
    with pytest.raises(ValueError, match="Cannot sample from an empty Dataset"):
        md.range(0).union(md.range(0)).random_sample(0.5)


def test_random_sample_explain_is_fused():
    text = md.range(100).map_batches(lambda b: b).random_sample(0.5, seed=1)._explain_str()
    assert "MapBatches(<lambda>)->RandomSample(0.5)" in text


# ---- zip -------------------------------------------------------------------------------


def test_zip_docs_example_and_renaming():
    ds1, ds2, ds3 = md.range(5), md.range(5), md.range(5)
    batch = ds1.zip(ds2, ds3).take_batch()
    assert list(batch) == ["id", "id_1", "id_2"]
    for col in batch.values():
        assert col.tolist() == [0, 1, 2, 3, 4]


def test_zip_matches_pandas_concat_with_misaligned_blocks():
    left = pd.DataFrame({"a": np.arange(1000), "s": [f"x{i}" for i in range(1000)]})
    right = pd.DataFrame({"b": np.arange(1000) * 2.5, "a": -np.arange(1000)})
    lds = md.from_pandas(left).repartition(7)
    rds = md.from_blocks([pa.Table.from_pandas(right.iloc[lo:hi], preserve_index=False)
                          for lo, hi in [(0, 1), (1, 400), (400, 401), (401, 999), (999, 1000)]])
    out = lds.zip(rds).to_pandas()
    expected = pd.concat([left, right.rename(columns={"a": "a_1"})], axis=1)
    pd.testing.assert_frame_equal(out, expected)
    assert lds.zip(rds).schema().names == ["a", "s", "b", "a_1"]
    assert lds.zip(rds).count() == 1000


def test_zip_renames_past_taken_suffixes():
    a = md.from_arrow(pa.table({"x": [1, 2], "x_1": [3, 4]}))
    b = md.from_arrow(pa.table({"x": [5, 6]}))
    # Ray's loop: "x" is taken, so is "x_1": the next free one is "x_2".
    assert a.zip(b).columns() == ["x", "x_1", "x_2"]
    assert a.zip(b).to_arrow().column("x_2").to_pylist() == [5, 6]


def test_zip_of_lazy_pipelines_and_itself():
    ds = md.range(10_000, override_num_blocks=9).map_batches(lambda b: {"sq": b["id"] ** 2})
    other = md.range(10_000, override_num_blocks=4)
    out = other.zip(ds).to_arrow()
    np.testing.assert_array_equal(out.column("sq").to_numpy(), out.column("id").to_numpy() ** 2)
    self_zip = other.zip(other).to_arrow()
    assert self_zip.column_names == ["id", "id_1"]
    assert self_zip.column("id").equals(self_zip.column("id_1"))


def test_zip_under_a_limit_and_other_steps():
    a = md.range(100_000, override_num_blocks=50).map_batches(lambda b: {"x": b["id"] * 2})
    b = md.range(100_000, override_num_blocks=3)
    assert a.zip(b).take(3) == [{"x": 2 * i, "id": i} for i in range(3)]
    z = md.range(10).zip(md.range(10))
    assert z.filter(expr="id_1 > 7").take_all() == [{"id": 8, "id_1": 8}, {"id": 9, "id_1": 9}]
    assert z.select_columns(["id_1"]).take(2) == [{"id_1": 0}, {"id_1": 1}]
    assert z.count() == 10


def test_zip_streams_under_a_small_memory_limit(ctx):
    ctx.execution_options.resource_limits.object_store_memory = 8 << 20
    a = md.range(2_000_000, override_num_blocks=100).map_batches(lambda b: {"x": b["id"] * 2})
    b = md.range(2_000_000, override_num_blocks=7)
    rows = 0
    for batch in a.zip(b).iter_batches(batch_size=None):
        np.testing.assert_array_equal(batch["x"], batch["id"] * 2)
        rows += len(batch["x"])
    assert rows == 2_000_000


def test_zip_different_row_counts_raise():
    with pytest.raises(ValueError, match="Cannot zip datasets of different number of rows: 5, 4"):
        md.range(5).zip(md.range(4)).take_all()
    with pytest.raises(ValueError, match="Cannot zip datasets of different number of rows"):
        md.range(5, override_num_blocks=5).zip(md.range(50_000, override_num_blocks=5)).take_all()
    with pytest.raises(TypeError, match="argument 0"):
        md.range(5).zip([md.range(5)])


def test_zip_empty_inputs():
    empty = md.from_arrow(pa.table({"a": pa.array([], pa.int64())}))
    other = md.from_arrow(pa.table({"b": pa.array([], pa.string())}))
    out = empty.zip(other)
    assert out.count() == 0
    assert out.to_arrow().column_names == ["a", "b"]

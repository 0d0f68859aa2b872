"""Broadcast joins: a side whose size is known small before running (a from_arrow's bytes,
a Parquet read's metadata) is built once into a hash table and the other side streams
through it. Results against pandas pairs laid out as pyarrow.Table.join lays them out
(join_reference.py, test_join's reference too); explain() says when a join is broadcast and
which side builds; the small side's semi and anti joins are broadcast too (the big side
marks the keys it has, then the small side's rows are output), and so are the outer joins
that keep the small side's unmatched rows (added by a last task, the big side's columns
null); sides of unknown or too large a size keep the exchange and are as exact."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import millstream as md
from join_reference import (ARROW_VERB, assert_join_matches_reference, expected_table, join_datasets,
                            keyed_sides, rows_of)

# Every type, whichever side is small: those a probe row decides alone, the small side's
# semi and anti joins (its rows chosen by the keys the big side has), and the outer joins
# that keep the small side's unmatched rows.
BROADCAST_WITH_SMALL_RIGHT = ["inner", "left_outer", "left_semi", "left_anti", "right_semi", "right_anti",
                              "right_outer", "full_outer"]
BROADCAST_WITH_SMALL_LEFT = ["inner", "right_outer", "right_semi", "right_anti", "left_semi", "left_anti",
                             "left_outer", "full_outer"]
UNMATCHED_SMALL_ROWS = ["full_outer", "right_outer"]


def plan_of(ds) -> str:
    return ds._explain_str()


def unknown_size(table, blocks=12):
    """`table` behind a UDF: its size is unknown before running."""
    return md.from_arrow(table, override_num_blocks=blocks).map_batches(lambda b: b, batch_format="pyarrow")


def big_and_small(seed=0, n_big=6000, n_small=300, keys=200, null_frac=0.05):
    """Duplicate keys on both sides, keys on one side only, null keys on both."""
    bk, sk = keyed_sides(seed, n_big, n_small, keys, null_frac)
    big = pa.table({"k": bk, "a": np.arange(n_big, dtype=np.float64),
                    "s": [f"b{i % 7}" for i in range(n_big)]})
    small = pa.table({"k": sk, "a": np.arange(n_small, dtype=np.int64) * 10,
                      "t": [f"s{i}" for i in range(n_small)]})
    return big, small


def run_join(left, right, join_type, on=("k",), right_on=None, left_suffix="_l", right_suffix="_r",
             left_blocks=12, right_blocks=3, left_ds=None, right_ds=None):
    joined = join_datasets(left, right, join_type, 4, on=on, right_on=right_on, left_suffix=left_suffix,
                           right_suffix=right_suffix, left_blocks=left_blocks, right_blocks=right_blocks,
                           left_ds=left_ds, right_ds=right_ds)
    plan = plan_of(joined)
    got = joined.to_arrow()
    assert_join_matches_reference(got, left, right, join_type, on, right_on, left_suffix, right_suffix)
    return plan, joined


@pytest.mark.parametrize("join_type", BROADCAST_WITH_SMALL_RIGHT)
def test_small_right_side_is_broadcast_and_exact(join_type):
    big, small = big_and_small()
    plan, joined = run_join(big, small, join_type)
    assert "BroadcastJoinOperator[Join[" + join_type + "; k = k; broadcast, build=right" in plan
    assert "AllToAllOperator" not in plan
    assert "broadcast, build=right" in joined.stats()


@pytest.mark.parametrize("join_type", BROADCAST_WITH_SMALL_LEFT)
def test_small_left_side_is_broadcast_and_exact(join_type):
    big, small = big_and_small(seed=1)
    plan, _ = run_join(small, big, join_type, left_blocks=2, right_blocks=10)
    assert "broadcast, build=left" in plan


@pytest.mark.parametrize("join_type", UNMATCHED_SMALL_ROWS)
def test_the_small_sides_unmatched_rows_come_once_whatever_the_big_side_streams(join_type):
    # The big side of unknown size (a UDF) in many blocks, some of them empty: the small
    # side's unmatched rows come once, after every probe block, as with the exchange.
    big, small = big_and_small(seed=2)
    ragged = md.from_arrow([big.slice(0, 0)] + [big.slice(i, 500) for i in range(0, big.num_rows, 500)]
                           + [big.slice(0, 0)]).map_batches(lambda b: b, batch_format="pyarrow")
    plan, _ = run_join(big, small, join_type, left_ds=ragged)
    assert "broadcast, build=right" in plan


@pytest.mark.parametrize("join_type", UNMATCHED_SMALL_ROWS)
def test_a_big_side_with_no_rows_leaves_only_the_small_sides_rows(join_type):
    big, small = big_and_small(seed=10)
    # Every big row filtered out: the reference joins an empty table of the big side's columns.
    plan, _ = run_join(big.slice(0, 0), small, join_type, left_ds=md.from_arrow(big).filter(expr="a < 0"))
    assert "broadcast, build=right" in plan


@pytest.mark.parametrize("join_type", BROADCAST_WITH_SMALL_RIGHT)
def test_string_and_multi_column_keys(join_type):
    rng = np.random.default_rng(3)
    n_big, n_small = 4000, 120
    big = pa.table({"s": [None if i % 53 == 0 else f"k{v}" for i, v in enumerate(rng.integers(0, 30, n_big))],
                    "n": pa.array(rng.integers(0, 3, n_big)), "x": np.arange(n_big)})
    small = pa.table({"s2": [None if i % 17 == 0 else f"k{v}" for i, v in enumerate(rng.integers(10, 40, n_small))],
                      "n2": pa.array(rng.integers(0, 3, n_small)), "x": np.arange(n_small) * -1})
    plan, _ = run_join(big, small, join_type, on=("s", "n"), right_on=("s2", "n2"))
    assert "broadcast, build=right" in plan


@pytest.mark.parametrize("join_type", BROADCAST_WITH_SMALL_RIGHT)
def test_dictionary_keys_join_by_their_values(join_type):
    big, _ = big_and_small(seed=4)
    big = big.set_column(2, "s", pa.compute.dictionary_encode(big["s"]))
    small = pa.table({"s": pa.array(["b1", None, "b3", "b9", "b3"]).dictionary_encode(), "v": np.arange(5)})
    joined = md.from_arrow(big, override_num_blocks=8).join(md.from_arrow(small), join_type, 2, on=("s",),
                                                             left_suffix="_l", right_suffix="_r")
    assert "broadcast, build=right" in plan_of(joined)
    got = joined.to_arrow()
    dense_big = big.set_column(2, "s", big["s"].cast(pa.string()))
    dense_small = small.set_column(0, "s", small["s"].cast(pa.string()))
    ref = dense_big.join(dense_small, keys="s", join_type=ARROW_VERB[join_type], left_suffix="_l", right_suffix="_r")
    expected = expected_table(dense_big, dense_small, ("s",), ("s",), join_type, ref.column_names)
    assert got.column_names == ref.column_names
    assert rows_of(got) == rows_of(expected)
    assert joined.schema().base_schema == got.schema


def test_parquet_dimension_is_broadcast(tmp_path):
    big, small = big_and_small(seed=5)
    pq.write_table(small, tmp_path / "small.parquet")
    plan, _ = run_join(big, small, "inner", right_ds=md.read_parquet(str(tmp_path / "small.parquet")))
    assert "broadcast, build=right" in plan


def test_unknown_size_keeps_the_exchange():
    big, small = big_and_small(seed=6)
    plan, _ = run_join(big, small, "inner", left_ds=unknown_size(big), right_ds=unknown_size(small, 3))
    assert "broadcast" not in plan


def test_side_larger_than_the_cap_keeps_the_exchange(ctx):
    ctx.execution_options.resource_limits.object_store_memory = 8 * 1024 * 1024  # cap 1 MiB; restored by conftest
    n = 100_000
    big = pa.table({"k": np.arange(n) % 5000, "a": np.arange(n, dtype=np.float64)})
    small = pa.table({"k": np.arange(n), "b": np.arange(n) * 2})  # 1.6 MB each
    plan, _ = run_join(big, small, "inner", left_blocks=8)
    assert "broadcast" not in plan


def test_underestimated_build_side_falls_back_and_is_exact(ctx, tmp_path):
    # One long string repeated: Parquet's dictionary pages make the file's metadata size
    # tiny, the decoded column is not.
    ctx.execution_options.resource_limits.object_store_memory = 64 * 1024 * 1024  # cap 8 MiB
    n = 60_000
    small = pa.table({"k": np.arange(n) % 4000, "pad": ["x" * 300] * n})
    pq.write_table(small, tmp_path / "small.parquet", row_group_size=n)
    big = pa.table({"k": np.arange(20_000) % 5000, "a": np.arange(20_000)})
    rds = md.read_parquet(str(tmp_path / "small.parquet"))
    joined = md.from_arrow(big, override_num_blocks=6).join(rds, "inner", 3, on=("k",))
    plan = plan_of(joined)
    if "broadcast" not in plan:
        pytest.skip("the Parquet estimate was not low enough to take the broadcast path")
    got = joined.to_arrow()
    ref = big.join(small, keys="k", join_type="inner")
    assert got.num_rows == ref.num_rows
    assert rows_of(got.select(["k", "a"])) == rows_of(ref.select(["k", "a"]))
    assert "fell back to the exchange" in joined.stats()


def test_empty_small_side():
    big, small = big_and_small(seed=7)
    empty = small.slice(0, 0)
    for join_type in ["inner", "left_outer", "left_semi", "left_anti", "full_outer"]:
        run_join(big, empty, join_type, right_blocks=1)


def test_limit_after_a_broadcast_join():
    big, small = big_and_small(seed=8)
    got = md.from_arrow(big, override_num_blocks=12).join(
        md.from_arrow(small), "left_outer", 2, on=("k",), left_suffix="_l", right_suffix="_r").limit(7).to_arrow()
    assert got.num_rows == 7


def test_key_type_known_only_at_runtime_is_an_error_naming_the_column():
    big, small = big_and_small(seed=9)
    as_int32 = md.from_arrow(big, override_num_blocks=4).map_batches(
        lambda b: b.set_column(0, "k", b["k"].cast(pa.int32())), batch_format="pyarrow")
    joined = as_int32.join(md.from_arrow(small), "inner", 2, on=("k",), left_suffix="_l", right_suffix="_r")
    assert "broadcast, build=right" in plan_of(joined)
    with pytest.raises(TypeError, match="key column 'k' is int32 on the left but 'k' is int64 on the right"):
        joined.to_arrow()


def test_output_of_a_key_repeated_on_both_sides_is_sliced_to_the_target_block_size(ctx):
    ctx.target_max_block_size = 64 * 1024
    big = pa.table({"k": np.zeros(2000, dtype=np.int64), "a": np.arange(2000)})
    small = pa.table({"k": np.zeros(50, dtype=np.int64), "b": np.arange(50)})
    joined = md.from_arrow(big, override_num_blocks=2).join(md.from_arrow(small), "inner", 2, on=("k",))
    assert "broadcast, build=right" in plan_of(joined)
    blocks = [pa.Table.from_batches([b]) if isinstance(b, pa.RecordBatch) else b
              for b in joined.iter_batches(batch_size=None, batch_format="pyarrow")]
    assert sum(b.num_rows for b in blocks) == 2000 * 50
    assert max(b.nbytes for b in blocks) <= 2 * 64 * 1024
    got = pa.concat_tables(blocks)
    assert sorted(zip(got["a"].to_pylist(), got["b"].to_pylist())) == [(a, b) for a in range(2000) for b in range(50)]

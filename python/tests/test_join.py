"""Dataset.join: results against pandas (row pairs matched by hand-checked keys: pandas'
merge matches null keys to each other, a join here never does) and column names against
pyarrow.Table.join (which is what Ray Data runs per partition). Rows come in no order:
compared sorted."""

from __future__ import annotations

import os
import re
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

import millstream as md
from join_reference import (ARROW_VERB, JOIN_TYPES, assert_join_matches_reference, expected_table,
                            join_datasets, keyed_sides, rows_of)


def assert_emptied(path, within_s=20.0):
    """The spill directory ends up empty (a closed execution is destroyed by a detached
    thread once its tasks return: waits for that, up to a bound only a leak exceeds)."""
    deadline = time.monotonic() + within_s
    while os.listdir(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [os.path.join(root, f) for root, dirs, files in os.walk(path) for f in files + dirs]
    assert left == [], left


def spilled_bytes(stats: str) -> int:
    found = re.findall(r"Spilled: (\d+) bytes", stats)
    assert found, stats
    return sum(int(x) for x in found)


def check(left: pa.Table, right: pa.Table, join_type, on=("k",), right_on=None, left_suffix=None,
          right_suffix=None, num_partitions=3, left_blocks=4, right_blocks=3):
    got = join_datasets(left, right, join_type, num_partitions, on=on, right_on=right_on,
                        left_suffix=left_suffix, right_suffix=right_suffix, left_blocks=left_blocks,
                        right_blocks=right_blocks).to_arrow()
    assert_join_matches_reference(got, left, right, join_type, on, right_on, left_suffix, right_suffix)
    return got


def sides(seed=0, n_left=400, n_right=150, keys=40, null_frac=0.1):
    """Duplicate keys on both sides (many-to-many), some keys on one side only, null keys."""
    lk, rk = keyed_sides(seed, n_left, n_right, keys, null_frac)
    left = pa.table({"k": lk, "a": np.arange(n_left, dtype=np.float64)})
    right = pa.table({"k": rk, "b": [f"r{i}" for i in range(n_right)]})
    return left, right


@pytest.mark.parametrize("join_type", JOIN_TYPES)
def test_join_types_against_pandas(join_type):
    left, right = sides()
    check(left, right, join_type)


def _keyed_table(draw, n, payload):
    keys = draw(st.lists(st.one_of(st.none(), st.integers(-3, 6)), min_size=n, max_size=n))
    return pa.table({"k": pa.array(keys, pa.int64()), payload: np.arange(n, dtype=np.int64)})


# Deterministic (a fixed seed, no example database, no shrinking), as test_differential.
@seed(9)
@settings(max_examples=40, deadline=None, database=None, phases=(Phase.explicit, Phase.generate),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data(), join_type=st.sampled_from(JOIN_TYPES), n_left=st.integers(0, 40),
       n_right=st.integers(0, 40), partitions=st.integers(1, 5), blocks=st.integers(1, 4))
def test_random_joins_match_pandas(data, join_type, n_left, n_right, partitions, blocks):
    left = _keyed_table(data.draw, n_left, "a")
    right = _keyed_table(data.draw, n_right, "b")
    check(left, right, join_type, num_partitions=partitions, left_blocks=blocks, right_blocks=blocks)


@pytest.mark.parametrize("join_type", JOIN_TYPES)
def test_join_types_with_the_smaller_side_on_the_left(join_type):
    # The left side builds: the join type is mirrored, the output is not.
    left, right = sides(seed=1, n_left=60, n_right=900)
    check(left, right, join_type, num_partitions=2)


@pytest.mark.parametrize("join_type", ["inner", "left_outer", "full_outer", "right_anti"])
def test_skewed_keys(join_type):
    rng = np.random.default_rng(3)
    lk = np.where(rng.random(3000) < 0.8, 7, rng.integers(0, 100, 3000))
    rk = np.where(rng.random(200) < 0.5, 7, rng.integers(50, 150, 200))
    left = pa.table({"k": lk, "a": np.arange(3000)})
    right = pa.table({"k": rk, "b": np.arange(200) * 10})
    out = check(left, right, join_type, num_partitions=4)
    if join_type == "inner":
        assert out.num_rows > 2400 * 100  # the hot key alone matches about 2400 x 100


@pytest.mark.parametrize("join_type", JOIN_TYPES)
def test_string_and_multi_column_keys(join_type):
    rng = np.random.default_rng(4)
    names = np.array(["x", "y", "z", "w"])
    left = pa.table({"s": names[rng.integers(0, 4, 300)], "n": rng.integers(0, 5, 300),
                     "a": np.arange(300)})
    right = pa.table({"name": pa.array(names[rng.integers(1, 4, 80)], pa.large_string()),
                      "num": rng.integers(2, 8, 80), "b": np.arange(80)})
    left = left.set_column(0, "s", left["s"].cast(pa.large_string()))
    check(left, right, join_type, on=("s", "n"), right_on=("name", "num"))


@pytest.mark.parametrize("join_type", ["inner", "full_outer", "left_anti", "right_semi"])
def test_date_timestamp_and_dictionary_keys(join_type):
    rng = np.random.default_rng(5)
    d = rng.integers(0, 20, 200)
    left = pa.table({"d": pa.array(d, pa.int32()).cast(pa.date32()),
                     "t": pa.array(d % 3 * 1000, pa.timestamp("ms")), "a": np.arange(200)})
    e = rng.integers(10, 30, 60)
    right = pa.table({"d": pa.array(e, pa.int32()).cast(pa.date32()),
                      "t": pa.array(e % 3 * 1000, pa.timestamp("ms")), "b": np.arange(60)})
    check(left, right, join_type, on=("d", "t"))
    # Dictionary-encoded string keys join by their values.
    lw = pa.table({"w": pa.array(["p", "q", "r", None, "p"]).dictionary_encode(), "a": [1, 2, 3, 4, 5]})
    rw = pa.table({"w": pa.array(["q", "p", "s"]), "b": [10, 20, 30]})
    got = md.from_arrow(lw).join(md.from_arrow(rw), join_type, 2, on=("w",)).to_arrow()
    dense = lw.set_column(0, "w", lw["w"].cast(pa.string()))
    expected = expected_table(dense, rw, ("w",), ("w",), join_type,
                              dense.join(rw, keys="w", join_type=ARROW_VERB[join_type]).column_names)
    assert rows_of(got) == rows_of(expected)
    # The plan's schema is the one the rows come with (keys decoded).
    joined = md.from_arrow(lw).join(md.from_arrow(rw), join_type, 2, on=("w",))
    assert joined.schema().base_schema == got.schema


@pytest.mark.parametrize("join_type", JOIN_TYPES)
@pytest.mark.parametrize("empty", ["left", "right", "both"])
def test_empty_sides(join_type, empty):
    left, right = sides(seed=6, n_left=50, n_right=40)
    if empty in ("left", "both"):
        left = left.slice(0, 0)
    if empty in ("right", "both"):
        right = right.slice(0, 0)
    check(left, right, join_type, left_blocks=1, right_blocks=1)


def test_side_with_no_blocks():
    # A filter that keeps nothing: the right side produces no rows at all.
    left, right = sides(seed=7, n_left=30, n_right=10)
    ds_right = md.from_arrow(right).filter(lambda row: False)
    got = md.from_arrow(left).join(ds_right, "left_outer", 2, on=("k",)).to_arrow()
    assert got.num_rows == 30
    assert sorted(got["a"].to_pylist()) == sorted(left["a"].to_pylist())
    assert md.from_arrow(left).join(ds_right, "inner", 2, on=("k",)).count() == 0


@pytest.mark.parametrize("join_type", JOIN_TYPES)
def test_empty_dataset_of_no_columns_is_an_empty_side(join_type):
    left = md.from_items([{"k": 1, "v": 2}, {"k": 2, "v": 3}])
    got = left.join(md.from_items([]), join_type, 2, on=("k",)).take_all()
    keeps_left = join_type in ("left_outer", "full_outer", "left_anti")
    assert sorted(r["v"] for r in got) == ([2, 3] if keeps_left else [])
    got = md.from_items([]).join(left, join_type, 2, on=("k",)).take_all()
    keeps_right = join_type in ("right_outer", "full_outer", "right_anti")
    assert sorted(r["v"] for r in got) == ([2, 3] if keeps_right else [])


@pytest.mark.parametrize("join_type", ["inner", "left_outer", "right_outer", "full_outer"])
@pytest.mark.parametrize("suffixes", [("_l", "_r"), ("_l", None), (None, "_r")])
def test_suffix_collisions(join_type, suffixes):
    rng = np.random.default_rng(8)
    left = pa.table({"k": rng.integers(0, 10, 50), "v": np.arange(50), "x": np.arange(50) * 2})
    right = pa.table({"k": rng.integers(5, 15, 30), "v": np.arange(30) * 3, "y": np.arange(30)})
    got = check(left, right, join_type, left_suffix=suffixes[0], right_suffix=suffixes[1])
    assert len(set(got.column_names)) == len(got.column_names)


def test_collision_without_suffixes_names_the_column():
    left = md.from_items([{"k": 1, "v": 2}])
    right = md.from_items([{"k": 1, "v": 3}])
    with pytest.raises(ValueError, match=r"overlapping columns: \['v'\]"):
        left.join(right, "inner", 2, on=("k",))
    # Semi and anti joins output one side: no collision.
    assert left.join(right, "left_semi", 2, on=("k",)).take_all() == [{"k": 1, "v": 2}]


def test_ray_doc_examples():
    doubles = md.range(4).map(lambda row: {"id": row["id"], "double": int(row["id"]) * 2})
    squares = md.range(4).map(lambda row: {"id": row["id"], "square": int(row["id"]) ** 2})
    joined = doubles.join(squares, join_type="inner", num_partitions=2, on=("id",))
    assert sorted(joined.take_all(), key=lambda r: r["id"]) == [
        {"id": 0, "double": 0, "square": 0}, {"id": 1, "double": 2, "square": 1},
        {"id": 2, "double": 4, "square": 4}, {"id": 3, "double": 6, "square": 9}]
    partial = md.range(2).map(lambda row: {"id": row["id"] + 2, "square": int(row["id"]) ** 2})
    anti = doubles.join(partial, join_type="left_anti", num_partitions=2, on=("id",))
    assert sorted(anti.take_all(), key=lambda r: r["id"]) == [{"id": 0, "double": 0}, {"id": 1, "double": 2}]
    semi = doubles.join(squares, join_type="left_semi", num_partitions=2, on=("id",))
    assert sorted(r["id"] for r in semi.take_all()) == [0, 1, 2, 3]


def test_bad_arguments_name_them():
    left = md.from_items([{"k": 1, "v": 2}])
    right = md.from_items([{"k": 1, "w": 3}])
    with pytest.raises(ValueError, match="Invalid join type: 'outer'"):
        left.join(right, "outer", 2, on=("k",))
    with pytest.raises(KeyError, match="left key column 'nope'"):
        left.join(right, "inner", 2, on=("nope",), right_on=("k",))
    with pytest.raises(KeyError, match="right key column 'nope'"):
        left.join(right, "inner", 2, on=("k",), right_on=("nope",))
    with pytest.raises(ValueError, match="Expected tuple or list as `on`"):
        left.join(right, "inner", 2, on="k")
    with pytest.raises(ValueError, match="has to match"):
        left.join(right, "inner", 2, on=("k", "v"), right_on=("k",))
    with pytest.raises(ValueError, match="num_partitions"):
        left.join(right, "inner", 0, on=("k",))
    with pytest.raises(TypeError, match="nmu_partitions|num_partitions"):
        left.join(right, "inner", nmu_partitions=2, on=("k",))
    with pytest.raises(NotImplementedError, match="aggregator_ray_remote_args"):
        left.join(right, "inner", 2, on=("k",), aggregator_ray_remote_args={"num_cpus": 2})
    with pytest.warns(DeprecationWarning, match="partition_size_hint"):
        left.join(right, "inner", 2, on=("k",), partition_size_hint=100)


def test_mismatched_key_types_name_the_columns():
    left = md.from_arrow(pa.table({"k": pa.array([1, 2], pa.int32()), "v": [1, 2]}))
    right = md.from_arrow(pa.table({"j": pa.array([1, 2], pa.int64()), "w": [1, 2]}))
    with pytest.raises(TypeError, match=r"key column 'k' is int32 on the left but 'j' is int64"):
        left.join(right, "inner", 2, on=("k",), right_on=("j",))
    with pytest.raises(ValueError, match="key column 'k' is int32"):
        left.join(right, "inner", 2, on=("k",), right_on=("j",), validate_schemas=True)
    # Schemas unknown until run (a UDF): the error comes when the partition is joined.
    lazy = left.map_batches(lambda b: b)
    with pytest.raises(TypeError, match=r"key column 'k' is int32 on the left but 'j' is int64"):
        lazy.join(right, "inner", 2, on=("k",), right_on=("j",)).take_all()
    with pytest.raises(KeyError, match="left key column 'q'"):
        lazy.join(right, "inner", 2, on=("q",), right_on=("j",)).take_all()


def test_null_typed_key_names_the_column():
    left = md.from_items([{"k": None, "v": 1}])
    right = md.from_items([{"k": 1, "w": 2}])
    with pytest.raises(TypeError, match="left key column 'k' has type null"):
        left.join(right, "full_outer", 2, on=("k",)).take_all()


def test_self_join_with_suffixes():
    ds = md.range(10).map_batches(lambda b: {"id": b["id"] % 3, "v": b["id"]})
    got = ds.join(ds, "inner", 2, on=("id",), left_suffix="_l", right_suffix="_r").to_arrow()
    assert got.column_names == ["id", "v_l", "v_r"]
    ref = pd.DataFrame({"id": np.arange(10) % 3, "v": np.arange(10)})
    want = ref.merge(ref, on="id", suffixes=("_l", "_r"))[["id", "v_l", "v_r"]]
    assert rows_of(got) == rows_of(pa.Table.from_pandas(want, preserve_index=False))


def test_payload_of_any_type():
    left = pa.table({"k": [1, 2, 3], "lst": [[1], [2, 2], []], "st": [{"x": 1}, {"x": 2}, {"x": 3}]})
    right = pa.table({"k": [2, 3, 3, 4], "b": ["a", "b", "c", "d"]})
    got = md.from_arrow(left).join(md.from_arrow(right), "full_outer", 2, on=("k",)).to_arrow()
    assert got.column_names == ["k", "lst", "st", "b"]
    assert rows_of(got.select(["k", "b"])) == rows_of(pa.table({"k": [1, 2, 3, 3, 4], "b": [None, "a", "b", "c", "d"]}))
    by_b = {r["b"]: r for r in got.to_pylist()}
    assert by_b["c"]["lst"] == [] and by_b["a"]["st"] == {"x": 2} and by_b["d"]["lst"] is None


def test_num_partitions_sets_the_output_blocks_and_explain_says_the_build_side(capsys):
    left = md.range(1000).map_batches(lambda b: {"id": b["id"] % 97, "x": b["id"]})
    right = md.range(97)
    joined = left.join(right, "inner", 5, on=("id",))
    assert joined.materialize().num_blocks() >= 5
    # Both sides past the broadcast cap (64 MiB; explain() runs nothing): the exchange,
    # whose plan says which side each partition likely builds on.
    md.range(20_000_000).join(md.range(10_000_000), "full_outer", 3, on=("id",)).explain()
    plan = capsys.readouterr().out
    assert "AllToAllOperator[Join[full_outer" in plan
    assert "Join[full_outer; id = id; build=smaller side per partition (est. right)]" in plan
    md.range(10_000_000).join(md.range(20_000_000), "full_outer", 3, on=("id",)).explain()
    assert "Join[full_outer; id = id; build=smaller side per partition (est. left)]" in capsys.readouterr().out


# ---- past the memory limit -----------------------------------------------------------

ROWS = 1_500_000


def big_sides():
    def left_rows(batch):
        ids = batch["id"]
        return {"k": (ids * 2654435761) % (ROWS // 3), "a": ids}
    left = md.range(ROWS, override_num_blocks=30).map_batches(left_rows)
    right = md.range(ROWS // 3, override_num_blocks=10).map_batches(lambda b: {"k": b["id"], "b": b["id"] * 2})
    return left, right


@pytest.fixture
def spill_dir(tmp_path, monkeypatch, ctx):
    path = tmp_path / "spill"
    path.mkdir()
    monkeypatch.setenv("TMPDIR", str(path))
    ctx.execution_options.resource_limits.object_store_memory = 8 * 1024 * 1024  # restored by conftest
    return path


def test_join_past_the_limit_spills_and_is_exact(spill_dir):
    left, right = big_sides()
    ds = left.join(right, "inner", 4, on=("k",))
    out = ds.to_arrow()
    assert out.num_rows == ROWS  # every left key is in 0..ROWS/3-1, each right key once
    k = out["k"].to_numpy()
    a = out["a"].to_numpy()
    order = np.argsort(a)
    assert np.array_equal(a[order], np.arange(ROWS))
    assert np.array_equal(k[order], (np.arange(ROWS) * 2654435761) % (ROWS // 3))
    assert np.array_equal(out["b"].to_numpy()[order], k[order] * 2)
    assert spilled_bytes(ds.stats()) > 0
    assert_emptied(spill_dir)


def test_abandoned_join_leaves_no_spill(spill_dir):
    left, right = big_sides()
    it = left.join(right, "left_outer", 4, on=("k",)).iter_batches(batch_size=1000)
    for i, batch in enumerate(it):
        assert len(batch["k"]) == 1000
        if i == 2:
            break
    it.close()
    assert_emptied(spill_dir)


def test_interrupt_mid_join_leaves_no_spill(spill_dir):
    import _thread

    fired = []

    def interrupt_once(batch):
        if not fired:
            fired.append(True)
            _thread.interrupt_main()
        return batch

    left, right = big_sides()
    ds = left.join(right, "inner", 4, on=("k",)).map_batches(interrupt_once)
    with pytest.raises(KeyboardInterrupt):
        for _ in ds.iter_batches(batch_size=None):
            time.sleep(0.01)
    assert fired
    assert_emptied(spill_dir)
    assert not [f for f in os.listdir(spill_dir)]


# ---- grace hash join: partitions over a reduce task's memory share --------------------

PANDAS_HOW = {"inner": "inner", "left_outer": "left", "right_outer": "right", "full_outer": "outer"}


def grace_counts(stats: str):
    """(partitions re-partitioned, (sub-)partitions joined streaming) from stats()."""
    found = re.findall(r"Grace hash join: (\d+) partitions re-partitioned past the reduce memory "
                       r"share, (\d+) joined with the larger side streamed in chunks", stats)
    assert found, stats
    return sum(int(r) for r, _ in found), sum(int(s) for _, s in found)


def assert_join_equals_pandas(got: pa.Table, left: pa.Table, right: pa.Table, join_type):
    """The rows (k, a, b) of `got` equal pandas' merge of the sides (keys without nulls)."""
    ref = left.to_pandas().merge(right.to_pandas(), on="k", how=PANDAS_HOW[join_type])

    def rows(columns):
        table = np.stack([np.asarray(c, dtype=np.float64) for c in columns], axis=1)
        table = np.nan_to_num(table, nan=-1.0)
        return table[np.lexsort(table.T[::-1])]
    assert got.num_rows == len(ref)
    mine = rows([got[c].to_numpy(zero_copy_only=False) for c in ("k", "a", "b")])
    theirs = rows([ref[c].to_numpy() for c in ("k", "a", "b")])
    assert np.array_equal(mine, theirs)


@pytest.mark.parametrize("join_type", ["inner", "right_outer", "full_outer"])
def test_grace_join_of_uniform_keys_matches_pandas(spill_dir, ctx, join_type):
    # Four reduce tasks at once under 8 MiB: a share of 256 KiB per task, against
    # partitions of about 1 MiB (half of it each side): every one is re-partitioned.
    ctx.execution_options.resource_limits.cpu = 4
    n = 400_000
    rng = np.random.default_rng(5)
    left = pa.table({"k": rng.integers(0, n, n), "a": np.arange(n, dtype=np.int64)})
    right = pa.table({"k": rng.integers(0, n, n), "b": np.arange(n, dtype=np.int64) + 10**9})
    ds = md.from_arrow(left, override_num_blocks=8).join(
        md.from_arrow(right, override_num_blocks=8), join_type, 2, on=("k",))
    assert_join_equals_pandas(ds.to_arrow(), left, right, join_type)
    stats = ds.stats()
    regrouped, _ = grace_counts(stats)
    assert regrouped >= 2
    assert spilled_bytes(stats) > 0
    assert_emptied(spill_dir)


@pytest.mark.parametrize("join_type", ["inner", "right_outer", "full_outer"])
def test_grace_join_of_a_hot_key_matches_pandas(spill_dir, ctx, join_type):
    # Key -1 is 60% of the right side (about 1 MiB, four times the share) and 10 left
    # rows: no hash splits it; inner and right outer stream its right rows in chunks
    # against the left ones, full outer joins it whole.
    ctx.execution_options.resource_limits.cpu = 4
    rng = np.random.default_rng(6)
    lk = rng.integers(0, 100_000, 300_000)
    lk[rng.choice(lk.size, 10, replace=False)] = -1
    rk = rng.integers(0, 100_000, 100_000)
    rk[rng.random(rk.size) < 0.6] = -1
    left = pa.table({"k": lk, "a": np.arange(lk.size, dtype=np.int64)})
    right = pa.table({"k": rk, "b": np.arange(rk.size, dtype=np.int64) + 10**9})
    ds = md.from_arrow(left, override_num_blocks=6).join(
        md.from_arrow(right, override_num_blocks=4), join_type, 2, on=("k",))
    assert_join_equals_pandas(ds.to_arrow(), left, right, join_type)
    regrouped, streamed = grace_counts(ds.stats())
    assert regrouped >= 1
    if join_type != "full_outer":
        assert streamed >= 1
    assert_emptied(spill_dir)


def chunked_count(stats: str) -> int:
    """(Sub-)partitions joined by block nested loops, from stats()."""
    found = re.findall(r"(\d+) joined in chunks of both sides \(block nested loops\)", stats)
    assert found, stats
    return sum(int(n) for n in found)


def peak_held_and_limit(stats: str):
    units = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
    m = re.search(r"peak ([\d.]+) (\w+) of blocks held \(limit ([\d.]+) (\w+)\)", stats)
    assert m, stats
    return float(m.group(1)) * units[m.group(2)], float(m.group(3)) * units[m.group(4)]


@pytest.mark.parametrize("join_type", JOIN_TYPES)
def test_key_hot_on_both_sides_joins_in_chunks_within_the_limit(spill_dir, ctx, join_type):
    # Under 8 MiB with 16 reduce tasks at once a task's share is 64 KiB. Key -1 holds 8
    # rows of 16 KiB on each side (128 KiB a side, twice the share): no hash splits it and
    # neither side fits, so it is joined in chunks of both sides (block nested loops) with
    # every row's matches tracked across chunks. Other keys: small rows, some null.
    ctx.execution_options.resource_limits.cpu = 16
    rng = np.random.default_rng(7)

    def side(n, hot, name, base):
        k = rng.integers(0, 300, n).astype(np.float64)
        k[rng.random(n) < 0.05] = np.nan
        k[:hot] = -1
        rng.shuffle(k)
        ids = np.arange(n, dtype=np.int64) + base
        pad = ["x" * (16 << 10) if key == -1 else "y" for key in k]
        return pa.table({"k": pa.array(k, mask=np.isnan(k)).cast(pa.int64()), name: ids,
                         "p" + name: pa.array(pad)})
    left, right = side(2000, 8, "a", 0), side(1500, 8, "b", 10**6)
    # Behind a UDF the sides' sizes are unknown before running: the exchange, not a
    # broadcast join (test_join_broadcast), joins them.
    def identity(b):
        return b
    ds = md.from_arrow(left, override_num_blocks=4).map_batches(identity, batch_format="pyarrow").join(
        md.from_arrow(right, override_num_blocks=3).map_batches(identity, batch_format="pyarrow"),
        join_type, 2, on=("k",))
    got = ds.to_arrow()
    ldf, rdf = left.to_pandas(), right.to_pandas()
    # The reference: pandas on the rows with a key (a null key matches nothing), then the
    # rows a null key keeps (outer, anti).
    lk, rk = ldf[ldf["k"].notna()], rdf[rdf["k"].notna()]
    if join_type in PANDAS_HOW:
        ref = lk.merge(rk, on="k", how=PANDAS_HOW[join_type])
        extra = []
        if join_type in ("left_outer", "full_outer"):
            extra.append(ldf[ldf["k"].isna()])
        if join_type in ("right_outer", "full_outer"):
            extra.append(rdf[rdf["k"].isna()])
        ref = pd.concat([ref] + extra, ignore_index=True)
        cols = ["k", "a", "b", "pa", "pb"]
    else:
        this, other, name = (ldf, rk, "a") if join_type.startswith("left") else (rdf, lk, "b")
        matched = this["k"].isin(other["k"]) & this["k"].notna()
        ref = this[matched if join_type.endswith("semi") else ~matched]
        cols = ["k", name, "p" + name]
    assert sorted(got.column_names) == sorted(cols)

    def rows(columns):
        return sorted(zip(*[[None if (v is None or v != v) else v for v in c] for c in columns]),
                      key=lambda r: tuple((v is None, v if v is not None else 0) for v in r))
    mine = rows([got[c].to_pylist() for c in cols])
    theirs = rows([[None if pd.isna(v) else (int(v) if c in ("k", "a", "b") else v) for v in ref[c]]
                   for c in cols])
    assert len(mine) == len(theirs)
    assert mine == theirs
    stats = ds.stats()
    assert chunked_count(stats) >= 1
    peak, limit = peak_held_and_limit(stats)
    assert limit == 8 << 20
    assert peak <= limit, stats
    assert_emptied(spill_dir)

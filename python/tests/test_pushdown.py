"""Predicate pushdown: filters move into Parquet reads (row groups pruned by statistics),
past column selections and into unions; explain() shows what was pushed."""

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import millstream as md
from millstream.expressions import col


@pytest.fixture
def table_dir(tmp_path):
    table = pa.table({"id": pa.array(range(10_000), pa.int64()), "x": pa.array(range(10_000), pa.float64()) * 0.5,
                      "s": pa.array([f"s{i % 7}" for i in range(10_000)])})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=1000)
    return tmp_path, table


def _optimized(ds) -> str:
    text = ds._explain_str()
    return text.split("-------- Logical Plan (Optimized) --------")[1].split("-------- Physical Plan")[0]


@pytest.mark.parametrize("predicate", ["id >= 8500", col("id") >= 8500])
def test_filter_is_pushed_into_the_read_and_prunes_row_groups(table_dir, predicate):
    path, table = table_dir
    ds = md.read_parquet(str(path)).select_columns(["id", "x"]).filter(expr=predicate)
    optimized = _optimized(ds)
    assert "ReadParquet[columns=[id, x], filter=" in optimized and "Filter(" not in optimized, optimized
    expected = table.filter(pc.field("id") >= 8500).select(["id", "x"])
    assert ds.to_arrow().sort_by("id").equals(expected)
    # Rows are ordered by id: of the ten row groups only the last two are read.
    ds.materialize()
    first_operator = ds.stats().split("Operator 1")[0]
    assert "ReadParquet[columns=[id, x], filter=" in first_operator and "Rows in: 1500," in first_operator, first_operator


def test_filter_into_every_input_of_a_union(table_dir):
    path, table = table_dir
    read = md.read_parquet(str(path))
    ds = read.union(read).filter(expr="s == 's3'")
    optimized = _optimized(ds)
    assert optimized.count("ReadParquet[filter=") == 2 and "Filter(" not in optimized, optimized
    expected = table.filter(pc.field("s") == "s3").num_rows * 2
    assert ds.count() == expected


def test_filter_stays_after_a_limit_and_a_udf(table_dir):
    path, _ = table_dir
    read = md.read_parquet(str(path))
    limited = read.limit(100).filter(expr="id >= 50")
    assert "Filter(" in _optimized(limited)
    assert limited.count() == 50          # the first 100 rows, then the filter
    mapped = read.map_batches(lambda b: b).filter(expr="id >= 9990")
    assert "Filter(" in _optimized(mapped)
    assert mapped.count() == 10


def test_column_selection_is_pushed_into_the_read_past_a_limit(table_dir):
    path, table = table_dir
    ds = md.read_parquet(str(path)).select_columns(["x", "id"]).limit(10)
    optimized = _optimized(ds)
    # The limit moves below the selection; the selection still reaches the read.
    assert "Project[" not in optimized and "Limit[10]" in optimized, optimized
    assert "ReadParquet[columns=[x, id]]" in optimized, optimized
    got = ds.to_arrow()
    assert got.column_names == ["x", "id"]
    assert got.num_rows == 10
    assert got.equals(table.select(["x", "id"]).slice(0, 10))


def test_filter_on_a_hive_partition_key_reads_only_its_files(tmp_path):
    import pyarrow.dataset as pads

    table = pa.table({"k": [i % 4 for i in range(4000)], "x": list(range(4000))})
    pads.write_dataset(table, tmp_path, format="parquet", partitioning=["k"], partitioning_flavor="hive")
    # Hive partition values are strings, as in Ray.
    ds = md.read_parquet(str(tmp_path)).filter(expr=col("k") == "2")
    text = ds._explain_str()
    assert 'ReadParquet[filter=(k == "2")]' in _optimized(ds), text
    assert "Input[1 read tasks]" in text, text  # one partition of four
    got = ds.to_arrow()
    assert sorted(got["x"].to_pylist()) == [x for x in range(4000) if x % 4 == 2]


def test_explain_names_the_columns_read(table_dir):
    path, _ = table_dir
    plain = md.read_parquet(str(path))
    assert _optimized(plain).strip() == "ReadParquet"  # nothing pushed: the bare name
    # Given to read_parquet, or pushed from select_columns: the read names them, in order.
    assert "ReadParquet[columns=[s, id]]" in _optimized(md.read_parquet(str(path), columns=["s", "id"]))
    ds = plain.select_columns(["s"]).filter(expr="s == 's1'")
    assert "ReadParquet[columns=[s], filter=(s == \"s1\")]" in _optimized(ds), _optimized(ds)
    # Shown in explain() itself, not only in the plan text.
    assert "ReadParquet[columns=[s]" in ds._explain_str()


def test_explain_keeps_a_long_column_list_short(tmp_path):
    names = [f"c{i}" for i in range(30)]
    pq.write_table(pa.table({n: [1, 2] for n in names}), tmp_path / "w.parquet")
    ds = md.read_parquet(str(tmp_path)).select_columns(names[::-1])
    optimized = _optimized(ds)
    assert "ReadParquet[columns=[c29, c28, c27, c26, c25, c24, ... 24 more]]" in optimized, optimized
    assert "c23" not in optimized
    assert ds.to_arrow().column_names == names[::-1]
    # Up to 8 columns are all named.
    eight = md.read_parquet(str(tmp_path)).select_columns(names[:8])
    assert "ReadParquet[columns=[c0, c1, c2, c3, c4, c5, c6, c7]]" in _optimized(eight)

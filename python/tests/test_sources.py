"""Sources: range, from_items, from_arrow, from_pandas, from_numpy, read_parquet."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

import millstream as md
from conftest import assert_tables_equal, make_table


# ---- range ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 10, 1000])
def test_range_rows(n):
    ds = md.range(n)
    expected = pa.table({"id": np.arange(n, dtype=np.int64)})
    out = ds.to_arrow()
    assert out.schema.names == expected.schema.names
    assert out.schema.types == expected.schema.types
    assert sorted(out["id"].to_pylist()) == expected["id"].to_pylist()
    assert ds.count() == n


def test_range_schema_is_int64():
    assert md.range(5).schema().names == ["id"]
    assert md.range(5).schema().types == [pa.int64()]


@pytest.mark.parametrize("blocks", [1, 7, 50])
def test_range_override_num_blocks(blocks):
    n = 1000
    ds = md.range(n, override_num_blocks=blocks)
    sizes = [len(b["id"]) for b in ds.iter_batches(batch_size=None)]
    assert len(sizes) == blocks
    assert sum(sizes) == n
    # Blocks are an even split of the range (sizes differ by at most one row).
    assert max(sizes) - min(sizes) <= 1
    got = np.sort(np.concatenate([b["id"] for b in ds.iter_batches(batch_size=None)]))
    np.testing.assert_array_equal(got, np.arange(n))


def test_range_preserve_order(ctx):
    ctx.execution_options.preserve_order = True
    ds = md.range(5000, override_num_blocks=25).map_batches(lambda b: {"id": b["id"] * 3})
    assert [r["id"] for r in ds.take_all()] == list(np.arange(5000) * 3)


def test_range_huge_take_and_count_do_not_materialise_it():
    # 2**62 rows would be 32 EiB: take reads only the rows it returns, count is metadata.
    assert md.range(2**62).take(2) == [{"id": 0}, {"id": 1}]
    assert md.range(2**62).count() == 2**62
    assert md.range(2**62).limit(3).to_arrow().equals(pa.table({"id": pa.array([0, 1, 2], pa.int64())}))


def test_range_huge_streams_blocks_under_target_max_block_size(ctx):
    ctx.target_max_block_size = 64 << 10  # 8192 rows of int64
    batches = md.range(2**62).iter_batches(batch_size=None)
    first = next(batches)
    batches.close()
    assert 0 < len(first["id"]) <= 8192


def test_range_blocks_capped_by_target_max_block_size(ctx):
    ctx.target_max_block_size = 800  # 100 rows
    ctx.target_min_block_size = 0
    sizes = [len(b["id"]) for b in md.range(1050, override_num_blocks=2).iter_batches(batch_size=None)]
    assert sum(sizes) == 1050 and max(sizes) <= 100


def test_range_bad_n():
    with pytest.raises(ValueError):
        md.range(-1)
    with pytest.raises(ValueError):
        md.range(10, override_num_blocks=0)


# ---- from_items ----------------------------------------------------------------------


def test_from_items_dicts():
    items = [{"key": i, "name": f"n{i}", "score": i * 0.5} for i in range(300)]
    ds = md.from_items(items)
    assert isinstance(ds, md.MaterializedDataset)
    expected = pa.Table.from_pylist(items)
    assert_tables_equal(ds.to_arrow(), expected)
    assert ds.count() == len(items)
    assert ds.columns() == ["key", "name", "score"]


def test_from_items_scalars_become_item_column():
    items = list(range(100, 160))
    ds = md.from_items(items)
    assert ds.columns() == ["item"]
    assert sorted(r["item"] for r in ds.take_all()) == items
    strings = ["x", "yy", "zzz"]
    assert sorted(r["item"] for r in md.from_items(strings).take_all()) == sorted(strings)


def test_from_items_override_num_blocks():
    items = [{"key": i} for i in range(100)]
    ds = md.from_items(items, override_num_blocks=4)
    sizes = [len(b["key"]) for b in ds.iter_batches(batch_size=None)]
    assert len(sizes) == 4 and sum(sizes) == 100


# ---- from_arrow / from_pandas ----------------------------------------------------------


def test_from_arrow_table():
    table = make_table(500)
    ds = md.from_arrow(table)
    assert isinstance(ds, md.MaterializedDataset)
    assert_tables_equal(ds.to_arrow(), table)
    assert ds.schema().base_schema == table.schema
    assert ds.count() == 500


def test_from_arrow_list_of_tables():
    tables = [make_table(100, seed=s, start=s * 100) for s in range(3)]
    ds = md.from_arrow(tables)
    assert_tables_equal(ds.to_arrow(), pa.concat_tables(tables))


def test_from_arrow_override_num_blocks():
    table = make_table(400)
    ds = md.from_arrow(table, override_num_blocks=8)
    batches = list(ds.iter_batches(batch_size=None, batch_format="pyarrow"))
    assert len(batches) == 8
    assert_tables_equal(pa.concat_tables(batches), table)


def test_from_pandas():
    df = make_table(300).to_pandas()
    ds = md.from_pandas(df)
    out = ds.to_pandas().sort_values("key").reset_index(drop=True)
    pd.testing.assert_frame_equal(out, df)


def test_from_pandas_list():
    dfs = [make_table(50, seed=i, start=i * 50).to_pandas() for i in range(4)]
    out = md.from_pandas(dfs).to_pandas().sort_values("key").reset_index(drop=True)
    pd.testing.assert_frame_equal(out, pd.concat(dfs, ignore_index=True))


# ---- from_numpy ----------------------------------------------------------------------


def test_from_numpy_1d():
    arr = np.arange(100, dtype=np.float64) * 1.5
    ds = md.from_numpy(arr)
    assert ds.columns() == ["data"]
    batch = ds.take_batch(100)
    np.testing.assert_array_equal(np.sort(batch["data"]), arr)


def test_from_numpy_list_of_arrays():
    arrays = [np.arange(10), np.arange(10, 25)]
    ds = md.from_numpy(arrays)
    assert ds.count() == 25
    np.testing.assert_array_equal(np.sort(ds.take_batch(100)["data"]), np.concatenate(arrays))


@pytest.mark.parametrize("shape", [(40, 3), (12, 2, 5)])
def test_from_numpy_tensor_round_trip(shape):
    arr = np.arange(np.prod(shape), dtype=np.int64).reshape(shape)
    ds = md.from_numpy(arr)
    assert ds.columns() == ["data"]
    batch = ds.take_batch(shape[0])["data"]
    assert batch.shape == shape
    order = np.argsort(batch.reshape(shape[0], -1)[:, 0])
    np.testing.assert_array_equal(batch[order], arr)
    # Through a UDF: the tensor arrives with its shape and a returned tensor keeps it.
    seen_shapes = []

    def double(b):
        seen_shapes.append(b["data"].shape[1:])
        return {"data": b["data"] * 2}

    out = md.from_numpy(arr).map_batches(double).take_batch(shape[0])["data"]
    assert all(s == shape[1:] for s in seen_shapes) and seen_shapes
    assert out.shape == shape
    order = np.argsort(out.reshape(shape[0], -1)[:, 0])
    np.testing.assert_array_equal(out[order], arr * 2)
    # In Arrow, a fixed-shape tensor column.
    col = md.from_numpy(arr).to_arrow()["data"].combine_chunks()
    assert isinstance(col.type, pa.FixedShapeTensorType)
    assert tuple(col.type.shape) == shape[1:]


# ---- read_parquet --------------------------------------------------------------------


def test_read_parquet_single_file(tmp_path):
    table = make_table(1000)
    path = tmp_path / "one.parquet"
    pq.write_table(table, path, row_group_size=128)
    ds = md.read_parquet(str(path))
    expected = pq.read_table(path)
    assert_tables_equal(ds.to_arrow(), expected)
    assert ds.count() == expected.num_rows
    assert ds.schema().base_schema.names == expected.schema.names
    assert ds.schema().types == expected.schema.types


def test_read_parquet_pathlike(tmp_path):
    table = make_table(10)
    path = tmp_path / "one.parquet"
    pq.write_table(table, path)
    assert_tables_equal(md.read_parquet(path).to_arrow(), table)


def test_read_parquet_directory_recursive_skips_hidden(parquet_dir):
    root, expected = parquet_dir
    ds = md.read_parquet(str(root))
    out = ds.to_arrow()
    assert_tables_equal(out, expected)
    # None of the decoy rows (keys >= 10000) appear.
    assert pc.max(out["key"]).as_py() < 10_000
    assert ds.count() == expected.num_rows


def test_read_parquet_glob(parquet_dir):
    root, _ = parquet_dir
    expected = pa.concat_tables([pq.read_table(root / f"part-00{i}.parquet") for i in (0, 1)])
    ds = md.read_parquet(str(root / "part-*.parquet"))
    assert_tables_equal(ds.to_arrow(), expected)


def test_read_parquet_list_of_paths(parquet_dir):
    root, _ = parquet_dir
    paths = [root / "part-001.parquet", root / "sub" / "deeper" / "part-003.parquet"]
    expected = pa.concat_tables([pq.read_table(p) for p in paths])
    assert_tables_equal(md.read_parquet([str(p) for p in paths]).to_arrow(), expected)
    # A list mixing a file and a directory.
    mixed = [str(root / "part-000.parquet"), str(root / "sub")]
    expected = pa.concat_tables([pq.read_table(root / "part-000.parquet"),
                                 pq.read_table(root / "sub" / "part-002.parquet"),
                                 pq.read_table(root / "sub" / "deeper" / "part-003.parquet")])
    assert_tables_equal(md.read_parquet(mixed).to_arrow(), expected)


def test_read_parquet_columns(parquet_dir):
    root, expected = parquet_dir
    ds = md.read_parquet(str(root), columns=["price", "key"])
    assert ds.columns() == ["price", "key"]
    out = ds.to_arrow()
    assert_tables_equal(out, expected.select(["price", "key"]))


def test_read_parquet_columns_listed_twice_raises(parquet_dir):
    root, _ = parquet_dir
    with pytest.raises(ValueError, match="'key'"):
        md.read_parquet(str(root), columns=["key", "price", "key"])


def _sorted_row_groups(tmp_path) -> tuple[str, pa.Table]:
    """One file, 10 row groups of 100 rows, sorted by "key" (so statistics can prune)."""
    table = make_table(1000, seed=3)
    path = tmp_path / "sorted.parquet"
    pq.write_table(table, path, row_group_size=100)
    assert pq.ParquetFile(path).metadata.num_row_groups == 10
    return str(path), table


def _poisoned_file(tmp_path, poisoned_groups=range(8)) -> tuple[str, pa.Table]:
    """Like _sorted_row_groups, but the data pages of row groups 0..7 (keys < 800) are
    overwritten with garbage while the footer and its statistics stay intact: a reader
    that prunes by statistics never touches them; one that does not, fails."""
    table = make_table(1000, seed=3)
    path = tmp_path / "poisoned.parquet"
    pq.write_table(table, path, row_group_size=100)
    meta = pq.ParquetFile(path).metadata
    data = bytearray(path.read_bytes())
    for g in poisoned_groups:
        group = meta.row_group(g)
        for c in range(group.num_columns):
            col = group.column(c)
            start = col.dictionary_page_offset if col.has_dictionary_page else col.data_page_offset
            data[start:start + col.total_compressed_size] = b"\xff" * col.total_compressed_size
    path.write_bytes(bytes(data))
    with pytest.raises(Exception):  # the poison works: a full read fails
        pq.read_table(path)
    return str(path), table


@pytest.mark.parametrize("flt", [
    (pc.field("key") >= 850) & (pc.field("cat") != "a"),
    "key >= 850 and cat != 'a'",
    "key > 799",
])
def test_read_parquet_filter_prunes_row_groups(tmp_path, flt):
    path, table = _poisoned_file(tmp_path)
    ref = flt if isinstance(flt, pc.Expression) else (
        ((pc.field("key") >= 850) & (pc.field("cat") != "a")) if "850" in flt else (pc.field("key") > 799))
    expected = table.filter(ref)
    assert expected.num_rows > 0
    ds = md.read_parquet(path, filter=flt)
    assert_tables_equal(ds.to_arrow(), expected)
    # Control: millstream does hit the poison when nothing lets it skip those groups.
    with pytest.raises(OSError) as info:
        md.read_parquet(path).to_arrow()
    assert path in str(info.value)


def test_read_parquet_filter_expression(tmp_path):
    path, table = _sorted_row_groups(tmp_path)
    expr = (pc.field("key") >= 850) & (pc.field("cat") != "a")
    expected = pads.dataset(path).to_table(filter=expr)
    assert_tables_equal(md.read_parquet(path, filter=expr).to_arrow(), expected)


@pytest.mark.parametrize("flt, kind", [("1 - 1", "int64"), (pc.field("key") + 1, "int64")])
def test_read_parquet_filter_not_boolean_raises(tmp_path, flt, kind):
    path, _ = _sorted_row_groups(tmp_path)
    with pytest.raises(TypeError, match=f"of type {kind}, not boolean"):
        md.read_parquet(path, filter=flt)


def test_read_parquet_filter_string(tmp_path):
    path, table = _sorted_row_groups(tmp_path)
    expr = (pc.field("key") < 120) | ((pc.field("qty") > 90) & (pc.field("cat") == "b"))
    expected = pads.dataset(path).to_table(filter=expr)
    ds = md.read_parquet(path, filter="key < 120 or (qty > 90 and cat == 'b')")
    assert_tables_equal(ds.to_arrow(), expected)


def test_read_parquet_filter_with_columns(tmp_path):
    path, table = _sorted_row_groups(tmp_path)
    expected = pads.dataset(path).to_table(filter=pc.field("qty") >= 50, columns=["key"])
    ds = md.read_parquet(path, columns=["key"], filter="qty >= 50")
    assert ds.columns() == ["key"]
    assert_tables_equal(ds.to_arrow(), expected)


def test_read_parquet_filter_string_in(tmp_path):
    path, table = _sorted_row_groups(tmp_path)
    expected = table.filter(pc.field("cat").isin(["a", "c"]) & (pc.field("price") > 10.5))
    ds = md.read_parquet(path, filter="cat in ['a', 'c'] and price > 10.5")
    assert_tables_equal(ds.to_arrow(), expected)


def test_read_parquet_filter_string_is_none(tmp_path):
    table = pa.table({"key": np.arange(100), "v": pa.array([None if i % 3 == 0 else i for i in range(100)])})
    path = tmp_path / "nulls.parquet"
    pq.write_table(table, path, row_group_size=25)
    assert_tables_equal(md.read_parquet(str(path), filter="v is None").to_arrow(),
                        table.filter(pc.field("v").is_null()))
    assert_tables_equal(md.read_parquet(str(path), filter="v is not None").to_arrow(),
                        table.filter(pc.field("v").is_valid()))


@pytest.mark.parametrize("blocks", [2, 5, 10])
def test_read_parquet_override_num_blocks(tmp_path, blocks):
    path, table = _sorted_row_groups(tmp_path)
    ds = md.read_parquet(path, override_num_blocks=blocks)
    batches = list(ds.iter_batches(batch_size=None, batch_format="pyarrow"))
    assert len(batches) == blocks
    assert_tables_equal(pa.concat_tables(batches), table)


def test_read_parquet_count_from_metadata(parquet_dir):
    root, expected = parquet_dir
    ds = md.read_parquet(str(root))
    assert ds.count() == expected.num_rows
    # Counting a plain read uses the footers: nothing executed, so there are no stats.
    assert "Rows in" not in ds.stats()
    assert "ReadParquet" not in ds.stats()
    # After a real execution there are.
    ds.materialize()
    assert "ReadParquet" in ds.stats()


def test_small_files_reach_the_udf_as_whole_blocks(tmp_path):
    # 60 tiny files: the read groups them and combines what it reads into blocks, so a
    # UDF over whole blocks runs far fewer than 60 times; the rows are all there.
    table = pa.table({"id": np.arange(600), "x": np.arange(600) * 0.5})
    for i in range(60):
        pq.write_table(table.slice(i * 10, 10), tmp_path / f"part-{i:03d}.parquet")
    md.DataContext.get_current().read_op_min_num_blocks = 6
    calls = []

    def f(batch):
        calls.append(len(batch["id"]))
        return batch

    out = md.read_parquet(str(tmp_path)).map_batches(f).to_arrow()
    assert sorted(out["id"].to_pylist()) == table["id"].to_pylist()
    assert len(calls) <= 6
    assert sum(calls) == 600


def test_relative_paths_read_and_write(tmp_path, monkeypatch):
    table = pa.table({"id": np.arange(50), "x": np.arange(50) * 2.0})
    (tmp_path / "data").mkdir()
    pq.write_table(table, tmp_path / "data" / "a.parquet")
    monkeypatch.chdir(tmp_path)
    md.read_parquet("data").write_parquet("out")
    for path in ["out", "./out/", "out/*.parquet", ["data/a.parquet"]]:
        got = md.read_parquet(path).to_arrow().sort_by("id")
        assert got.equals(table), path


def test_file_extensions_filter_directories_not_named_files(tmp_path):
    table = pa.table({"id": np.arange(20)})
    pq.write_table(table, tmp_path / "data.parquet")
    (tmp_path / "notes.txt").write_text("not parquet")
    # Ray's default: only *.parquet inside a directory.
    assert md.read_parquet(str(tmp_path)).to_arrow().equals(table)
    with pytest.raises(OSError, match="notes.txt"):
        md.read_parquet(str(tmp_path), file_extensions=None)
    # A file named explicitly is read whatever its extension.
    pq.write_table(table, tmp_path / "other.bin")
    assert md.read_parquet(str(tmp_path / "other.bin")).count() == 20
    assert md.read_parquet(str(tmp_path), file_extensions=["bin"]).count() == 20


def test_hive_partitions_become_columns_and_prune_files(tmp_path):
    table = pa.table({"id": np.arange(300), "year": np.repeat(["2023", "2024", "2025"], 100),
                      "x": np.arange(300) * 1.5})
    pads.write_dataset(table, tmp_path, format="parquet", partitioning=["year"],
                       partitioning_flavor="hive")
    ds = md.read_parquet(str(tmp_path))
    assert set(ds.columns()) == {"id", "x", "year"}
    got = ds.to_arrow().select(["id", "year", "x"]).sort_by("id")
    assert got.equals(table)
    # A filter on the partition key: only that directory's rows, as pyarrow computes.
    expected = table.filter(pc.field("year") == "2024").sort_by("id")
    got = md.read_parquet(str(tmp_path), filter=pc.field("year") == "2024").to_arrow()
    assert got.select(["id", "year", "x"]).sort_by("id").equals(expected)
    assert md.read_parquet(str(tmp_path), columns=["year"]).to_arrow().column("year").to_pylist().count("2025") == 100
    # Turned off: no partition column.
    assert "year" not in md.read_parquet(str(tmp_path), partitioning=None).columns()


def test_hive_keys_come_from_each_files_own_path_as_in_ray(tmp_path):
    # Ray's rule: every key=value directory of a file's path is a column, so a list of a
    # partitioned dataset's files, or one partition's directory, keeps the keys. Expected
    # rows by hand from what was written where.
    for year, month, ids in (("2024", "01", [1, 2]), ("2024", "02", [3]), ("2025", "01", [4])):
        folder = tmp_path / f"year={year}" / f"month={month}"
        folder.mkdir(parents=True)
        pq.write_table(pa.table({"id": ids}), folder / "part.parquet")
    files = sorted(str(p) for p in tmp_path.rglob("*.parquet"))
    rows = sorted(md.read_parquet(files).take_all(), key=lambda r: r["id"])
    assert rows == [{"id": 1, "year": "2024", "month": "01"}, {"id": 2, "year": "2024", "month": "01"},
                    {"id": 3, "year": "2024", "month": "02"}, {"id": 4, "year": "2025", "month": "01"}]
    one = md.read_parquet(str(tmp_path / "year=2024")).take_all()
    assert sorted((r["id"], r["year"], r["month"]) for r in one) == [(1, "2024", "01"), (2, "2024", "01"),
                                                                     (3, "2024", "02")]
    assert md.read_parquet(files[:1], partitioning=None).columns() == ["id"]

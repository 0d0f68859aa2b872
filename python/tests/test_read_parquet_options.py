"""read_parquet's file parameters (include_paths, ignore_missing_paths, partition_filter,
shuffle, schema), Dataset.input_files, from_blocks, from_arrow of IPC bytes, write_numpy
and write_images; expected values from pyarrow, numpy and Pillow."""

from __future__ import annotations

import gzip
import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import millstream as md


@pytest.fixture
def parts(tmp_path):
    root = tmp_path / "data"
    for year in (2021, 2022, 2023):
        d = root / f"year={year}"
        d.mkdir(parents=True)
        pq.write_table(pa.table({"id": pa.array([year * 10 + i for i in range(4)], pa.int32()),
                                 "v": [float(i) for i in range(4)]}), d / "part.parquet")
    return root


def test_include_paths(parts):
    got = md.read_parquet(parts, include_paths=True).to_arrow()
    assert got.column_names == ["id", "v", "year", "path"]
    for row in got.to_pylist():
        assert row["path"] == str(parts / f"year={row['year']}" / "part.parquet")
    got = md.read_parquet(parts, include_paths=True, columns=["path", "id"]).to_arrow()
    assert got.column_names == ["path", "id"] and got.num_rows == 12


def test_ignore_missing_paths(parts):
    files = [str(parts / "year=2021" / "part.parquet"), str(parts / "nope.parquet")]
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        md.read_parquet(files, ignore_missing_paths=False)
    got = md.read_parquet(files, ignore_missing_paths=True).to_arrow()
    # The file's rows, with its path's hive key as a column (Ray's rule for named files).
    expected = pq.read_table(files[0])
    expected = expected.append_column("year", pa.array(["2021"] * expected.num_rows))
    assert got.equals(expected)


def test_partition_filter(parts):
    keep = md.read_parquet(parts, partition_filter=lambda paths: [p for p in paths if "year=2022" in p])
    assert sorted(keep.to_arrow()["id"].to_pylist()) == [20220, 20221, 20222, 20223]
    assert keep.input_files() == [str(parts / "year=2022" / "part.parquet")]


def test_shuffle_files(tmp_path):
    for i in range(20):
        pq.write_table(pa.table({"i": [i]}), tmp_path / f"f{i:02d}.parquet")
    fixed = md.read_parquet(tmp_path, shuffle=md.FileShuffleConfig(seed=3, reseed_after_execution=False))
    first = [r["i"] for r in fixed.take_all()]
    assert first == [r["i"] for r in fixed.take_all()]
    assert sorted(first) == list(range(20)) and first != list(range(20))
    random_orders = {tuple(r["i"] for r in md.read_parquet(tmp_path, shuffle="files").take_all())
                     for _ in range(3)}
    assert all(sorted(o) == list(range(20)) for o in random_orders) and len(random_orders) > 1


def test_schema_casts_and_fills(parts):
    schema = pa.schema([("id", pa.int64()), ("v", pa.float32()), ("missing", pa.string()), ("year", pa.int16())])
    got = md.read_parquet(parts, schema=schema).to_arrow()
    assert got.schema == schema
    reference = pa.concat_tables([
        pq.read_table(parts / f"year={y}" / "part.parquet").cast(pa.schema([("id", pa.int64()), ("v", pa.float32())]))
        .append_column("missing", pa.nulls(4, pa.string())).append_column("year", pa.array([y] * 4, pa.int16()))
        for y in (2021, 2022, 2023)])
    assert got.sort_by("id").equals(reference.sort_by("id"))
    with pytest.raises(TypeError, match="pyarrow.Schema"):
        md.read_parquet(parts, schema={"id": "int64"})


def test_input_files(parts, tmp_path):
    files = sorted(str(p) for p in parts.rglob("*.parquet"))
    ds = md.read_parquet(parts).map_batches(lambda b: b).filter(expr="id > 0")
    assert ds.input_files() == files
    (tmp_path / "a.csv").write_text("x\n1\n")
    assert md.read_csv(tmp_path / "a.csv").input_files() == [str(tmp_path / "a.csv")]
    assert md.range(3).input_files() == []


def test_from_blocks_keeps_blocks():
    blocks = [pa.table({"a": [1, 2]}), pd.DataFrame({"a": [3]}), pa.table({"a": [4, 5, 6]})]
    ds = md.from_blocks(blocks)
    assert [b.num_rows for b in ds._batches()] == [2, 1, 3]
    assert [r["a"] for r in ds.take_all()] == [1, 2, 3, 4, 5, 6]
    with pytest.raises(TypeError, match="from_blocks"):
        md.from_blocks([{"a": 1}])


def test_from_arrow_ipc_bytes_and_lists():
    table = pa.table({"x": [1, 2, 3], "s": ["a", "b", None]})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    data = sink.getvalue().to_pybytes()
    assert md.from_arrow(data).to_arrow().equals(table)
    assert md.from_arrow([data, table]).to_arrow().equals(pa.concat_tables([table, table]))


def test_write_numpy_round_trip(tmp_path):
    ds = md.range_tensor(10, shape=(2, 3), override_num_blocks=2)
    ds.write_numpy(tmp_path / "out", column="data")
    files = sorted((tmp_path / "out").glob("*.npy"))
    assert len(files) == 2
    arrays = np.concatenate([np.load(f) for f in files])
    expected = np.broadcast_to(np.arange(10).reshape(10, 1, 1), (10, 2, 3))
    np.testing.assert_array_equal(np.sort(arrays, axis=0), expected)
    np.testing.assert_array_equal(md.read_numpy(tmp_path / "out").take_batch(20)["data"].shape, (10, 2, 3))
    with pytest.raises(KeyError, match="nope"):
        ds.write_numpy(tmp_path / "bad", column="nope")
    with pytest.raises(ValueError, match="exists|already"):
        ds.write_numpy(tmp_path / "out", column="data", mode="error")
    md.range(7).write_numpy(tmp_path / "out", column="id", mode="overwrite", min_rows_per_file=7,
                            arrow_open_stream_args={"compression": "gzip"})
    files = list((tmp_path / "out").glob("*.npy"))
    assert len(files) == 1
    np.testing.assert_array_equal(np.load(io.BytesIO(gzip.decompress(files[0].read_bytes()))), np.arange(7))


def test_write_images_round_trip(tmp_path):
    PIL = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, size=(4, 6, 3), dtype=np.uint8) for _ in range(3)]
    md.from_items([{"image": im} for im in images]).write_images(tmp_path / "imgs", column="image")
    files = sorted((tmp_path / "imgs").glob("*.png"))
    assert len(files) == 3
    decoded = sorted((np.asarray(PIL.open(f)) for f in files), key=lambda a: a.tobytes())
    for got, want in zip(decoded, sorted(images, key=lambda a: a.tobytes())):
        np.testing.assert_array_equal(got, want)

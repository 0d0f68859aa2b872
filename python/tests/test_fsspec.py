"""filesystem= an fsspec filesystem (itself or as pyarrow.fs.PyFileSystem(FSSpecHandler(fs))):
reads, listing and writes through the engine's bridge, against fsspec's memory and local
filesystems; expected values from pyarrow and numpy reading the same files."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

import millstream as md

fsspec = pytest.importorskip("fsspec")
from fsspec.implementations.local import LocalFileSystem  # noqa: E402
from fsspec.implementations.memory import MemoryFileSystem  # noqa: E402

TABLE = pa.table({"id": pa.array(range(50), pa.int64()), "s": [f"s{i % 5}" for i in range(50)]})


@pytest.fixture
def memfs():
    fs = MemoryFileSystem()
    root = f"/t{id(fs)}"
    yield fs, root
    fs.rm(root, recursive=True) if fs.exists(root) else None


@pytest.fixture(params=["memory", "local", "wrapped"])
def anyfs(request, tmp_path, memfs):
    if request.param == "local":
        return LocalFileSystem(), str(tmp_path / "root")
    fs, root = memfs
    if request.param == "wrapped":
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), root
    return fs, root


def _fsspec(fs):
    return fs.handler.fs if isinstance(fs, pafs.PyFileSystem) else fs


def test_read_parquet_csv_json_written_by_pyarrow(anyfs):
    fs, root = anyfs
    raw = _fsspec(fs)
    raw.makedirs(f"{root}/p/k=a", exist_ok=True)
    with raw.open(f"{root}/p/k=a/x.parquet", "wb") as f:
        pq.write_table(TABLE, f)
    with raw.open(f"{root}/p/_hidden.parquet", "wb") as f:
        f.write(b"not parquet")
    got = md.read_parquet(f"{root}/p", filesystem=fs).to_arrow().sort_by("id")
    assert got.column("id").to_pylist() == list(range(50))
    assert set(got.column("k").to_pylist()) == {"a"}
    raw.makedirs(f"{root}/c", exist_ok=True)
    with raw.open(f"{root}/c/a.csv", "wb") as f:
        pacsv.write_csv(TABLE, f)
    assert md.read_csv(f"{root}/c", filesystem=fs).to_arrow().sort_by("id").equals(
        pacsv.read_csv(io.BytesIO(raw.cat_file(f"{root}/c/a.csv"))))
    raw.makedirs(f"{root}/j", exist_ok=True)
    raw.pipe_file(f"{root}/j/a.jsonl", b'{"x": 1}\n{"x": 2}\n')
    assert sorted(r["x"] for r in md.read_json(f"{root}/j", filesystem=fs).take_all()) == [1, 2]


def test_write_parquet_csv_and_read_back_with_pyarrow(anyfs):
    fs, root = anyfs
    raw = _fsspec(fs)
    md.from_arrow(TABLE).write_parquet(f"{root}/out", filesystem=fs, partition_cols=["s"])
    files = sorted(raw.find(f"{root}/out"))
    assert len(files) == 5 and all("/s=s" in f for f in files)
    back = pa.concat_tables(pq.read_table(io.BytesIO(raw.cat_file(f))) for f in files)
    assert sorted(back.column("id").to_pylist()) == list(range(50))
    md.from_arrow(TABLE).write_csv(f"{root}/csv", filesystem=fs)
    (one,) = raw.find(f"{root}/csv")
    assert pacsv.read_csv(io.BytesIO(raw.cat_file(one))).equals(TABLE)
    # mode="overwrite" empties the directory first; "error" refuses it.
    md.range(3).write_csv(f"{root}/csv", filesystem=fs, mode="overwrite")
    now = raw.find(f"{root}/csv")
    assert one not in now
    assert sorted(v for f in now for v in pacsv.read_csv(io.BytesIO(raw.cat_file(f))).column("id").to_pylist()) \
        == [0, 1, 2]
    with pytest.raises(ValueError, match="already exists"):
        md.range(3).write_csv(f"{root}/csv", filesystem=fs, mode="error")


def test_memory_uri_with_the_filesystem(memfs):
    fs, root = memfs
    md.range(7).write_parquet(f"memory://{root}/u", filesystem=fs)
    assert md.read_parquet(f"memory://{root}/u", filesystem=fs).count() == 7


def test_write_numpy_and_images(anyfs):
    fs, root = anyfs
    raw = _fsspec(fs)
    arrays = np.arange(12, dtype=np.float64).reshape(3, 4)
    md.from_numpy(arrays).write_numpy(f"{root}/n", column="data", filesystem=fs)
    (one,) = raw.find(f"{root}/n")
    np.testing.assert_array_equal(np.load(io.BytesIO(raw.cat_file(one))), arrays)
    np.testing.assert_array_equal(
        np.stack([r["data"] for r in md.read_numpy(f"{root}/n", filesystem=fs).take_all()]), arrays)
    pytest.importorskip("PIL")
    images = [np.full((3, 4, 3), 10 * i, np.uint8) for i in range(2)]
    md.from_items([{"image": im} for im in images]).write_images(f"{root}/img", column="image", filesystem=fs)
    got = sorted(int(r["image"][0, 0, 0]) for r in md.read_images(f"{root}/img", filesystem=fs).take_all())
    assert got == [0, 10]


class _FailingFS(MemoryFileSystem):
    """Refuses to store files whose name holds "000001"."""

    def pipe_file(self, path, value, *args, **kwargs):
        if "000001" in path:
            raise OSError("disk full")
        return super().pipe_file(path, value, *args, **kwargs)


def test_a_failed_file_leaves_no_object(memfs):
    _, root = memfs
    fs = _FailingFS()
    with pytest.raises(OSError, match="disk full"):
        md.range(4, override_num_blocks=4).write_csv(f"{root}/f", filesystem=fs)
    assert not any("000001" in f for f in fs.find(f"{root}/f"))
    with pytest.raises(OSError, match="disk full"):
        md.from_numpy(np.zeros((4, 2))).repartition(2).write_numpy(f"{root}/n", column="data", filesystem=fs)
    assert not any("000001" in f for f in fs.find(f"{root}/n"))


def test_errors_name_the_path(memfs):
    fs, root = memfs
    with pytest.raises(FileNotFoundError):
        md.read_parquet(f"{root}/missing", filesystem=fs)
    fs.pipe_file(f"{root}/bad.parquet", b"garbage")
    with pytest.raises(OSError, match="bad.parquet"):
        md.read_parquet(f"{root}/bad.parquet", filesystem=fs)

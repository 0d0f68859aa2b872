"""read_parquet's skip_paths, include_row_hash and tensor_column_schema, and concurrency of
reads and writes; expected values from pyarrow, numpy, hashlib (Ray's documented row hash)
and counts taken by hand."""

from __future__ import annotations

import hashlib
import threading
import time

import numpy as np
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
        pq.write_table(pa.table({"id": pa.array([year * 10 + i for i in range(4)], pa.int32())}),
                       d / "part.parquet")
    return root


def _ids(ds):
    return sorted(ds.to_arrow().column("id").to_pylist())


def test_skip_paths_file_and_directory(parts):
    skip_one = str(parts / "year=2022" / "part.parquet")
    assert _ids(md.read_parquet(str(parts), skip_paths=skip_one)) == [20210, 20211, 20212, 20213,
                                                                      20230, 20231, 20232, 20233]
    # A directory skips every file below it; a list; a path that does not exist is fine.
    got = md.read_parquet(str(parts), skip_paths=[parts / "year=2021", str(parts / "nope.parquet")])
    assert _ids(got) == [20220, 20221, 20222, 20223, 20230, 20231, 20232, 20233]


def test_skip_paths_named_missing_path_is_not_looked_for(parts):
    missing = str(parts / "gone.parquet")
    got = md.read_parquet([str(parts / "year=2023" / "part.parquet"), missing], skip_paths=[missing])
    assert _ids(got) == [20230, 20231, 20232, 20233]
    with pytest.raises(ValueError, match="skip_paths"):
        md.read_parquet(str(parts), skip_paths=str(parts)).count()
    with pytest.raises(TypeError, match="skip_paths"):
        md.read_parquet(str(parts), skip_paths=3)


def _ray_row_hashes(path: str, start: int, n: int) -> list:
    # Ray 2.58's documented hash: MD5 seed of the path, plus the row's position, splitmix64.
    seed = int.from_bytes(hashlib.md5(path.encode("utf-8")).digest()[:8], "little")
    out = []
    for i in range(start, start + n):
        z = (seed + i) % 2**64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2**64
        out.append(z ^ (z >> 31))
    return out


def test_include_row_hash_matches_rays_formula(tmp_path):
    path = tmp_path / "t.parquet"
    # Several row groups, so a file is read by more than one task.
    pq.write_table(pa.table({"x": list(range(1000)), "row_hash": [0] * 1000}), path, row_group_size=100)
    ds = md.read_parquet(str(path), include_row_hash=True, include_paths=True, override_num_blocks=5)
    assert ds.schema().names == ["x", "path", "row_hash"]
    table = ds.to_arrow().sort_by("x")
    assert table.schema.field("row_hash").type == pa.uint64()
    file_path = table.column("path")[0].as_py()
    assert table.column("row_hash").to_pylist() == _ray_row_hashes(file_path, 0, 1000)
    # The same on every read.
    again = md.read_parquet(str(path), include_row_hash=True).to_arrow().sort_by("x")
    assert again.column("row_hash").to_pylist() == table.column("row_hash").to_pylist()


def test_row_hash_counts_rows_after_the_filter(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"x": list(range(300))}), path, row_group_size=50)
    ds = md.read_parquet(str(path), include_row_hash=True, include_paths=True, filter="x >= 120",
                         override_num_blocks=4)
    table = ds.to_arrow().sort_by("x")
    assert table.column("x").to_pylist() == list(range(120, 300))
    assert table.column("row_hash").to_pylist() == _ray_row_hashes(table.column("path")[0].as_py(), 0, 180)
    # Selected alone, it is still made.
    only = md.read_parquet(str(path), include_row_hash=True).select_columns(["row_hash"]).to_arrow()
    assert sorted(only.column("row_hash").to_pylist()) == sorted(
        _ray_row_hashes(table.column("path")[0].as_py(), 0, 300))


def test_tensor_column_schema(tmp_path):
    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3) + 10 * i for i in range(5)]
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": list(range(5)), "t": [a.tobytes() for a in arrays]}), path)
    ds = md.read_parquet(str(path), tensor_column_schema={"t": (np.float32, (2, 3))})
    rows = sorted(ds.take_all(), key=lambda r: r["id"])
    for row, expected in zip(rows, arrays):
        assert isinstance(row["t"], np.ndarray)
        np.testing.assert_array_equal(row["t"], expected)
        assert row["t"].dtype == np.float32
    batch = ds.take_batch(5, batch_format="numpy")
    assert batch["t"].shape == (5, 2, 3)
    arrow = ds.to_arrow().column("t").type
    assert isinstance(arrow, pa.FixedShapeTensorType) and list(arrow.shape) == [2, 3]


def test_tensor_column_schema_errors(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"t": [np.zeros(3, np.int64).tobytes(), b"abc"], "s": [1, 2]}), path)
    with pytest.raises(ValueError, match=r"column 't'.*row 1 holds 3 bytes"):
        md.read_parquet(str(path), tensor_column_schema={"t": ("int64", (3,))}).to_arrow()
    with pytest.raises(KeyError, match="'nope' not found"):
        md.read_parquet(str(path), tensor_column_schema={"nope": ("int64", (3,))})
    with pytest.raises(ValueError, match="not binary"):
        md.read_parquet(str(path), tensor_column_schema={"s": ("int64", (1,))}).to_arrow()
    with pytest.raises(TypeError, match="tensor_column_schema"):
        md.read_parquet(str(path), tensor_column_schema={"t": np.int64})


class _Peak:
    """The most calls inside `__call__` at once (each waits a little so overlaps show)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.inside = 0
        self.peak = 0

    def enter(self):
        with self.lock:
            self.inside += 1
            self.peak = max(self.peak, self.inside)
        time.sleep(0.05)
        with self.lock:
            self.inside -= 1


@pytest.fixture
def many_files(tmp_path):
    root = tmp_path / "many"
    root.mkdir()
    for i in range(8):
        pq.write_table(pa.table({"id": [i]}), root / f"f{i}.parquet")
    return root


def test_read_parquet_concurrency_caps_read_tasks(many_files):
    for cap in (1, 2):
        peak = _Peak()

        def fn(batch, peak=peak):
            peak.enter()
            return batch

        # The map is fused into the read tasks, which run at most `cap` at once.
        ds = md.read_parquet(str(many_files), concurrency=cap, override_num_blocks=8).map_batches(fn)
        assert sorted(ds.to_arrow().column("id").to_pylist()) == list(range(8))
        assert 1 <= peak.peak <= cap
    with pytest.raises(ValueError, match="concurrency"):
        md.read_parquet(str(many_files), concurrency=0)


def test_file_reader_concurrency_caps_decoding(tmp_path, monkeypatch):
    root = tmp_path / "npy"
    root.mkdir()
    for i in range(6):
        np.save(root / f"a{i}.npy", np.full((2,), i))
    peak = _Peak()
    load = np.load

    def counted_load(*args, **kwargs):
        peak.enter()
        return load(*args, **kwargs)

    monkeypatch.setattr(np, "load", counted_load)
    ds = md.read_numpy(str(root), concurrency=1, override_num_blocks=6)
    assert sorted(int(r["data"]) for r in ds.take_all()) == sorted([i for i in range(6) for _ in range(2)])
    assert peak.peak == 1


def test_read_datasource_concurrency(tmp_path):
    from millstream.datasource import Datasource, ReadTask, BlockMetadata
    peak = _Peak()

    class Source(Datasource):
        def estimate_inmemory_data_size(self):
            return None

        def get_read_tasks(self, parallelism, **kwargs):
            def make(i):
                def read():
                    peak.enter()
                    yield pa.table({"i": [i]})
                return ReadTask(read, BlockMetadata(num_rows=1, size_bytes=8, input_files=None, exec_stats=None))
            return [make(i) for i in range(6)]

    ds = md.read_datasource(Source(), concurrency=1)
    assert sorted(ds.to_arrow().column("i").to_pylist()) == list(range(6))
    assert peak.peak == 1


def test_write_concurrency_caps_write_tasks(tmp_path):
    peak = _Peak()

    class Names:
        def get_filename_for_task(self, write_uuid, task_index):
            peak.enter()  # called inside each write task as it opens its file
            return f"{write_uuid}_{task_index}.csv"

    md.range(8, override_num_blocks=8).write_csv(str(tmp_path / "out"), filename_provider=Names(),
                                                 concurrency=1)
    assert peak.peak == 1
    import pyarrow.csv as pacsv
    import glob
    got = sorted(v for f in glob.glob(str(tmp_path / "out" / "*.csv"))
                 for v in pacsv.read_csv(f).column("id").to_pylist())
    assert got == list(range(8))
    with pytest.raises(ValueError, match="concurrency"):
        md.range(2).write_parquet(str(tmp_path / "bad"), concurrency=0)


@pytest.mark.parametrize("uri", ["hdfs://namenode/x", "viewfs://cluster/x"])
def test_hdfs_uris_say_why(uri):
    with pytest.raises(NotImplementedError, match="not supported: HDFS needs Hadoop's libhdfs"):
        md.read_parquet(uri)
    with pytest.raises(NotImplementedError, match="not supported: HDFS"):
        md.range(2).write_csv(uri)

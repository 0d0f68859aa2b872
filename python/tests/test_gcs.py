"""Reads and writes on Google Cloud Storage through Arrow's GCS filesystem, against a GCS
emulator (gcp-storage-emulator) on loopback: gs:// URIs with STORAGE_EMULATOR_HOST, and
filesystem= a pyarrow.fs.GcsFileSystem. Expected values from pyarrow on the same bucket."""

from __future__ import annotations

import datetime
import io
import socket

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

import millstream as md
from conftest import new_bucket, object_paths

emulator = pytest.importorskip("gcp_storage_emulator.server")

TABLE = pa.table({"id": pa.array(range(40), pa.int64()), "k": [f"k{i % 4}" for i in range(40)]})


@pytest.fixture(scope="module")
def gcs_endpoint():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = emulator.create_server("127.0.0.1", port, in_memory=True)
    api = server._api

    def run():
        # The emulator serves one connection at a time; the engine opens several at once.
        from functools import partial
        from http.server import ThreadingHTTPServer
        api._httpd = ThreadingHTTPServer(("127.0.0.1", port), partial(emulator.RequestHandler, api._storage))
        api._httpd.daemon_threads = True
        api.is_running.set()
        api._httpd.serve_forever()

    api.run = run
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def gcs(gcs_endpoint, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://{gcs_endpoint}")
    fs = pafs.GcsFileSystem(anonymous=True, scheme="http", endpoint_override=gcs_endpoint,
                            retry_time_limit=datetime.timedelta(seconds=5), project_id="test")
    yield new_bucket(fs), fs


def test_read_what_pyarrow_wrote(gcs):
    bucket, fs = gcs
    with fs.open_output_stream(f"{bucket}/p/k=a/x.parquet") as f:
        pq.write_table(TABLE, f)
    for ds in (md.read_parquet(f"gs://{bucket}/p"), md.read_parquet(f"{bucket}/p", filesystem=fs)):
        got = ds.to_arrow().sort_by("id")
        assert got.column("id").to_pylist() == list(range(40))
    with fs.open_output_stream(f"{bucket}/c/a.csv") as f:
        pacsv.write_csv(TABLE, f)
    assert md.read_csv(f"gs://{bucket}/c").to_arrow().sort_by("id").equals(TABLE)


def test_write_parquet_csv_numpy_and_read_back(gcs):
    bucket, fs = gcs
    md.from_arrow(TABLE).write_parquet(f"gs://{bucket}/out", partition_cols=["k"])
    files = object_paths(fs, f"{bucket}/out")
    assert len(files) == 4 and all("/k=k" in f and "/.tmp-" not in f for f in files)
    back = pa.concat_tables(pq.read_table(f, filesystem=fs) for f in files)
    assert sorted(back.column("id").to_pylist()) == list(range(40))
    md.from_arrow(TABLE).write_csv(f"{bucket}/csv", filesystem=fs)
    (one,) = object_paths(fs, f"{bucket}/csv")
    assert pacsv.read_csv(fs.open_input_stream(one)).equals(TABLE)
    arrays = np.arange(6, dtype=np.int32).reshape(3, 2)
    md.from_numpy(arrays).write_numpy(f"gs://{bucket}/n", column="data")
    (npy,) = object_paths(fs, f"{bucket}/n")
    np.testing.assert_array_equal(np.load(io.BytesIO(fs.open_input_stream(npy).read())), arrays)


def test_failed_write_leaves_no_object(gcs):
    bucket, fs = gcs

    def fail_late(batch):
        if batch["id"][0] >= 50_000:
            raise RuntimeError("boom")
        return batch

    ds = md.range(100_000, override_num_blocks=1).map_batches(fail_late, batch_size=10_000)
    with pytest.raises(RuntimeError, match="boom"):
        ds.write_csv(f"gs://{bucket}/failed")
    assert object_paths(fs, f"{bucket}/failed") == []

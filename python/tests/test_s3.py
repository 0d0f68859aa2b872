"""Reads and writes on S3, against a real S3-protocol server (moto) on loopback: URIs with
credentials and endpoint from the AWS_* environment, and ``filesystem=`` a
pyarrow.fs.S3FileSystem. Expected values come from pyarrow reading and listing the same
bucket."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

import millstream as md
from conftest import S3_KEY, S3_REGION, object_paths

pytest.importorskip("moto.server")  # the s3 fixture (conftest) runs a moto server


def _uploads(fs, bucket):
    """Multipart uploads in progress in the bucket, asked of the server with boto3."""
    import boto3
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    client = boto3.client("s3", endpoint_url=endpoint, region_name=S3_REGION,
                          aws_access_key_id=S3_KEY, aws_secret_access_key=S3_KEY)
    return client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


TABLE = pa.table({"id": pa.array(range(100), pa.int64()), "x": [i * 0.5 for i in range(100)],
                  "s": [f"s{i % 7}" for i in range(100)]})


def test_read_parquet_from_s3_uri_and_filesystem(s3):
    bucket, fs = s3
    for i in range(3):
        pq.write_table(TABLE.slice(i * 30, 30 if i < 2 else 40), f"{bucket}/in/part{i}.parquet", filesystem=fs)
    expected = pq.read_table(f"{bucket}/in", filesystem=fs)
    assert md.read_parquet(f"s3://{bucket}/in").to_arrow().sort_by("id").equals(expected.sort_by("id"))
    got = md.read_parquet(f"{bucket}/in", filesystem=fs, columns=["id"], filter="id >= 95").to_arrow()
    assert got["id"].to_pylist() == [95, 96, 97, 98, 99]
    assert md.read_parquet(f"s3://{bucket}/in").count() == 100
    assert md.read_parquet(f"s3://{bucket}/in").input_files() == object_paths(fs, f"{bucket}/in")


def test_read_csv_json_text_binary_from_s3(s3, tmp_path):
    bucket, fs = s3
    with fs.open_output_stream(f"{bucket}/csv/a.csv") as f:
        pacsv.write_csv(TABLE, f)
    with fs.open_output_stream(f"{bucket}/json/a.jsonl") as f:
        f.write(b'{"a": 1}\n{"a": 2}\n')
    with fs.open_output_stream(f"{bucket}/text/t.txt") as f:
        f.write(b"one\n\ntwo\n")
    assert md.read_csv(f"s3://{bucket}/csv").to_arrow().equals(TABLE)
    assert md.read_json(f"s3://{bucket}/json/").take_all() == [{"a": 1}, {"a": 2}]
    assert [r["text"] for r in md.read_text(f"s3://{bucket}/text/t.txt").take_all()] == ["one", "two"]
    rows = md.read_binary_files(f"{bucket}/text", filesystem=fs, include_paths=True).take_all()
    assert rows == [{"bytes": b"one\n\ntwo\n", "path": f"{bucket}/text/t.txt"}]


def test_listing_globs_and_partitions_on_s3(s3):
    bucket, fs = s3
    for year in (2022, 2023):
        pq.write_table(TABLE.slice(0, 10), f"{bucket}/hive/year={year}/f.parquet", filesystem=fs)
    with fs.open_output_stream(f"{bucket}/hive/_SUCCESS") as f:
        f.write(b"")
    got = md.read_parquet(f"s3://{bucket}/hive").to_arrow()
    assert sorted(set(got["year"].to_pylist())) == ["2022", "2023"] and got.num_rows == 20
    got = md.read_parquet(f"s3://{bucket}/hive/year=2023/*.parquet").to_arrow()
    assert got.num_rows == 10
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        md.read_parquet(f"s3://{bucket}/nothing-here")


def test_write_parquet_to_s3_round_trip(s3):
    bucket, fs = s3
    ds = md.from_arrow(TABLE, override_num_blocks=4)
    ds.write_parquet(f"s3://{bucket}/out")
    objects = object_paths(fs, f"{bucket}/out")
    assert len(objects) == 4 and all(o.endswith(".parquet") for o in objects)
    assert pq.read_table(f"{bucket}/out", filesystem=fs).sort_by("id").equals(TABLE)
    # The same through filesystem= and a path inside the bucket.
    ds.write_csv(f"{bucket}/csv", filesystem=fs)
    back = pa.concat_tables([pacsv.read_csv(fs.open_input_stream(o)) for o in object_paths(fs, f"{bucket}/csv")])
    assert back.sort_by("id").equals(TABLE)
    assert _uploads(fs, bucket) == []


def test_partitioned_write_to_s3(s3):
    bucket, fs = s3
    md.from_arrow(TABLE).write_parquet(f"s3://{bucket}/parts", partition_cols=["s"])
    dirs = {o.split("/")[2] for o in object_paths(fs, f"{bucket}/parts")}
    assert dirs == {f"s=s{i}" for i in range(7)}
    back = pq.read_table(f"{bucket}/parts", filesystem=fs, partitioning="hive")
    assert back.num_rows == 100
    assert sorted(zip(back["id"].to_pylist(), map(str, back["s"].to_pylist()))) == \
        sorted(zip(TABLE["id"].to_pylist(), TABLE["s"].to_pylist()))


def test_save_modes_on_s3(s3):
    bucket, fs = s3
    md.range(5).write_json(f"s3://{bucket}/m")
    first = object_paths(fs, f"{bucket}/m")
    md.range(5).write_json(f"s3://{bucket}/m", mode="append")
    assert len(object_paths(fs, f"{bucket}/m")) == 2 * len(first)
    md.range(3).write_json(f"s3://{bucket}/m", mode="overwrite")
    after = object_paths(fs, f"{bucket}/m")
    assert not set(after) & set(first)
    assert sum(len(fs.open_input_stream(o).read().splitlines()) for o in after) == 3
    with pytest.raises(ValueError, match="already exists"):
        md.range(3).write_json(f"s3://{bucket}/m", mode="error")
    md.range(3).write_json(f"s3://{bucket}/m", mode="ignore")
    assert object_paths(fs, f"{bucket}/m") == after


def test_failed_write_leaves_no_object_and_no_upload(s3):
    bucket, fs = s3

    def fail_late(batch):
        if batch["id"][0] >= 50_000:
            raise RuntimeError("boom in the middle of a task")
        return batch

    # Large enough that each file's upload is under way (multipart) when the task fails.
    ds = md.range(100_000, override_num_blocks=1).map_batches(
        lambda b: {**b, "pad": np.full(len(b["id"]), "x" * 200)}, batch_size=10_000).map_batches(
        fail_late, batch_size=10_000)
    with pytest.raises(RuntimeError, match="boom"):
        ds.write_csv(f"s3://{bucket}/failed")
    assert object_paths(fs, f"{bucket}/failed") == []
    assert _uploads(fs, bucket) == []


def test_unsupported_filesystems_and_schemes(s3):
    bucket, fs = s3
    with pytest.raises(NotImplementedError, match="SubTreeFileSystem"):
        md.read_parquet("x", filesystem=pafs.SubTreeFileSystem(bucket, fs))
    with pytest.raises(NotImplementedError, match="scheme 'abfs'"):
        md.read_csv("abfs://bucket/x.csv")


def test_write_numpy_and_images_to_s3(s3):
    bucket, fs = s3
    arrays = np.arange(24, dtype=np.int16).reshape(4, 3, 2)
    md.from_numpy(arrays).write_numpy(f"s3://{bucket}/n", column="data")
    objects = object_paths(fs, f"{bucket}/n")
    assert objects and all(o.endswith(".npy") for o in objects)
    import io
    got = np.concatenate([np.load(io.BytesIO(fs.open_input_file(o).read())) for o in objects])
    np.testing.assert_array_equal(got, arrays)
    # filesystem= with bucket/key paths; gzip through arrow_open_stream_args.
    md.from_numpy(arrays).write_numpy(f"{bucket}/gz", column="data", filesystem=fs,
                                      arrow_open_stream_args={"compression": "gzip"})
    import gzip
    (one,) = object_paths(fs, f"{bucket}/gz")
    np.testing.assert_array_equal(np.load(io.BytesIO(gzip.decompress(fs.open_input_file(one).read()))), arrays)
    from PIL import Image
    images = [np.full((4, 5, 3), i * 40, np.uint8) for i in range(3)]
    md.from_items([{"image": im} for im in images]).write_images(f"s3://{bucket}/img", column="image")
    found = object_paths(fs, f"{bucket}/img")
    assert len(found) == 3
    decoded = sorted(int(np.asarray(Image.open(io.BytesIO(fs.open_input_file(o).read())))[0, 0, 0]) for o in found)
    assert decoded == [0, 40, 80]
    assert _uploads(fs, bucket) == []


def test_write_images_to_s3_stops_at_a_bad_row_leaving_no_object_for_it(s3):
    bucket, fs = s3
    rows = [{"image": np.zeros((2, 2, 3), np.uint8)}, {"image": np.zeros((2, 2, 7), np.uint8)}]
    with pytest.raises(ValueError, match="cannot be written as png"):
        md.from_items(rows, override_num_blocks=1).write_images(f"s3://{bucket}/bad", column="image")
    assert len(object_paths(fs, f"{bucket}/bad")) == 1
    assert _uploads(fs, bucket) == []


def test_interpreter_exits_cleanly_with_an_s3_read_in_progress(s3, tmp_path):
    # S3 is finalized at exit, after the engine's executions are stopped: a process that
    # leaves an S3 read unfinished exits with status 0 and no crash.
    import subprocess
    import sys
    bucket, fs = s3
    pq.write_table(TABLE, f"{bucket}/exit/f.parquet", filesystem=fs)
    script = (f"import millstream as md\n"
              f"it = iter(md.read_parquet('s3://{bucket}/exit').iter_batches(batch_size=10))\n"
              f"print(len(next(it)['id']))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "10"

"""The requests a Parquet read makes of an S3-protocol server (moto on loopback, in this
process, so its request handler can be wrapped and counted): a small file is fetched once
(its footer read brings the whole file, and its read task decodes those bytes), and the
column chunks a task reads from one file are merged into one request. Expected rows come
from pyarrow reading the same objects."""

from __future__ import annotations

import collections
import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import millstream as md

pytest.importorskip("moto.server")  # the s3 fixture (conftest) runs a moto server
moto_responses = pytest.importorskip("moto.s3.responses")


@pytest.fixture
def s3(s3, monkeypatch):
    """conftest's fresh bucket (the environment pointing at the server), and a counter of the
    object requests the server answers: yields (bucket, pyarrow fs, requests),
    requests[(method, key)]."""
    bucket, fs = s3
    requests: collections.Counter = collections.Counter()
    lock = threading.Lock()
    original = moto_responses.S3Response.key_response

    def counted(self, request, full_url, headers):
        with lock:
            requests[(request.method, full_url.split("?")[0].rsplit("/", 1)[-1])] += 1
        return original(self, request, full_url, headers)

    monkeypatch.setattr(moto_responses.S3Response, "key_response", counted)
    yield bucket, fs, requests


def _file_requests(requests):
    """The requests on .parquet objects (the listing's requests on the prefix left out)."""
    return {key: n for key, n in requests.items() if key[1].endswith(".parquet")}


def test_small_files_are_fetched_once_each(s3):
    bucket, fs, requests = s3
    rng = np.random.default_rng(7)
    tables = []
    for i in range(6):
        t = pa.table({"id": np.arange(i * 100, (i + 1) * 100), "x": rng.random(100)})
        pq.write_table(t, f"{bucket}/small/f{i}.parquet", filesystem=fs)
        tables.append(t)
    expected = pq.read_table(f"{bucket}/small", filesystem=fs).sort_by("id")
    requests.clear()
    got = md.read_parquet(f"s3://{bucket}/small").to_arrow().sort_by("id")
    assert got.equals(expected)
    assert got.num_rows == sum(t.num_rows for t in tables)
    # One GET per file (footer and data together), no HEAD: the listing gave the sizes.
    assert _file_requests(requests) == {("GET", f"f{i}.parquet"): 1 for i in range(6)}


def test_a_task_fetches_its_column_chunks_in_one_request(s3):
    bucket, fs, requests = s3
    rng = np.random.default_rng(3)
    n = 80_000
    # Four row groups; b lies between a and c in every one, tens of KiB each (more than
    # Arrow's default 8 KiB hole, less than the 1 MiB merged across on an object store).
    table = pa.table({"a": rng.integers(0, 1 << 60, n), "b": rng.integers(0, 100, n).astype(np.int8),
                      "c": rng.random(n)})
    pq.write_table(table, f"{bucket}/big/f.parquet", filesystem=fs, row_group_size=n // 4)
    assert fs.get_file_info(f"{bucket}/big/f.parquet").size > 64 * 1024
    expected = pq.read_table(f"{bucket}/big/f.parquet", filesystem=fs, columns=["a", "c"])
    requests.clear()
    got = md.read_parquet(f"s3://{bucket}/big", columns=["a", "c"], override_num_blocks=1).to_arrow()
    assert got.equals(expected)
    # The footer, then the data of all four row groups in one request (not one per chunk).
    assert _file_requests(requests) == {("GET", "f.parquet"): 2}

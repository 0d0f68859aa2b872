"""Shared fixtures for the millstream test suite.

Every expected value in this suite is computed by a reference library (pyarrow, pandas,
numpy) on the same input, never copied from millstream's own output.
"""

from __future__ import annotations

import copy
import dataclasses
import faulthandler
import os
import signal
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

import millstream as md

# A test that hangs kills the run (with every thread's traceback) instead of blocking CI.
PER_TEST_TIMEOUT_S = 45


_config = None
_stderr_fd = None


def pytest_configure(config):
    global _config
    _config = config
    # The Ctrl-C tests simulate SIGINT (_thread.interrupt_main), which does nothing when
    # SIGINT is ignored, as it is for a command started in the background by a shell.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _real_stderr_fd() -> int:
    """A copy of the terminal's stderr: pytest redirects fd 2 while it captures output."""
    try:
        capman = _config.pluginmanager.getplugin("capturemanager")
        return os.dup(capman._global_capturing.err.targetfd_save)
    except Exception:
        return os.dup(2)


@pytest.fixture(autouse=True)
def _no_hang():
    global _stderr_fd
    if _stderr_fd is None:
        _stderr_fd = _real_stderr_fd()
    faulthandler.dump_traceback_later(PER_TEST_TIMEOUT_S, exit=True, file=_stderr_fd)
    yield
    faulthandler.cancel_dump_traceback_later()


def allow_seconds(seconds: float) -> None:
    """Gives the running test ``seconds`` (from now) instead of PER_TEST_TIMEOUT_S: for a
    test that waits on something slow by design (a Ray cluster's raylets on a loaded
    machine) and has a deadline of its own below ``seconds``."""
    faulthandler.dump_traceback_later(seconds, exit=True, file=_stderr_fd)


def _snapshot(obj):
    return {f.name: copy.deepcopy(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


@pytest.fixture(autouse=True)
def restore_context():
    """Restores the process-wide DataContext (in place) after every test."""
    ctx = md.DataContext.get_current()
    saved = _snapshot(ctx)
    yield ctx
    current = md.DataContext.get_current()
    for name, value in saved.items():
        object.__setattr__(current, name, copy.deepcopy(value))
    if current is not ctx:  # a test replaced the singleton: put the original back
        for name, value in saved.items():
            object.__setattr__(ctx, name, copy.deepcopy(value))
        md.DataContext._set_current(ctx)


@pytest.fixture
def ctx():
    return md.DataContext.get_current()


# ---- reference data -----------------------------------------------------------------


def make_table(n: int, seed: int = 0, start: int = 0) -> pa.Table:
    """Mixed-type rows; "key" is unique (start..start+n) so results can be sorted."""
    rng = np.random.default_rng(seed)
    cats = np.array(["a", "b", "c", "d"])
    return pa.table({
        "key": np.arange(start, start + n, dtype=np.int64),
        "qty": rng.integers(0, 100, n).astype(np.int32),
        "price": np.round(rng.random(n) * 100, 3),
        "cat": pa.array(cats[rng.integers(0, 4, n)]),
    })


def sort_table(table: pa.Table, key: str = "key") -> pa.Table:
    return table.sort_by(key)


def assert_tables_equal(actual: pa.Table, expected: pa.Table, key: str | None = "key"):
    """Same schema names/types and same rows (order-insensitive when key is given)."""
    assert actual.column_names == expected.column_names
    if key is not None:
        actual, expected = actual.sort_by(key), expected.sort_by(key)
    actual = actual.combine_chunks()
    expected = expected.combine_chunks()
    assert actual.schema.types == expected.schema.types, (actual.schema, expected.schema)
    assert actual.num_rows == expected.num_rows
    assert actual.equals(expected), (actual.slice(0, 5).to_pydict(), expected.slice(0, 5).to_pydict())


def sorted_rows(rows, key="key"):
    return sorted(rows, key=lambda r: r[key])


@pytest.fixture
def parquet_dir(tmp_path):
    """A directory of Parquet files, nested, with hidden/underscore decoys.

    Returns (directory, expected pyarrow Table of the visible files).
    """
    root = tmp_path / "data"
    (root / "sub" / "deeper").mkdir(parents=True)
    parts = []
    layout = [
        root / "part-000.parquet",
        root / "part-001.parquet",
        root / "sub" / "part-002.parquet",
        root / "sub" / "deeper" / "part-003.parquet",
    ]
    for i, path in enumerate(layout):
        t = make_table(250, seed=i, start=i * 250)
        pq.write_table(t, path, row_group_size=50)
        parts.append(t)
    # Decoys a reader must skip: hidden temp files, hidden dirs, _SUCCESS markers.
    decoy = make_table(17, seed=99, start=10_000)
    pq.write_table(decoy, root / ".tmp-part-004.parquet")
    (root / ".tmp-partial.parquet").write_bytes(b"PAR1 this is not a complete parquet file")
    (root / ".hidden").mkdir()
    pq.write_table(decoy, root / ".hidden" / "part-005.parquet")
    (root / "_SUCCESS").write_bytes(b"")
    (root / "sub" / "_SUCCESS").write_bytes(b"")
    return root, pa.concat_tables(parts)


def visible_files(directory) -> list[str]:
    """Files a reader would load: no path component starting with '.' or '_'."""
    out = []
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = [d for d in dirnames if not d.startswith((".", "_"))]
        out += [os.path.join(dirpath, f) for f in filenames if not f.startswith((".", "_"))]
    return sorted(out)


def all_files(directory) -> list[str]:
    out = []
    for dirpath, _, filenames in os.walk(directory):
        out += [os.path.join(dirpath, f) for f in filenames]
    return sorted(out)


class ConcurrencyProbe:
    """A batch function that sleeps and records how many of its calls ran at once."""

    def __init__(self, seconds=0.01):
        import threading

        self.seconds, self.lock, self.running, self.peak = seconds, threading.Lock(), 0, 0
        self.__name__ = "probe"

    def __call__(self, batch):
        import time

        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        time.sleep(self.seconds)
        with self.lock:
            self.running -= 1
        return batch


# ---- object stores ------------------------------------------------------------------


def new_bucket(fs) -> str:
    """Creates a bucket of a fresh name on ``fs`` (S3, GCS) and returns the name."""
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    fs.create_dir(bucket)
    return bucket


def object_paths(fs, prefix: str) -> list[str]:
    """The objects under ``prefix`` on ``fs``, at any depth, sorted (none if nothing is there)."""
    infos = fs.get_file_info(pafs.FileSelector(prefix, recursive=True, allow_not_found=True))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File)


# An S3-protocol server (moto) on loopback.
# The modules that use these skip themselves when moto is missing (importorskip).

S3_REGION = "us-east-1"
S3_KEY = "testing"  # moto accepts any credentials: the access key and the secret both


@pytest.fixture(scope="module")
def s3_endpoint():
    """A moto server on 127.0.0.1 and a free port, one per test module: its http://host:port."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def point_aws_at(monkeypatch, endpoint: str) -> None:
    """Points s3:// URIs at ``endpoint``: the AWS_* environment, for the test's duration."""
    for key, value in {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_KEY,
                       "AWS_REGION": S3_REGION, "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)


def s3_filesystem(endpoint: str) -> pafs.S3FileSystem:
    """A pyarrow S3 filesystem on ``endpoint``, allowed to create and delete buckets."""
    return pafs.S3FileSystem(endpoint_override=endpoint, access_key=S3_KEY, secret_key=S3_KEY,
                             region=S3_REGION, allow_bucket_creation=True, allow_bucket_deletion=True)


@pytest.fixture
def s3(s3_endpoint, monkeypatch):
    """A fresh bucket; the environment points at the server. Yields (bucket, pyarrow fs)."""
    point_aws_at(monkeypatch, s3_endpoint)
    fs = s3_filesystem(s3_endpoint)
    yield new_bucket(fs), fs

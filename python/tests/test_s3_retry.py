"""Transient S3 errors are retried (DataContext.retried_io_errors, for reads and writes,
as in Ray 2.58): a proxy on loopback between the engine and a real
S3-protocol server (moto) fails a share of the requests (503 SlowDown) and cuts some
responses short; the rows read and the objects written equal those of a fault-free run."""

from __future__ import annotations

import http.client
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

import millstream as md
from conftest import new_bucket, point_aws_at, s3_filesystem

pytest.importorskip("moto.server")  # the s3_endpoint fixture (conftest) runs a moto server

SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
             b"<Message>Please reduce your request rate.</Message></Error>")


ACCESS_DENIED = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
                 b"<Message>Access Denied (injected)</Message></Error>")


class FaultyProxy:
    """Forwards HTTP requests to `upstream`; request n (counted from 1) fails with 503
    SlowDown when n % fail_every == 0, and a GET response with a body is cut to half its
    length (the connection then closed) when n % cut_every == 0."""

    def __init__(self, upstream_port: int, fail_every: int = 4, cut_every: int = 7):
        proxy = self
        self.outage_s = 0.0  # when set: every request fails for this long from the next one
        self.outage_start = None
        self.deny_writes = 0  # the next this many PUT/POST requests get 403 AccessDenied
        self.count = 0
        self.failed = 0
        self.cut = 0
        self.lock = threading.Lock()
        self.enabled = True

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", ""):
                    data = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return data
                        data += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))

            def _handle(self):
                body = self._body()
                with proxy.lock:
                    proxy.count += 1
                    n = proxy.count
                    fail = proxy.enabled and n % fail_every == 0
                    if proxy.outage_s:
                        now = time.monotonic()
                        proxy.outage_start = proxy.outage_start or now
                        fail = now < proxy.outage_start + proxy.outage_s
                    cut = proxy.enabled and n % cut_every == 0 and self.command == "GET"
                with proxy.lock:
                    deny = proxy.deny_writes > 0 and self.command in ("PUT", "POST")
                    if deny:
                        proxy.deny_writes -= 1
                if deny:
                    self.send_response(403)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(ACCESS_DENIED)))
                    self.end_headers()
                    self.wfile.write(ACCESS_DENIED)
                    return
                if fail:
                    with proxy.lock:
                        proxy.failed += 1
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(SLOW_DOWN)))
                    self.end_headers()
                    self.wfile.write(SLOW_DOWN)
                    return
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("transfer-encoding", "connection", "content-length")}
                headers["Content-Length"] = str(len(body))
                upstream = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=30)
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                upstream.close()
                self.send_response(response.status)
                for k, v in response.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                        self.send_header(k, v)
                length = response.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
                self.send_header("Content-Length", length or "0")
                if cut and len(data) > 64:
                    with proxy.lock:
                        proxy.cut += 1
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def faulty(s3_endpoint, monkeypatch):
    """(bucket, direct pyarrow fs, proxy); URIs go through the proxy."""
    proxy = FaultyProxy(urllib.parse.urlsplit(s3_endpoint).port)
    point_aws_at(monkeypatch, f"http://127.0.0.1:{proxy.port}")
    direct = s3_filesystem(s3_endpoint)
    yield new_bucket(direct), direct, proxy
    proxy.close()


TABLE = pa.table({"id": list(range(2000)), "s": [f"value-{i % 13}" for i in range(2000)]})


def test_reads_are_retried_and_complete(faulty):
    bucket, direct, proxy = faulty
    for i in range(8):
        part = TABLE.slice(i * 250, 250)
        with direct.open_output_stream(f"{bucket}/csv/p{i}.csv") as f:
            pacsv.write_csv(part, f)
        pq.write_table(part, f"{bucket}/pq/p{i}.parquet", filesystem=direct)
    got = md.read_csv(f"s3://{bucket}/csv").to_arrow()
    assert got.sort_by("id").equals(TABLE)
    got = md.read_parquet(f"s3://{bucket}/pq").to_arrow()
    assert got.sort_by("id").equals(TABLE)
    assert proxy.failed > 0 and proxy.cut > 0


@pytest.mark.parametrize("retried", [True, False])
def test_an_outage_longer_than_the_clients_own_retries(faulty, retried):
    # The S3 client retries a failed request itself for a couple of seconds; an outage
    # longer than that reaches the engine, which reads the file again after a backoff
    # when the error is one of DataContext.retried_io_errors (Ray's defaults name 503).
    bucket, direct, proxy = faulty
    with direct.open_output_stream(f"{bucket}/csv/p.csv") as f:
        pacsv.write_csv(TABLE, f)
    context = md.DataContext.get_current()
    saved = context.retried_io_errors
    if not retried:
        context.retried_io_errors = []
    try:
        ds = md.read_csv(f"s3://{bucket}/csv")
        proxy.outage_s = 8.0
        if retried:
            assert ds.to_arrow().equals(TABLE)
        else:
            with pytest.raises(OSError, match=r"p\.csv.*503"):
                ds.to_arrow()
    finally:
        context.retried_io_errors = saved


def test_writes_are_retried_and_complete(faulty):
    bucket, direct, proxy = faulty
    md.from_arrow(TABLE, override_num_blocks=4).write_parquet(f"s3://{bucket}/out")
    proxy.enabled = False
    objects = [i.path for i in direct.get_file_info(pafs.FileSelector(f"{bucket}/out", recursive=True))]
    assert len(objects) == 4
    assert pq.read_table(f"{bucket}/out", filesystem=direct).sort_by("id").equals(TABLE)
    assert proxy.failed > 0


def test_writes_through_an_outage(faulty):
    bucket, direct, proxy = faulty
    proxy.enabled = False

    def outage_midway(batch):
        if batch["id"][0] == 1000:
            proxy.outage_s = 3.0
        return batch

    md.from_arrow(TABLE).map_batches(outage_midway, batch_size=500).write_csv(f"s3://{bucket}/w",
                                                                             min_rows_per_file=2000)
    proxy.outage_s = 0.0
    objects = [i.path for i in direct.get_file_info(pafs.FileSelector(f"{bucket}/w", recursive=True, allow_not_found=True))]
    back = pa.concat_tables([pacsv.read_csv(direct.open_input_stream(o)) for o in objects])
    assert back.sort_by("id").equals(TABLE)


@pytest.mark.parametrize("retried", [True, False])
def test_a_failed_upload_is_uploaded_again_on_a_retried_error(faulty, retried):
    # The client does not retry AccessDenied; the engine does when retried_io_errors names
    # it: the file's upload starts again from its first row, and one complete object results.
    bucket, direct, proxy = faulty
    proxy.enabled = False
    context = md.DataContext.get_current()
    context.retried_io_errors = list(context.retried_io_errors) + (["AWS Error ACCESS_DENIED"] if retried else [])
    proxy.deny_writes = 2
    ds = md.from_arrow(TABLE, override_num_blocks=1)
    if retried:
        ds.write_parquet(f"s3://{bucket}/w")
        objects = [i.path for i in direct.get_file_info(pafs.FileSelector(f"{bucket}/w", recursive=True, allow_not_found=True))]
        assert len(objects) == 1
        assert pq.read_table(objects[0], filesystem=direct).equals(TABLE)
        assert proxy.deny_writes == 0  # both refusals were met, and retried
    else:
        with pytest.raises(OSError, match="AccessDenied|ACCESS_DENIED"):
            ds.write_parquet(f"s3://{bucket}/w")
        assert [i.path for i in direct.get_file_info(pafs.FileSelector(f"{bucket}/w", recursive=True, allow_not_found=True))] == []


def test_streaming_read_buffer_size_sets_the_request_size(faulty):
    # A CSV read in small blocks makes one request per block unless the stream reads ahead
    # DataContext.streaming_read_buffer_size bytes at a time.
    bucket, direct, proxy = faulty
    proxy.enabled = False
    big = pa.table({"id": list(range(100_000)), "s": ["x" * 20] * 100_000})
    with direct.open_output_stream(f"{bucket}/big/a.csv") as f:
        pacsv.write_csv(big, f)
    small_blocks = pacsv.ReadOptions(block_size=64 << 10)
    counts = {}
    for size in (32 << 20, 64 << 10):
        md.DataContext.get_current().streaming_read_buffer_size = size
        before = proxy.count
        assert md.read_csv(f"s3://{bucket}/big", read_options=small_blocks).count() == 100_000
        counts[size] = proxy.count - before
    assert counts[32 << 20] < 8 < counts[64 << 10]

"""CSV scan and S3 read, millstream beside pyarrow (and Ray Data where it imports), in one run.

    python bench/io_formats.py [--csv-dir DIR] [--repeats 3] [--no-s3]

CSV: every `*.csv` in --csv-dir (default: the quick data's Parquet written as CSV into
bench/.data/io_csv/, made once) scanned by pyarrow.csv.read_csv per file, by
`md.read_csv(dir)` iterated as Arrow batches, and by `ray.data.read_csv(dir)`.
S3: the same Parquet files uploaded to a moto server on loopback, read by
`md.read_parquet("s3://...")`, and read from local disk and from the server by
`pyarrow.dataset` (the target compares millstream on S3 with pyarrow.dataset on local disk).
Best of --repeats, with the load average printed (the machine may be shared).
"""

from __future__ import annotations

import argparse
import glob
import os
import time
import uuid

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))


def best(fn, repeats):
    times, rows = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        rows = fn()
        times.append(time.perf_counter() - t)
    return min(times), rows


def csv_data(parquet_dir: str, out: str) -> str:
    if glob.glob(os.path.join(out, "*.csv")):
        return out
    os.makedirs(out, exist_ok=True)
    for i, f in enumerate(sorted(glob.glob(os.path.join(parquet_dir, "**", "*.parquet"), recursive=True))[:8]):
        pacsv.write_csv(pq.read_table(f), os.path.join(out, f"f{i}.csv"))
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--parquet-dir", default=os.path.join(HERE, ".data", "quick", "main"))
    p.add_argument("--csv-dir", default=None)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-s3", action="store_true")
    args = p.parse_args()
    import millstream as md
    try:
        import ray.data as rd
    except ImportError:
        rd = None
    print(f"load average: {os.getloadavg()}")
    csv_dir = args.csv_dir or csv_data(args.parquet_dir, os.path.join(HERE, ".data", "io_csv"))
    files = sorted(glob.glob(os.path.join(csv_dir, "*.csv")))
    runs = {
        "pyarrow.csv": lambda: sum(pacsv.read_csv(f).num_rows for f in files),
        "millstream": lambda: sum(b.num_rows for b in md.read_csv(csv_dir).iter_batches(
            batch_size=None, batch_format="pyarrow")),
    }
    if rd is not None:
        runs["ray"] = lambda: rd.read_csv(csv_dir).count()
    base = None
    for name, fn in runs.items():
        t, rows = best(fn, args.repeats)
        base = base or t
        print(f"csv scan  {name:12s} {t:7.3f} s  rows={rows}  speed vs pyarrow.csv: {base / t:.2f}x")
    if args.no_s3:
        return
    import logging
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    from moto.server import ThreadedMotoServer
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_REGION="us-east-1",
                      AWS_ENDPOINT_URL=endpoint)
    try:
        fs = pafs.S3FileSystem(endpoint_override=endpoint, access_key="testing", secret_key="testing",
                               region="us-east-1", allow_bucket_creation=True)
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        fs.create_dir(bucket)
        local = sorted(glob.glob(os.path.join(args.parquet_dir, "**", "*.parquet"), recursive=True))[:8]
        for i, f in enumerate(local):
            pafs.copy_files(f, f"{bucket}/p/f{i}.parquet", destination_filesystem=fs)
        local_dir = os.path.dirname(local[0])
        runs = {
            "pyarrow.dataset local": lambda: pads.dataset(local, format="parquet").to_table().num_rows,
            "pyarrow.dataset s3": lambda: pads.dataset(f"{bucket}/p", format="parquet",
                                                       filesystem=fs).to_table().num_rows,
            "millstream s3": lambda: sum(b.num_rows for b in md.read_parquet(f"s3://{bucket}/p").iter_batches(
                batch_size=None, batch_format="pyarrow")),
        }
        base = None
        for name, fn in runs.items():
            t, rows = best(fn, args.repeats)
            base = base or t
            print(f"parquet   {name:22s} {t:7.3f} s  rows={rows}  speed vs local pyarrow.dataset: {base / t:.2f}x")
        del local_dir
    finally:
        server.stop()


if __name__ == "__main__":
    main()

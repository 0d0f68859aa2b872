"""The ``millstream`` command: ``millstream demo`` streams a sample ETL pipeline."""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


def _generate(directory: str, rows: int, files: int) -> None:
    """Deterministic sample orders: ``rows`` rows over ``files`` Parquet files."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(42)
    categories = np.array(["books", "games", "garden", "music", "tools", "toys"])
    per_file = rows // files
    for i in range(files):
        start = i * per_file
        n = per_file if i < files - 1 else rows - start
        table = pa.table({
            "order_id": np.arange(start, start + n, dtype=np.int64),
            "user_id": rng.integers(0, 1_000_000, n, dtype=np.int64),
            "price": np.round(rng.gamma(2.0, 20.0, n), 2),
            "quantity": rng.integers(1, 10, n, dtype=np.int32),
            "category": pa.array(categories[rng.integers(0, len(categories), n)]),
            "ts": rng.integers(1_600_000_000, 1_700_000_000, n, dtype=np.int64),
        })
        pq.write_table(table, os.path.join(directory, f"orders-{i:03d}.parquet"), row_group_size=256 * 1024)


def _demo(args: argparse.Namespace) -> int:
    import millstream as md

    data_dir = os.path.join(args.dir, "orders")
    out_dir = os.path.join(args.dir, "revenue")
    if not os.path.isdir(data_dir) or not any(f.endswith(".parquet") for f in os.listdir(data_dir)):
        print(f"Generating {args.rows:,} sample orders into {data_dir} ...", flush=True)
        t = time.perf_counter()
        _generate(data_dir, args.rows, args.files)
        size = sum(os.path.getsize(os.path.join(data_dir, f)) for f in os.listdir(data_dir))
        print(f"  {size / 2**20:.0f} MiB of Parquet in {time.perf_counter() - t:.1f} s", flush=True)
    shutil.rmtree(out_dir, ignore_errors=True)

    def add_revenue(batch: dict) -> dict:
        batch["revenue"] = batch["price"] * batch["quantity"]
        batch["discounted"] = np.where(batch["quantity"] >= 5, batch["revenue"] * 0.9, batch["revenue"])
        return batch

    ds = (
        md.read_parquet(data_dir, columns=["order_id", "price", "quantity", "category"])
        .filter(expr="quantity >= 3")
        .map_batches(add_revenue, batch_format="numpy")
    )
    print("\nPipeline:")
    ds.explain()
    t = time.perf_counter()
    ds.write_parquet(out_dir)
    wall = time.perf_counter() - t
    print("\nExecution stats:")
    print(ds.stats())

    result = md.read_parquet(out_dir)
    written = result.count()
    total = pc.sum(pq.read_table(out_dir, columns=["discounted"])["discounted"]).as_py()
    source = pq.read_table(data_dir, columns=["price", "quantity"])
    kept = pc.greater_equal(source["quantity"], 3)
    expected_rows = pc.sum(kept.cast(pa.int64())).as_py()
    print("Sample of the output:")
    result.show(3)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nSummary: {args.rows:,} rows read, {written:,} written to {out_dir} "
          f"(pyarrow counts {expected_rows:,}), total discounted revenue {total:,.2f}")
    print(f"         {wall:.2f} s, {args.rows / wall / 1e6:.1f} M rows/s, peak RSS {peak_mib:.0f} MiB")
    return 0 if written == expected_rows else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="millstream", description="millstream command line")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="generate sample Parquet data and stream an ETL pipeline over it")
    demo.add_argument("--dir", default="millstream-demo", help="where to put the data (default ./millstream-demo)")
    demo.add_argument("--rows", type=int, default=12_000_000, help="rows of sample data (default 12M, ~300 MB)")
    demo.add_argument("--files", type=int, default=16, help="number of Parquet files")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _demo(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())

"""Peak memory of a group-by with many distinct keys under a small memory limit.

Generates Parquet (N rows, N distinct int64 keys in random order, an int64 value) in a
temporary folder, then runs ``groupby("k").aggregate(Sum("v"), Count())`` in a fresh child
process with ``object_store_memory`` set to the limit, consuming the result batch by
batch and checking it (every key once, count 1, sum = the value). The child reports its
peak RSS (``ru_maxrss``) and its RSS before the pipeline; the parent also samples the
child's RSS every 50 ms with psutil.

    python bench/groupby_many_keys.py                      # 10M keys, 256 MiB
    python bench/groupby_many_keys.py --rows 1000000 --limit-mib 64
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def generate(folder: str, rows: int, files: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    keys = rng.permutation(rows).astype(np.int64)
    per = (rows + files - 1) // files
    for i in range(files):
        k = keys[i * per:(i + 1) * per]
        pq.write_table(pa.table({"k": k, "v": k * 3 + 1}), os.path.join(folder, f"part-{i:03d}.parquet"),
                       row_group_size=1 << 20)


def child(folder: str, limit_mib: int, rows: int) -> None:
    import resource

    import numpy as np
    import psutil

    import millstream as md
    from millstream.aggregate import Count, Sum

    ctx = md.DataContext.get_current()
    ctx.execution_options.resource_limits.object_store_memory = limit_mib << 20
    base = psutil.Process().memory_info().rss
    start = time.perf_counter()
    ds = md.read_parquet(folder).groupby("k").aggregate(Sum("v"), Count())
    seen, previous, ok = 0, -1, True
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        k, s, c = batch["k"], batch["sum(v)"], batch["count()"]
        ok &= bool(np.all(c == 1) and np.all(s == k * 3 + 1) and (len(k) == 0 or (k[0] > previous and np.all(np.diff(k) > 0))))
        if len(k):
            previous = int(k[-1])
        seen += len(k)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    stats = ds._last_stats.operators if ds._last_stats else []
    spilled = sum(op.spilled_bytes for op in stats)
    print(json.dumps({"rows": seen, "correct": ok and seen == rows, "wall_s": round(wall, 2),
                      "rss_before_mb": round(base / 2**20), "peak_rss_mb": round(peak / 2**20),
                      "spilled_mb": round(spilled / 2**20)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--limit-mib", type=int, default=256)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.limit_mib, args.rows)
        return
    import psutil

    with tempfile.TemporaryDirectory() as folder:
        generate(folder, args.rows, args.files)
        proc = subprocess.Popen([sys.executable, __file__, "--child", folder, "--rows", str(args.rows),
                                 "--limit-mib", str(args.limit_mib)], stdout=subprocess.PIPE, text=True)
        sampled = 0
        ps = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                sampled = max(sampled, ps.memory_info().rss)
            except psutil.NoSuchProcess:
                break
            time.sleep(0.05)
        out = proc.stdout.read()
        if proc.returncode != 0:
            sys.exit(f"the child failed (exit {proc.returncode}): {out}")
        result = json.loads(out.strip().splitlines()[-1])
        result["sampled_peak_rss_mb"] = round(sampled / 2**20)
        result["limit_mb"] = args.limit_mib
        result["budget_mb"] = args.limit_mib + 300
        print(json.dumps(result))


if __name__ == "__main__":
    main()

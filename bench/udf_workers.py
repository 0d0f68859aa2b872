"""Python UDFs on threads vs worker processes (DataContext.python_udf_workers).

    python bench/udf_workers.py                 # both measures, 3 repeats, median
    python bench/udf_workers.py --rows 400000 --repeats 5

1. A pure-Python row UDF (``map``) that keeps the GIL busy: wall time on threads and on
   processes, and the speed-up (the target on 2 cores is >= 1.8x). The CPU seconds of
   this process and its (waited-for) worker processes show where the work ran.
2. Task overhead per block: an identity ``map_batches`` over one-row blocks, run with N
   and 3N blocks; the difference in wall time over 2N is the cost of one more block
   (start-up cancels out), for both modes (the process figure includes the round trip
   through shared memory: write, socket message, map, write back, map). What is left of
   the N-block run is reported as the start-up (the workers' interpreters). Measured
   again with ``--fused`` (3) identity maps fused into one operator: one call into
   Python, or one round trip to a worker, per block for all of them.

Each timed run includes starting the workers (they live for one execution). Answers are
checked against values computed here.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import millstream as md


def busy(row):
    """About 100 µs of pure-Python arithmetic per row."""
    x = row["id"]
    acc = 0
    for k in range(300):
        acc = (acc + x * k) % 1000003
    return {"id": x, "acc": acc}


def reference_acc(x: int) -> int:
    acc = 0
    for k in range(300):
        acc = (acc + x * k) % 1000003
    return acc


def identity(batch):
    return batch


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def run_busy(mode: str, rows: int, blocks: int) -> tuple:
    md.DataContext.get_current().python_udf_workers = mode
    ds = md.range(rows, override_num_blocks=blocks).map(busy)
    cpu0, t0 = _cpu_s(), time.perf_counter()
    total, count = 0, 0
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        total += sum(batch.column("acc").to_pylist())
        count += batch.num_rows
    wall, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
    return wall, cpu, count, total


def run_overhead(mode: str, blocks: int, steps: int = 1) -> float:
    md.DataContext.get_current().python_udf_workers = mode
    ds = md.range(blocks, override_num_blocks=blocks)
    for _ in range(steps):  # fused into one operator: one call (one round trip) per block
        ds = ds.map_batches(identity)
    t0 = time.perf_counter()
    n = sum(b.num_rows for b in ds.iter_batches(batch_size=None, batch_format="pyarrow"))
    wall = time.perf_counter() - t0
    assert n == blocks, n
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--blocks", type=int, default=40)
    parser.add_argument("--overhead-blocks", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fused", type=int, default=3,
                        help="identity map_batches fused into one operator in the second overhead measure")
    args = parser.parse_args()

    cores = len(os.sched_getaffinity(0))
    print(f"cores: {cores}, load average: {os.getloadavg()[0]:.1f}")
    want = sum(reference_acc(x) for x in range(args.rows))

    walls = {"threads": [], "processes": []}
    cpus = {"threads": [], "processes": []}
    for r in range(args.repeats):
        for mode in (("threads", "processes") if r % 2 == 0 else ("processes", "threads")):
            wall, cpu, count, total = run_busy(mode, args.rows, args.blocks)
            assert count == args.rows and total == want, (mode, count, total, want)
            walls[mode].append(wall)
            cpus[mode].append(cpu)
    t, p = statistics.median(walls["threads"]), statistics.median(walls["processes"])
    print(f"pure-Python map, {args.rows} rows in {args.blocks} blocks (median of {args.repeats}):")
    print(f"  threads:   {t:.2f} s wall, {statistics.median(cpus['threads']):.2f} CPU s")
    print(f"  processes: {p:.2f} s wall, {statistics.median(cpus['processes']):.2f} CPU s (driver + workers)")
    print(f"  speed-up:  {t / p:.2f}x")

    n = args.overhead_blocks
    for steps in (1, args.fused):
        per_block = {"threads": [], "processes": []}
        startup = {"threads": [], "processes": []}
        for r in range(args.repeats):
            for mode in (("threads", "processes") if r % 2 == 0 else ("processes", "threads")):
                small, large = run_overhead(mode, n, steps), run_overhead(mode, 3 * n, steps)
                per_block[mode].append((large - small) / (2 * n))
                startup[mode].append(small - n * per_block[mode][-1])
        print(f"task overhead, {steps} fused identity map_batches over {n} and {3 * n} one-row "
              "blocks (median):")
        for mode in ("threads", "processes"):
            print(f"  {mode + ':':10} {statistics.median(per_block[mode]) * 1e6:.0f} us per block, "
                  f"{statistics.median(startup[mode]):.2f} s start-up")


if __name__ == "__main__":
    main()

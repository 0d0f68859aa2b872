"""Python UDFs on threads vs worker processes (DataContext.python_udf_workers).

    python bench/udf_workers.py                 # all measures, 3 repeats, median
    python bench/udf_workers.py --rows 400000 --repeats 5

1. A pure-Python row UDF (``map``) that keeps the GIL busy: wall time on threads, on
   processes and with "auto" (which should choose processes), and the speed-up (the
   target on 2 cores is >= 1.8x). The CPU seconds of this process and its (waited-for)
   worker processes show where the work ran. Then a numpy UDF (a sort, which releases
   the GIL) in the three modes: "auto" should keep it on threads.
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

import numpy as np

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


NUMPY_VALUES = None


def sort_low(batch):
    """A numpy sort of 2M values (about 20 ms, the GIL released)."""
    low = float(np.sort(NUMPY_VALUES)[0])
    return {"id": batch["id"], "low": np.full(len(batch["id"]), low)}


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
    return wall, cpu, count, total, _where(ds)


def run_numpy(mode: str, blocks: int) -> tuple:
    md.DataContext.get_current().python_udf_workers = mode
    ds = md.range(blocks, override_num_blocks=blocks).map_batches(sort_low)
    t0 = time.perf_counter()
    lows = set()
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        lows.update(batch.column("low").to_pylist())
    return time.perf_counter() - t0, lows, _where(ds)


def _where(ds) -> str:
    """What "auto" chose, from the dataset's stats (empty in the other modes)."""
    for line in ds.stats().splitlines():
        if "[auto: " in line:
            return line[line.index("[auto: ") + 7:line.index("]", line.index("[auto: "))]
    return ""


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
    parser.add_argument("--numpy-blocks", type=int, default=128)
    parser.add_argument("--overhead-blocks", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fused", type=int, default=3,
                        help="identity map_batches fused into one operator in the second overhead measure")
    args = parser.parse_args()

    cores = len(os.sched_getaffinity(0))
    print(f"cores: {cores}, load average: {os.getloadavg()[0]:.1f}")
    want = sum(reference_acc(x) for x in range(args.rows))

    modes = ("threads", "processes", "auto")
    walls = {m: [] for m in modes}
    cpus = {m: [] for m in modes}
    chose = {m: set() for m in modes}
    for r in range(args.repeats):
        for mode in modes[r % 3:] + modes[:r % 3]:  # each mode first in turn
            wall, cpu, count, total, where = run_busy(mode, args.rows, args.blocks)
            assert count == args.rows and total == want, (mode, count, total, want)
            walls[mode].append(wall)
            cpus[mode].append(cpu)
            if where:
                chose["busy"] = chose.get("busy", set()) | {where}
    t, p = statistics.median(walls["threads"]), statistics.median(walls["processes"])
    print(f"pure-Python map, {args.rows} rows in {args.blocks} blocks (median of {args.repeats}):")
    print(f"  threads:   {t:.2f} s wall, {statistics.median(cpus['threads']):.2f} CPU s")
    print(f"  processes: {p:.2f} s wall, {statistics.median(cpus['processes']):.2f} CPU s (driver + workers)")
    a = statistics.median(walls["auto"])
    print(f"  auto:      {a:.2f} s wall, {statistics.median(cpus['auto']):.2f} CPU s (driver + workers; "
          f"chose: {', '.join(sorted(chose.get('busy', ())))})")
    print(f"  speed-up:  processes {t / p:.2f}x, auto {t / a:.2f}x over threads")

    global NUMPY_VALUES
    NUMPY_VALUES = np.random.default_rng(7).random(1 << 21)
    low = float(NUMPY_VALUES.min())
    numpy_walls = {m: [] for m in modes}
    for r in range(args.repeats):
        for mode in modes[r % 3:] + modes[:r % 3]:
            wall, lows, where = run_numpy(mode, args.numpy_blocks)
            assert lows == {low}, (mode, lows)
            numpy_walls[mode].append(wall)
            if where:
                chose[mode].add(where)
    print(f"numpy sort map_batches, {args.numpy_blocks} blocks (median of {args.repeats}):")
    for mode in modes:
        extra = f" (chose: {', '.join(sorted(chose[mode]))})" if chose[mode] else ""
        print(f"  {mode + ':':10} {statistics.median(numpy_walls[mode]):.2f} s wall{extra}")

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

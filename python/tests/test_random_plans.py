"""Random plans through the executor, each checked against pandas on the same data.

Every case builds a random chain (with union branches) of map_batches (random sleeps of
0-2 ms, filters, empty outputs, rows multiplied), limit, sort, random_shuffle,
randomize_block_order and repartition, under a random memory limit and block size, and
runs it under a watchdog: a plan that takes more than WATCHDOG_S is a hang and fails the
test (the watchdog interrupts the consumer, which cancels the execution). The oracle
applies the same steps to a DataFrame; rows are compared as a multiset, and in order
where the plan promises one (after a sort, and for take_all while every step since the
last sort keeps order). Some cases end with a UDF failing on a row it gets, or with the
consumer walking away after one batch; every case leaves its spill directory empty.
"""

from __future__ import annotations

import _thread
import os
import threading
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import millstream as md

WATCHDOG_S = 20.0
CASES = 40
MIB = 1024 * 1024


class Plan:
    """A dataset and its oracle, built step by step."""

    def __init__(self, ds, df: pd.DataFrame, ordered: bool = True):
        self.ds, self.df, self.ordered = ds, df, ordered
        self.steps = []


def source(rng, id_offset: int) -> Plan:
    n = int(rng.integers(0, 20000))
    ids = np.arange(n, dtype=np.int64) + id_offset
    v = rng.integers(0, 50, n).astype(np.int64)  # few values: many ties
    df = pd.DataFrame({"id": ids, "v": v})
    blocks = int(rng.integers(1, 30))
    ds = md.from_arrow(pa.table({"id": ids, "v": v}), override_num_blocks=blocks)
    plan = Plan(ds, df)
    plan.steps.append(f"from_arrow({n} rows, {blocks} blocks, ids+{id_offset})")
    return plan


def sleepy(fn):
    def udf(batch):
        # A random stage speed: some calls sleep 0-2 ms (not all: small batches make many calls).
        r = np.random.random()
        if r < 0.3:
            time.sleep(r / 0.3 * 0.002)
        return fn(batch)
    return udf


def add_map(plan: Plan, rng):
    kind = rng.choice(["affine", "filter", "drop_range", "expand", "row_filter"])
    batch_size = [None, 16, 100, 1000][int(rng.integers(0, 4))]
    if kind == "affine":
        a, b = int(rng.integers(1, 40)), int(rng.integers(0, 40))
        fn = lambda t, a=a, b=b: {"id": t["id"], "v": (t["v"] * a + b) % 50}  # noqa: E731
        plan.df = plan.df.assign(v=(plan.df["v"] * a + b) % 50)
    elif kind == "filter":
        m = int(rng.integers(2, 6))
        fn = lambda t, m=m: {k: c[t["id"] % m != 0] for k, c in t.items()}  # noqa: E731
        plan.df = plan.df[plan.df["id"] % m != 0]
    elif kind == "drop_range":
        # Whole batches inside the range come out empty; sometimes everything goes.
        ids = plan.df["id"]
        lo = int(ids.min()) if len(ids) else 0
        hi = int(ids.max()) + 1 if len(ids) else 1
        a, b = sorted(int(x) for x in rng.integers(lo, hi + 1, 2))
        if rng.random() < 0.15:
            a, b = lo, hi
        fn = lambda t, a=a, b=b: {k: c[(t["id"] < a) | (t["id"] >= b)] for k, c in t.items()}  # noqa: E731
        plan.df = plan.df[(plan.df["id"] < a) | (plan.df["id"] >= b)]
    elif kind == "expand":
        if len(plan.df) > 30000:
            return add_map(plan, rng)
        # Every row becomes two, next to each other: 2*id and 2*id+1 (ids stay unique).
        fn = lambda t: {"id": np.repeat(t["id"], 2) * 2 + np.tile([0, 1], len(t["id"])),  # noqa: E731
                        "v": np.repeat(t["v"], 2)}
        plan.df = pd.DataFrame({"id": np.repeat(plan.df["id"].to_numpy(), 2) * 2
                                + np.tile([0, 1], len(plan.df)),
                                "v": np.repeat(plan.df["v"].to_numpy(), 2)})
    else:
        m = int(rng.integers(2, 5))
        plan.ds = plan.ds.filter(lambda r, m=m: r["v"] % m != 1)
        plan.df = plan.df[plan.df["v"] % m != 1]
        plan.steps.append(f"filter(v % {m} != 1)")
        return
    plan.ds = plan.ds.map_batches(sleepy(fn), batch_size=batch_size, batch_format="numpy")
    plan.steps.append(f"map_batches({kind}, batch_size={batch_size})")


def add_step(plan: Plan, rng, depth: int, offsets):
    choices = ["map", "map", "sort", "shuffle", "block_order", "repartition"]
    if plan.ordered:
        choices.append("limit")
    if depth < 2:
        choices.append("union")
    step = rng.choice(choices)
    if step == "map":
        add_map(plan, rng)
    elif step == "limit":
        n = int(rng.integers(0, max(1, len(plan.df)) + 10))
        plan.ds = plan.ds.limit(n)
        plan.df = plan.df.head(n)
        plan.steps.append(f"limit({n})")
    elif step == "sort":
        if plan.ordered and rng.random() < 0.5:
            # One key with ties: stable, so ties keep the (known) input order.
            desc = bool(rng.random() < 0.5)
            plan.ds = plan.ds.sort("v", descending=desc)
            plan.df = plan.df.sort_values("v", ascending=not desc, kind="stable")
            plan.steps.append(f"sort(v, descending={desc})")
        else:
            desc = [bool(x) for x in rng.random(2) < 0.5]
            plan.ds = plan.ds.sort(["v", "id"], descending=desc)
            plan.df = plan.df.sort_values(["v", "id"], ascending=[not d for d in desc])
            plan.steps.append(f"sort([v, id], descending={desc})")
        plan.ordered = True
    elif step == "shuffle":
        seed = None if rng.random() < 0.3 else int(rng.integers(0, 2**31))
        plan.ds = plan.ds.random_shuffle(seed=seed)
        plan.ordered = False
        plan.steps.append(f"random_shuffle(seed={seed})")
    elif step == "block_order":
        plan.ds = plan.ds.randomize_block_order(seed=int(rng.integers(0, 100)))
        plan.ordered = False
        plan.steps.append("randomize_block_order")
    elif step == "repartition":
        num = int(rng.integers(1, 12))
        mode = rng.choice(["split", "shuffle", "keys"])
        if mode == "split":
            plan.ds = plan.ds.repartition(num)
        elif mode == "shuffle":
            plan.ds = plan.ds.repartition(num, shuffle=True)
            plan.ordered = False
        else:
            plan.ds = plan.ds.repartition(num, keys=["v"])
            plan.ordered = False
        plan.steps.append(f"repartition({num}, {mode})")
    else:
        others = []
        for _ in range(int(rng.integers(1, 3))):
            offsets[0] += 10**9
            other = source(rng, offsets[0])
            for _ in range(int(rng.integers(0, 3))):
                add_step(other, rng, depth + 1, offsets)
            others.append(other)
        plan.ds = plan.ds.union(*[o.ds for o in others])
        plan.df = pd.concat([plan.df] + [o.df for o in others], ignore_index=True)
        plan.ordered = plan.ordered and all(o.ordered for o in others)
        plan.steps.append("union(" + "; ".join(" -> ".join(o.steps) for o in others) + ")")


def run_with_watchdog(fn, what: str, watchdog_s: float = WATCHDOG_S):
    """fn() with a watchdog: past watchdog_s the consumer is interrupted and the test fails."""
    fired = threading.Event()

    def bark():
        fired.set()
        _thread.interrupt_main()

    timer = threading.Timer(watchdog_s, bark)
    timer.start()
    try:
        return fn()
    except KeyboardInterrupt:
        if fired.is_set():
            pytest.fail(f"hang: the plan ran past {watchdog_s} s: {what}")
        raise
    finally:
        timer.cancel()


class PlannedFailure(Exception):
    pass


def spill_left(path):
    """What the plan left in its spill directory, once executions closed while tasks ran
    are destroyed (a detached thread does it when those tasks return)."""
    deadline = time.monotonic() + WATCHDOG_S
    while os.listdir(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    return os.listdir(path)


@pytest.mark.parametrize("case", range(CASES))
def test_random_plan(case, ctx, tmp_path, monkeypatch):
    check_random_plan(case, ctx, tmp_path, monkeypatch)


def check_random_plan(case, ctx, tmp_path, monkeypatch, watchdog_s: float = WATCHDOG_S):
    """Random plan number ``case``, run and checked against its oracle (the Ray backend's
    tests run some of them on a local cluster)."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # where the exchanges spill
    rng = np.random.default_rng(1000 + case)
    limits = [None, 256 * 1024, 1 * MIB, 4 * MIB, 64 * MIB]
    limit = limits[int(rng.integers(0, len(limits)))]
    if limit is not None:
        ctx.execution_options.resource_limits.object_store_memory = limit
    ctx.target_max_block_size = [None, 16 * 1024, 128 * 1024, 128 * MIB][int(rng.integers(0, 4))] or ctx.target_max_block_size
    ctx.execution_options.preserve_order = bool(rng.random() < 0.3)

    offsets = [0]
    plan = source(rng, 0)
    for _ in range(int(rng.integers(2, 8))):
        add_step(plan, rng, 0, offsets)
    # How it ends: consumed and checked; a last UDF that fails on one of the rows it
    # gets; or the consumer walking away after the first batch.
    ending = rng.choice(["take_all", "iter_batches", "fail", "abandon"], p=[0.5, 0.3, 0.1, 0.1])
    if ending == "fail" and len(plan.df) == 0:
        ending = "take_all"
    what = f"case {case}, memory limit {limit}, {ending}: " + " -> ".join(plan.steps)
    batch_size = int(rng.integers(1, 500))

    if ending == "fail":
        doomed = int(plan.df["id"].iloc[int(rng.integers(0, len(plan.df)))])

        def fail_on_doomed(batch):
            if (batch["id"] == doomed).any():
                raise PlannedFailure(f"planned failure at id {doomed}")
            return batch

        ds = plan.ds.map_batches(fail_on_doomed, batch_format="numpy")

        def execute():
            with pytest.raises(Exception, match=f"planned failure at id {doomed}"):
                ds.take_all()
    elif ending == "abandon":
        def execute():
            it = plan.ds.iter_batches(batch_size=batch_size)
            for _ in it:
                break
            it.close()
    elif ending == "take_all":
        def execute():
            rows = plan.ds.take_all()
            return pd.DataFrame({"id": [r["id"] for r in rows], "v": [r["v"] for r in rows]},
                                dtype=np.int64)
    else:
        def execute():
            parts = [pd.DataFrame(b) for b in plan.ds.iter_batches(batch_size=batch_size,
                                                                    batch_format="pandas")]
            return (pd.concat(parts, ignore_index=True) if parts
                    else pd.DataFrame({"id": [], "v": []}, dtype=np.int64))

    got = run_with_watchdog(execute, what, watchdog_s)
    assert spill_left(tmp_path) == [], what
    if ending in ("fail", "abandon"):
        return
    expected = plan.df.reset_index(drop=True)
    assert len(got) == len(expected), what
    # Streamed, the order holds under preserve_order, or when the plan ends in a sort
    # (its partitions leave in order and nothing after it may reorder them).
    ends_in_sort = plan.steps[-1].startswith("sort(")
    in_order = plan.ordered and (ending == "take_all" or ctx.execution_options.preserve_order
                                 or ends_in_sort)
    if in_order:
        assert got["id"].tolist() == expected["id"].tolist(), what
        assert got["v"].tolist() == expected["v"].tolist(), what
    else:
        a = got.sort_values(["id", "v"]).reset_index(drop=True)
        b = expected.sort_values(["id", "v"]).reset_index(drop=True)
        assert a["id"].tolist() == b["id"].tolist(), what
        assert a["v"].tolist() == b["v"].tolist(), what

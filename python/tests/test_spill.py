"""Exchanges past a tiny memory limit: correct results, bytes spilled in stats(), and a
spill directory left empty after success, a failing UDF, an abandoned iterator and an
interrupt.

The spill directory is under $TMPDIR (SpillDirectory::Make), set per test to a fresh
directory before the execution plans.
"""

from __future__ import annotations

import _thread
import os
import re
import time

import numpy as np
import pytest

import millstream as md

LIMIT = 8 * 1024 * 1024
ROWS = 5_000_000  # two int64 columns: 80 MB, 10x the limit


@pytest.fixture
def spill_dir(tmp_path, monkeypatch, ctx):
    path = tmp_path / "spill"
    path.mkdir()
    monkeypatch.setenv("TMPDIR", str(path))
    ctx.execution_options.resource_limits.object_store_memory = LIMIT  # restored by conftest
    return path


def assert_emptied(path, within_s=20.0):
    """The spill directory ends up empty. An execution closed while tasks still run is
    destroyed (and its spill files removed) by a detached thread once they return, so
    this waits for that, up to a bound that only a leak would exceed."""
    deadline = time.monotonic() + within_s
    while os.listdir(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = []
    for root, dirs, files in os.walk(path):
        left += [os.path.join(root, f) for f in files] + [os.path.join(root, d) for d in dirs]
    assert left == [], left


def keyed(rows=ROWS, blocks=40):
    """id 0..rows-1 and a pseudo-random key (a permutation of the ids) per row."""
    def add_key(batch):
        ids = batch["id"]
        return {"id": ids, "k": (ids * 2654435761) % rows}
    return md.range(rows, override_num_blocks=blocks).map_batches(add_key)


def spilled_bytes(stats: str) -> int:
    m = re.findall(r"Spilled: (\d+) bytes", stats)
    assert m, stats
    return sum(int(x) for x in m)


UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
BLOCK = ROWS // 40 * 16  # one input block: 40 blocks of two int64 columns


def peak_held(stats: str) -> float:
    """The execution's peak bytes of blocks held, as stats() prints it (0.1 MiB steps)."""
    m = re.search(r"peak ([\d.]+) (\w+) of blocks held", stats)
    assert m, stats
    return float(m.group(1)) * UNITS[m.group(2)]


def assert_within_limit(stats: str):
    # Past the limit by no more than what a task needs to make progress: a block or two.
    assert peak_held(stats) <= LIMIT + 2 * BLOCK, stats


def test_sort_past_the_limit(spill_dir):
    ds = keyed().sort("k")
    out = ds.to_arrow()
    ids = np.arange(ROWS)
    keys = (ids * 2654435761) % ROWS
    order = np.argsort(keys, kind="stable")
    assert np.array_equal(out["k"].to_numpy(), keys[order])
    assert np.array_equal(out["id"].to_numpy(), ids[order])
    assert spilled_bytes(ds.stats()) > 0
    assert_within_limit(ds.stats())
    assert_emptied(spill_dir)


def test_random_shuffle_past_the_limit(spill_dir):
    ds = keyed().random_shuffle(seed=5)
    out = ds.to_arrow()
    got = out["id"].to_numpy()
    assert len(got) == ROWS
    assert np.array_equal(np.sort(got), np.arange(ROWS))
    assert not np.array_equal(got, np.arange(ROWS))
    # Rows stay whole: each id still carries its own key.
    assert np.array_equal(out["k"].to_numpy(), (got * 2654435761) % ROWS)
    assert spilled_bytes(ds.stats()) > 0
    assert_within_limit(ds.stats())
    assert_emptied(spill_dir)


def test_repartition_shuffle_past_the_limit(spill_dir):
    mat = keyed().repartition(7, shuffle=True).materialize()
    assert spilled_bytes(mat.stats()) > 0  # the stats of the execution that made it
    assert mat.num_blocks() == 7
    got = mat.to_arrow()["id"].to_numpy()
    assert np.array_equal(np.sort(got), np.arange(ROWS))
    assert_emptied(spill_dir)


def test_stats_print_spilled_bytes_only_for_exchanges_that_spill(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    ds = md.range(1000).sort("id")
    ds.take_all()
    assert "Spilled" not in ds.stats()  # nothing spilled under the default limit


def fail_late(batch):
    if batch["id"].max() > ROWS // 2:
        raise RuntimeError("boom in the UDF")
    return batch


@pytest.mark.parametrize("where", ["downstream", "upstream"])
def test_failing_udf_leaves_no_spill(spill_dir, where):
    # Downstream: the sort's reduce stage is under way; upstream: its map stage has
    # spilled half of the input when the UDF fails.
    if where == "downstream":
        ds = keyed().sort("id").map_batches(fail_late)
    else:
        ds = keyed().map_batches(fail_late).sort("k")
    with pytest.raises(Exception, match="boom in the UDF"):
        ds.take_all()
    assert_emptied(spill_dir)


def test_abandoned_iterator_leaves_no_spill(spill_dir):
    it = keyed().random_shuffle(seed=1).iter_batches(batch_size=1000)
    for i, batch in enumerate(it):
        assert len(batch["id"]) == 1000
        if i == 3:
            break
    assert os.listdir(spill_dir)  # the shuffle spilled, and its files are still needed
    it.close()
    assert_emptied(spill_dir)


def test_interrupt_leaves_no_spill(spill_dir):
    fired = []

    def interrupt_once(batch):
        # Ctrl-C as the main thread sees it: the consumer gets KeyboardInterrupt while it waits.
        if not fired:
            fired.append(True)
            _thread.interrupt_main()
        return batch

    ds = keyed().sort("k").map_batches(interrupt_once)
    with pytest.raises(KeyboardInterrupt):
        for _ in ds.iter_batches(batch_size=None):
            time.sleep(0.01)
    assert fired
    assert_emptied(spill_dir)


def test_interrupt_mid_aggregation_leaves_no_spill(spill_dir):
    # Ctrl-C while the group-by's map side runs (half the blocks aggregated, their
    # partial rows past the limit and spilled): the consumer gets KeyboardInterrupt and
    # the spill directory ends up empty.
    seen = []

    def interrupt_at_block_20(batch):
        seen.append(sum(len(files) for _, _, files in os.walk(spill_dir)))
        if len(seen) == 20:
            _thread.interrupt_main()
        return batch

    ds = keyed(rows=1_000_000).map_batches(interrupt_at_block_20).groupby("k").count()
    with pytest.raises(KeyboardInterrupt):
        for _ in ds.iter_batches(batch_size=None):
            time.sleep(0.01)
    assert len(seen) >= 20
    assert max(seen) > 0, "the aggregation spilled nothing before the interrupt"
    assert_emptied(spill_dir)

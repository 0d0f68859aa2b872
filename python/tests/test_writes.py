"""Writes: write_parquet / write_csv / write_json, atomicity on failure and on SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import millstream as md
from conftest import all_files, assert_tables_equal, make_table, visible_files


@pytest.fixture
def table():
    return make_table(3000, seed=5)


def _no_temp_files(directory):
    leftovers = [f for f in all_files(directory) if ".tmp" in os.path.basename(f)]
    assert leftovers == [], leftovers


def test_write_parquet(tmp_path, table):
    out = tmp_path / "out"
    ds = md.from_arrow(table, override_num_blocks=4).filter(expr="qty >= 20")
    ds.write_parquet(str(out))
    files = visible_files(out)
    assert files and all(f.endswith(".parquet") for f in files)
    _no_temp_files(out)
    expected = table.filter(pa.compute.field("qty") >= 20)
    got = pa.concat_tables([pq.read_table(f) for f in files])
    assert_tables_equal(got, expected)
    assert_tables_equal(pq.read_table(str(out)), expected)
    # And millstream reads its own output back.
    assert_tables_equal(md.read_parquet(str(out)).to_arrow(), expected)
    assert md.read_parquet(str(out)).count() == expected.num_rows


def test_write_parquet_from_udf_pipeline(tmp_path):
    out = tmp_path / "out"
    md.range(5000, override_num_blocks=5).map_batches(
        lambda b: {"id": b["id"], "sq": b["id"].astype(np.float64) ** 0.5}).write_parquet(str(out))
    ids = np.arange(5000)
    expected = pa.table({"id": ids, "sq": ids.astype(np.float64) ** 0.5})
    assert_tables_equal(pq.read_table(str(out)), expected, key="id")
    _no_temp_files(out)


def test_write_parquet_file_uri_and_existing_dir(tmp_path, table):
    out = tmp_path / "out"
    out.mkdir()
    md.from_arrow(table).write_parquet("file://" + str(out))
    assert_tables_equal(pq.read_table(str(out)), table)


def test_write_parquet_to_file_path_fails(tmp_path, table):
    target = tmp_path / "a_file"
    target.write_text("x")
    with pytest.raises(FileExistsError):
        md.from_arrow(table).write_parquet(str(target))


def test_write_csv(tmp_path, table):
    out = tmp_path / "csv"
    md.from_arrow(table, override_num_blocks=3).write_csv(str(out))
    files = visible_files(out)
    assert files and all(f.endswith(".csv") for f in files)
    _no_temp_files(out)
    got = pa.concat_tables([pacsv.read_csv(f) for f in files])
    assert got.column_names == table.column_names
    # CSV carries no types: compare with the reference cast to what the reader inferred.
    assert_tables_equal(got, table.cast(got.schema))


def test_write_json(tmp_path, table):
    out = tmp_path / "json"
    md.from_arrow(table, override_num_blocks=3).write_json(str(out))
    files = visible_files(out)
    assert files and all(f.endswith(".json") for f in files)
    _no_temp_files(out)
    got = pd.concat([pd.read_json(f, lines=True) for f in files], ignore_index=True)
    got = got.sort_values("key").reset_index(drop=True)
    expected = table.to_pandas()
    assert list(got.columns) == list(expected.columns)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)


def test_write_empty_dataset(tmp_path):
    out = tmp_path / "empty"
    md.range(100).filter(expr="id < 0").write_parquet(str(out))
    files = visible_files(out)
    _no_temp_files(out)
    total = sum(pq.read_table(f).num_rows for f in files)
    assert total == 0


def test_write_bad_path():
    with pytest.raises(ValueError):
        md.range(3).write_parquet("")


def test_udf_error_midway_leaves_only_complete_files(tmp_path):
    out = tmp_path / "out"

    def explode_late(batch):
        if batch["id"].max() >= 15_000:
            raise RuntimeError("failing on purpose")
        return {"id": batch["id"], "payload": np.repeat(b"x" * 100, len(batch["id"]))}

    ds = md.range(20_000, override_num_blocks=20).map_batches(explode_late, batch_size=100)
    with pytest.raises(RuntimeError, match="failing on purpose"):
        ds.write_parquet(str(out))
    # Every file a reader would pick up is complete and readable, holding only good rows.
    rows = 0
    for f in visible_files(out):
        t = pq.read_table(f)
        rows += t.num_rows
        assert t.num_rows == 1000  # one whole block per file
        assert pa.compute.max(t["id"]).as_py() < 15_000
    if visible_files(out):
        assert md.read_parquet(str(out)).count() == rows
        assert md.read_parquet(str(out)).to_arrow().num_rows == rows


_KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    import numpy as np
    import millstream as md

    def slow(batch):
        time.sleep(0.01)
        return {"id": batch["id"], "v": np.random.default_rng(0).random(len(batch["id"]))}

    md.DataContext.get_current().execution_options.resource_limits.cpu = 2
    ds = md.range(20_000_000, override_num_blocks=100).map_batches(slow, batch_size=5000)
    print("started", flush=True)
    ds.write_parquet(sys.argv[1])
    print("finished", flush=True)
""")


def test_sigkill_while_writing_leaves_no_partial_visible_file(tmp_path):
    out = tmp_path / "out"
    script = tmp_path / "writer.py"
    script.write_text(_KILL_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        first_visible = None
        # Wait for a completed file, then for a write in progress (a hidden temp file).
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and visible_files(out):
                first_visible = first_visible or time.monotonic()
                in_progress = len(all_files(out)) > len(visible_files(out))
                if in_progress or time.monotonic() - first_visible > 3:
                    break
            time.sleep(0.01)
        assert proc.poll() is None, proc.communicate()
        assert out.exists() and visible_files(out), "no file written within 30 s"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    visible = visible_files(out)
    assert visible
    rows = 0
    for f in visible:
        t = pq.read_table(f)  # each one complete: footer and all
        assert t.num_rows == 200_000
        rows += t.num_rows
    # Readers only see complete files (hidden temp files may remain).
    assert pq.read_table(str(out)).num_rows == rows
    assert md.read_parquet(str(out)).count() == rows
    assert md.read_parquet(str(out)).to_arrow().num_rows == rows


def test_write_after_limit(tmp_path):
    out = tmp_path / "out"
    md.range(10_000, override_num_blocks=10).limit(10).write_parquet(str(out))
    got = pq.read_table(str(out))
    assert got.num_rows == 10
    assert len(set(got["id"].to_pylist())) == 10
    _no_temp_files(out)


def test_write_tensor_column_round_trip(tmp_path):
    arr = np.arange(60, dtype=np.float32).reshape(20, 3)
    out = tmp_path / "t"
    md.from_numpy(arr).write_parquet(str(out))
    back = md.read_parquet(str(out)).take_batch(20)["data"]
    assert back.shape == (20, 3)
    np.testing.assert_array_equal(back[np.argsort(back[:, 0])], arr)


def test_write_parquet_partition_cols_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    table = pa.table({"id": np.arange(600), "region": rng.choice(["eu", "us", "ap"], 600),
                      "year": rng.choice([2023, 2024], 600), "x": rng.normal(size=600)})
    md.from_arrow(table, override_num_blocks=4).write_parquet(str(tmp_path / "out"), partition_cols=["region", "year"])
    dirs = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").glob("*/*") if p.is_dir())
    expected_dirs = sorted({f"region={r}/year={y}" for r, y in zip(table["region"].to_pylist(), table["year"].to_pylist())})
    assert dirs == expected_dirs
    assert not list((tmp_path / "out").rglob(".tmp-*"))
    # Files leave the partition columns out; readers restore them from the path.
    some_file = next((tmp_path / "out").rglob("*.parquet"))
    assert pq.read_schema(some_file).names == ["id", "x"]
    back = pads.dataset(str(tmp_path / "out"), format="parquet", partitioning="hive").to_table()
    assert sorted(back["id"].to_pylist()) == list(range(600))
    ours = md.read_parquet(str(tmp_path / "out")).to_arrow().sort_by("id")
    assert ours["region"].to_pylist() == table["region"].to_pylist()
    assert [int(y) for y in ours["year"].to_pylist()] == table["year"].to_pylist()
    assert np.allclose(ours["x"].to_numpy(), table["x"].to_numpy())


def test_write_parquet_partition_col_missing_is_a_clear_error(tmp_path):
    with pytest.raises(KeyError, match="nope"):
        md.range(10).write_parquet(str(tmp_path / "out"), partition_cols=["nope"])

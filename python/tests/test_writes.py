"""Writes: write_parquet / write_csv / write_json, atomicity on failure and on SIGKILL."""

from __future__ import annotations

import os
import re
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


# ---- Partition paths: encoded as pyarrow's hive partitioning writes them ---------------

# Values a path must not take literally: separators, traversal, '=', '%', spaces, empty, null.
_TRICKY_VALUES = ["x/../../../../escaped", "a/b", "..", "a=b", "%41", "sp ace", "", "ü/ß", None]


def _dirs(root) -> set:
    return {os.path.relpath(d, root) for d, _, files in os.walk(root) if files}


def _files_outside(parent, out) -> list:
    """Every file under ``parent`` that is not inside ``out``."""
    out = os.path.realpath(out)
    return [f for f in all_files(parent) if not os.path.realpath(f).startswith(out + os.sep)]


def _hive_strings(names):
    """pyarrow's hive partitioning with string keys (as read_parquet gives them)."""
    return pads.partitioning(pa.schema([(n, pa.string()) for n in names]), flavor="hive")


def test_partition_values_are_encoded_as_pyarrow_does_and_stay_inside_the_output(tmp_path):
    table = pa.table({"user": _TRICKY_VALUES, "v": list(range(len(_TRICKY_VALUES)))})
    out = tmp_path / "a" / "b" / "out"
    md.from_arrow(table, override_num_blocks=3).write_parquet(str(out), partition_cols=["user"])
    assert _files_outside(tmp_path, out) == []
    # The same directory names pyarrow writes for the same rows.
    reference = tmp_path / "reference"
    pads.write_dataset(table, str(reference), format="parquet", partitioning=["user"],
                       partitioning_flavor="hive")
    assert _dirs(out) == _dirs(reference)
    assert "user=__HIVE_DEFAULT_PARTITION__" in _dirs(out)
    # pyarrow reads ours back as the original rows, nulls as null; so does read_parquet.
    expected = table.select(["v", "user"]).sort_by("v")
    theirs = pads.dataset(str(out), format="parquet", partitioning=_hive_strings(["user"])).to_table()
    assert theirs.sort_by("v").equals(expected)
    assert md.read_parquet(str(out)).to_arrow().sort_by("v").equals(expected)


def test_read_parquet_decodes_pyarrow_written_hive_directories(tmp_path):
    table = pa.table({"k": _TRICKY_VALUES, "j": ["1/2", None, "3"] * 3, "v": range(len(_TRICKY_VALUES))})
    pads.write_dataset(table, str(tmp_path / "d"), format="parquet", partitioning=["k", "j"],
                       partitioning_flavor="hive")
    expected = pads.dataset(str(tmp_path / "d"), format="parquet",
                            partitioning=_hive_strings(["k", "j"])).to_table().sort_by("v")
    assert expected["k"].to_pylist() == _TRICKY_VALUES  # the reference decodes them
    got = md.read_parquet(str(tmp_path / "d")).to_arrow().sort_by("v")
    assert got.equals(expected)
    # A filter on a null partition prunes as it should.
    nulls = md.read_parquet(str(tmp_path / "d"), filter=pads.field("k").is_null()).to_arrow()
    assert nulls["v"].to_pylist() == [len(_TRICKY_VALUES) - 1]


def test_partition_column_names_are_encoded_and_read_back(tmp_path):
    # '/' and '=' would make other directories; a leading '.' or '_' would be skipped as hidden.
    names = ["../../c", "a=b", "_u", ".h", "with space"]
    table = pa.table({**{n: [f"{i}", f"{i}"] for i, n in enumerate(names)}, "v": [1, 2]})
    out = tmp_path / "out"
    md.from_arrow(table).write_parquet(str(out), partition_cols=names)
    assert _files_outside(tmp_path, out) == []
    assert all(len(d.split(os.sep)) == len(names) for d in _dirs(out))
    expected = table.select(["v"] + names).sort_by("v")
    theirs = pads.dataset(str(out), format="parquet", partitioning=_hive_strings(names)).to_table()
    assert theirs.sort_by("v").equals(expected)
    assert md.read_parquet(str(out)).to_arrow().sort_by("v").equals(expected)


def test_partition_column_that_cannot_be_a_directory_name_raises_naming_it(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="partition column name must not be empty"):
        md.from_arrow(pa.table({"": ["a"], "v": [1]})).write_parquet(str(out), partition_cols=[""])
    with pytest.raises(ValueError, match="partition column 'k'.*255"):
        md.from_arrow(pa.table({"k": ["/" * 100], "v": [1]})).write_parquet(str(out), partition_cols=["k"])
    assert all_files(tmp_path) == []


# ---- Rows without columns -------------------------------------------------------------

def test_partition_key_as_the_only_column_keeps_every_row(tmp_path):
    table = pa.table({"k": ["a", "b", "a", None]})
    out = tmp_path / "out"
    md.from_arrow(table, override_num_blocks=2).write_parquet(str(out), partition_cols=["k"])
    reference = pads.dataset(str(out), format="parquet", partitioning=_hive_strings(["k"]))
    assert reference.count_rows() == 4
    assert sorted(reference.to_table()["k"].to_pylist(), key=str) == sorted(table["k"].to_pylist(), key=str)
    assert md.read_parquet(str(out)).count() == 4
    assert sorted(md.read_parquet(str(out)).to_arrow()["k"].to_pylist(), key=str) == \
        sorted(table["k"].to_pylist(), key=str)


def test_blocks_without_columns_keep_their_rows_through_parquet(tmp_path):
    out = tmp_path / "out"
    md.range(1000, override_num_blocks=3).select_columns([]).write_parquet(str(out))
    assert pq.read_table(str(out)).num_rows == 1000  # pyarrow, the reference, counts them
    assert sum(pq.read_metadata(f).num_rows for f in visible_files(out)) == 1000
    back = md.read_parquet(str(out))
    assert back.count() == 1000
    assert back.to_arrow().num_rows == 1000
    assert back.to_arrow().num_columns == 0


def test_blocks_without_columns_through_json_and_csv(tmp_path):
    md.range(10, override_num_blocks=2).select_columns([]).write_json(str(tmp_path / "j"))
    frames = [pd.read_json(f, lines=True) for f in visible_files(tmp_path / "j")]
    assert sum(len(f) for f in frames) == 10
    # CSV has no way to hold a row without columns: an error, not a file of nothing.
    with pytest.raises(ValueError, match="write_csv: the rows have no columns"):
        md.range(10).select_columns([]).write_csv(str(tmp_path / "c"))
    assert visible_files(tmp_path / "c") == []


# ---- Local paths and S3 only (S3 itself: test_s3.py) ------------------------------------

@pytest.mark.parametrize("uri", ["az://bucket/x", "hdfs://namenode/x", "HDFS://b/x", "abfs://c/x"])
@pytest.mark.parametrize("fmt", ["parquet", "csv", "json"])
def test_write_to_an_unsupported_uri_scheme_raises_and_writes_nothing(tmp_path, monkeypatch, uri, fmt):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NotImplementedError, match=r"URI scheme '(az|hdfs|abfs)' is not supported.*local paths"):
        getattr(md.range(3), f"write_{fmt}")(uri)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("uri", ["abfs://bucket/x", "abfs://bucket/x/*.parquet", "hdfs://namenode/x"])
def test_read_from_an_unsupported_uri_scheme_raises(uri):
    with pytest.raises(NotImplementedError, match="URI scheme '(abfs|hdfs)' is not supported"):
        md.read_parquet(uri)


def test_file_uris_are_local_paths(tmp_path, table):
    md.from_arrow(table).write_parquet("file://" + str(tmp_path / "out"))
    assert_tables_equal(md.read_parquet("file://" + str(tmp_path / "out")).to_arrow(), table)
    with pytest.raises(ValueError, match="not a local file URI"):
        md.range(3).write_parquet("file://otherhost/x")


# ---- JSON values ------------------------------------------------------------------------

def test_write_json_uint64_past_int64_is_exact(tmp_path):
    import json

    values = [0, 2**63 - 1, 2**63, 2**64 - 1, None]
    md.from_arrow(pa.table({"u": pa.array(values, pa.uint64())})).write_json(str(tmp_path / "j"))
    lines = [line for f in visible_files(tmp_path / "j") for line in open(f)]
    assert sorted((json.loads(line)["u"] for line in lines), key=str) == sorted(values, key=str)


# ---- Stats of a write ---------------------------------------------------------------------

def _counters(stats: str) -> list:
    return [tuple(int(x) for x in m) for m in
            re.findall(r"Rows in: (\d+), rows out: (\d+)\n\* Blocks in: (\d+)", stats)]


@pytest.mark.parametrize("partition_cols", [None, ["cat"]])
def test_write_stats_report_what_was_written(tmp_path, table, partition_cols):
    out = tmp_path / "out"
    ds = md.from_arrow(table, override_num_blocks=4).filter(expr="qty >= 20")
    ds.write_parquet(str(out), partition_cols=partition_cols)
    written = pads.dataset(str(out), format="parquet", partitioning="hive").count_rows()
    assert written == table.filter(pa.compute.field("qty") >= 20).num_rows
    stats = ds.stats()
    (rows_in, rows_out, blocks_in), = _counters(stats)
    assert rows_in == table.num_rows and rows_out == written and blocks_in >= 4
    assert re.search(rf"Dataset: {written} rows out", stats)
    assert not re.search(r"bytes (in|out): 0 B", stats), stats
    assert "Peak memory held: 0 B" not in stats and "peak 0 B" not in stats


def test_read_write_stats_count_what_the_read_produced(tmp_path, parquet_dir):
    root, expected = parquet_dir
    ds = md.read_parquet(str(root), filter="qty < 50")
    ds.write_json(str(tmp_path / "out"))
    rows = expected.filter(pa.compute.field("qty") < 50).num_rows
    (rows_in, rows_out, blocks_in), = _counters(ds.stats())
    assert rows_in == rows_out == rows and blocks_in > 0
    assert sum(len(pd.read_json(f, lines=True)) for f in visible_files(tmp_path / "out")) == rows


def test_every_operator_of_a_write_pipeline_reports_what_passed_through(tmp_path):
    # Three operators: the read, the limit (which passes blocks straight on), the write.
    ds = md.range(5000, override_num_blocks=5).limit(1234)
    ds.write_parquet(str(tmp_path / "out"))
    written = pq.read_table(str(tmp_path / "out")).num_rows
    assert written == 1234
    operators = ds.stats().split("\n\n")[:-1]
    assert len(operators) == 3
    for text in operators:
        assert not re.search(r"(Blocks in|bytes in|bytes out|Peak memory held): 0( B)?\b", text), text
    assert re.findall(r"rows out: (\d+)", operators[-1]) == [str(written)]
    assert re.search(rf"Dataset: {written} rows out", ds.stats())


def test_write_stats_leave_out_the_rows_of_a_tolerated_failed_task(tmp_path, ctx):
    ctx.max_errored_blocks = 1

    def fail_in_the_middle_of_a_task(batch):
        if 8500 <= batch["id"][0] < 9000:  # the last task writes its 1st batch, fails on its 2nd
            raise RuntimeError("failing on purpose")
        return batch

    ds = md.range(10_000, override_num_blocks=5).map_batches(fail_in_the_middle_of_a_task, batch_size=500)
    ds.write_parquet(str(tmp_path / "out"))
    written = pq.read_table(str(tmp_path / "out")).num_rows
    assert written == 8000
    assert re.findall(r"rows out: (\d+)", ds.stats()) == [str(written)]


@pytest.mark.parametrize("name", ["s3:/b/x", "~/x", "file:rel"])
def test_relative_paths_that_look_like_uris_are_local_directories(tmp_path, monkeypatch, name):
    # Blocks of two schemas, so the files are rewritten to one schema after the write.
    monkeypatch.chdir(tmp_path)
    md.from_arrow([pa.table({"a": [1]}), pa.table({"a": [2], "b": ["x"]})]).write_parquet(name)
    table = pq.read_table(str(tmp_path / name))
    assert sorted(table["a"].to_pylist()) == [1, 2]
    assert sorted(table["b"].to_pylist(), key=str) == sorted([None, "x"], key=str)

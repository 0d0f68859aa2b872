"""Write modes and options: Ray's write_* parameters take effect in the files.

Expected values come from pyarrow (and pandas) reading the files, or from pyarrow writing
the same rows with the same options.
"""

from __future__ import annotations

import enum
import json
import os
import pathlib
import warnings

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import millstream as md
from conftest import all_files, make_table, visible_files


class SaveMode(str, enum.Enum):
    """Ray's ray.data.SaveMode, as defined in Ray 2.58 (a str Enum)."""
    CREATE = "create"
    APPEND = "append"
    OVERWRITE = "overwrite"
    IGNORE = "ignore"
    ERROR = "error"
    UPSERT = "upsert"


def _old_files(directory):
    """An existing output: a Parquet file, another file, and a subdirectory with a file."""
    os.makedirs(directory / "sub", exist_ok=True)
    pq.write_table(pa.table({"id": [100, 101]}), directory / "old.parquet")
    (directory / "notes.txt").write_text("keep?")
    pq.write_table(pa.table({"id": [102]}), directory / "sub" / "old2.parquet")
    return sorted(all_files(directory))


def _ids(directory):
    return sorted(pq.read_table(str(directory))["id"].to_pylist())


def _row_counts(directory):
    return sorted(pq.ParquetFile(f).metadata.num_rows for f in visible_files(directory))


# ---- mode ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["error", "create", SaveMode.ERROR])
def test_mode_error_raises_on_an_existing_directory_and_touches_nothing(tmp_path, mode):
    out = tmp_path / "out"
    before = _old_files(out)
    with pytest.raises(ValueError, match="already exists") as info:
        md.range(5).write_parquet(str(out), mode=mode)
    assert str(out) in str(info.value)
    assert sorted(all_files(out)) == before


def test_mode_error_raises_on_an_existing_empty_directory_as_ray_does(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValueError, match="already exists"):
        md.range(5).write_csv(str(out), mode="error")
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("mode", ["error", "ignore", "overwrite", "append"])
def test_every_mode_writes_into_a_missing_directory(tmp_path, mode):
    out = tmp_path / "new" / "out"
    md.range(5).write_parquet(str(out), mode=mode)
    assert _ids(out) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("fmt", ["parquet", "csv", "json"])
def test_mode_ignore_writes_nothing_into_an_existing_directory(tmp_path, fmt):
    out = tmp_path / "out"
    before = _old_files(out)
    getattr(md.range(5), f"write_{fmt}")(str(out), mode=SaveMode.IGNORE if fmt == "csv" else "ignore")
    assert sorted(all_files(out)) == before


@pytest.mark.parametrize("fmt", ["parquet", "csv", "json"])
def test_mode_overwrite_leaves_only_the_new_files(tmp_path, fmt):
    out = tmp_path / "out"
    _old_files(out)
    getattr(md.range(5), f"write_{fmt}")(str(out), mode="overwrite")
    files = all_files(out)
    assert files and all(f.endswith("." + fmt) for f in files)
    assert not (out / "sub").exists()
    if fmt == "parquet":
        assert _ids(out) == [0, 1, 2, 3, 4]
    elif fmt == "csv":
        assert sorted(pa.concat_tables(pacsv.read_csv(f) for f in files)["id"].to_pylist()) == [0, 1, 2, 3, 4]
    else:
        assert sorted(pd.concat(pd.read_json(f, lines=True) for f in files)["id"]) == [0, 1, 2, 3, 4]


def test_mode_overwrite_deletes_nothing_outside_the_directory(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("x")
    (out / "link").symlink_to(outside, target_is_directory=True)
    (tmp_path / "sibling.txt").write_text("y")
    md.range(3).write_parquet(str(out), mode="overwrite")
    assert (outside / "precious.txt").read_text() == "x"
    assert (tmp_path / "sibling.txt").read_text() == "y"
    assert not (out / "link").exists() and not (out / "link").is_symlink()
    assert _ids(out) == [0, 1, 2]


def test_mode_append_keeps_the_old_files(tmp_path):
    out = tmp_path / "out"
    pq.write_table(pa.table({"id": [100, 101]}), out.parent / "seed.parquet")
    out.mkdir()
    pq.write_table(pa.table({"id": [100, 101]}), out / "old.parquet")
    md.range(3).write_parquet(str(out), mode=SaveMode.APPEND)
    assert _ids(out) == [0, 1, 2, 100, 101]


def test_unknown_mode_raises_naming_it(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        md.range(3).write_parquet(str(tmp_path / "out"), mode="replace")
    with pytest.raises(NotImplementedError, match="upsert"):
        md.range(3).write_parquet(str(tmp_path / "out"), mode=SaveMode.UPSERT)
    assert not (tmp_path / "out").exists()


# ---- pathlib -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["parquet", "csv", "json"])
def test_paths_may_be_pathlib(tmp_path, fmt):
    out = tmp_path / "out"
    assert isinstance(out, pathlib.Path)
    getattr(md.range(4), f"write_{fmt}")(out)
    assert len(visible_files(out)) >= 1 and all(f.endswith("." + fmt) for f in visible_files(out))


# ---- rows per file -------------------------------------------------------------------


def test_max_rows_per_file_caps_every_file(tmp_path):
    out = tmp_path / "out"
    md.range(100, override_num_blocks=1).write_parquet(str(out), max_rows_per_file=30)
    assert _row_counts(out) == [10, 30, 30, 30]
    assert _ids(out) == list(range(100))
    md.range(100, override_num_blocks=1).write_parquet(str(tmp_path / "none"))
    assert _row_counts(tmp_path / "none") == [100]


def test_max_rows_per_file_applies_per_partition(tmp_path):
    table = pa.table({"id": list(range(40)), "part": ["a"] * 25 + ["b"] * 15})
    out = tmp_path / "out"
    md.from_arrow(table).write_parquet(str(out), partition_cols=["part"], max_rows_per_file=10)
    assert _row_counts(out / "part=a") == [5, 10, 10]
    assert _row_counts(out / "part=b") == [5, 10]
    back = pq.read_table(str(out), partitioning="hive")
    assert sorted(back["id"].to_pylist()) == list(range(40))


def _rows_per_file(directory, fmt):
    files = visible_files(directory)
    if fmt == "parquet":
        return sorted(pq.ParquetFile(f).metadata.num_rows for f in files)
    if fmt == "csv":
        return sorted(pacsv.read_csv(f).num_rows for f in files)
    return sorted(len(pd.read_json(f, lines=True)) for f in files)


@pytest.mark.parametrize("fmt", ["parquet", "csv", "json"])
def test_min_rows_per_file_bundles_blocks_into_fewer_files(tmp_path, fmt):
    ds = md.range(100, override_num_blocks=10)
    getattr(ds, f"write_{fmt}")(str(tmp_path / "plain"))
    assert _rows_per_file(tmp_path / "plain", fmt) == [10] * 10
    getattr(ds, f"write_{fmt}")(str(tmp_path / "min"), min_rows_per_file=50)
    counts = _rows_per_file(tmp_path / "min", fmt)
    assert sum(counts) == 100 and len(counts) <= 2 and min(counts) >= 50


def test_num_rows_per_file_is_the_deprecated_name_of_min_rows_per_file(tmp_path):
    with pytest.warns(DeprecationWarning, match="min_rows_per_file"):
        md.range(100, override_num_blocks=10).write_json(str(tmp_path / "out"), num_rows_per_file=50)
    counts = _rows_per_file(tmp_path / "out", "json")
    assert sum(counts) == 100 and min(counts) >= 50
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(ValueError, match="num_rows_per_file"):
            md.range(3).write_parquet(str(tmp_path / "x"), num_rows_per_file=5, min_rows_per_file=5)


@pytest.mark.parametrize("kwargs,match", [
    ({"min_rows_per_file": 0}, "min_rows_per_file"),
    ({"max_rows_per_file": 0}, "max_rows_per_file"),
    ({"min_rows_per_file": 10, "max_rows_per_file": 5}, "cannot be greater"),
])
def test_rows_per_file_values_are_checked(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        md.range(3).write_parquet(str(tmp_path / "out"), **kwargs)
    assert not (tmp_path / "out").exists()


def test_max_rows_per_file_wins_over_min(tmp_path):
    out = tmp_path / "out"
    md.range(100, override_num_blocks=10).write_parquet(str(out), min_rows_per_file=40, max_rows_per_file=40)
    counts = _row_counts(out)
    assert sum(counts) == 100 and max(counts) <= 40


# ---- filename_provider ----------------------------------------------------------------


class Names:
    """A Ray FilenameProvider (ray.data.datasource.FilenameProvider's API)."""

    def __init__(self, ext):
        self.ext = ext
        self.uuids = set()

    def get_filename_for_task(self, write_uuid, task_index):
        self.uuids.add(write_uuid)
        return f"part-{task_index:03}.{self.ext}"


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_filename_provider_names_the_files(tmp_path, fmt):
    out = tmp_path / "out"
    names = Names(fmt)
    getattr(md.range(30, override_num_blocks=3), f"write_{fmt}")(str(out), filename_provider=names)
    assert sorted(os.listdir(out)) == [f"part-000.{fmt}", f"part-001.{fmt}", f"part-002.{fmt}"]
    assert len(names.uuids) == 1  # one write, one uuid


class UuidNames:
    def get_filename_for_task(self, write_uuid, task_index):
        return f"{write_uuid}_{task_index:06}"


def test_filename_provider_parquet_names_are_rays_templates(tmp_path):
    # Ray's ParquetDatasink: the task's name gets "-{i}" and ".parquet" ("{i}": the file's
    # number in the task).
    out = tmp_path / "out"
    md.range(30, override_num_blocks=3).write_parquet(str(out), filename_provider=UuidNames())
    names = sorted(os.listdir(out))
    uuid = names[0].split("_")[0]
    assert names == [f"{uuid}_{i:06}-0.parquet" for i in range(3)]


def test_filename_provider_parquet_append_needs_the_write_uuid_as_in_ray(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="Write UUID"):
        md.range(3).write_parquet(str(out), filename_provider=Names("parquet"))
    assert visible_files(out) == []
    md.range(30, override_num_blocks=3).write_parquet(str(out), filename_provider=Names("parquet"),
                                                      mode="overwrite")
    assert sorted(os.listdir(out)) == ["part-000-0.parquet", "part-001-0.parquet", "part-002-0.parquet"]


def test_filename_provider_with_max_rows_numbers_the_further_files(tmp_path):
    out = tmp_path / "out"
    md.range(25, override_num_blocks=1).write_parquet(str(out), filename_provider=Names("parquet"),
                                                      max_rows_per_file=10, mode="overwrite")
    assert sorted(os.listdir(out)) == ["part-000-0.parquet", "part-000-1.parquet", "part-000-2.parquet"]
    assert pq.ParquetFile(out / "part-000-0.parquet").metadata.num_rows == 10
    assert _ids(out) == list(range(25))


def test_filename_provider_cannot_leave_the_directory(tmp_path):
    class Escape:
        def get_filename_for_task(self, write_uuid, task_index):
            return "../escaped.parquet"

    with pytest.raises(ValueError, match="filename_provider"):
        md.range(3).write_json(str(tmp_path / "out"), filename_provider=Escape())
    with pytest.raises(ValueError, match="filename_provider"):
        md.range(3).write_parquet(str(tmp_path / "out"), filename_provider=Escape(), mode="overwrite")
    assert not (tmp_path / "escaped.parquet").exists()


def test_filename_provider_errors_keep_their_type(tmp_path):
    class Broken:
        def get_filename_for_task(self, write_uuid, task_index):
            raise KeyError("no name for this task")

    with pytest.raises(KeyError, match="no name"):
        md.range(3).write_csv(str(tmp_path / "out"), filename_provider=Broken())
    with pytest.raises(TypeError, match="filename_provider"):
        md.range(3).write_csv(str(tmp_path / "out2"), filename_provider=object())


# ---- Parquet options ------------------------------------------------------------------


def _column_chunk(path, column=0):
    return pq.ParquetFile(path).metadata.row_group(0).column(column)


def _one_file(directory):
    files = visible_files(directory)
    assert len(files) == 1
    return files[0]


@pytest.mark.parametrize("compression", ["zstd", "gzip", "brotli", "lz4", "snappy", "none", None, "ZSTD"])
def test_compression_is_the_codec_of_every_column_chunk(tmp_path, compression):
    table = make_table(500, seed=1)
    md.from_arrow(table).write_parquet(str(tmp_path / "out"), compression=compression)
    pq.write_table(table, tmp_path / "expected.parquet", compression=compression)
    got = pq.ParquetFile(_one_file(tmp_path / "out")).metadata.row_group(0)
    expected = pq.ParquetFile(tmp_path / "expected.parquet").metadata.row_group(0)
    assert [got.column(i).compression for i in range(got.num_columns)] == \
        [expected.column(i).compression for i in range(expected.num_columns)]
    assert pq.read_table(_one_file(tmp_path / "out")).equals(pq.read_table(tmp_path / "expected.parquet"))


def test_default_compression_is_snappy(tmp_path):
    md.range(10).write_parquet(str(tmp_path / "out"))
    assert all(_column_chunk(f).compression == "SNAPPY" for f in visible_files(tmp_path / "out"))


def test_compression_level_changes_the_bytes_as_pyarrow_does(tmp_path):
    table = pa.table({"text": [f"row {i} " * (i % 7) + str(i * 7919 % 1000) for i in range(20000)]})
    sizes = {}
    for level in (1, 19):
        # pyarrow's default dictionary choice (True) on both sides: only the level differs.
        md.from_arrow(table).write_parquet(str(tmp_path / f"l{level}"), compression="zstd", compression_level=level,
                                           use_dictionary=True)
        pq.write_table(table, tmp_path / f"e{level}.parquet", compression="zstd", compression_level=level)
        sizes[level] = _column_chunk(_one_file(tmp_path / f"l{level}")).total_compressed_size
        # The same within 1% (the engine's blocks cut pages a little differently).
        assert sizes[level] == pytest.approx(_column_chunk(tmp_path / f"e{level}.parquet").total_compressed_size,
                                             rel=0.01)
    assert sizes[19] < 0.9 * sizes[1]


def test_compression_level_out_of_range_raises_naming_it(tmp_path):
    with pytest.raises(ValueError, match="compression_level"):
        md.range(3).write_parquet(str(tmp_path / "out"), compression="zstd", compression_level=1000)


def test_unknown_compression_raises_naming_it(tmp_path):
    with pytest.raises(ValueError, match="compression='zip'"):
        md.range(3).write_parquet(str(tmp_path / "out"), compression="zip")


def test_row_group_size_sets_the_rows_of_each_row_group(tmp_path):
    md.range(1000, override_num_blocks=1).write_parquet(str(tmp_path / "out"), row_group_size=300)
    meta = pq.ParquetFile(_one_file(tmp_path / "out")).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [300, 300, 300, 100]


def test_use_dictionary_false_writes_no_dictionary_pages(tmp_path):
    table = pa.table({"s": ["a", "b"] * 500})
    md.from_arrow(table).write_parquet(str(tmp_path / "dict"))
    md.from_arrow(table).write_parquet(str(tmp_path / "plain"), use_dictionary=False)
    assert _column_chunk(_one_file(tmp_path / "dict")).has_dictionary_page
    assert not _column_chunk(_one_file(tmp_path / "plain")).has_dictionary_page
    pq.write_table(table, tmp_path / "e.parquet", use_dictionary=False)
    assert _column_chunk(_one_file(tmp_path / "plain")).encodings == _column_chunk(tmp_path / "e.parquet").encodings


def _dictionary_pages(path) -> dict:
    """Whether each column's first chunk of the one file under `path` has a dictionary page."""
    meta = pq.ParquetFile(_one_file(path)).metadata
    return {meta.schema.column(i).name: meta.row_group(0).column(i).has_dictionary_page
            for i in range(meta.num_columns)}


def test_unset_use_dictionary_encodes_the_columns_with_few_distinct_values(tmp_path):
    n = 50_000
    table = pa.table({"id": pa.array(range(n), pa.int64()),                     # all distinct
                      "x": pa.array([i * 0.5 for i in range(n)]),                # all distinct
                      "cat": pa.array(["a", "b", "c"] * (n // 3) + ["a"] * (n % 3)),
                      "small": pa.array([i % 100 for i in range(n)], pa.int32()),
                      "s": pa.array([f"v{i}" for i in range(n)])})              # all distinct
    md.from_arrow(table).write_parquet(str(tmp_path / "auto"))
    assert _dictionary_pages(tmp_path / "auto") == {"id": False, "x": False, "cat": True,
                                                    "small": True, "s": False}
    md.from_arrow(table).write_parquet(str(tmp_path / "all"), use_dictionary=True)
    assert all(_dictionary_pages(tmp_path / "all").values())
    # Whatever the encoding, the file holds the same table.
    for name in ("auto", "all"):
        assert pq.read_table(_one_file(tmp_path / name)).equals(table)
    # A first block of 1,000 rows (under 1Ki) is too small to judge: dictionaries stay, as
    # pyarrow's default would have them.
    md.from_arrow(table.slice(0, 1000)).write_parquet(str(tmp_path / "small"))
    assert all(_dictionary_pages(tmp_path / "small").values())


def test_write_statistics_false_writes_no_statistics(tmp_path):
    md.range(100).write_parquet(str(tmp_path / "stats"))
    md.range(100).write_parquet(str(tmp_path / "none"), write_statistics=False)
    assert all(_column_chunk(f).is_stats_set for f in visible_files(tmp_path / "stats"))
    assert not any(_column_chunk(f).is_stats_set for f in visible_files(tmp_path / "none"))


@pytest.mark.parametrize("version", ["1.0", "2.4", "2.6"])
def test_version_is_the_files_format_version(tmp_path, version):
    table = pa.table({"id": [1, 2, 3]})
    md.from_arrow(table).write_parquet(str(tmp_path / "out"), version=version)
    pq.write_table(table, tmp_path / "e.parquet", version=version)
    assert pq.ParquetFile(_one_file(tmp_path / "out")).metadata.format_version == \
        pq.ParquetFile(tmp_path / "e.parquet").metadata.format_version


def test_data_page_size_smaller_pages_add_page_headers(tmp_path):
    table = pa.table({"x": pa.array(range(200000), pa.int64())})
    md.from_arrow(table).write_parquet(str(tmp_path / "small"), data_page_size=4096, use_dictionary=False)
    md.from_arrow(table).write_parquet(str(tmp_path / "big"), use_dictionary=False)
    small = _column_chunk(_one_file(tmp_path / "small"))
    big = _column_chunk(_one_file(tmp_path / "big"))
    # The same values; every page adds a header, so 4 KiB pages (instead of 1 MiB) make
    # the chunk bigger by hundreds of page headers.
    assert small.total_uncompressed_size - big.total_uncompressed_size > 100 * 10
    assert pq.read_table(_one_file(tmp_path / "small")).equals(table)


def test_schema_is_the_schema_of_every_file(tmp_path):
    schema = pa.schema([("name", pa.string()), ("id", pa.int32()), ("extra", pa.float64())])
    ds = md.from_items([{"id": i, "name": f"n{i}"} for i in range(10)], override_num_blocks=2)
    ds.write_parquet(str(tmp_path / "out"), schema=schema)
    for f in visible_files(tmp_path / "out"):
        assert pq.read_schema(f).remove_metadata() == schema
    back = pq.read_table(str(tmp_path / "out")).sort_by("id")
    assert back["id"].to_pylist() == list(range(10))
    assert back["extra"].null_count == 10


def test_schema_without_a_column_of_the_rows_raises_naming_it(tmp_path):
    with pytest.raises(ValueError, match="'id'"):
        md.range(3).write_parquet(str(tmp_path / "out"), schema=pa.schema([("other", pa.int64())]))


def test_arrow_parquet_args_fn_keys_win(tmp_path):
    md.range(10).write_parquet(str(tmp_path / "out"), compression="gzip",
                               arrow_parquet_args_fn=lambda: {"compression": "zstd"})
    assert all(_column_chunk(f).compression == "ZSTD" for f in visible_files(tmp_path / "out"))


def test_files_rewritten_to_one_schema_keep_the_write_options(tmp_path):
    def widen(batch):
        if batch["id"][0] >= 5:
            batch["extra"] = batch["id"] * 1.5
        return batch

    out = tmp_path / "out"
    md.range(10, override_num_blocks=2).map_batches(widen).write_parquet(
        str(out), compression="zstd", row_group_size=2)
    files = visible_files(out)
    assert len(files) == 2
    for f in files:
        assert pq.read_schema(f).names == ["id", "extra"]
        meta = pq.ParquetFile(f).metadata
        assert meta.num_row_groups == 3
        assert meta.row_group(0).column(0).compression == "ZSTD"


# ---- CSV write_options ----------------------------------------------------------------


@pytest.mark.parametrize("options", [
    dict(delimiter=";"),
    dict(include_header=False),
    dict(quoting_style="all_valid"),
    dict(quoting_style="none"),
    dict(quoting_header="none", delimiter="|"),
])
def test_csv_write_options_give_the_bytes_pyarrow_writes(tmp_path, options):
    table = pa.table({"id": [1, 2, 3], "name": ["a", "b b", "c"], "x": [0.5, None, 2.0]})
    write_options = pacsv.WriteOptions(**options)
    md.from_arrow(table).write_csv(str(tmp_path / "out"), write_options=write_options)
    expected = tmp_path / "expected.csv"
    pacsv.write_csv(table, expected, write_options=write_options)
    assert pathlib.Path(_one_file(tmp_path / "out")).read_bytes() == expected.read_bytes()


def test_csv_write_options_through_arrow_csv_args_fn(tmp_path):
    table = pa.table({"id": [1, 2]})
    md.from_arrow(table).write_csv(str(tmp_path / "out"),
                                   arrow_csv_args_fn=lambda: {"write_options": pacsv.WriteOptions(delimiter="\t")})
    back = pacsv.read_csv(_one_file(tmp_path / "out"), parse_options=pacsv.ParseOptions(delimiter="\t"))
    assert back.equals(table)


def test_csv_quoting_none_with_a_value_needing_quotes_raises(tmp_path):
    table = pa.table({"s": ['has "quote"']})
    with pytest.raises(Exception, match="quot"):
        md.from_arrow(table).write_csv(str(tmp_path / "out"),
                                       write_options=pacsv.WriteOptions(quoting_style="none"))
    assert visible_files(tmp_path / "out") == []


def test_csv_write_options_of_another_type_raise(tmp_path):
    with pytest.raises(TypeError, match="write_options"):
        md.range(3).write_csv(str(tmp_path / "out"), write_options={"delimiter": ";"})


# ---- JSON ------------------------------------------------------------------------------


def test_json_default_args_are_accepted_and_others_refused(tmp_path):
    md.range(3).write_json(str(tmp_path / "out"), orient="records", lines=True,
                           pandas_json_args_fn=lambda: {"orient": "records"})
    rows = [json.loads(line) for f in visible_files(tmp_path / "out") for line in open(f)]
    assert sorted(r["id"] for r in rows) == [0, 1, 2]
    with pytest.raises(NotImplementedError, match="orient"):
        md.range(3).write_json(str(tmp_path / "o2"), pandas_json_args_fn=lambda: {"orient": "split"})


# ---- arrow_open_stream_args ------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "json"])
@pytest.mark.parametrize("codec", ["gzip", "zstd", "bz2"])
def test_open_stream_compression_compresses_each_file(tmp_path, fmt, codec):
    table = pa.table({"id": list(range(50)), "s": [f"v{i}" for i in range(50)]})
    getattr(md.from_arrow(table), f"write_{fmt}")(str(tmp_path / "out"),
                                                  arrow_open_stream_args={"compression": codec})
    path = _one_file(tmp_path / "out")
    assert path.endswith("." + fmt)  # the name is unchanged, as in Ray
    with pa.input_stream(path, compression=codec) as stream:
        data = stream.read()
    if fmt == "csv":
        back = pacsv.read_csv(pa.BufferReader(data))
    else:
        back = pa.Table.from_pandas(pd.read_json(pa.BufferReader(data), lines=True))
    assert back.select(["id", "s"]).equals(table)
    raw = pathlib.Path(path).read_bytes()
    assert raw != data and raw.startswith({"gzip": b"\x1f\x8b", "zstd": b"\x28\xb5\x2f\xfd", "bz2": b"BZh"}[codec])


def test_open_stream_compression_detect_is_none(tmp_path):
    md.range(5).write_csv(str(tmp_path / "out"), arrow_open_stream_args={"compression": "detect"})
    rows = pa.concat_tables(pacsv.read_csv(f) for f in visible_files(tmp_path / "out"))
    assert sorted(rows["id"].to_pylist()) == [0, 1, 2, 3, 4]


def test_open_stream_compression_unknown_codec_raises_naming_it(tmp_path):
    with pytest.raises(ValueError, match="compression='zip'"):
        md.range(3).write_csv(str(tmp_path / "out"), arrow_open_stream_args={"compression": "zip"})


# ---- no rows -----------------------------------------------------------------------------


def test_a_write_of_no_rows_removes_the_directory_it_created_as_ray_does(tmp_path):
    empty = md.range(100).filter(expr="id < 0")
    empty.write_parquet(str(tmp_path / "new"))
    assert not (tmp_path / "new").exists()
    (tmp_path / "existing").mkdir()
    empty.write_csv(str(tmp_path / "existing"))
    assert (tmp_path / "existing").is_dir()


def test_schema_with_partition_columns_describes_the_other_columns(tmp_path):
    table = pa.table({"id": list(range(6)), "part": ["a", "b"] * 3})
    schema = pa.schema([("id", pa.int32()), ("part", pa.string())])
    md.from_arrow(table).write_parquet(str(tmp_path / "out"), partition_cols=["part"], schema=schema)
    for f in visible_files(tmp_path / "out"):
        assert pq.read_schema(f).remove_metadata() == pa.schema([("id", pa.int32())])
    back = pq.read_table(str(tmp_path / "out"), partitioning="hive")
    assert sorted(back["id"].to_pylist()) == list(range(6))


@pytest.mark.parametrize("fmt,kwargs", [
    ("parquet", {"compression": "zip"}),
    ("parquet", {"compression": "zstd", "compression_level": 1000}),
    ("parquet", {"partition_cols": [""]}),
    ("csv", {"write_options": pacsv.WriteOptions(quoting_header="none", quoting_style="none", delimiter=",")}
     | {"arrow_open_stream_args": {"compression": "zip"}}),
])
def test_a_bad_option_raises_before_an_overwrite_deletes_anything(tmp_path, fmt, kwargs):
    out = tmp_path / "out"
    before = _old_files(out)
    with pytest.raises(ValueError):
        getattr(md.range(5), f"write_{fmt}")(str(out), mode="overwrite", **kwargs)
    assert sorted(all_files(out)) == before


def test_typed_core_write_options_take_keywords_and_validate():
    """The engine's write options are typed objects with keyword constructors; the write
    builds them in one place (_files.core_write_options) from its checked arguments."""
    from millstream import _core, _files

    schema = pa.schema([("a", pa.int64())])
    options = _files.core_write_options({"partition_cols": ["a"], "max_rows_per_file": 10,
                                         "compression": "zstd", "compression_level": 3,
                                         "row_group_size": None, "schema": schema,
                                         "delimiter": ";", "concurrency": 2})
    assert options.partition_cols == ["a"]
    assert (options.min_rows_per_file, options.max_rows_per_file, options.concurrency) == (0, 10, 2)
    assert (options.parquet.compression, options.parquet.compression_level) == ("zstd", 3)
    assert options.parquet.row_group_size == 0  # None keeps the engine's default (Arrow's)
    assert options.parquet.schema == schema
    assert options.parquet.version == "2.6"
    assert options.parquet.use_dictionary is None  # unset: each column as its values tell
    assert options.csv.delimiter == ";" and options.csv.include_header is True
    assert options.filesystem is None and not options.has_filename_provider
    options.validate(_core.FileFormat.PARQUET)
    with pytest.raises(TypeError):
        _core.ParquetWriteOptions("zstd")  # keywords only
    with pytest.raises(TypeError, match="unknown option"):
        _files.core_write_options({"compresion": "zstd"})
    bad = _core.WriteOptions(parquet=_core.ParquetWriteOptions(compression="nope"))
    with pytest.raises(Exception, match="nope"):
        bad.validate(_core.FileFormat.PARQUET)
    assert _files.core_format("csv") == _core.FileFormat.CSV

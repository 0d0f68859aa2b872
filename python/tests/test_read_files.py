"""read_csv / read_json / read_text / read_binary_files / read_numpy / read_images, and the
parameters every file reader shares; expected values come from pyarrow, pandas, numpy and
Pillow reading the same files."""

from __future__ import annotations

import gzip
import io
import json
import pathlib
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pytest

import millstream as md


def _sorted(table: pa.Table, by: str) -> pa.Table:
    return table.sort_by(by)


@pytest.fixture
def csv_dir(tmp_path):
    """Three CSV files with ints, floats, strings and nulls."""
    rng = np.random.default_rng(0)
    for i in range(3):
        n = 50 + i
        df = pd.DataFrame({"id": np.arange(i * 100, i * 100 + n), "x": rng.normal(size=n).round(6),
                           "s": [f"s{j}" if j % 7 else None for j in range(n)]})
        df.to_csv(tmp_path / f"part{i}.csv", index=False)
    (tmp_path / "notes.txt").write_text("not,a,csv\n1\n")
    return tmp_path


def _pyarrow_csv(paths, **kwargs) -> pa.Table:
    return pa.concat_tables([pacsv.read_csv(p, **kwargs) for p in sorted(paths)])


# ---- CSV -----------------------------------------------------------------------------------

def test_read_csv_matches_pyarrow(csv_dir):
    expected = _pyarrow_csv(csv_dir.glob("*.csv"))
    got = md.read_csv(str(csv_dir), file_extensions=["csv"]).to_arrow()
    assert got.equals(expected.select(got.column_names))
    assert got.column_names == ["id", "x", "s"]


def test_read_csv_of_many_blocks_keeps_the_types_of_its_first_block(tmp_path):
    # A file of many blocks is read with the types Arrow's streaming reader infers from its
    # first block: the same table as pyarrow's, whatever the line endings and quoting.
    rows = [f'{i},{i / 8},"s, {i}",{"" if i % 7 else "x"}' for i in range(20_000)]
    for name, newline in (("lf.csv", "\n"), ("crlf.csv", "\r\n")):
        (tmp_path / name).write_bytes(("id,f,s,sparse" + newline + newline.join(rows) + newline).encode())
        options = pacsv.ReadOptions(block_size=1 << 14)
        expected = pacsv.read_csv(tmp_path / name, read_options=options)
        got = md.read_csv(tmp_path / name, read_options=options).to_arrow()
        assert got.equals(expected), name
        assert [f.type for f in got.schema] == [pa.int64(), pa.float64(), pa.string(), pa.string()]
        # Types given by the user stay theirs; the others are inferred.
        convert = pacsv.ConvertOptions(column_types={"id": pa.int32()})
        got = md.read_csv(tmp_path / name, read_options=options, convert_options=convert).to_arrow()
        assert got.equals(pacsv.read_csv(tmp_path / name, read_options=options, convert_options=convert))
    # Two columns of one name keep their own types.
    (tmp_path / "twice.csv").write_text("x,x\n" + "".join(f"{i},v{i}\n" for i in range(5000)))
    options = pacsv.ReadOptions(block_size=1 << 12)
    got = md.read_csv(tmp_path / "twice.csv", read_options=options).to_arrow()
    assert got.equals(pacsv.read_csv(tmp_path / "twice.csv", read_options=options))
    assert [f.type for f in got.schema] == [pa.int64(), pa.string()]
    # A value past the first block that the first block's type cannot hold fails naming the
    # file, as Arrow's streaming reader does (pyarrow's whole-file reader would widen it).
    (tmp_path / "late.csv").write_text("n\n" + "\n".join(["1"] * 5000 + ["1.5"]) + "\n")
    with pytest.raises(Exception, match="late.csv"):
        md.read_csv(tmp_path / "late.csv", read_options=pacsv.ReadOptions(block_size=1 << 12)).to_arrow()


def test_read_csv_paths_in_every_form(csv_dir):
    files = sorted(csv_dir.glob("*.csv"))
    expected = _pyarrow_csv(files)
    for paths in (files, [str(f) for f in files], str(csv_dir / "part*.csv"),
                  [f"file://{f}" for f in files], csv_dir):
        got = md.read_csv(paths, file_extensions=["csv"]).to_arrow()
        assert got.equals(expected), paths


def test_read_csv_default_extensions_read_every_file(csv_dir):
    # Ray's read_csv has file_extensions=None: a directory's every (visible) file is read,
    # so the .txt file with another shape fails naming itself.
    with pytest.raises(Exception, match="notes.txt"):
        md.read_csv(csv_dir).to_arrow()


def test_read_csv_options_translated(tmp_path):
    path = tmp_path / "semi.csv"
    path.write_text("# comment line\nid;price;flag;when\n1;2,5;yes;2024-01-02\n2;NA;no;2024-02-03\n")
    kwargs = dict(read_options=pacsv.ReadOptions(skip_rows=1),
                  parse_options=pacsv.ParseOptions(delimiter=";"),
                  convert_options=pacsv.ConvertOptions(column_types={"id": pa.int16()}, decimal_point=",",
                                                       true_values=["yes"], false_values=["no"],
                                                       null_values=["NA"], timestamp_parsers=["%Y-%m-%d"]))
    expected = pacsv.read_csv(path, **kwargs)
    got = md.read_csv(path, **kwargs).to_arrow()
    assert got.equals(expected)
    assert got.schema.field("id").type == pa.int16()
    assert got.column("flag").to_pylist() == [True, False]
    assert got.column("price").to_pylist() == [2.5, None]


def test_read_csv_include_columns_and_column_names(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("1,2,3\n4,5,6\n")
    kwargs = dict(read_options=pacsv.ReadOptions(column_names=["a", "b", "c"]),
                  convert_options=pacsv.ConvertOptions(include_columns=["c", "a"]))
    assert md.read_csv(path, **kwargs).to_arrow().equals(pacsv.read_csv(path, **kwargs))


def test_read_csv_untranslatable_options_raise(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("a\n1\n")
    with pytest.raises(NotImplementedError, match="invalid_row_handler"):
        md.read_csv(path, parse_options=pacsv.ParseOptions(invalid_row_handler=lambda row: "skip"))
    with pytest.raises(NotImplementedError, match="encoding"):
        md.read_csv(path, read_options=pacsv.ReadOptions(encoding="latin-1"))
    with pytest.raises(TypeError, match="ParseOptions"):
        md.read_csv(path, parse_options={"delimiter": ";"})
    with pytest.raises(TypeError, match="did you mean 'convert_options'"):
        md.read_csv(path, convert_option=pacsv.ConvertOptions())


def test_read_csv_compressed(tmp_path, csv_dir):
    source = csv_dir / "part1.csv"
    expected = pacsv.read_csv(source)
    (tmp_path / "data.csv.gz").write_bytes(gzip.compress(source.read_bytes()))
    assert md.read_csv(tmp_path / "data.csv.gz").to_arrow().equals(expected)
    # By extension in a directory (Ray's default extensions for CSV include .csv.gz)...
    assert md.read_csv(tmp_path, file_extensions=["csv.gz"]).to_arrow().equals(expected)
    # ...or said in arrow_open_stream_args for a name that does not tell.
    (tmp_path / "blob").write_bytes(gzip.compress(source.read_bytes()))
    got = md.read_csv(tmp_path / "blob", arrow_open_stream_args={"compression": "gzip"}).to_arrow()
    assert got.equals(expected)


def test_read_csv_malformed_names_file_and_row(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("a,b\n1,2\n3,4,5\n")
    with pytest.raises(ValueError, match=r"bad\.csv") as info:
        md.read_csv(path).to_arrow()
    with pytest.raises(pa.ArrowInvalid) as reference:
        pacsv.read_csv(path, read_options=pacsv.ReadOptions(use_threads=False))
    assert "Expected 2 columns, got 3" in str(info.value)
    assert re.search(r"[Rr]ow #?\d", str(reference.value)) is None or re.search(r"[Rr]ow", str(info.value))


def test_read_csv_hive_partitions_and_paths(tmp_path):
    for year, rows in (("2022", "1,a\n2,b\n"), ("2023", "3,c\n")):
        d = tmp_path / f"year={year}"
        d.mkdir()
        (d / "part.csv").write_text("n,s\n" + rows)
    got = md.read_csv(tmp_path).to_arrow()
    assert got.column_names == ["n", "s", "year"]
    assert sorted(zip(got["n"].to_pylist(), got["year"].to_pylist())) == [(1, "2022"), (2, "2022"), (3, "2023")]
    got = md.read_csv(tmp_path, partitioning=None, include_paths=True).to_arrow()
    assert got.column_names == ["n", "s", "path"]
    assert sorted(set(got["path"].to_pylist())) == sorted(str(p) for p in tmp_path.glob("*/part.csv"))


def test_read_csv_partition_filter(tmp_path):
    for year in ("2022", "2023"):
        d = tmp_path / f"year={year}"
        d.mkdir()
        (d / "part.csv").write_text(f"n\n{year}\n")
    got = md.read_csv(tmp_path, partition_filter=lambda paths: [p for p in paths if "2023" in p]).to_arrow()
    assert got["n"].to_pylist() == [2023]
    with pytest.raises(ValueError, match="partition_filter left no file"):
        md.read_csv(tmp_path, partition_filter=lambda paths: [])


def test_ignore_missing_paths(csv_dir):
    files = sorted(str(f) for f in csv_dir.glob("*.csv"))
    missing = str(csv_dir / "missing.csv")
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        md.read_csv([files[0], missing])
    got = md.read_csv([files[0], missing], ignore_missing_paths=True).to_arrow()
    assert got.equals(pacsv.read_csv(files[0]))
    with pytest.raises(ValueError, match="none of the given paths exist"):
        md.read_csv([missing], ignore_missing_paths=True)


def test_shuffle_files(tmp_path):
    for i in range(30):
        (tmp_path / f"f{i:02d}.csv").write_text(f"i\n{i}\n")
    in_order = md.read_csv(tmp_path).take_all()
    assert [r["i"] for r in in_order] == list(range(30))
    orders = {tuple(r["i"] for r in md.read_csv(tmp_path, shuffle="files").take_all()) for _ in range(3)}
    assert all(sorted(o) == list(range(30)) for o in orders)
    assert orders != {tuple(range(30))}
    fixed = md.read_csv(tmp_path, shuffle=md.FileShuffleConfig(seed=7, reseed_after_execution=False))
    first, second = ([r["i"] for r in fixed.take_all()] for _ in range(2))
    assert first == second and first != list(range(30)) and sorted(first) == list(range(30))
    reseeded = md.read_csv(tmp_path, shuffle=md.FileShuffleConfig(seed=7))
    first, second = ([r["i"] for r in reseeded.take_all()] for _ in range(2))
    assert first != second and sorted(first) == sorted(second) == list(range(30))
    with pytest.raises(ValueError, match="shuffle"):
        md.read_csv(tmp_path, shuffle="rows")


def test_many_small_files_are_grouped(tmp_path):
    for i in range(600):
        (tmp_path / f"f{i:03d}.csv").write_text(f"i,sq\n{i},{i * i}\n")
    ds = md.read_csv(tmp_path)
    tasks = int(re.search(r"Input\[(\d+) read tasks\]", ds._explain_str()).group(1))
    assert tasks <= 200
    got = ds.to_arrow()
    assert got["i"].to_pylist() == list(range(600))
    assert got["sq"].to_pylist() == [i * i for i in range(600)]
    ds = md.read_csv(tmp_path, override_num_blocks=7)
    assert "Input[7 read tasks]" in ds._explain_str()
    assert ds.count() == 600


def test_read_unsupported_and_bad_arguments(csv_dir):
    with pytest.raises(NotImplementedError, match="filesystem"):
        md.read_csv(csv_dir, filesystem=object())
    with pytest.raises(NotImplementedError, match="scheme 'abfs'"):
        md.read_csv("abfs://bucket/a.csv")
    with pytest.raises(TypeError, match="did you mean 'include_paths'"):
        md.read_csv(csv_dir, include_path=True)
    with pytest.raises(ValueError, match="no paths"):
        md.read_json([])
    with pytest.raises(NotImplementedError, match="partitioning style"):
        md.read_csv(csv_dir, partitioning="directory")


# ---- JSON ----------------------------------------------------------------------------------

def test_read_json_lines_matches_pyarrow(tmp_path):
    rows = [{"a": i, "b": f"x{i}", "c": [i, i + 1], "d": {"e": i * 0.5}} for i in range(100)]
    rows[5]["b"] = None
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    expected = pajson.read_json(path)
    for lines in (False, True):
        got = md.read_json(path, lines=lines).to_arrow()
        assert got.equals(expected)


def test_read_json_array_matches_pandas(tmp_path):
    rows = [{"a": i, "b": f"x{i}", "c": i / 4} for i in range(20)]
    rows.append({"a": 99, "b": "with, comma ] and [ brackets \" quote", "c": None})
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(rows, indent=2))
    got = md.read_json(path).to_pandas()
    expected = pd.read_json(path, orient="records")
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    (tmp_path / "empty.json").write_text("[]")
    assert md.read_json(tmp_path / "empty.json").count() == 0


def test_read_json_options_and_directory(tmp_path):
    (tmp_path / "a.json").write_text('{"a": 1, "b": 2}\n')
    (tmp_path / "b.jsonl").write_text('{"a": 3, "b": 4}\n')
    (tmp_path / "c.csv").write_text("a\n1\n")  # not a JSON extension: left out
    schema = pa.schema([("a", pa.int8())])
    opts = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    got = md.read_json(tmp_path, parse_options=opts).to_arrow()
    assert got.schema == schema and got["a"].to_pylist() == [1, 3]
    with pytest.raises(ValueError, match="not supported when `lines=True`"):
        md.read_json(tmp_path, lines=True, parse_options=opts)


def test_read_json_straddling_object_grows_block(tmp_path):
    path = tmp_path / "big.jsonl"
    rows = [{"s": "x" * 5000, "i": i} for i in range(10)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    got = md.read_json(path, read_options=pajson.ReadOptions(block_size=1024)).to_arrow()
    assert got["i"].to_pylist() == list(range(10))


def test_read_json_malformed_names_file(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(ValueError, match=r"bad\.jsonl"):
        md.read_json(path).to_arrow()
    path = tmp_path / "open.json"
    path.write_text('[{"a": 1}, {"a": 2}')
    with pytest.raises(ValueError, match=r"open\.json.*not closed"):
        md.read_json(path).to_arrow()


# ---- text, binary --------------------------------------------------------------------------

TEXT = "first\n\n   \nsecond\r\nthird\rfourth\x0bfifth\u2028sixth\u00e9\nlast"


def test_read_text_matches_splitlines(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text(TEXT, encoding="utf-8", newline="")
    got = [r["text"] for r in md.read_text(path).take_all()]
    assert got == [line for line in TEXT.splitlines() if line.strip()]
    got = [r["text"] for r in md.read_text(path, drop_empty_lines=False).take_all()]
    assert got == TEXT.splitlines()


def test_read_text_other_encodings(tmp_path):
    for encoding in ("latin-1", "utf-16"):
        path = tmp_path / f"t-{encoding}.txt"
        path.write_bytes("caf\u00e9\n\nna\u00efve\n".encode(encoding))
        got = md.read_text(path, encoding=encoding, include_paths=True).take_all()
        assert got == [{"text": "caf\u00e9", "path": str(path)}, {"text": "na\u00efve", "path": str(path)}]
    with pytest.raises(LookupError, match="no-such-codec"):
        md.read_text(path, encoding="no-such-codec")


def test_read_text_invalid_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"ok\nstill ok\nbad \xff here\n")
    with pytest.raises(ValueError, match=r"bad\.txt.*line 3"):
        md.read_text(path).to_arrow()


def test_read_binary_files(tmp_path):
    blobs = {f"b{i}.bin": bytes(np.random.default_rng(i).integers(0, 256, size=100 * i, dtype=np.uint8))
             for i in range(4)}
    for name, blob in blobs.items():
        (tmp_path / name).write_bytes(blob)
    rows = md.read_binary_files(tmp_path, include_paths=True).take_all()
    assert {pathlib.Path(r["path"]).name: r["bytes"] for r in rows} == blobs
    assert list(md.read_binary_files(tmp_path).take(1)[0]) == ["bytes"]
    assert md.read_binary_files(tmp_path).count() == 4


# ---- NumPy ---------------------------------------------------------------------------------

def test_read_numpy_matches_np_load(tmp_path):
    a = np.arange(24, dtype=np.float32).reshape(4, 2, 3)
    b = np.arange(6, dtype=np.float32).reshape(1, 2, 3) * -1
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    (tmp_path / "skip.txt").write_text("x")
    batch = md.read_numpy(tmp_path).take_batch(10, batch_format="numpy")
    np.testing.assert_array_equal(batch["data"], np.concatenate([a, b]))
    assert batch["data"].dtype == np.float32
    rows = md.read_numpy(tmp_path / "a.npy", include_paths=True).take_all()
    assert [r["path"] for r in rows] == [str(tmp_path / "a.npy")] * 4
    one_d = np.array([3, 1, 2], dtype=np.int64)
    np.save(tmp_path / "c.npy", one_d)
    assert [r["data"] for r in md.read_numpy(tmp_path / "c.npy").take_all()] == [3, 1, 2]


def test_read_numpy_bad_file_names_it(tmp_path):
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match=r"bad\.npy"):
        md.read_numpy(tmp_path).to_arrow()
    with pytest.raises(NotImplementedError, match="mmap_mode"):
        md.read_numpy(tmp_path, mmap_mode="r")


# ---- images --------------------------------------------------------------------------------

PIL = pytest.importorskip("PIL.Image")


def _images(tmp_path, shapes):
    rng = np.random.default_rng(1)
    paths = []
    for i, shape in enumerate(shapes):
        array = rng.integers(0, 256, size=shape, dtype=np.uint8)
        path = tmp_path / f"img{i}.png"
        PIL.fromarray(array).save(path)
        paths.append(path)
    return paths


def test_read_images_matches_pillow(tmp_path):
    paths = _images(tmp_path, [(8, 10, 3)] * 3)
    (tmp_path / "notes.txt").write_text("not an image")
    batch = md.read_images(tmp_path).take_batch(10, batch_format="numpy")
    expected = np.stack([np.asarray(PIL.open(p)) for p in paths])
    np.testing.assert_array_equal(batch["image"], expected)
    assert batch["image"].dtype == np.uint8


def test_read_images_size_mode_paths(tmp_path):
    paths = _images(tmp_path, [(8, 10, 3), (5, 4, 3), (6, 6)])
    rows = md.read_images(tmp_path, size=(7, 9), mode="L", include_paths=True).take_all()
    assert [r["path"] for r in rows] == [str(p) for p in paths]
    for row, path in zip(rows, paths):
        image = PIL.open(path)
        if image.size != (9, 7):
            image = image.resize((9, 7), resample=PIL.BILINEAR)
        if image.mode != "L":
            image = image.convert("L")
        np.testing.assert_array_equal(row["image"], np.asarray(image))
    # Different shapes without size=: one variable-shape tensor column.
    rows = md.read_images(tmp_path).take_all()
    assert [r["image"].shape for r in rows] == [(8, 10, 3), (5, 4, 3), (6, 6)]
    with pytest.raises(ValueError, match="two integers"):
        md.read_images(tmp_path, size=(1, 2, 3))


def test_read_images_corrupt_file_names_it(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match=r"broken\.png"):
        md.read_images(tmp_path).to_arrow()

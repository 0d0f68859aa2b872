"""millstream.expressions with Dataset.with_column and filter(expr=): every result is
checked against pyarrow.compute (or numpy) on the same table."""

from __future__ import annotations

import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import millstream as md
from millstream.expressions import Expr, col, lit

rng = np.random.default_rng(3)
N = 500
TABLE = pa.table({
    "a": rng.integers(-50, 50, N),
    "b": rng.random(N) * 10 - 5,
    "n": pa.array([None if i % 7 == 0 else i for i in range(N)], pa.int64()),
    "s": pa.array([f" Item{i % 13}x " if i % 11 else None for i in range(N)]),
    "t": pa.array([datetime.datetime(2020, 1, 1) + datetime.timedelta(hours=37 * i) for i in range(N)],
                  pa.timestamp("us")),
    "flag": pa.array([i % 3 == 0 for i in range(N)]),
})


def _ds():
    return md.from_arrow(TABLE, override_num_blocks=5)


def _with(expr) -> pa.ChunkedArray:
    out = _ds().with_column("out", expr).to_arrow()
    assert out.column_names == TABLE.column_names + ["out"]
    assert out.drop_columns(["out"]).equals(TABLE)  # input order kept, columns untouched
    return out["out"]


a, b, n, s, t = (pc.field(c) for c in ("a", "b", "n", "s", "t"))
f64 = pa.float64()

CASES = {
    "add": (col("a") + col("n"), pc.add(TABLE["a"], TABLE["n"])),
    "radd": (1 + col("a"), pc.add(1, TABLE["a"])),
    "sub_mul": ((col("a") - 3) * col("b"), pc.multiply(pc.subtract(TABLE["a"], 3), TABLE["b"])),
    "truediv": (col("a") / 4, pc.divide(TABLE["a"].cast(f64), 4.0)),
    "rtruediv": (10 / col("b"), pc.divide(10.0, TABLE["b"])),
    "floordiv": (col("a") // 7, pa.chunked_array([np.floor_divide(TABLE["a"].to_numpy(), 7).astype(float)])),
    "mod": (col("a") % 7, pa.chunked_array([np.mod(TABLE["a"].to_numpy(), 7).astype(float)])),
    "neg": (-col("b"), pc.negate(TABLE["b"])),
    "gt": (col("a") > 10, pc.greater(TABLE["a"], 10)),
    "le": (col("b") <= col("a"), pc.less_equal(TABLE["b"], TABLE["a"])),
    "eq_ne": ((col("a") == 3) | (col("a") != 4), pc.or_kleene(pc.equal(TABLE["a"], 3), pc.not_equal(TABLE["a"], 4))),
    "and_not": ((col("a") > 0) & ~col("flag"), pc.and_kleene(pc.greater(TABLE["a"], 0), pc.invert(TABLE["flag"]))),
    "is_null": (col("n").is_null(), pc.is_null(TABLE["n"])),
    "is_not_null": (col("s").is_not_null(), pc.is_valid(TABLE["s"])),
    "is_in": (col("a").is_in([1, 2, 3]), pc.is_in(TABLE["a"], pa.array([1, 2, 3]))),
    "not_in": (col("a").not_in([1, 2, 3]), pc.invert(pc.is_in(TABLE["a"], pa.array([1, 2, 3])))),
    "cast": (col("b").cast(pa.int32(), safe=False), pc.cast(TABLE["b"], pa.int32(), safe=False)),
    "cast_name": (col("a").cast("float32"), pc.cast(TABLE["a"], pa.float32())),
    "abs": (col("a").abs(), pc.abs(TABLE["a"])),
    "round": (col("b").round(2), pc.round(TABLE["b"], 2, round_mode="half_to_even")),
    "ceil_floor": (col("b").ceil() - col("b").floor(), pc.subtract(pc.ceil(TABLE["b"]), pc.floor(TABLE["b"]))),
    "sqrt": (col("b").abs().sqrt(), pc.sqrt(pc.abs(TABLE["b"]))),
    "exp_ln": ((col("b").exp()).ln(), pc.ln(pc.exp(TABLE["b"]))),
    "power": (col("b").power(2), pc.power(TABLE["b"], 2)),
    "sin": (col("b").sin(), pc.sin(TABLE["b"])),
    "sign": (col("a").sign(), pc.sign(TABLE["a"])),
    "lit": (lit(5), pa.chunked_array([pa.array([5] * N)])),
    "lit_str": (lit("x"), pa.chunked_array([pa.array(["x"] * N)])),
    "str_upper": (col("s").str.upper(), pc.utf8_upper(TABLE["s"])),
    "str_len": (col("s").str.len(), pc.utf8_length(TABLE["s"])),
    "str_strip": (col("s").str.strip(), pc.utf8_trim_whitespace(TABLE["s"])),
    "str_strip_chars": (col("s").str.strip(" x"), pc.utf8_trim(TABLE["s"], " x")),
    "str_starts": (col("s").str.strip().str.starts_with("item", ignore_case=True),
                   pc.starts_with(pc.utf8_trim_whitespace(TABLE["s"]), "item", ignore_case=True)),
    "str_contains": (col("s").str.contains("m1"), pc.match_substring(TABLE["s"], "m1")),
    "str_match": (col("s").str.match("%m1_x%"), pc.match_like(TABLE["s"], "%m1_x%")),
    "str_replace": (col("s").str.replace("Item", "I"), pc.replace_substring(TABLE["s"], "Item", "I")),
    "str_slice": (col("s").str.slice(1, 5), pc.utf8_slice_codeunits(TABLE["s"], 1, 5)),
    "str_pad": (col("s").str.pad(12, "*", "left"), pc.utf8_lpad(TABLE["s"], 12, "*")),
    "str_split_ws": (col("s").str.split_whitespace(), pc.utf8_split_whitespace(TABLE["s"])),
    "str_split_regex": (col("s").str.split_regex("m[0-9]"), pc.split_pattern_regex(TABLE["s"], "m[0-9]")),
    "str_replace_slice": (col("s").str.replace_slice(0, 2, "#"), pc.utf8_replace_slice(TABLE["s"], 0, 2, "#")),
    "str_extract": (col("s").str.extract(r"Item(?P<n>[0-9]+)"), pc.extract_regex(TABLE["s"], r"Item(?P<n>[0-9]+)")),
    # Arrow binds an integer literal to the column's integer type (int32 here).
    "str_count_find": (col("s").str.count("1") * 100 + col("s").str.find("x"),
                       pc.add(pc.multiply(pc.count_substring(TABLE["s"], "1"), pa.scalar(100, pa.int32())),
                              pc.find_substring(TABLE["s"], "x"))),
    "dt_year": (col("t").dt.year(), pc.year(TABLE["t"])),
    "dt_month_day": (col("t").dt.month() * 100 + col("t").dt.day(),
                     pc.add(pc.multiply(pc.month(TABLE["t"]), 100), pc.day(TABLE["t"]))),
    "dt_hour": (col("t").dt.hour(), pc.hour(TABLE["t"])),
    "dt_strftime": (col("t").dt.strftime("%Y-%m"), pc.strftime(TABLE["t"], "%Y-%m")),
    "dt_floor": (col("t").dt.floor("day"), pc.floor_temporal(TABLE["t"], unit="day")),
    "alias": ((col("a") * 2).alias("ignored"), pc.multiply(TABLE["a"], 2)),
    "pyarrow_expression": (pc.field("a") * 3, pc.multiply(TABLE["a"], 3)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_with_column_matches_pyarrow_compute(name):
    expr, expected = CASES[name]
    got = _with(expr)
    expected = expected.combine_chunks() if isinstance(expected, pa.ChunkedArray) else expected
    assert got.combine_chunks().equals(expected.cast(got.type) if name.startswith("lit") else expected), name


def test_with_column_replaces_an_existing_column():
    out = _ds().with_column("a", col("a") * 10).to_arrow()
    assert out.column_names == TABLE.column_names
    assert out["a"].equals(pc.multiply(TABLE["a"], 10))


def test_with_column_schema_is_known_without_running():
    ds = _ds().with_column("half", col("a") / 2)
    assert ds.schema().names == TABLE.column_names + ["half"]
    assert ds.schema().types[-1] == pa.float64()


@pytest.mark.parametrize("expr,reference", [
    ((col("a") > 0) & (col("b") < 1), lambda: pc.and_kleene(pc.greater(TABLE["a"], 0), pc.less(TABLE["b"], 1))),
    (col("n").is_null() | col("flag"), lambda: pc.or_kleene(pc.is_null(TABLE["n"]), TABLE["flag"])),
    (col("s").str.contains("Item1"), lambda: pc.match_substring(TABLE["s"], "Item1")),
    (col("a").is_in([0, 5, 7]), lambda: pc.is_in(TABLE["a"], pa.array([0, 5, 7]))),
    (~(col("t").dt.year() == 2020), lambda: pc.invert(pc.equal(pc.year(TABLE["t"]), 2020))),
])
def test_filter_with_expressions_matches_pyarrow(expr, reference):
    got = _ds().filter(expr=expr).to_arrow()
    assert got.equals(TABLE.filter(reference()))


def test_filter_strings_still_work():
    got = _ds().filter(expr="a > 10 and b < 0").to_arrow()
    assert got.equals(TABLE.filter(pc.and_kleene(pc.greater(TABLE["a"], 10), pc.less(TABLE["b"], 0))))


def test_filter_then_with_column_pipeline():
    got = (_ds().filter(expr=col("n").is_not_null())
           .with_column("score", col("n") * col("b"))
           .filter(expr=col("score") > 0)
           .select_columns(["n", "score"]).to_arrow())
    kept = TABLE.filter(pc.is_valid(TABLE["n"]))
    score = pc.multiply(kept["n"], kept["b"])
    expected = pa.table({"n": kept["n"], "score": score}).filter(pc.greater(score, 0))
    assert got.equals(expected)


def test_filter_and_with_column_rebind_when_the_blocks_schema_changes():
    # Blocks of three layouts, one per task: the bound expression one task leaves behind
    # must not be used on another's columns (by position or type).
    tables = [pa.table({"x": [1, 5, 9], "y": ["a", "b", "c"]}),
              pa.table({"y": ["d", "e"], "x": [7, 2]}),
              pa.table({"x": [3.5, 8.5], "y": ["f", "g"]})]
    ds = md.from_arrow(tables).filter(expr=col("x") > 4).with_column("z", col("x") * 2)
    rows = sorted((r["y"], r["x"], r["z"]) for r in ds.take_all())
    assert rows == [("b", 5, 10), ("c", 9, 18), ("d", 7, 14), ("g", 8.5, 17.0)]


def test_read_parquet_filter_takes_an_expression(tmp_path):
    import pyarrow.parquet as pq

    pq.write_table(TABLE.select(["a", "b"]), tmp_path / "f.parquet", row_group_size=100)
    got = md.read_parquet(str(tmp_path), filter=col("a") >= 40).to_arrow()
    assert got.equals(TABLE.select(["a", "b"]).filter(pc.greater_equal(TABLE["a"], 40)))


def test_missing_column_raises_naming_it():
    with pytest.raises(KeyError, match="'nope'.*the columns are: a, b"):
        _ds().with_column("x", col("nope") + 1).take(1)


def test_non_boolean_filter_expression_raises():
    with pytest.raises(TypeError, match="not boolean"):
        _ds().filter(expr=col("a") + 1).take(1)


def test_overflow_raises_instead_of_wrapping():
    ds = md.from_arrow(pa.table({"x": pa.array([2**62], pa.int64())}))
    with pytest.raises(Exception, match="overflow"):
        ds.with_column("y", col("x") * 4).take(1)


def test_python_boolean_operators_refuse():
    with pytest.raises(TypeError, match="& | ~"):
        bool(col("a") > 1)
    with pytest.raises(TypeError):
        (col("a") > 1) and (col("b") > 1)  # noqa: B015


def test_structure_and_names():
    e = (col("a") + 1) * col("b")
    assert e.structurally_equals((col("a") + 1) * col("b"))
    assert not e.structurally_equals((col("a") + 2) * col("b"))
    assert col("a").name == "a" and (col("a") * 2).alias("z").name == "z" and (col("a") + 1).name is None
    assert isinstance(e, Expr)
    assert str(e.to_pyarrow()) == str((pc.field("a") + 1) * pc.field("b"))


def test_bad_arguments():
    with pytest.raises(TypeError, match="column_name"):
        _ds().with_column(1, col("a"))
    with pytest.raises(TypeError, match="expr"):
        _ds().with_column("x", lambda b: b)
    with pytest.raises(TypeError, match="string"):
        col(3)
    with pytest.raises(TypeError, match="values"):
        col("a").is_in(5)
    with pytest.raises(NotImplementedError, match="map_batches"):
        from millstream.expressions import udf
        udf()


def test_list_and_struct_namespaces():
    table = pa.table({"l": pa.array([[1, 2, 3], [4], []]),
                      "st": pa.array([{"x": 1, "y": "a"}, {"x": 2, "y": "b"}, {"x": 3, "y": "c"}])})
    out = (md.from_arrow(table).with_column("len", col("l").list.len())
           .with_column("x", col("st").struct.field("x")).to_arrow())
    assert out["len"].equals(pc.list_value_length(table["l"]))
    assert out["x"].equals(pc.struct_field(table["st"], ["x"]))

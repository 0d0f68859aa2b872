"""Differential test: random pipelines over random small tables, run by millstream and,
step by step, by pandas (nullable dtypes, whose Kleene logic for nulls is Arrow's).

Steps: filter by a string expression, map_batches in numpy/pandas/pyarrow formats
computing a column, select/drop/rename columns, limit, add_column. The collected result
(to_arrow) must equal pandas' in order; the streamed one (iter_batches) in some order.
Bounded and deterministic: a fixed seed, 100 examples, a few seconds."""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import HealthCheck, Phase, given, note, seed, settings
from hypothesis import strategies as st

import millstream as md

_DTYPES = {pa.int64(): pd.Int64Dtype(), pa.float64(): pd.Float64Dtype(), pa.string(): pd.StringDtype()}
_COMPARE = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
            "==": operator.eq, "!=": operator.ne}
_WORDS = ["a", "b", "c", ""]


def to_frame(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas(types_mapper=_DTYPES.get)


@st.composite
def tables(draw) -> pa.Table:
    n = draw(st.integers(0, 40))
    ints = st.integers(-5, 5)
    return pa.table({
        "k": pa.array(range(n), pa.int64()),  # unique: the streamed result is sorted by it
        "i": pa.array(draw(st.lists(st.none() | ints, min_size=n, max_size=n)), pa.int64()),
        "j": pa.array(draw(st.lists(ints, min_size=n, max_size=n)), pa.int64()),
        "f": pa.array(draw(st.lists(st.floats(-10, 10, allow_nan=False), min_size=n, max_size=n)), pa.float64()),
        # Often null: blocks of nulls only are a case of their own for numpy/pandas batches.
        "s": pa.array(draw(st.lists(st.sampled_from([None] * 4 + _WORDS), min_size=n, max_size=n)), pa.string()),
    })


@dataclass
class Column:
    name: str
    kind: str  # "int", "float", "str"
    nullable: bool


@dataclass
class Pipeline:
    """The engine's dataset and pandas' frame, kept in step, and the columns they hold."""
    ds: md.Dataset
    df: pd.DataFrame
    columns: list = field(default_factory=list)
    fresh: int = 0

    def new_name(self, prefix: str) -> str:
        self.fresh += 1
        return f"{prefix}{self.fresh}"

    def numeric(self, non_null: bool) -> list:
        return [c for c in self.columns if c.kind != "str" and not (non_null and c.nullable)]


@st.composite
def predicates(draw, columns: list, depth: int = 0):
    """(expression text, function of a frame giving pandas' nullable boolean mask)."""
    if depth < 2 and draw(st.integers(0, 2)) == 0:
        how = draw(st.sampled_from(["and", "or", "not"]))
        a_text, a = draw(predicates(columns, depth + 1))
        if how == "not":
            return f"not ({a_text})", lambda df: ~a(df)
        b_text, b = draw(predicates(columns, depth + 1))
        combine = operator.and_ if how == "and" else operator.or_
        return f"({a_text}) {how} ({b_text})", lambda df: combine(a(df), b(df))
    col = draw(st.sampled_from(columns))
    name = col.name
    form = draw(st.sampled_from(["compare", "arith", "null", "in"] if col.kind != "float" else ["compare", "arith", "null"]))
    if form == "null":
        if draw(st.booleans()):
            return f"{name} is None", lambda df: df[name].isna()
        return f"{name} is not None", lambda df: df[name].notna()
    if col.kind == "str":
        if form == "in":
            values = draw(st.lists(st.sampled_from(_WORDS), min_size=1, max_size=3))
            return f"{name} in {values!r}", lambda df: df[name].isin(values)
        op = draw(st.sampled_from(["==", "!="]))
        word = draw(st.sampled_from(_WORDS))
        return f"{name} {op} {word!r}", lambda df: _COMPARE[op](df[name], word)
    if form == "in":
        values = draw(st.lists(st.integers(-5, 5), min_size=1, max_size=3))
        return f"{name} in {values!r}", lambda df: df[name].isin(values)
    op = draw(st.sampled_from(sorted(_COMPARE)))
    lit = draw(st.integers(-6, 6))
    if form == "arith":
        shift = draw(st.integers(-3, 3))
        if draw(st.booleans()):
            return f"{name} * 2 + {shift} {op} {lit}", lambda df: _COMPARE[op](df[name] * 2 + shift, lit)
        divisor = draw(st.sampled_from([2, 3, -4]))  # Python's `/`: true division
        return f"{name} / {divisor} - {shift} {op} {lit}", lambda df: _COMPARE[op](df[name] / divisor - shift, lit)
    return f"{name} {op} {lit}", lambda df: _COMPARE[op](df[name], lit)


def step_filter(draw, p: Pipeline) -> str:
    text, mask = draw(predicates(p.columns))
    p.ds = p.ds.filter(expr=text)
    p.df = p.df[mask(p.df).fillna(False).astype(bool)]
    return f"filter({text!r})"


def step_map_batches(draw, p: Pipeline) -> str | None:
    fmt = draw(st.sampled_from(["numpy", "pandas", "pyarrow"]))
    sources = p.numeric(non_null=fmt != "pyarrow")
    if not sources:
        return None
    src = draw(st.sampled_from(sources))
    new = p.new_name("c")
    # numpy and pandas batches have no integer nulls: those UDFs drop such columns.
    dropped = [c.name for c in p.columns if fmt != "pyarrow" and c.kind == "int" and c.nullable]
    if fmt == "numpy":
        def fn(b, src=src.name, new=new, dropped=dropped):
            return {**{c: v for c, v in b.items() if c not in dropped}, new: b[src] * 2 + 1}
    elif fmt == "pandas":
        def fn(df, src=src.name, new=new, dropped=dropped):
            return df.drop(columns=dropped).assign(**{new: df[src] * 2 + 1})
    else:
        def fn(t, src=src.name, new=new):
            return t.append_column(new, pc.add(pc.multiply(t[src], 2), 1))
    p.ds = p.ds.map_batches(fn, batch_format=fmt, batch_size=draw(st.sampled_from([None, 1, 5])))
    p.df = p.df.drop(columns=dropped)
    p.df[new] = p.df[src.name] * 2 + 1
    p.columns = [c for c in p.columns if c.name not in dropped] + [Column(new, src.kind, src.nullable)]
    return f"map_batches({fmt}: {new} = {src.name} * 2 + 1, dropping {dropped})"


def step_add_column(draw, p: Pipeline) -> str | None:
    sources = p.numeric(non_null=True)
    if not sources:
        return None
    src = draw(st.sampled_from(sources))
    new = p.new_name("a")
    p.ds = p.ds.add_column(new, lambda df, src=src.name: df[src] * 3)
    p.df[new] = p.df[src.name] * 3
    p.columns.append(Column(new, src.kind, False))
    return f"add_column({new} = {src.name} * 3)"


def step_select(draw, p: Pipeline) -> str:
    others = [c for c in p.columns if c.name != "k"]
    chosen = draw(st.lists(st.sampled_from(others), unique_by=lambda c: c.name)) if others else []
    keep = chosen + [p.columns[[c.name for c in p.columns].index("k")]]
    keep = draw(st.permutations(keep))
    names = [c.name for c in keep]
    p.ds = p.ds.select_columns(names)
    p.df = p.df[names]
    p.columns = list(keep)
    return f"select_columns({names})"


def step_drop(draw, p: Pipeline) -> str | None:
    others = [c.name for c in p.columns if c.name != "k"]
    if not others:
        return None
    names = draw(st.lists(st.sampled_from(others), min_size=1, unique=True))
    p.ds = p.ds.drop_columns(names)
    p.df = p.df.drop(columns=names)
    p.columns = [c for c in p.columns if c.name not in names]
    return f"drop_columns({names})"


def step_rename(draw, p: Pipeline) -> str | None:
    others = [c for c in p.columns if c.name != "k"]
    if not others:
        return None
    col = draw(st.sampled_from(others))
    old, new = col.name, p.new_name("r")
    p.ds = p.ds.rename_columns({old: new})
    p.df = p.df.rename(columns={old: new})
    col.name = new
    return f"rename_columns({{{old!r}: {new!r}}})"


def step_limit(draw, p: Pipeline) -> str:
    n = draw(st.integers(0, 30))
    p.ds = p.ds.limit(n)
    p.df = p.df.head(n)
    return f"limit({n})"


STEPS = [step_filter, step_map_batches, step_add_column, step_select, step_drop, step_rename, step_limit]


# Deterministic: a fixed seed and no example database, so CI runs the same 100 pipelines
# every time (this seed's include an all-null block through a pandas UDF then a string
# filter, and an integer column divided in a filter). No shrinking: it can outlast the
# suite's per-test timeout; a failure reports its pipeline (the note) and draws as found.
# Locally, add Phase.shrink for a minimal one, or drop @seed to explore new pipelines.
@seed(3)
@settings(max_examples=100, deadline=None, database=None,
          phases=(Phase.explicit, Phase.generate),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(table=tables(), blocks=st.integers(1, 8), data=st.data())
def test_random_pipeline_matches_pandas(table, blocks, data):
    p = Pipeline(md.from_arrow(table, override_num_blocks=blocks), to_frame(table),
                 [Column("k", "int", False), Column("i", "int", True), Column("j", "int", False),
                  Column("f", "float", False), Column("s", "str", True)])
    plan = []
    for _ in range(data.draw(st.integers(1, 6), label="steps")):
        step = data.draw(st.sampled_from(STEPS), label="step")
        described = step(data.draw, p)
        if described:
            plan.append(described)
    note(" -> ".join(plan))
    expected = p.df.reset_index(drop=True)

    # Collected: every row, in input order.
    got = p.ds.to_arrow()
    if got.num_columns == 0 and expected.empty:
        pass  # no block came out of a UDF: no schema to report
    else:
        pd.testing.assert_frame_equal(to_frame(got), expected)

    # Streamed: the same rows, in any order.
    batch_size = data.draw(st.sampled_from([None, 1, 7]), label="batch_size")
    batches = list(p.ds.iter_batches(batch_size=batch_size, batch_format="pyarrow"))
    streamed = to_frame(pa.concat_tables(batches)) if batches else expected.iloc[:0]
    pd.testing.assert_frame_equal(streamed.sort_values("k").reset_index(drop=True),
                                  expected.sort_values("k").reset_index(drop=True))

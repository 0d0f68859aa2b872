"""Aggregations for ``Dataset.aggregate`` and ``GroupedData.aggregate`` (Ray Data's
``ray.data.aggregate`` names, parameters and output column names).

They run natively: each block is aggregated into partial states (counts, sums, mins,
maxes; count/mean/M2 for ``Std``) as it streams in, the partial rows are exchanged by key
hash, and each partition merges them. With ``ignore_nulls=True`` nulls are skipped (a
group with no values gives null); with ``False``, a null in a group makes its result null.
NaN is a value (it propagates through sums and means), as in Arrow and Ray.

``Quantile``, ``Unique`` and ``CountDistinct`` run natively too: their partial state is
the group's values (``hash_list``) or distinct values (``hash_distinct``), merged per
group in the reduce. User-defined aggregations (``AggregateFn``, subclasses of
``AggregateFnV2``, and ``AsList``, ``ValueCounter``, ``MissingValuePercentage``,
``ZeroPercentage``) run in Python: a partial accumulator per group and block, merged per
group after the exchange; built-ins in the same call then run in Python too, with the
same results.
"""

from __future__ import annotations

import abc
import enum
import math
import re
from typing import Callable, Optional

import numpy as np

from millstream._args import NEVER, Unsupported, public

_ZERO = NEVER(why="the engine's aggregations start from their own identity; a custom start value is not supported")


class AggregateFn:
    """A user-defined aggregation in Ray's legacy form (deprecated in Ray in favour of
    ``AggregateFnV2``, still accepted): ``init(key)`` makes a group's accumulator,
    ``accumulate_row(acc, row)`` or ``accumulate_block(acc, block)`` (exactly one; the
    block is a ``pyarrow.Table``) folds rows into it, ``merge(a, b)`` combines two
    accumulators and ``finalize(acc)`` (default: the accumulator itself) gives the value
    of output column ``name``.

    It runs in Python: each block is split into its groups and each group folded into a
    partial accumulator (one row per group and block crosses the exchange, pickled); the
    partials of a group are merged, in input order, in one reduce task, then finalized.
    The accumulators must pickle; ``init``'s key is the key value (a tuple for several
    keys, None without keys)."""

    @public
    def __init__(self, init: Callable, merge: Callable, name: str, accumulate_row: Optional[Callable] = None,
                 accumulate_block: Optional[Callable] = None, finalize: Optional[Callable] = None):
        if (accumulate_row is None) == (accumulate_block is None):
            raise ValueError("Exactly one of accumulate_row or accumulate_block must be provided.")
        if not isinstance(name, str) or not name:
            raise TypeError("`name` must be provided.")
        for what, fn in (("init", init), ("merge", merge), ("accumulate_row", accumulate_row),
                         ("accumulate_block", accumulate_block), ("finalize", finalize)):
            if fn is not None and not callable(fn):
                raise TypeError(f"AggregateFn({name!r}): {what} must be callable, got {type(fn).__name__}")
        if accumulate_block is None:
            def accumulate_block(acc, block):
                for row in block.to_pylist():
                    acc = accumulate_row(acc, row)
                return acc
        self.name = name
        self.init = init
        self.merge = merge
        self.accumulate_block = accumulate_block
        self.finalize = finalize if finalize is not None else (lambda acc: acc)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _is_null(value) -> bool:
    """None or NaN (Ray's ``is_null``)."""
    return value is None or (isinstance(value, (float, np.floating)) and bool(np.isnan(value)))


class AggregateFnV2(AggregateFn, abc.ABC):
    """The base of aggregations in Ray's current form: subclass it and implement
    ``aggregate_block(block) -> acc`` (a ``pyarrow.Table`` of one group's rows of one
    block) and ``combine(acc, new) -> acc``; ``finalize(acc)`` (default: ``acc``) gives
    the output value. ``name`` is the output column, ``zero_factory()`` the empty
    accumulator, ``on`` the column it reads (``get_target_column()``).

    Nulls as in Ray: with ``ignore_nulls=True`` a block whose ``aggregate_block`` is
    None or NaN contributes nothing (a group with nothing gives None); with ``False`` such
    a result makes the group's result None. Runs in Python like ``AggregateFn``."""

    def __init__(self, name: str, zero_factory: Callable, *, on: Optional[str], ignore_nulls: bool):
        if not name:
            raise ValueError(f"Non-empty string has to be provided as name (got {name})")
        if not callable(zero_factory):
            raise TypeError(f"{type(self).__name__}: zero_factory must be callable, got {zero_factory!r}")
        self._target_col_name = on
        self._ignore_nulls = ignore_nulls
        self._agg_name = re.match(r"^([^(]+)", name).group(1) if re.match(r"^([^(]+)", name) else name
        self.name = name
        self._zero_factory = zero_factory
        # The legacy protocol, with Ray's null semantics around the subclass's methods.
        self.init = self._null_safe_init
        self.merge = self._null_safe_combine
        self.accumulate_block = self._null_safe_accumulate

    def _null_safe_init(self, _key):
        return None if self._ignore_nulls else self._zero_factory()

    def _null_safe_accumulate(self, acc, block):
        new = self.aggregate_block(block)
        if self._ignore_nulls and _is_null(new):
            new = None
        return self._null_safe_combine(acc, new)

    def _null_safe_combine(self, current, new):
        if self._ignore_nulls:
            if _is_null(current):
                return new
            if _is_null(new):
                return current
        else:
            if _is_null(new):
                return new
            if _is_null(current):
                return current
        return self.combine(current, new)

    def _final(self, acc):
        return acc if _is_null(acc) else self.finalize(acc)

    def get_target_column(self) -> Optional[str]:
        """The column this aggregation reads (None: whole rows)."""
        return self._target_col_name

    def get_agg_name(self) -> str:
        """The aggregation's kind from its name: "sum" for "sum(x)"."""
        return self._agg_name

    @abc.abstractmethod
    def combine(self, current_accumulator, new):
        """Merges two accumulators."""

    @abc.abstractmethod
    def aggregate_block(self, block):
        """The accumulator of one block (a ``pyarrow.Table``) of one group."""

    def finalize(self, accumulator):
        """The output value from the merged accumulator (default: itself)."""
        return accumulator


class _Native(AggregateFnV2):
    """An aggregation the engine runs itself (natively in the exchange; in Python, with
    the same results, when it shares an ``aggregate`` call with a user-defined one)."""

    _kind = ""
    _label = ""

    def __init__(self, on: Optional[str], ignore_nulls: bool, alias_name: Optional[str], ddof: int = 1,
                 needs_column: bool = True, q: float = 0.5):
        cls = type(self).__name__
        if on is not None and not isinstance(on, str):
            raise TypeError(f"{cls}: on must be a column name (a str), got {on!r}")
        if needs_column and on is None:
            raise ValueError(f"Column to aggregate on has to be provided (got {on}) for {cls}")
        if not isinstance(ignore_nulls, bool):
            raise TypeError(f"{cls}: ignore_nulls must be a bool, got {ignore_nulls!r}")
        if alias_name is not None and (not isinstance(alias_name, str) or not alias_name):
            raise ValueError(f"{cls}: alias_name must be a non-empty str, got {alias_name!r}")
        self._target_col_name = on
        self._ignore_nulls = ignore_nulls
        self._ddof = ddof
        self._q = q
        self.name = alias_name if alias_name else f"{self._label}({on if on is not None else ''})"
        self._agg_name = self._label
        # The legacy protocol (used when this runs in Python): the engine's semantics.
        self.init = lambda _key: None
        self.merge = self.combine
        self.accumulate_block = lambda acc, block: self.combine(acc, self.aggregate_block(block))

    def _spec(self):
        return (self._kind, self._target_col_name or "", self._ignore_nulls, self._ddof, self.name,
                float(self._q))

    def _final(self, acc):
        return self.finalize(acc)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(on={self._target_col_name!r}, name={self.name!r})"

    # ---- the Python form: accumulators that give what the engine gives ----------------

    def _column(self, block):
        import pyarrow as pa
        import pyarrow.compute as pc

        if self._target_col_name not in block.column_names:
            raise KeyError(f"{type(self).__name__}: the column {self._target_col_name!r} is not in the data; "
                           f"its columns are {block.column_names}")
        column = block.column(self._target_col_name)
        if pa.types.is_dictionary(column.type):
            column = pc.cast(column, column.type.value_type)
        return column

    def aggregate_block(self, block):
        """This block's partial state (what the engine's map computes)."""
        import pyarrow.compute as pc

        kind = self._kind
        if kind == "count":
            if self._target_col_name is None:
                return block.num_rows
            column = self._column(block)
            return len(column) - (column.null_count if self._ignore_nulls else 0)
        column = self._column(block)
        nulls = column.null_count > 0
        if kind in ("sum", "min", "max", "abs_max"):
            fn = {"sum": pc.sum, "min": pc.min, "max": pc.max,
                  "abs_max": lambda c, **kw: pc.max(pc.abs(c), **kw)}[kind]
            return (fn(column, skip_nulls=True, min_count=1).as_py(), nulls)
        if kind in ("mean", "std"):
            values = np.asarray(column.drop_null().to_numpy(zero_copy_only=False), dtype=np.float64)
            n = len(values)
            mean = float(values.mean()) if n else 0.0
            m2 = float(((values - mean) ** 2).sum()) if n else 0.0
            return (n, mean, m2, nulls)
        if kind == "quantile":
            return column.to_pylist()
        # unique / count_distinct: distinct values, in order of first appearance.
        values = column.drop_null() if self._ignore_nulls else column
        return _distinct(values.to_pylist())

    def combine(self, current_accumulator, new):
        """Merges two partial states (what the engine's reduce does)."""
        a, b = current_accumulator, new
        if a is None:
            return b
        if b is None:
            return a
        kind = self._kind
        if kind == "count":
            return a + b
        if kind in ("sum", "min", "max", "abs_max"):
            (va, na), (vb, nb) = a, b
            if va is None or vb is None:
                value = vb if va is None else va
            else:
                value = {"sum": lambda: va + vb, "min": lambda: min(va, vb), "max": lambda: max(va, vb),
                         "abs_max": lambda: max(va, vb)}[kind]()
            return (value, na or nb)
        if kind in ("mean", "std"):
            (n1, m1, s1, z1), (n2, m2, s2, z2) = a, b
            if n1 == 0 or n2 == 0:
                n, mean, m2_ = (n2, m2, s2) if n1 == 0 else (n1, m1, s1)
                return (n, mean, m2_, z1 or z2)
            n = n1 + n2
            delta = m2 - m1
            return (n, (m1 * n1 + m2 * n2) / n, s1 + s2 + delta * delta * n1 * n2 / n, z1 or z2)
        if kind == "quantile":
            return a + b
        return _distinct(a + b)

    def finalize(self, accumulator):
        """The output value of a merged state."""
        acc, kind = accumulator, self._kind
        if kind == "count":
            return acc or 0
        if acc is None:
            return 0 if kind == "count_distinct" else ([] if kind == "unique" else None)
        if kind in ("sum", "min", "max", "abs_max"):
            value, nulls = acc
            return None if (nulls and not self._ignore_nulls) else value
        if kind in ("mean", "std"):
            n, mean, m2, nulls = acc
            if (nulls and not self._ignore_nulls) or n == 0:
                return None
            if kind == "mean":
                return mean
            return float("nan") if n - self._ddof <= 0 else math.sqrt(m2 / (n - self._ddof))
        if kind == "quantile":
            return _quantile(acc, self._q, self._ignore_nulls)
        return len(acc) if kind == "count_distinct" else list(acc)


def _distinct(values: list) -> list:
    """``values`` without repeats, first appearances kept (all NaN are one value)."""
    seen, out, nan_seen = set(), [], False
    for v in values:
        if isinstance(v, float) and math.isnan(v):
            if not nan_seen:
                nan_seen = True
                out.append(v)
            continue
        key = (type(v) is bool, v) if not isinstance(v, (list, dict)) else repr(v)
        if key not in seen:
            seen.add(key)
            out.append(v)
    return out


def _quantile(values: list, q: float, ignore_nulls: bool):
    """Ray's Quantile: nulls/NaN skipped (or making the result null), linear interpolation
    between the nearest ranks, an interpolated value rounded to 5 decimals."""
    missing = [v for v in values if _is_null(v)]
    if missing and not ignore_nulls:
        return None if any(v is None for v in missing) else float("nan")
    ordered = sorted(v for v in values if not _is_null(v))
    if not ordered:
        return None
    k = (len(ordered) - 1) * q
    f, c = math.floor(k), math.ceil(k)
    if f == c:
        return ordered[int(k)]
    return round(ordered[int(f)] * (c - k) + ordered[int(c)] * (k - f), 5)


class Count(_Native):
    """Rows per group (``on=None``, output ``"count()"``), or values of column ``on``
    (``"count(on)"``); nulls are counted unless ``ignore_nulls=True`` (Ray's default is
    ``False``)."""

    _kind, _label = "count", "count"

    @public
    def __init__(self, on: Optional[str] = None, ignore_nulls: bool = False, alias_name: Optional[str] = None):
        super().__init__(on, ignore_nulls, alias_name, needs_column=False)


class Sum(_Native):
    """Sum of column ``on`` (``"sum(on)"``); integers sum as int64, floats as float64."""

    _kind, _label = "sum", "sum"

    @public
    def __init__(self, on: Optional[str] = None, ignore_nulls: bool = True, alias_name: Optional[str] = None):
        super().__init__(on, ignore_nulls, alias_name)


class Min(_Native):
    """Smallest value of column ``on`` (``"min(on)"``); any orderable type (numbers,
    strings, dates)."""

    _kind, _label = "min", "min"

    @public
    def __init__(self, on: Optional[str] = None, ignore_nulls: bool = True, alias_name: Optional[str] = None,
                 zero_factory=None):
        if zero_factory is not None:
            _ZERO.check(type(self).__name__, "zero_factory", zero_factory)
        super().__init__(on, ignore_nulls, alias_name)


class Max(_Native):
    """Largest value of column ``on`` (``"max(on)"``)."""

    _kind, _label = "max", "max"

    @public
    def __init__(self, on: Optional[str] = None, ignore_nulls: bool = True, alias_name: Optional[str] = None,
                 zero_factory=None):
        if zero_factory is not None:
            _ZERO.check(type(self).__name__, "zero_factory", zero_factory)
        super().__init__(on, ignore_nulls, alias_name)


class Mean(_Native):
    """Mean of column ``on`` as float64 (``"mean(on)"``)."""

    _kind, _label = "mean", "mean"

    @public
    def __init__(self, on: Optional[str] = None, ignore_nulls: bool = True, alias_name: Optional[str] = None):
        super().__init__(on, ignore_nulls, alias_name)


class Std(_Native):
    """Standard deviation of column ``on`` (``"std(on)"``), divisor ``n - ddof``; NaN
    when ``n <= ddof``. Partial states (count, mean, M2) merge by Chan's parallel formula."""

    _kind, _label = "std", "std"

    @public
    def __init__(self, on: Optional[str] = None, ddof: int = 1, ignore_nulls: bool = True,
                 alias_name: Optional[str] = None):
        if isinstance(ddof, bool) or not isinstance(ddof, int) or ddof < 0:
            raise ValueError(f"Std: ddof must be a non-negative int, got {ddof!r}")
        super().__init__(on, ignore_nulls, alias_name, ddof=ddof)


class AbsMax(_Native):
    """Largest absolute value of column ``on`` (``"abs_max(on)"``)."""

    _kind, _label = "abs_max", "abs_max"

    @public
    def __init__(self, on: Optional[str] = None, ignore_nulls: bool = True, alias_name: Optional[str] = None,
                 zero_factory=None):
        if zero_factory is not None:
            _ZERO.check(type(self).__name__, "zero_factory", zero_factory)
        super().__init__(on, ignore_nulls, alias_name)


class Quantile(_Native):
    """Exact quantile ``q`` (in [0, 1]; 0.5 is the median) of the numeric column ``on``
    (``"quantile(on)"``), as Ray computes it: the value at rank ``(n - 1) * q`` when that
    is a whole number, else the linear interpolation of the two nearest ranks rounded to
    5 decimals. The output type follows Ray's values: for an integer column, int64 when
    every group's rank is whole (the values themselves), else float64; float64 for other
    columns. Nulls and NaN are skipped (``ignore_nulls=True``) or make the result null
    (NaN when the only missing values are NaN). Every value of a group is gathered in its
    reduce task."""

    _kind, _label = "quantile", "quantile"

    @public
    def __init__(self, on: Optional[str] = None, q: float = 0.5, ignore_nulls: bool = True,
                 alias_name: Optional[str] = None):
        if isinstance(q, bool) or not isinstance(q, (int, float, np.integer, np.floating)) or not 0 <= q <= 1:
            raise ValueError(f"Quantile: q must be a number between 0 and 1, got {q!r}")
        super().__init__(on, ignore_nulls, alias_name, q=float(q))


_ENCODE_LISTS = Unsupported(None, False, why="list columns are compared as whole values (no flattening or hashing)")


class Unique(_Native):
    """The distinct values of column ``on`` as a list per group (``"unique(on)"``), in
    order of first appearance; null is one of them unless ``ignore_nulls=True`` (Ray's
    default is ``False``). NaN is a value (all NaN count as one). List or struct values
    (no hash kernel) are compared whole, in Python, when the column's type is known before
    execution; otherwise they raise an error naming the column."""

    _kind, _label = "unique", "unique"

    class ListEncodingMode(str, enum.Enum):
        """Ray's list encodings (flatten the lists, or hash them); not supported here."""

        FLATTEN = "FLATTEN"
        HASH = "HASH"

    @public(unsupported={"encode_lists": _ENCODE_LISTS})
    def __init__(self, on: Optional[str] = None, ignore_nulls: bool = False, alias_name: Optional[str] = None,
                 encode_lists=None):
        super().__init__(on, ignore_nulls, alias_name)


class CountDistinct(Unique):
    """The number of distinct values of column ``on`` (``"count_distinct(on)"``, int64),
    nulls not counted unless ``ignore_nulls=False``; NaN counts as a value."""

    _kind, _label = "count_distinct", "count_distinct"

    @public
    def __init__(self, on: str, ignore_nulls: bool = True, alias_name: Optional[str] = None):
        _Native.__init__(self, on, ignore_nulls, alias_name)


class AsList(AggregateFnV2):
    """Every value of column ``on`` in a group, as a list (``"list(on)"``), nulls kept
    unless ``ignore_nulls``; in input order. Runs in Python (``AggregateFnV2``)."""

    @public
    def __init__(self, on: str, alias_name: Optional[str] = None, ignore_nulls: bool = False):
        super().__init__(alias_name if alias_name else f"list({on or ''})", zero_factory=list, on=on,
                         ignore_nulls=ignore_nulls)

    def aggregate_block(self, block):
        column = block[self._target_col_name]
        return (column.drop_null() if self._ignore_nulls else column).to_pylist()

    def combine(self, current_accumulator, new):
        return current_accumulator + new


class ValueCounter(AggregateFnV2):
    """How often each value of column ``on`` occurs: ``{"values": [...], "counts": [...]}``
    per group (``"value_counter(on)"``), values in order of first appearance. Runs in
    Python (``AggregateFnV2``)."""

    @public
    def __init__(self, on: str, alias_name: Optional[str] = None):
        super().__init__(alias_name if alias_name else f"value_counter({on})", on=on, ignore_nulls=True,
                         zero_factory=lambda: {"values": [], "counts": []})

    def aggregate_block(self, block):
        import pyarrow.compute as pc

        counted = pc.value_counts(block[self._target_col_name])
        if len(counted) == 0:
            return None
        return {"values": counted.field("values").to_pylist(), "counts": counted.field("counts").to_pylist()}

    def combine(self, current_accumulator, new):
        values, counts = list(current_accumulator["values"]), list(current_accumulator["counts"])
        index = {v: i for i, v in enumerate(values)}
        for v, c in zip(new["values"], new["counts"]):
            if v in index:
                counts[index[v]] += c
            else:
                index[v] = len(values)
                values.append(v)
                counts.append(c)
        return {"values": values, "counts": counts}


class MissingValuePercentage(AggregateFnV2):
    """The percentage (0-100) of null or NaN values of column ``on``
    (``"missing_pct(on)"``); None for no rows. Runs in Python (``AggregateFnV2``)."""

    @public
    def __init__(self, on: str, alias_name: Optional[str] = None):
        super().__init__(alias_name if alias_name else f"missing_pct({on})", on=on, ignore_nulls=False,
                         zero_factory=lambda: [0, 0])

    def aggregate_block(self, block):
        import pyarrow.compute as pc

        column = block[self._target_col_name]
        return [pc.sum(pc.is_null(column, nan_is_null=True)).as_py() or 0, len(column)]

    def combine(self, current_accumulator, new):
        return [current_accumulator[0] + new[0], current_accumulator[1] + new[1]]

    def finalize(self, accumulator):
        return None if accumulator[1] == 0 else accumulator[0] / accumulator[1] * 100.0


class ZeroPercentage(AggregateFnV2):
    """The percentage (0-100) of zeros in numeric column ``on`` (``"zero_pct(on)"``),
    of its non-null values (``ignore_nulls=True``) or of all rows; None when there are
    none. Runs in Python (``AggregateFnV2``)."""

    @public
    def __init__(self, on: str, ignore_nulls: bool = True, alias_name: Optional[str] = None):
        super().__init__(alias_name if alias_name else f"zero_pct({on})", on=on, ignore_nulls=ignore_nulls,
                         zero_factory=lambda: [0, 0])

    def aggregate_block(self, block):
        import pyarrow.compute as pc

        column = block[self._target_col_name]
        count = len(column) - (column.null_count if self._ignore_nulls else 0)
        if count == 0:
            return [0, 0]
        return [pc.sum(pc.equal(column, 0)).as_py() or 0, count]

    def combine(self, current_accumulator, new):
        return [current_accumulator[0] + new[0], current_accumulator[1] + new[1]]

    def finalize(self, accumulator):
        return None if accumulator[1] == 0 else accumulator[0] / accumulator[1] * 100.0


_SKETCHES = "it needs the datasketches library's sketches, which this engine does not bundle; use Quantile (exact)"


class _NotSupported(AggregateFnV2):
    """A Ray aggregation this engine does not have (its constructor raises)."""

    def aggregate_block(self, block):
        raise NotImplementedError(type(self).__name__)

    def combine(self, current_accumulator, new):
        raise NotImplementedError(type(self).__name__)


class ApproximateQuantile(_NotSupported):
    """Ray's KLL-sketch quantiles. Not supported: constructing one raises
    ``NotImplementedError`` (``Quantile`` computes them exactly)."""

    @public
    def __init__(self, on: str, quantiles, quantile_precision: int = 800, alias_name: Optional[str] = None):
        raise NotImplementedError(f"ApproximateQuantile is not supported: {_SKETCHES}")


class ApproximateTopK(_NotSupported):
    """Ray's frequent-items top k. Not supported: constructing one raises
    ``NotImplementedError`` (``ValueCounter`` counts every value exactly)."""

    @public
    def __init__(self, on: str, k: int, log_capacity: int = 15, alias_name: Optional[str] = None,
                 encode_lists: bool = False):
        raise NotImplementedError(f"ApproximateTopK is not supported: {_SKETCHES.replace('; use Quantile (exact)', '')}")


def _check(where: str, aggs) -> bool:
    """Checks ``aggs`` (aggregations, distinct output names); True when the engine runs
    them all natively (no user-defined one among them)."""
    if not aggs:
        raise ValueError(f"{where}: at least one aggregation is required")
    names = set()
    for agg in aggs:
        if not isinstance(agg, AggregateFn):
            raise TypeError(f"{where}: expected aggregations such as Count() or Sum('x') (AggregateFn), got {agg!r}")
        if agg.name in names:
            raise ValueError(f"{where}: two output columns are named {agg.name!r}; give one an alias_name")
        names.add(agg.name)
    return all(isinstance(agg, _Native) for agg in aggs)


def _specs(where: str, aggs) -> list:
    """The engine's description of each aggregation; TypeError for anything else."""
    _check(where, aggs)
    specs = []
    for agg in aggs:
        if not isinstance(agg, _Native):
            raise TypeError(f"{where}: expected aggregations such as Count() or Sum('x'), got {agg!r}")
        specs.append(agg._spec())
    return specs

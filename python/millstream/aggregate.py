"""Aggregations for ``Dataset.aggregate`` and ``GroupedData.aggregate`` (Ray Data's
``ray.data.aggregate`` names, parameters and output column names).

They run natively: each block is aggregated into partial states (counts, sums, mins,
maxes; count/mean/M2 for ``Std``) as it streams in, the partial rows are exchanged by key
hash, and each partition merges them. With ``ignore_nulls=True`` nulls are skipped (a
group with no values gives null); with ``False``, a null in a group makes its result null.
NaN is a value (it propagates through sums and means), as in Arrow and Ray.
"""

from __future__ import annotations

from typing import Optional

from millstream._args import NEVER, public

_ZERO = NEVER(why="the engine's aggregations start from their own identity; a custom start value is not supported")


class AggregateFn:
    """A user-defined aggregation (``init`` / ``accumulate_row`` or ``accumulate_block`` /
    ``merge`` / ``finalize``). Not implemented yet: constructing one raises
    ``NotImplementedError``."""

    @public
    def __init__(self, init, merge, name: str, accumulate_row=None, accumulate_block=None, finalize=None):
        raise NotImplementedError("AggregateFn (user-defined aggregations) is not implemented yet; "
                                  "use Count, Sum, Min, Max, Mean, Std or AbsMax")


class _Native(AggregateFn):
    """An aggregation the engine runs itself."""

    _kind = ""
    _label = ""

    def __init__(self, on: Optional[str], ignore_nulls: bool, alias_name: Optional[str], ddof: int = 1,
                 needs_column: bool = True):
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
        self.name = alias_name if alias_name else f"{self._label}({on if on is not None else ''})"

    def _spec(self):
        return (self._kind, self._target_col_name or "", self._ignore_nulls, self._ddof, self.name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(on={self._target_col_name!r}, name={self.name!r})"


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


def _not_yet(name: str):
    def __init__(self, *args, **kwargs):
        raise NotImplementedError(f"{name} is not implemented yet; use Count, Sum, Min, Max, Mean, Std or AbsMax")
    return __init__


class Quantile(AggregateFn):
    """Quantile ``q`` of a column. Not implemented yet (raises ``NotImplementedError``)."""
    __init__ = _not_yet("Quantile")


class Unique(AggregateFn):
    """The distinct values of a column. Not implemented yet (raises ``NotImplementedError``)."""
    __init__ = _not_yet("Unique")


class CountDistinct(AggregateFn):
    """The number of distinct values of a column. Not implemented yet (raises ``NotImplementedError``)."""
    __init__ = _not_yet("CountDistinct")


def _specs(where: str, aggs) -> list:
    """The engine's description of each aggregation; TypeError for anything else."""
    if not aggs:
        raise ValueError(f"{where}: at least one aggregation is required")
    specs = []
    for agg in aggs:
        if not isinstance(agg, _Native):
            raise TypeError(f"{where}: expected aggregations such as Count() or Sum('x'), got {agg!r}")
        specs.append(agg._spec())
    return specs

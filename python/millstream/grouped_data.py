"""``Dataset.groupby(key)``: a grouped dataset, aggregated natively (Ray Data's GroupedData)."""

from __future__ import annotations

from typing import List, Optional, Union

from millstream import aggregate as _agg
from millstream._args import public


def _keys(where: str, key) -> List[str]:
    if key is None:
        return []
    keys = [key] if isinstance(key, str) else key
    if not isinstance(keys, (list, tuple)) or not keys or not all(isinstance(k, str) and k for k in keys):
        raise ValueError(f"{where}: key must be a column name, a non-empty list of column names or None, got {key!r}")
    if len(set(keys)) != len(keys):
        raise ValueError(f"{where}: a key column is given twice in {key!r}")
    return list(keys)


class GroupedData:
    """A dataset grouped by key columns; the group-by runs when an aggregation is applied.

    Aggregations return a Dataset with the key columns then one column per aggregation,
    one row per group (null keys form a group of their own), sorted by the keys (nulls
    last). With ``key=None`` the whole dataset is one group (no key columns)."""

    def __init__(self, dataset, key, *, num_partitions: Optional[int] = None):
        self._dataset = dataset
        self._key = key
        self._keys = _keys("Dataset.groupby", key)
        self._num_partitions = num_partitions

    def __repr__(self) -> str:
        return f"GroupedData(dataset={self._dataset}, key={self._key!r})"

    @public
    def aggregate(self, *aggs: "_agg.AggregateFn"):
        """One row per group: the keys, then each aggregation's column (named as in Ray:
        ``"count()"``, ``"sum(x)"``... or ``alias_name``)."""
        from millstream.dataset import Dataset

        specs = _agg._specs("GroupedData.aggregate", aggs)
        schema = self._dataset._core.known_schema()
        if schema is not None:
            for column in self._keys + [s[1] for s in specs if s[1]]:
                if column not in schema.names:
                    raise ValueError(f"GroupedData.aggregate: the column {column!r} is not in the dataset; "
                                     f"its columns are {schema.names}")
        return Dataset(self._dataset._core.group_by_aggregate(self._keys, specs, self._num_partitions or 0))

    def _aggregate_on(self, cls, on, **kwargs):
        return self.aggregate(*self._dataset._build_multicolumn_aggs(cls, on, skip_cols=self._keys, **kwargs))

    @public
    def count(self):
        """Rows per group, in a column ``"count()"``."""
        return self.aggregate(_agg.Count())

    @public
    def sum(self, on: Union[str, List[str]] = None, ignore_nulls: bool = True):
        """Sum per group of ``on`` (a column, a list, or None: every non-key column)."""
        return self._aggregate_on(_agg.Sum, on, ignore_nulls=ignore_nulls)

    @public
    def min(self, on: Union[str, List[str]] = None, ignore_nulls: bool = True):
        """Minimum per group of ``on`` (a column, a list, or None: every non-key column)."""
        return self._aggregate_on(_agg.Min, on, ignore_nulls=ignore_nulls)

    @public
    def max(self, on: Union[str, List[str]] = None, ignore_nulls: bool = True):
        """Maximum per group of ``on`` (a column, a list, or None: every non-key column)."""
        return self._aggregate_on(_agg.Max, on, ignore_nulls=ignore_nulls)

    @public
    def mean(self, on: Union[str, List[str]] = None, ignore_nulls: bool = True):
        """Mean per group of ``on`` (a column, a list, or None: every non-key column)."""
        return self._aggregate_on(_agg.Mean, on, ignore_nulls=ignore_nulls)

    @public
    def std(self, on: Union[str, List[str]] = None, ddof: int = 1, ignore_nulls: bool = True):
        """Standard deviation per group of ``on`` (divisor ``n - ddof``)."""
        return self._aggregate_on(_agg.Std, on, ddof=ddof, ignore_nulls=ignore_nulls)

    def map_groups(self, fn, *args, **kwargs):
        """A function applied to each group. Not implemented yet: raises ``NotImplementedError``."""
        raise NotImplementedError("GroupedData.map_groups is not implemented yet; use aggregate() or its shortcuts")

    def with_column(self, *args, **kwargs):
        """A column computed per group. Not implemented yet: raises ``NotImplementedError``."""
        raise NotImplementedError("GroupedData.with_column is not implemented yet")


"""``Dataset.groupby(key)``: a grouped dataset, aggregated natively (Ray Data's GroupedData)."""

from __future__ import annotations

import pickle
from typing import Any, Iterator, List, Optional, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from millstream import _args, _batch
from millstream import aggregate as _agg
from millstream._args import Unsupported, public
from millstream.aggregate import Unique


def _keys(where: str, key) -> List[str]:
    if key is None:
        return []
    keys = [key] if isinstance(key, str) else key
    if not isinstance(keys, (list, tuple)) or not keys or not all(isinstance(k, str) and k for k in keys):
        raise ValueError(f"{where}: key must be a column name, a non-empty list of column names or None, got {key!r}")
    if len(set(keys)) != len(keys):
        raise ValueError(f"{where}: a key column is given twice in {key!r}")
    return list(keys)


def _sorted_groups(block, keys: List[str]) -> Iterator[Tuple[Any, pa.Table]]:
    """The groups of ``block`` (a RecordBatch or Table): (key, rows) per group, sorted by
    the keys (nulls last, NaN just before them; nulls are one group, so are NaN), each
    group's rows in input order. The key is a value, a tuple for several keys, None
    without keys (the whole block, if it has rows)."""
    table, key_table, starts = _sorted_bounds(block, keys)
    if not keys:
        if table.num_rows:
            yield None, table
        return
    key_columns = [key_table[k] for k in keys]
    for begin, end in zip(starts[:-1], starts[1:]):
        values = tuple(c[begin].as_py() for c in key_columns)
        yield (values[0] if len(values) == 1 else values), table.slice(begin, end - begin)


def _sorted_bounds(block, keys: List[str]) -> Tuple[pa.Table, Optional[pa.Table], List[int]]:
    """``block`` sorted by ``keys`` (stable; see ``_sorted_groups``), its key columns
    (dictionaries decoded) and the first row of each group, then the row count."""
    table = pa.Table.from_batches([block]) if isinstance(block, pa.RecordBatch) else block
    if table.num_rows == 0:
        return table, None, [0]
    if not keys:
        return table, None, [0, table.num_rows]
    for k in keys:
        if k not in table.column_names:
            raise KeyError(f"groupby: the key column {k!r} is not in the data; its columns are {table.column_names}")
    # Dictionary keys compare by value.
    key_table = pa.table({k: (pc.cast(table[k], table[k].type.value_type) if pa.types.is_dictionary(table[k].type)
                              else table[k]) for k in keys})
    order = pc.sort_indices(key_table, options=pc.SortOptions(sort_keys=[(k, "ascending", "at_end") for k in keys]))
    table = table.take(order)
    key_table = key_table.take(order)
    n = table.num_rows
    change = np.zeros(n - 1, dtype=bool)
    for k in keys:
        column = key_table[k].combine_chunks() if isinstance(key_table[k], pa.ChunkedArray) else key_table[k]
        a, b = column.slice(0, n - 1), column.slice(1)
        same = pc.fill_null(pc.equal(a, b), False)
        same = pc.or_(same, pc.and_(a.is_null(), b.is_null()))
        if pa.types.is_floating(column.type):
            same = pc.or_(same, pc.fill_null(pc.and_(pc.is_nan(a), pc.is_nan(b)), False))
        change |= ~same.to_numpy(zero_copy_only=False)
    return table, key_table, [0] + (np.flatnonzero(change) + 1).tolist() + [n]


def _pandas_groups_call(fn, keys: List[str], name: str, args: tuple, kwargs: dict):
    """map_groups with batch_format="pandas": the partition converted to a DataFrame once,
    each group a fresh DataFrame of its rows (index 0..n-1), as a per-group conversion
    would give, without paying pyarrow's conversion per group."""
    runner = _batch.AsyncRunner()

    def call(batch: pa.RecordBatch) -> pa.Table:
        table, _key_table, starts = _sorted_bounds(batch, keys)
        if table.num_rows == 0:
            return pa.table({})
        frame = _batch.to_pandas(table)
        tables = []
        for begin, end in zip(starts[:-1], starts[1:]):
            group = frame.iloc[begin:end].reset_index(drop=True)
            result, many = runner.resolve(fn(group, *args, **kwargs))
            if many or (hasattr(result, "__next__") and not isinstance(result, dict)):
                out = _batch.concat_results(result, name)
            else:
                out = _batch.from_format(result, name)
            tables.append(_batch.keep_input_types(out, batch.schema))
        return _batch.concat_tables(tables)
    return call


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
        ``"count()"``, ``"sum(x)"``, ``"quantile(x)"``, ``"unique(x)"``... or
        ``alias_name``). The built-in aggregations run natively; a user-defined one
        (``AggregateFn``, ``AggregateFnV2``) runs in Python, with any built-in ones of the
        same call (same results)."""
        from millstream.dataset import Dataset

        native = _agg._check("GroupedData.aggregate", aggs)
        schema = self._dataset._core.known_schema()
        if schema is not None:
            columns = [a._target_col_name for a in aggs if isinstance(a, _agg._Native) and a._target_col_name]
            for column in self._keys + columns:
                if column not in schema.names:
                    raise ValueError(f"GroupedData.aggregate: the column {column!r} is not in the dataset; "
                                     f"its columns are {schema.names}")
        if native and schema is not None:
            # Nested values (lists, structs) have no hash kernel: their distinct values are
            # found in Python.
            for a in aggs:
                if not isinstance(a, Unique):
                    continue
                column_type = schema.field(a._target_col_name).type
                if pa.types.is_nested(column_type) or isinstance(column_type, pa.BaseExtensionType):
                    native = False
        for key in self._keys:
            if any(a.name == key for a in aggs):
                raise ValueError(f"GroupedData.aggregate: the output column {key!r} is also a key; give it an alias_name")
        if native:
            specs = _agg._specs("GroupedData.aggregate", aggs)
            return Dataset(self._dataset._core.group_by_aggregate(self._keys, specs, self._num_partitions or 0))
        return self._aggregate_in_python(list(aggs))

    def _aggregate_in_python(self, aggs: list):
        """User-defined aggregations: each block's groups folded into partial accumulators
        (one row per group and block: the keys, then each accumulator pickled), the
        partials hash-partitioned by key, each group's partials merged in input order and
        finalized, the groups sorted by key."""
        from millstream.dataset import Dataset

        keys = self._keys
        accs = [f"__millstream_acc{i}" for i in range(len(aggs))]
        finals = [a._final if isinstance(a, _agg.AggregateFnV2) else a.finalize for a in aggs]

        def first_rows(groups: list) -> pa.Table:
            """The key columns of each group's first row (their types kept)."""
            return pa.concat_tables([group.select(keys).slice(0, 1) for _key, group in groups])

        def partial(block: pa.RecordBatch) -> pa.Table:
            groups = list(_sorted_groups(block, keys))
            if not groups:
                return pa.table({})
            columns = {name: pa.array([pickle.dumps(agg.accumulate_block(agg.init(key), group))
                                       for key, group in groups], pa.binary())
                       for name, agg in zip(accs, aggs)}
            if not keys:
                return pa.table(columns)
            out = first_rows(groups)
            for name, column in columns.items():
                out = out.append_column(name, column)
            return out

        def final(block: pa.RecordBatch) -> pa.Table:
            groups = list(_sorted_groups(block, keys))
            if not groups:
                return pa.table({})
            rows = []
            for _key, group in groups:
                row = {}
                for name, agg, fin in zip(accs, aggs, finals):
                    parts = group[name].to_pylist()
                    acc = pickle.loads(parts[0])
                    for part in parts[1:]:
                        acc = agg.merge(acc, pickle.loads(part))
                    row[agg.name] = fin(acc)
                rows.append(row)
            values = _batch.table_from_rows(rows, None, op_name)
            if not keys:
                return values
            out = first_rows(groups)
            for name in values.column_names:
                out = out.append_column(name, values[name])
            return out

        names = ", ".join(a.name for a in aggs)
        op_name = f"Aggregate({names})"
        partials = self._dataset._map(lambda f: f, partial, f"AggregatePartial({names})")
        shuffled = Dataset(partials._core.repartition(0 if keys else 1, False, keys))
        out = shuffled._map(lambda f: f, final, op_name)
        return out.sort(keys) if keys else out

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

    @public(passthrough=_args.RAY_REMOTE_ARGS,
            unsupported={"ray_remote_args_fn": Unsupported(None, why="per-task remote args: tasks here take "
                                                                      "num_cpus/num_gpus/memory")})
    def map_groups(self, fn, *, zero_copy_batch: bool = True, compute=None, batch_format: Optional[str] = "default",
                   fn_args=None, fn_kwargs=None, fn_constructor_args=None, fn_constructor_kwargs=None,
                   num_cpus=None, num_gpus=None, memory=None, concurrency=None, ray_remote_args_fn=None,
                   **ray_remote_args):
        """Applies ``fn`` to each group: one call per group with all its rows as a batch in
        ``batch_format`` (as ``map_batches``: "default"/"numpy", "pandas", "pyarrow", or
        None); it returns a batch of any number of rows (or an iterator of batches).

        The rows are hash-partitioned by the keys (``num_partitions`` of ``groupby``, else
        as many partitions as the data size asks for), so a partition, and every group in
        it, arrives whole in one task; there the groups are taken in key order (nulls
        last) and ``fn`` called on each. A callable class runs on an actor pool
        (``concurrency`` or ``compute``), as in ``map_batches``. A group must fit in memory.
        ``key=None``: the whole dataset is one group."""
        from millstream.dataset import Dataset, _fn_name

        fmt = _batch.check_batch_format(batch_format)
        name = f"MapGroups({_fn_name(fn)})"
        args, kwargs = tuple(fn_args or ()), dict(fn_kwargs or {})
        keys = self._keys

        def adapter(f):
            if fmt == "pandas":
                return _pandas_groups_call(f, keys, name, args, kwargs)
            per_group = _batch.batch_adapter(f, fmt, name, not zero_copy_batch, args, kwargs)

            def call(batch: pa.RecordBatch) -> pa.Table:
                tables = [per_group(group) for _key, group in _sorted_groups(batch, keys)]
                return _batch.concat_tables(tables) if tables else pa.table({})
            return call

        core = self._dataset._core
        shuffled = Dataset(core.repartition(self._num_partitions or 0, False, keys) if keys
                           else core.repartition(1, False, []))
        return shuffled._map(adapter, fn, name, batch_size=None, compute=compute, concurrency=concurrency,
                             fn_constructor_args=fn_constructor_args, fn_constructor_kwargs=fn_constructor_kwargs,
                             num_cpus=num_cpus, num_gpus=num_gpus, memory=memory, **ray_remote_args)

    @public(passthrough=_args.RAY_REMOTE_ARGS)
    def with_column(self, column_name: str, expr, **ray_remote_args):
        """Every row with column ``column_name`` added (``expr``: a ``millstream.expressions``
        expression, as ``Dataset.with_column``), the rows grouped as ``map_groups`` groups
        them: hash-partitioned by key, each partition sorted by key. The expression is
        evaluated natively on the grouped rows (row-wise, so per group)."""
        from millstream.dataset import Dataset
        from millstream.expressions import Expr, StarExpr

        if not isinstance(column_name, str) or not column_name:
            raise ValueError(f"column_name must be a non-empty string, got: {column_name!r}")
        if isinstance(expr, StarExpr) or not isinstance(expr, (Expr, pc.Expression)):
            raise TypeError("expr must be a Ray Data expression created via the expression API.")
        keys = self._keys

        def sort_partition(block: pa.RecordBatch) -> pa.Table:
            groups = [group for _key, group in _sorted_groups(block, keys)]
            return _batch.concat_tables(groups) if groups else pa.Table.from_batches([block])

        core = self._dataset._core
        shuffled = Dataset(core.repartition(self._num_partitions or 0, False, keys) if keys
                           else core.repartition(1, False, []))
        grouped = shuffled._map(lambda f: f, sort_partition, "GroupBy.with_column", row_preserving=True,
                               **ray_remote_args)
        return grouped.with_column(column_name, expr)


"""Exchanges across nodes: map tasks split each input block into one piece per output
partition (``num_returns`` = partitions), reduce tasks run millstream's local engine on
their partition's pieces.

- sort: each block's first key sampled; boundaries chosen on the driver from the samples
  (or ``sort(boundaries=)``); blocks range-partitioned by the first key (nulls and NaN into
  the partition output last); each reduce task sorts its partition with millstream's sort.
  The partitions in order are the sorted dataset.
- groupby: the same range partitioning by the first key (a group lies in one partition),
  each reduce task runs millstream's group-by aggregation: the output is sorted by key as
  the local engine's is.
- random_shuffle / repartition(shuffle=True): rows sent to random partitions, each
  partition permuted (seeded per block and partition when a seed is given).
- repartition(keys=): rows sent by a hash of the keys.
- repartition(n): the rows in order, cut into n blocks of counts within one of each other
  (from the blocks' row counts, no map tasks).
- join: both sides sent by a hash of their keys (equal keys hash equal whatever the
  column's integer width, its nulls or its dictionary encoding), each reduce task joining
  its partition of the left with the same partition of the right.
- zip: the other inputs' rows cut, from the row counts alone, into pieces lined up with
  the first input's blocks; a task per block zips them.
"""

from __future__ import annotations

from typing import List, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from millstream.ray_backend import stages

SAMPLES_PER_BLOCK = 64


def _key_values(table: pa.Table, key: str):
    column = table[key].combine_chunks() if table.num_rows else pa.array([], table.schema.field(key).type)
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    invalid = column.is_null().to_numpy(zero_copy_only=False)
    if pa.types.is_floating(column.type):
        invalid = invalid | pc.fill_null(pc.is_nan(column), False).to_numpy(zero_copy_only=False)
    return column.to_numpy(zero_copy_only=False), invalid


def sample(table: pa.Table, key: str) -> np.ndarray:
    """Up to SAMPLES_PER_BLOCK valid values of ``key`` (evenly spaced rows)."""
    if table.num_rows == 0:
        return np.array([])
    values, invalid = _key_values(table, key)
    values = values[~invalid]
    if len(values) <= SAMPLES_PER_BLOCK:
        return values
    return values[np.linspace(0, len(values) - 1, SAMPLES_PER_BLOCK).astype(np.int64)]


def boundaries(samples: List[np.ndarray], n: int) -> list:
    """n - 1 boundaries (fewer where values repeat) splitting the samples evenly."""
    values = [s for s in samples if len(s)]
    if not values or n <= 1:
        return []
    everything = np.sort(np.concatenate(values))
    picks = [everything[int(len(everything) * i / n)] for i in range(1, n)]
    out = []
    for p in picks:
        if not out or p > out[-1]:
            out.append(p)
    return out


def _split(table: pa.Table, index: np.ndarray, n: int) -> tuple:
    """``table``'s rows by partition ``index`` (stable), as n tables."""
    order = np.argsort(index, kind="stable")
    counts = np.bincount(index, minlength=n)
    taken = table.take(pa.array(order)) if table.num_rows else table
    parts, start = [], 0
    for c in counts:
        parts.append(taken.slice(start, int(c)))
        start += int(c)
    return tuple(parts) if n > 1 else parts[0]


def range_partition(table: pa.Table, key: str, bounds: list, n: int, invalid_to: int):
    """Row i to the number of boundaries <= its first key; null/NaN keys to ``invalid_to``."""
    values, invalid = _key_values(table, key)
    index = np.full(table.num_rows, invalid_to, dtype=np.int64)
    valid = ~invalid
    if valid.any():
        index[valid] = np.searchsorted(np.array(bounds, dtype=values.dtype if values.dtype != object else object),
                                       values[valid], side="right") if bounds else 0
    return _split(table, index, n)


def random_partition(table: pa.Table, n: int, seed, block: int):
    rng = np.random.default_rng(None if seed is None else [seed, block])
    return _split(table, rng.integers(0, n, table.num_rows), n)


def _column_hash(column) -> np.ndarray:
    """A uint64 hash per value, equal for equal values of any integer width (or float
    width), encoding or chunking; a null's hash is that of 0 (nulls match nothing, so
    where they go does not matter)."""
    import pandas as pd

    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    kind = column.type
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        values = pc.fill_null(column.cast(pa.int64()), 0).to_numpy()
    elif pa.types.is_floating(kind):
        values = pc.fill_null(column.cast(pa.float64()), 0.0).to_numpy()
    elif pa.types.is_temporal(kind):
        values = pc.fill_null(column.cast(pa.int64()), 0).to_numpy()
    else:  # strings, binary, decimals...: as Python objects
        values = column.to_numpy(zero_copy_only=False)
    return pd.util.hash_array(values, categorize=False)


def key_hash(table: pa.Table, keys: List[str]) -> np.ndarray:
    h = np.zeros(table.num_rows, dtype=np.uint64)
    for key in keys:
        h = h * np.uint64(1000003) + _column_hash(table[key])  # wraps around, as meant
    return h


def hash_partition(table: pa.Table, keys: List[str], n: int):
    if table.num_rows == 0:
        return _split(table, np.zeros(0, dtype=np.int64), n)
    return _split(table, (key_hash(table, keys) % np.uint64(n)).astype(np.int64), n)


def reduce_sort(context, sort_args, sort_kwargs, ops, sink, *parts):
    stages._enter(context)
    from millstream import ray_backend

    with ray_backend.local_only():
        dataset = stages.from_tables(list(parts)).sort(*sort_args, **sort_kwargs)
    return stages.finish(dataset, ops, sink)


def reduce_shuffle(context, seed, partition: int, ops, sink, *parts):
    stages._enter(context)
    table = pa.concat_tables([p for p in parts if p.num_rows] or list(parts[:1]), promote_options="default")
    rng = np.random.default_rng(None if seed is None else [seed, 1 << 20, partition])
    table = table.take(pa.array(rng.permutation(table.num_rows))) if table.num_rows else table
    return stages.finish(stages.from_tables([table]), ops, sink)


def reduce_concat(context, sort_keys, ops, sink, *parts):
    stages._enter(context)
    from millstream import ray_backend

    with ray_backend.local_only():
        dataset = stages.from_tables(list(parts))
        if sort_keys:
            dataset = dataset.sort(sort_keys)
    return stages.finish(dataset, ops, sink)


def reduce_groupby(context, group_op, op, ops, sink, *parts):
    stages._enter(context)
    from millstream import ray_backend

    with ray_backend.local_only():
        grouped = stages.from_tables(list(parts)).groupby(*group_op.args, **group_op.kwargs)
        dataset = getattr(grouped, op.method)(*op.args, **op.kwargs)
    return stages.finish(dataset, ops, sink)


def reduce_join(context, join_kwargs: dict, left_count: int, ops, sink, *parts):
    """One partition of a join: ``parts`` holds the left side's pieces, then the right's."""
    stages._enter(context)
    from millstream import ray_backend

    with ray_backend.local_only():
        left, right = stages.from_tables(list(parts[:left_count])), stages.from_tables(list(parts[left_count:]))
        dataset = left.join(right, num_partitions=1, **join_kwargs)
    return stages.finish(dataset, ops, sink)


def broadcast_join(context, join_kwargs: dict, build_side: str, ops, sink, probe, *build):
    """One block of a broadcast join: ``probe`` joined with the whole small side ``build``
    (the left side when ``build_side`` is "left"), the two kept in their join roles."""
    stages._enter(context)
    from millstream import ray_backend

    with ray_backend.local_only():
        small, block = stages.from_tables(list(build)), stages.from_tables([probe])
        left, right = (small, block) if build_side == "left" else (block, small)
        dataset = left.join(right, num_partitions=1, **join_kwargs)
    return stages.finish(dataset, ops, sink)


def zip_task(context, plans: list, counts: list, ops, sink, block, *tables):
    """One block of a zip: ``block`` zipped with, for each other input, the pieces
    ``plans[k]`` (table index, offset, length) of its ``counts[k]`` tables."""
    stages._enter(context)
    from millstream import ray_backend

    others, start = [], 0
    for plan, count in zip(plans, counts):
        mine = tables[start:start + count]
        start += count
        pieces = [mine[i].slice(offset, length) for i, offset, length in plan]
        others.append(stages.from_tables(pieces or [mine[0].slice(0, 0)]))
    with ray_backend.local_only():
        dataset = stages.from_tables([block]).zip(*others)
    return stages.finish(dataset, ops, sink)


def slices(context, plan: list, ops, sink, *tables):
    """One block of a plain repartition: ``plan`` lists (table index, offset, length)."""
    stages._enter(context)
    pieces = [tables[i].slice(offset, length) for i, offset, length in plan]
    return stages.finish(stages.from_tables(pieces or [tables[0].slice(0, 0)]), ops, sink)


def row_plan(rows: List[int], n: int) -> List[list]:
    """For each of n output blocks (counts as np.array_split's), the pieces of the inputs
    it takes: (input index, offset, length)."""
    total = sum(rows)
    return row_pieces(rows, [total // n + (1 if i < total % n else 0) for i in range(n)])


def row_pieces(rows: List[int], sizes: List[int]) -> List[list]:
    """For each output block of ``sizes[j]`` rows (the rows in order), the pieces of the
    inputs of ``rows`` rows that it takes: (input index, offset, length)."""
    out, block, offset = [], 0, 0
    for size in sizes:
        pieces = []
        while size > 0:
            take = min(size, rows[block] - offset)
            if take > 0:
                pieces.append((block, offset, take))
            size -= take
            offset += take
            if offset >= rows[block]:
                block, offset = block + 1, 0
        out.append(pieces)
    return out


# ---- group-by with map-side partial aggregation ----------------------------------------

def partial_aggregations(op) -> Optional[tuple]:
    """(partial aggs, merging aggs) when every aggregation of ``op`` (a GroupedData call)
    merges by itself: Count (merged by Sum), Sum, Min, Max; None otherwise (rows are then
    exchanged as they are)."""
    from millstream import aggregate as agg

    if op.method == "count":
        aggs = [agg.Count()]
    elif op.method == "aggregate":
        aggs = list(op.args)
    elif op.method in ("sum", "min", "max"):
        on = op.args[0] if op.args else op.kwargs.get("on")
        if on is None:
            return None  # every non-key column: the schema is needed
        ignore = op.kwargs.get("ignore_nulls", op.args[1] if len(op.args) > 1 else True)
        cls = {"sum": agg.Sum, "min": agg.Min, "max": agg.Max}[op.method]
        aggs = [cls(c, ignore_nulls=ignore) for c in ([on] if isinstance(on, str) else on)]
    else:
        return None
    merges = []
    for a in aggs:
        if type(a) is agg.Count:
            merges.append(agg.Sum(a.name, ignore_nulls=True, alias_name=a.name))
        elif type(a) in (agg.Sum, agg.Min, agg.Max):
            merges.append(type(a)(a.name, ignore_nulls=a._ignore_nulls, alias_name=a.name))
        else:
            return None
    return aggs, merges


def partial_task(context, group_op, aggs, key: Optional[str], block: pa.Table):
    """One block's groups aggregated into partial rows, and a sample of their first key."""
    stages._enter(context)
    from millstream import ray_backend

    with ray_backend.local_only():
        partial = stages.from_tables([block]).groupby(*group_op.args, **group_op.kwargs).aggregate(*aggs).to_arrow()
    return partial, (sample(partial, key) if key is not None else np.array([]))

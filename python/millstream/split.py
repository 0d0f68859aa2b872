"""The split family: ``split``, ``split_at_indices``, ``split_proportionately`` and
``train_test_split``, with Ray Data's rules.

Each executes the dataset once (a ``MaterializedDataset`` is only read), keeps its blocks
and hands each split a list of zero-copy slices of them (``RecordBatch.slice``: the
splits share the parent's buffers; no row is copied). Only a stratified
``train_test_split`` gathers rows (it regroups them by class), as Ray's does.
"""

from __future__ import annotations

import numbers
from typing import List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from millstream import _batch, _core


class _Blocks:
    """The executed blocks of a dataset, in order, with their schema and row counts."""

    def __init__(self, ds):
        self.blocks: List[pa.RecordBatch] = [b for b in ds._batches(None, ordered=True)]
        self.stats = ds._last_stats
        schema = self.blocks[0].schema if self.blocks else None
        if schema is None:
            schema = ds._core.known_schema() or pa.schema([])
        self.schema = schema
        self.rows = [b.num_rows for b in self.blocks]
        self.total = int(sum(self.rows))

    def dataset(self, pieces: List[pa.RecordBatch]):
        """A MaterializedDataset of exactly these pieces, one block each (no copy when the
        pieces share a schema, as the blocks of one execution do)."""
        from millstream.dataset import MaterializedDataset

        if pieces:
            table = _batch.concat_batches(pieces)
        else:
            table = self.schema.empty_table()
        out = MaterializedDataset(_core.Dataset.from_arrow(table, None))
        out._last_stats = self.stats
        return out

    def slice(self, start: int, end: int) -> List[pa.RecordBatch]:
        """Zero-copy slices of the blocks covering rows [start, end)."""
        pieces, offset = [], 0
        for block, rows in zip(self.blocks, self.rows):
            lo, hi = max(start, offset), min(end, offset + rows)
            if lo < hi:
                pieces.append(block if (lo, hi) == (offset, offset + rows) else block.slice(lo - offset, hi - lo))
            offset += rows
            if offset >= end:
                break
        return pieces


def _count_int(where: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral,)):
        raise TypeError(f"{where}: {name} must be an int, got {value!r}")
    return int(value)


def split(ds, n: int, equal: bool) -> list:
    n = _count_int("Dataset.split", "n", n)
    if n <= 0:
        raise ValueError(f"The number of splits {n} is not positive.")
    if not isinstance(equal, bool):
        raise TypeError(f"Dataset.split: equal must be a bool, got {equal!r}")
    blocks = _Blocks(ds)
    if equal:
        # Ray's rule: total // n rows each, in order; the last total % n rows are dropped.
        size = blocks.total // n
        return [blocks.dataset(blocks.slice(size * i, size * (i + 1))) for i in range(n)]
    # By blocks, as np.array_split of the block list: consecutive blocks, the first
    # (num_blocks % n) splits one block more.
    groups = np.array_split(np.arange(len(blocks.blocks)), n)
    return [blocks.dataset([blocks.blocks[i] for i in group]) for group in groups]


def _split_at(blocks: _Blocks, indices: List[int]) -> list:
    bounds = [0] + [min(i, blocks.total) for i in indices] + [blocks.total]
    return [blocks.dataset(blocks.slice(bounds[k], bounds[k + 1])) for k in range(len(bounds) - 1)]


def _check_indices(indices) -> List[int]:
    if isinstance(indices, np.ndarray):
        indices = indices.tolist()
    if not isinstance(indices, (list, tuple)):
        raise TypeError(f"Dataset.split_at_indices: indices must be a list of ints, got {indices!r}")
    indices = [_count_int("Dataset.split_at_indices", "indices", i) for i in indices]
    if len(indices) < 1:
        raise ValueError("indices must be at least of length 1")
    if sorted(indices) != indices:
        raise ValueError("indices must be sorted")
    if indices[0] < 0:
        raise ValueError("indices must be positive")
    return indices


def split_at_indices(ds, indices) -> list:
    indices = _check_indices(indices)
    return _split_at(_Blocks(ds), indices)


def _proportion_indices(proportions, length: int) -> List[int]:
    """Ray's split indices for ``proportions`` of ``length`` rows: every split non-empty."""
    split_indices = [int(length * p) for p in np.cumsum(proportions)]
    subtract = 0
    for i in range(len(split_indices) - 2, -1, -1):
        split_indices[i] -= subtract
        if split_indices[i] == split_indices[i + 1]:
            subtract += 1
            split_indices[i] -= 1
    if any(i <= 0 for i in split_indices):
        raise ValueError("Couldn't create non-empty splits with the given proportions.")
    return split_indices


def _check_proportions(proportions) -> list:
    if not isinstance(proportions, (list, tuple, np.ndarray)):
        raise TypeError(f"Dataset.split_proportionately: proportions must be a list of floats, got {proportions!r}")
    proportions = list(proportions)
    for p in proportions:
        if isinstance(p, bool) or not isinstance(p, numbers.Real):
            raise TypeError(f"Dataset.split_proportionately: a proportion must be a number, got {p!r}")
    if len(proportions) < 1:
        raise ValueError("proportions must be at least of length 1")
    if sum(proportions) >= 1:
        raise ValueError("proportions must sum to less than 1")
    if any(p <= 0 for p in proportions):
        raise ValueError("proportions must be bigger than 0")
    return proportions


def split_proportionately(ds, proportions) -> list:
    proportions = _check_proportions(proportions)
    blocks = _Blocks(ds)
    return _split_at(blocks, _proportion_indices(proportions, blocks.total))


def _check_test_size_float(test_size: float) -> None:
    if test_size <= 0 or test_size >= 1:
        raise ValueError("If `test_size` is a float, it must be bigger than 0 and smaller "
                         f"than 1. Got {test_size}.")


def _check_test_size_int(test_size: int, length: int) -> None:
    if test_size <= 0 or test_size >= length:
        raise ValueError("If `test_size` is an int, it must be bigger than 0 and smaller "
                         f"than the size of the dataset ({length}). Got {test_size}.")


def train_test_split(ds, test_size, shuffle: bool, seed, stratify: Optional[str]) -> Tuple:
    if not isinstance(shuffle, bool):
        raise TypeError(f"Dataset.train_test_split: shuffle must be a bool, got {shuffle!r}")
    if shuffle:
        ds = ds.random_shuffle(seed=seed)
    if not isinstance(test_size, (int, float)):
        raise TypeError(f"`test_size` must be int or float got {type(test_size)}.")
    if shuffle and stratify is not None:
        raise ValueError("Cannot specify both 'shuffle=True' and 'stratify' parameters. "
                         "Stratified splitting maintains class proportions and is incompatible with shuffling.")
    if stratify is not None:
        return _stratified(ds, test_size, stratify)
    if isinstance(test_size, float):
        _check_test_size_float(test_size)
        blocks = _Blocks(ds)
        return tuple(_split_at(blocks, _proportion_indices([1 - test_size], blocks.total)))
    blocks = _Blocks(ds)
    _check_test_size_int(test_size, blocks.total)
    return tuple(_split_at(blocks, [blocks.total - test_size]))


def _stratified(ds, test_size, column: str) -> Tuple:
    """Ray's stratified split: the rows grouped by ``column`` (sorted by it, nulls last,
    input order within a group, as Ray's ``groupby(column).map_groups`` hands them on);
    of each group of n rows, the last ``int(n * test_size)`` are test rows."""
    if not isinstance(column, str):
        raise TypeError(f"Dataset.train_test_split: stratify must be a column name, got {column!r}")
    blocks = _Blocks(ds)
    if column not in blocks.schema.names:
        raise ValueError(f"Dataset.train_test_split: the stratify column {column!r} is not in the dataset; "
                         f"its columns are {blocks.schema.names}")
    if isinstance(test_size, int):
        _check_test_size_int(test_size, blocks.total)
        test_size = test_size / blocks.total
    else:
        _check_test_size_float(test_size)
    table = _batch.concat_batches(blocks.blocks, blocks.schema)
    order = pc.sort_indices(table, sort_keys=[(column, "ascending", "at_end")])
    keys = table.column(column).take(order).combine_chunks()
    codes = keys.dictionary_encode(null_encoding="encode").indices.to_numpy(zero_copy_only=False)
    n = len(codes)
    starts_mask = np.ones(n, dtype=bool)
    if n:
        starts_mask[1:] = codes[1:] != codes[:-1]
    group = np.cumsum(starts_mask) - 1
    starts = np.flatnonzero(starts_mask)
    sizes = np.diff(np.append(starts, n))
    test_counts = np.array([int(s * test_size) for s in sizes], dtype=np.int64)
    rank = np.arange(n) - starts[group] if n else np.zeros(0, dtype=np.int64)
    is_test = rank >= (sizes - test_counts)[group] if n else np.zeros(0, dtype=bool)
    order = order.to_numpy()
    train = table.take(pa.array(order[~is_test]))
    test = table.take(pa.array(order[is_test]))
    return (blocks.dataset(train.to_batches()), blocks.dataset(test.to_batches()))

"""The reference that test_join and test_join_broadcast check a join against, and the sides
they join: the pairs of matching rows from pandas' merge of the rows whose keys are all
non-null (pandas' merge matches null keys to each other, a join here never does), laid out
as pyarrow.Table.join lays them out (which is what Ray Data runs per partition); column
names and types from pyarrow.Table.join itself. Rows come in no order: compared sorted."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

import millstream as md

JOIN_TYPES = ["inner", "left_outer", "right_outer", "full_outer",
              "left_semi", "right_semi", "left_anti", "right_anti"]
ARROW_VERB = {t: t.replace("_", " ") for t in JOIN_TYPES}


def rows_of(table: pa.Table):
    """The rows as sorted tuples (None and NaN sort first)."""
    cols = [table.column(i).to_pylist() for i in range(table.num_columns)]
    rows = list(zip(*cols)) if cols else []

    def key(row):
        return tuple((0, 0) if v is None or (isinstance(v, float) and v != v) else (1, v) for v in row)
    return sorted(rows, key=key)


def pair_reference(left: pd.DataFrame, right: pd.DataFrame, on, right_on, join_type):
    """(left row, right row) pairs of the join (-1: no row), from pandas' merge of the rows
    whose keys are all non-null; rows with a null key match nothing."""
    on, right_on = list(on), list(right_on)
    lok = left[on].notna().all(axis=1).to_numpy()
    rok = right[right_on].notna().all(axis=1).to_numpy()
    lk = left.loc[lok, on].copy()
    lk["__li"] = np.nonzero(lok)[0]
    rk = right.loc[rok, right_on].copy()
    rk.columns = [f"__r{i}" for i in range(len(right_on))]
    rk["__ri"] = np.nonzero(rok)[0]
    inner = lk.merge(rk, left_on=list(on), right_on=[f"__r{i}" for i in range(len(right_on))], how="inner")
    pairs = list(zip(inner["__li"].tolist(), inner["__ri"].tolist()))
    matched_l = set(inner["__li"].tolist())
    matched_r = set(inner["__ri"].tolist())
    unmatched_l = [(i, -1) for i in range(len(left)) if i not in matched_l]
    unmatched_r = [(-1, j) for j in range(len(right)) if j not in matched_r]
    return {
        "inner": pairs,
        "left_outer": pairs + unmatched_l,
        "right_outer": pairs + unmatched_r,
        "full_outer": pairs + unmatched_l + unmatched_r,
        "left_semi": [(i, -1) for i in sorted(matched_l)],
        "right_semi": [(-1, j) for j in sorted(matched_r)],
        "left_anti": unmatched_l,
        "right_anti": unmatched_r,
    }[join_type]


def expected_table(left: pa.Table, right: pa.Table, on, right_on, join_type, names):
    """The join's rows from the pandas pairs, laid out as pyarrow.Table.join lays them out
    (left columns then right columns; which ones by join type; full outer keys coalesced)."""
    pairs = pair_reference(left.to_pandas(), right.to_pandas(), on, right_on, join_type)
    lcols = [c for c in left.column_names]
    rcols = [c for c in right.column_names]
    if join_type in ("left_semi", "left_anti"):
        rcols = []
    elif join_type in ("right_semi", "right_anti"):
        lcols = []
    elif join_type in ("inner", "left_outer", "full_outer"):
        rcols = [c for c in rcols if c not in right_on]
    elif join_type == "right_outer":
        lcols = [c for c in lcols if c not in on]
    lvals = {c: left.column(c).to_pylist() for c in lcols}
    rvals = {c: right.column(c).to_pylist() for c in right.column_names}
    out = []
    for li, ri in pairs:
        row = []
        for c in lcols:
            v = lvals[c][li] if li >= 0 else None
            if join_type == "full_outer" and c in on and li < 0:
                v = rvals[right_on[list(on).index(c)]][ri]
            row.append(v)
        for c in rcols:
            row.append(rvals[c][ri] if ri >= 0 else None)
        out.append(row)
    assert len(names) == len(lcols) + len(rcols)
    return pa.table({f"c{i}": [r[i] for r in out] for i in range(len(names))}) if out else \
        pa.table({f"c{i}": pa.array([], type=pa.null()) for i in range(len(names))})


def keyed_sides(seed, n_left, n_right, keys, null_frac):
    """The int64 key columns of two sides: duplicate keys on both (many-to-many), keys
    0..keys-1 on the left and keys/2..3*keys/2-1 on the right (some on one side only), and
    about null_frac of each side null."""
    rng = np.random.default_rng(seed)
    lk = rng.integers(0, keys, n_left).astype(object)
    rk = rng.integers(keys // 2, keys + keys // 2, n_right).astype(object)
    lk[rng.random(n_left) < null_frac] = None
    rk[rng.random(n_right) < null_frac] = None
    return pa.array(list(lk), pa.int64()), pa.array(list(rk), pa.int64())


def join_datasets(left: pa.Table, right: pa.Table, join_type, num_partitions, on=("k",), right_on=None,
                  left_suffix=None, right_suffix=None, left_blocks=4, right_blocks=3, left_ds=None,
                  right_ds=None):
    """The Dataset of `left` joined with `right`, each side from_arrow in that many blocks
    unless left_ds / right_ds gives it."""
    right_on = right_on or on
    lds = left_ds if left_ds is not None else md.from_arrow(left, override_num_blocks=left_blocks)
    rds = right_ds if right_ds is not None else md.from_arrow(right, override_num_blocks=right_blocks)
    return lds.join(rds, join_type, num_partitions, on=on, right_on=right_on, left_suffix=left_suffix,
                    right_suffix=right_suffix)


def assert_join_matches_reference(got: pa.Table, left: pa.Table, right: pa.Table, join_type, on=("k",),
                                  right_on=None, left_suffix=None, right_suffix=None):
    """`got`, the rows of `left` joined with `right`, has pyarrow.Table.join's column names
    and types and the reference's rows."""
    right_on = right_on or on
    ref = left.join(right, keys=list(on), right_keys=list(right_on), join_type=ARROW_VERB[join_type],
                    left_suffix=left_suffix, right_suffix=right_suffix)
    assert got.column_names == ref.column_names
    expected = expected_table(left, right, on, right_on, join_type, ref.column_names)
    assert rows_of(got) == rows_of(expected)
    # Types as pyarrow gives them (unmatched values are nulls of the same type).
    assert got.schema.types == ref.schema.types

"""Rows and blocks with different columns or types: the union of columns, promoted types
(as ``pd.DataFrame(rows)`` and ``pa.concat_tables(promote_options="permissive")`` give),
and an error naming the column and both types on a real conflict."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

import millstream as md


def assert_frames_equal(out: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Same columns, dtypes and values; a missing string is None in one and NaN in the
    other, so values are compared with every missing value as None."""
    assert list(out.columns) == list(expected.columns)
    assert list(out.dtypes) == list(expected.dtypes)

    def normal(df):
        return df.astype(object).where(df.notna(), None)

    pd.testing.assert_frame_equal(normal(out), normal(expected))


# ---- rows with different keys (union of keys, missing values null) -------------------


def test_from_items_rows_with_different_keys():
    rows = [{"a": 1}, {"a": 2, "b": 3}, {"c": "x", "a": 4}]
    out = md.from_items(rows, override_num_blocks=1).to_pandas()
    assert_frames_equal(out, pd.DataFrame(rows))


def test_from_items_key_only_in_later_row_of_many_blocks():
    rows = [{"a": i} for i in range(10)] + [{"a": 10, "late": "z"}]
    out = md.from_items(rows, override_num_blocks=1).to_pandas()
    assert_frames_equal(out, pd.DataFrame(rows))


def test_map_rows_with_different_keys():
    def f(row):
        i = row["id"]
        return {"id": i, "even": i} if i % 2 == 0 else {"id": i, "odd": str(i)}

    out = md.range(6, override_num_blocks=1).map(f).to_pandas()
    assert_frames_equal(out, pd.DataFrame([f({"id": i}) for i in range(6)]))


def test_flat_map_rows_with_different_keys():
    def f(row):
        i = row["id"]
        return [{"id": i}, {"id": i, "extra": i * 10}]

    out = md.range(3, override_num_blocks=1).flat_map(f).to_pandas()
    expected = pd.DataFrame([r for i in range(3) for r in f({"id": i})])
    assert_frames_equal(out, expected)


# ---- blocks with different schemas: unified wherever blocks meet ----------------------

N_BLOCKS = 6


def _varying(batch: pa.Table) -> pa.Table:
    """Per block (one row each): an extra column only in odd blocks, an all-null (null
    type) column next to strings, and int next to float."""
    i = batch["id"][0].as_py()
    columns = {"id": batch["id"]}
    if i % 2:
        columns["extra"] = pa.array([f"x{i}"])
    columns["maybe_null"] = pa.nulls(1) if i % 3 == 0 else pa.array([f"s{i}"])
    columns["num"] = pa.array([i], pa.int64()) if i < 3 else pa.array([i + 0.5])
    return pa.table(columns)


def _varying_dataset():
    return md.range(N_BLOCKS, override_num_blocks=N_BLOCKS).map_batches(_varying, batch_format="pyarrow")


def _expected() -> pa.Table:
    blocks = [_varying(pa.table({"id": pa.array([i])})) for i in range(N_BLOCKS)]
    return pa.concat_tables(blocks, promote_options="permissive")


def _sorted(table: pa.Table) -> pa.Table:
    return table.sort_by("id").combine_chunks()


def test_different_schemas_to_arrow():
    out = _varying_dataset().to_arrow()
    expected = _expected()
    assert set(out.column_names) == set(expected.column_names)
    assert _sorted(out.select(expected.column_names)).equals(_sorted(expected))


def test_different_schemas_to_pandas():
    expected = _sorted(_expected()).to_pandas()
    out = _varying_dataset().to_pandas()
    out = out[list(expected.columns)].sort_values("id").reset_index(drop=True)
    assert_frames_equal(out, expected)


def test_different_schemas_materialize():
    materialized = _varying_dataset().materialize()
    expected = _expected()
    out = materialized.to_arrow()
    assert _sorted(out.select(expected.column_names)).equals(_sorted(expected))


def test_different_schemas_iter_batches_concatenates_blocks():
    expected = _sorted(_expected())
    batches = list(_varying_dataset().iter_batches(batch_size=N_BLOCKS, batch_format="pyarrow"))
    assert len(batches) == 1
    assert _sorted(batches[0].select(expected.column_names)).equals(expected)


def test_different_schemas_bundled_into_one_udf_batch():
    seen = []

    def g(batch):
        seen.append(batch)
        return batch

    # num_cpus keeps the steps apart, so g's batches bundle blocks of different tasks.
    ds = _varying_dataset().map_batches(lambda b: b, batch_format="pyarrow", num_cpus=0.5)
    out = ds.map_batches(g, batch_format="pyarrow", batch_size=N_BLOCKS).to_arrow()
    expected = _sorted(_expected())
    assert _sorted(out.select(expected.column_names)).equals(expected)
    assert sum(t.num_rows for t in seen) == N_BLOCKS


def test_different_schemas_write_parquet_one_schema(tmp_path):
    _varying_dataset().write_parquet(str(tmp_path))
    files = sorted(tmp_path.glob("*.parquet"))
    schemas = {tuple((f.name, str(f.type)) for f in pq.read_schema(p)) for p in files}
    assert len(schemas) == 1, schemas
    out = pads.dataset(str(tmp_path), format="parquet").to_table()
    expected = _expected()
    assert _sorted(out.select(expected.column_names)).equals(_sorted(expected))


def _one_task_dataset():
    # One read block cut into batches of one row: one task writes blocks of every schema.
    return md.range(N_BLOCKS, override_num_blocks=1).map_batches(
        _varying, batch_format="pyarrow", batch_size=1)


def test_different_schemas_in_one_write_task_parquet(tmp_path):
    _one_task_dataset().write_parquet(str(tmp_path))
    schemas = {tuple((f.name, str(f.type)) for f in pq.read_schema(p)) for p in tmp_path.glob("*.parquet")}
    assert len(schemas) == 1, schemas
    out = pads.dataset(str(tmp_path), format="parquet").to_table()
    expected = _expected()
    assert _sorted(out.select(expected.column_names)).equals(_sorted(expected))


def test_different_schemas_in_one_write_task_json(tmp_path):
    _one_task_dataset().write_json(str(tmp_path))
    rows = [r for p in tmp_path.glob("*.json") for r in pd.read_json(p, lines=True).to_dict("records")]
    assert sorted(r["id"] for r in rows) == list(np.arange(N_BLOCKS))


def test_different_schemas_in_one_write_task_csv(tmp_path):
    _one_task_dataset().write_csv(str(tmp_path))
    frames = [pd.read_csv(p) for p in tmp_path.glob("*.csv")]
    out = pd.concat(frames).sort_values("id").reset_index(drop=True)
    expected = _sorted(_expected()).to_pandas()
    assert sorted(out.columns) == sorted(expected.columns)
    assert out["id"].tolist() == expected["id"].tolist()
    np.testing.assert_allclose(out["num"], expected["num"])


def test_from_arrow_tables_with_different_schemas():
    tables = [pa.table({"a": [1]}), pa.table({"a": [2.5], "b": ["x"]}), pa.table({"b": pa.nulls(1)})]
    out = md.from_arrow(tables).to_arrow()
    expected = pa.concat_tables(tables, promote_options="permissive")
    assert out.sort_by("a").equals(expected.sort_by("a"))


def _conflicting(batch: pa.Table) -> pa.Table:
    i = batch["id"][0].as_py()
    return pa.table({"id": batch["id"], "v": pa.array([i]) if i % 2 else pa.array([str(i)])})


def _conflict_dataset():
    return md.range(4, override_num_blocks=4).map_batches(_conflicting, batch_format="pyarrow")


def _assert_names_conflict(excinfo):
    message = str(excinfo.value)
    assert "v" in message and "int64" in message and "string" in message, message


def test_conflicting_types_to_arrow_raise_naming_column_and_types():
    with pytest.raises((pa.ArrowTypeError, pa.ArrowInvalid, TypeError)) as excinfo:
        _conflict_dataset().to_arrow()
    _assert_names_conflict(excinfo)


def test_conflicting_types_iter_batches_raise_naming_column_and_types():
    with pytest.raises((pa.ArrowTypeError, pa.ArrowInvalid, TypeError)) as excinfo:
        list(_conflict_dataset().iter_batches(batch_size=4))
    _assert_names_conflict(excinfo)


def test_conflicting_types_write_raise_naming_column_and_types(tmp_path):
    with pytest.raises((pa.ArrowTypeError, pa.ArrowInvalid, TypeError)) as excinfo:
        _conflict_dataset().write_parquet(str(tmp_path))
    _assert_names_conflict(excinfo)


def test_different_schemas_local_shuffle():
    batches = _varying_dataset().iter_batches(batch_size=2, batch_format="pyarrow",
                                              local_shuffle_buffer_size=2, local_shuffle_seed=0)
    out = pa.concat_tables(list(batches), promote_options="permissive")
    expected = _expected()
    assert _sorted(out.select(expected.column_names)).equals(_sorted(expected))


# ---- time zones through UDFs -----------------------------------------------------------


def _zoned_table() -> pa.Table:
    ns = pa.array([1_704_099_600_000_000_000, None, 1_717_237_800_000_000_001], pa.timestamp("ns", "Europe/Paris"))
    return pa.table({
        "ts": ns,
        "tokyo": ns.fill_null(0).cast(pa.timestamp("ns", "Asia/Tokyo")),
        "utc_us": pa.array([1, 2, 3], pa.timestamp("us", "UTC")),
        "naive": pa.array([1, 2, 3], pa.timestamp("ms")),
    })


@pytest.mark.parametrize("udf", [
    pytest.param(lambda ds: ds.map_batches(lambda b: b), id="numpy-unchanged"),
    pytest.param(lambda ds: ds.map_batches(lambda b: {k: v.copy() for k, v in b.items()}), id="numpy-copies"),
    pytest.param(lambda ds: ds.map_batches(lambda b: b, batch_format="pandas"), id="pandas"),
    pytest.param(lambda ds: ds.map(lambda r: r), id="map"),
    pytest.param(lambda ds: ds.flat_map(lambda r: [r]), id="flat_map"),
])
def test_timestamps_keep_their_zone_and_unit_through_udfs(udf):
    table = _zoned_table()
    out = udf(md.from_arrow(table)).to_arrow()  # the data's own schema, not the plan's
    assert out.schema.remove_metadata() == table.schema
    assert out.equals(table)


def test_numpy_udf_computed_timestamp_of_an_input_name_keeps_the_zone():
    table = _zoned_table()
    out = md.from_arrow(table).map_batches(lambda b: {"ts": b["tokyo"] + np.timedelta64(1, "h")}).to_arrow()
    expected = pc.add(table["tokyo"], pa.scalar(3_600_000_000_000, pa.duration("ns")))
    assert out.schema.field("ts").type == pa.timestamp("ns", "Europe/Paris")
    assert out["ts"].cast(pa.int64()).equals(expected.cast(pa.int64()))


# ---- columns with no values through numpy/pandas/row UDFs ------------------------------


@pytest.mark.parametrize("udf", [
    pytest.param(lambda ds: ds.map_batches(lambda b: b, batch_format="pandas"), id="pandas"),
    pytest.param(lambda ds: ds.map_batches(lambda b: {k: v.copy() for k, v in b.items()}), id="numpy-copies"),
    pytest.param(lambda ds: ds.map(lambda r: r), id="map"),
])
def test_all_null_block_keeps_the_column_type_through_udfs(udf):
    # An all-None object column would be Arrow's null type: that block would then fail a
    # string filter ("null vs string") and the collected column would not be a string.
    table = pa.table({"k": pa.array(range(6), pa.int64()),
                      "s": pa.array([None, None, None, "a", "b", None], pa.string())})
    ds = udf(md.from_arrow(table, override_num_blocks=2))
    assert ds.to_arrow().schema == table.schema
    out = ds.filter(expr="s in ['a']").to_arrow()
    assert out.equals(table.filter(pc.field("s").isin(["a"])))


# ---- frames without columns keep their rows (as pandas counts them) -------------------------

def test_pandas_udf_returning_a_frame_without_columns_keeps_its_rows():
    ds = md.range(10, override_num_blocks=2).select_columns([]).map_batches(lambda df: df, batch_format="pandas")
    assert ds.count() == 10
    assert ds.to_pandas().shape == (10, 0)


def test_from_pandas_of_a_frame_without_columns_keeps_its_rows():
    df = pd.DataFrame(index=range(4))
    assert len(df) == 4
    assert md.from_pandas(df).count() == 4

"""Consumption: iter_batches, iter_rows, take*, show, count, schema, to_*, materialize,
stats, repr, explain."""

from __future__ import annotations

import ast
import re
import threading

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import millstream as md
from conftest import assert_tables_equal, make_table, sorted_rows


@pytest.fixture
def table():
    return make_table(1000, seed=11)


@pytest.fixture
def ds(table):
    return md.from_arrow(table, override_num_blocks=7)


# ---- iter_batches --------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 64, 100, 333, 1000, 4096])
def test_iter_batches_exact_sizes(ds, table, batch_size):
    sizes = []
    parts = []
    for batch in ds.iter_batches(batch_size=batch_size, batch_format="pyarrow"):
        sizes.append(batch.num_rows)
        parts.append(batch)
    n = table.num_rows
    full, rest = divmod(n, batch_size)
    assert sizes == [batch_size] * full + ([rest] if rest else [])
    assert_tables_equal(pa.concat_tables(parts), table)


@pytest.mark.parametrize("batch_size", [64, 100, 333])
def test_iter_batches_drop_last(ds, table, batch_size):
    sizes = [len(b["key"]) for b in ds.iter_batches(batch_size=batch_size, drop_last=True)]
    assert sizes == [batch_size] * (table.num_rows // batch_size)


def test_iter_batches_default_batch_size_is_256(ds):
    sizes = [len(b["key"]) for b in ds.iter_batches()]
    assert sizes == [256, 256, 256, 232]


def test_iter_batches_across_small_blocks():
    # 10-row blocks are stitched into 64-row batches.
    ds = md.range(1000, override_num_blocks=100)
    batches = list(ds.iter_batches(batch_size=64))
    assert [len(b["id"]) for b in batches] == [64] * 15 + [40]
    np.testing.assert_array_equal(np.sort(np.concatenate([b["id"] for b in batches])), np.arange(1000))


@pytest.mark.parametrize("fmt,kind", [("default", dict), ("numpy", dict), ("pandas", pd.DataFrame),
                                      ("pyarrow", pa.Table)])
def test_iter_batches_formats(ds, table, fmt, kind):
    batches = list(ds.iter_batches(batch_size=300, batch_format=fmt))
    assert all(isinstance(b, kind) for b in batches)
    if kind is dict:
        assert all(isinstance(v, np.ndarray) for b in batches for v in b.values())
        got = pa.concat_tables([pa.table(b) for b in batches])
    elif kind is pd.DataFrame:
        got = pa.Table.from_pandas(pd.concat(batches, ignore_index=True), preserve_index=False)
    else:
        got = pa.concat_tables(batches)
    assert_tables_equal(got, table)


def test_iter_batches_batch_size_none_yields_blocks(table):
    ds = md.from_arrow(table, override_num_blocks=4)
    sizes = [b.num_rows for b in ds.iter_batches(batch_size=None, batch_format="pyarrow")]
    assert sizes == [250] * 4


def test_iter_batches_early_break_then_reiterate(ds, table):
    it = ds.iter_batches(batch_size=10)
    first = next(it)
    assert len(first["key"]) == 10
    it.close()
    # A fresh iteration still sees everything.
    total = sum(len(b["key"]) for b in ds.iter_batches(batch_size=10))
    assert total == table.num_rows


def test_iterator_object(ds, table):
    it = ds.iterator()
    assert isinstance(it, md.DataIterator)
    assert sum(len(b["key"]) for b in it.iter_batches(batch_size=128)) == table.num_rows
    assert sorted_rows(list(it.iter_rows())) == table.to_pylist()


def test_dataset_is_not_iterable(ds):
    with pytest.raises(TypeError):
        iter(ds)


# ---- rows ----------------------------------------------------------------------------


def test_iter_rows(ds, table):
    rows = list(ds.iter_rows())
    assert all(isinstance(r, dict) for r in rows)
    assert sorted_rows(rows) == table.to_pylist()


def test_take(ds, table):
    rows = ds.take(15)
    assert len(rows) == 15
    expected = {r["key"]: r for r in table.to_pylist()}
    assert all(expected[r["key"]] == r for r in rows)
    assert len(ds.take()) == 20
    assert len(ds.take(5000)) == 1000


def test_take_in_order(ctx, table):
    ctx.execution_options.preserve_order = True
    assert md.from_arrow(table, override_num_blocks=7).take(15) == table.slice(0, 15).to_pylist()


def test_take_all(ds, table):
    assert sorted_rows(ds.take_all()) == table.to_pylist()
    assert len(ds.take_all(limit=1000)) == 1000
    with pytest.raises(ValueError):
        ds.take_all(limit=999)


def test_take_batch(ds, table):
    batch = ds.take_batch(30)
    assert isinstance(batch, dict) and set(batch) == set(table.column_names)
    assert all(len(v) == 30 for v in batch.values())
    by_key = {r["key"]: r for r in table.to_pylist()}
    for i, key in enumerate(batch["key"]):
        assert by_key[int(key)]["price"] == batch["price"][i]
    df = ds.take_batch(5, batch_format="pandas")
    assert isinstance(df, pd.DataFrame) and len(df) == 5 and list(df.columns) == table.column_names
    tbl = ds.take_batch(7, batch_format="pyarrow")
    assert isinstance(tbl, pa.Table) and tbl.num_rows == 7 and tbl.schema == table.schema
    assert len(ds.take_batch()["key"]) == 20


def test_take_batch_empty_raises():
    # Ray: "Raises ValueError: if the dataset is empty."
    with pytest.raises(ValueError):
        md.range(10).filter(expr="id > 100").take_batch(5)


def test_show(ds, table, capsys):
    ds.show(4)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4
    by_key = {r["key"]: r for r in table.to_pylist()}
    for line in lines:
        row = ast.literal_eval(line)
        assert by_key[row["key"]] == row


def test_show_default_limit(capsys):
    md.range(100).show()
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 20
    assert all(0 <= ast.literal_eval(line)["id"] < 100 for line in lines)


# ---- count / schema ------------------------------------------------------------------


def test_count(ds, table):
    assert ds.count() == table.num_rows
    assert ds.filter(expr="qty >= 50").count() == pa.compute.sum(pa.compute.greater_equal(table["qty"], 50)).as_py()
    assert ds.map_batches(lambda b: {"x": b["key"][:3]}).count() == 3 * 7
    assert md.range(0).count() == 0


def test_count_parquet_metadata_no_read(tmp_path, table):
    pq.write_table(table, tmp_path / "a.parquet", row_group_size=100)
    pq.write_table(table, tmp_path / "b.parquet", row_group_size=100)
    ds = md.read_parquet(str(tmp_path))
    expected = sum(pq.ParquetFile(tmp_path / f).metadata.num_rows for f in ("a.parquet", "b.parquet"))
    assert ds.count() == expected
    # Nothing was executed: no operator stats exist yet.
    assert "ReadParquet" not in ds.stats()


def test_count_parquet_with_udf_runs_it(tmp_path, table):
    pq.write_table(table, tmp_path / "a.parquet")
    calls = []
    ds = md.read_parquet(str(tmp_path)).map_batches(lambda b: calls.append(1) or {"k": b["key"][:1]})
    assert ds.count() == 1 and calls


def test_schema_and_columns(ds, table):
    schema = ds.schema()
    assert isinstance(schema, md.Schema)
    assert schema.names == table.schema.names
    assert schema.types == table.schema.types
    assert schema.base_schema == table.schema
    assert ds.columns() == table.column_names
    assert "key" in repr(schema) and "int64" in repr(schema)


def test_schema_after_udf_is_fetched(ds):
    out = ds.map_batches(lambda b: {"z": b["price"].astype(np.float32)})
    expected = pa.table({"z": np.zeros(1, np.float32)}).schema
    assert out.schema().names == expected.names
    assert out.schema().types == expected.types
    assert out.schema(fetch_if_missing=False) is None or out.schema(fetch_if_missing=False).names == ["z"]


def test_schema_parquet(tmp_path, table):
    pq.write_table(table, tmp_path / "a.parquet")
    ds = md.read_parquet(str(tmp_path))
    ref = pq.read_schema(tmp_path / "a.parquet")
    assert ds.schema().names == ref.names and ds.schema().types == ref.types
    assert md.read_parquet(str(tmp_path), columns=["cat", "key"]).columns() == ["cat", "key"]


# ---- to_pandas / to_arrow --------------------------------------------------------------


def test_to_pandas(ds, table):
    out = ds.to_pandas().sort_values("key").reset_index(drop=True)
    pd.testing.assert_frame_equal(out, table.to_pandas())
    with pytest.raises(ValueError):
        ds.to_pandas(limit=10)
    assert len(ds.to_pandas(limit=1000)) == 1000


def test_to_arrow(ds, table):
    assert_tables_equal(ds.to_arrow(), table)


def test_to_arrow_empty_keeps_schema(ds, table):
    out = ds.filter(expr="qty > 1000").to_arrow()
    assert out.num_rows == 0
    assert out.column_names == table.column_names


# ---- materialize / stats -------------------------------------------------------------


def test_materialize_does_not_recompute():
    calls = []
    lock = threading.Lock()

    def f(batch):
        with lock:
            calls.append(1)
        return {"id": batch["id"] * 2}

    ds = md.range(1000, override_num_blocks=10).map_batches(f)
    m = ds.materialize()
    assert isinstance(m, md.MaterializedDataset)
    first = len(calls)
    assert first == 10
    assert sorted(r["id"] for r in m.take_all()) == list(range(0, 2000, 2))
    assert m.count() == 1000
    assert sum(len(b["id"]) for b in m.iter_batches(batch_size=100)) == 1000
    m.filter(expr="id > 10").map_batches(lambda b: b).take_all()
    assert len(calls) == first
    # The lazy dataset itself re-executes on every consumption.
    ds.take_all()
    assert len(calls) == 2 * first


def test_stats_before_and_after(ds):
    pipeline = ds.map_batches(lambda b: b, batch_size=100).filter(expr="qty > 10")
    before = pipeline.stats()
    assert isinstance(before, str)
    assert "MapBatches" not in before and "Rows in" not in before
    pipeline.take_all()
    after = pipeline.stats()
    assert "MapBatches(<lambda>)" in after
    assert "Filter(" in after
    m = re.search(r"Rows in: (\d+), rows out: (\d+)", after)
    assert m and int(m.group(1)) == 1000
    # The materialized dataset keeps the stats of the run that built it.
    mat = pipeline.materialize()
    assert "MapBatches(<lambda>)" in mat.stats()


def test_stats_rows_out_matches_reference(ds, table):
    pipeline = ds.filter(expr="cat == 'a'")
    rows = pipeline.take_all()
    expected = table.filter(pa.compute.field("cat") == "a").num_rows
    assert len(rows) == expected
    m = re.findall(r"rows out: (\d+)", pipeline.stats())
    assert m and int(m[-1]) == expected


def test_repr(table, tmp_path):
    r = repr(md.range(10))
    assert r.startswith("Dataset(") and "num_rows=10" in r and "id: int64" in r
    r = repr(md.from_arrow(table))
    assert r.startswith("MaterializedDataset(") and "num_rows=1000" in r
    for name, typ in zip(table.column_names, table.schema.types):
        assert f"{name}: {typ}" in r
    pq.write_table(table, tmp_path / "t.parquet")
    r = repr(md.read_parquet(str(tmp_path)).map_batches(lambda b: b))
    assert r.startswith("Dataset(")


def test_explain_fused_name(tmp_path, table, capsys):
    pq.write_table(table, tmp_path / "t.parquet")

    def f(batch):
        return batch

    ds = md.read_parquet(str(tmp_path)).map_batches(f).filter(expr="qty > 3")
    ds.explain()
    out = capsys.readouterr().out
    assert "ReadParquet->MapBatches(f)->Filter(" in out
    assert "Logical Plan" in out and "Physical Plan" in out


def test_explain_runs_nothing(capsys):
    calls = []
    md.range(100).map_batches(lambda b: calls.append(1) or b).explain()
    assert "MapBatches(<lambda>)" in capsys.readouterr().out
    assert calls == []


def test_lazy_transforms_run_nothing():
    calls = []
    ds = md.range(100).map_batches(lambda b: calls.append(1) or b).map(lambda r: calls.append(1) or r)
    ds = ds.filter(lambda r: calls.append(1) or True).limit(5)
    assert calls == []
    assert len(ds.take_all()) == 5 and calls


def test_schema_object(table):
    a = md.Schema(table.schema)
    assert a == md.Schema(table.schema)
    assert a != md.Schema(table.drop_columns(["cat"]).schema)
    assert a.names == table.schema.names and a.types == table.schema.types
    lines = repr(a).splitlines()
    assert lines[0].split() == ["Column", "Type"]
    assert [line.split()[0] for line in lines[2:]] == table.schema.names
    assert [line.split(None, 1)[1] for line in lines[2:]] == [str(t) for t in table.schema.types]


def test_iter_batches_collate_fn(ds, table):
    out = list(ds.iter_batches(batch_size=250, _collate_fn=lambda b: len(b["key"])))
    assert out == [250] * 4


def test_read_parquet_parallelism_alias(tmp_path, table):
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=100)
    blocks = list(md.read_parquet(str(tmp_path), parallelism=5).iter_batches(batch_size=None))
    assert len(blocks) == 5
    assert sum(len(b["key"]) for b in blocks) == table.num_rows


def test_version():
    assert isinstance(md.__version__, str) and md.__version__.count(".") >= 1


def test_preserve_order_with_scrambled_task_times(ctx, table):
    ctx.execution_options.preserve_order = True
    rng = np.random.default_rng(0)
    delays = iter(rng.random(1000) * 0.01)
    lock = threading.Lock()

    def jitter(batch):
        with lock:
            d = next(delays)
        import time
        time.sleep(d)
        return batch

    ds = md.from_arrow(table, override_num_blocks=20).map_batches(jitter, batch_size=25)
    got = pa.concat_tables(list(ds.iter_batches(batch_size=77, batch_format="pyarrow")))
    assert got.equals(table)
    assert ds.take(30) == table.slice(0, 30).to_pylist()


def test_slow_consumer_gets_everything_within_budget(ctx):
    ctx.execution_options.resource_limits.object_store_memory = 16 << 20
    n_blocks, rows = 40, 1 << 17  # 40 blocks of 1 MiB

    def make(batch):
        start = int(batch["id"][0]) * rows
        return {"v": np.arange(start, start + rows, dtype=np.int64)}

    ds = md.range(n_blocks, override_num_blocks=n_blocks).map_batches(make)
    total, count = 0, 0
    import time
    for batch in ds.iter_batches(batch_size=50_000):
        time.sleep(0.003)
        total += int(batch["v"].sum())
        count += len(batch["v"])
    n = n_blocks * rows
    assert count == n
    assert total == n * (n - 1) // 2
    peak = re.search(r"peak ([\d.]+) (\w+) of blocks held", ds.stats())
    unit = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[peak.group(2)]
    assert float(peak.group(1)) * unit <= (16 << 20) + 2 * (1 << 20)


def test_two_concurrent_consumers(table):
    ds = md.from_arrow(table, override_num_blocks=10).map_batches(
        lambda b: {"key": b["key"], "p2": b["price"] * 2})
    results, errors = {}, []

    def consume(name):
        try:
            results[name] = pa.concat_tables(list(ds.iter_batches(batch_size=64, batch_format="pyarrow")))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    expected = pa.table({"key": table["key"], "p2": pa.compute.multiply(table["price"], 2)})
    for name in range(3):
        assert_tables_equal(results[name], expected)


def test_iter_rows_early_break_then_reuse(ds, table):
    for i, row in enumerate(ds.iter_rows()):
        if i == 3:
            break
    assert len(list(ds.iter_rows())) == table.num_rows


def test_iter_batches_local_shuffle_keeps_every_row_and_mixes_them():
    n = 5000
    ds = md.range(n, override_num_blocks=10)
    md.DataContext.get_current().execution_options.preserve_order = True
    batches = list(ds.iter_batches(batch_size=100, local_shuffle_buffer_size=1000, local_shuffle_seed=7))
    ids = np.concatenate([b["id"] for b in batches])
    assert sorted(ids.tolist()) == list(range(n))              # nothing lost or repeated
    assert all(len(b["id"]) == 100 for b in batches)           # exact sizes (5000 = 50 x 100)
    assert not np.array_equal(ids, np.arange(n))               # the order changed
    # Rows move far within the buffer: the first batch spans more than one input block.
    assert np.ptp(batches[0]["id"]) > 500
    again = np.concatenate([b["id"] for b in ds.iter_batches(batch_size=100, local_shuffle_buffer_size=1000,
                                                             local_shuffle_seed=7)])
    assert np.array_equal(ids, again)                          # seeded: reproducible


def test_iter_batches_local_shuffle_drop_last_and_errors():
    ds = md.range(250, override_num_blocks=3)
    sizes = [len(b["id"]) for b in ds.iter_batches(batch_size=100, local_shuffle_buffer_size=50, drop_last=True)]
    assert sizes == [100, 100]
    with pytest.raises(ValueError, match="local_shuffle_buffer_size"):
        list(ds.iter_batches(local_shuffle_buffer_size=0))


def test_rows_of_a_block_larger_than_a_conversion_slice_are_all_there_in_order():
    # Rows are converted a slice of 65,536 at a time (so Ctrl-C is seen between slices).
    table = pa.table({"id": pa.array(range(200_003)), "s": pa.array([str(i % 7) for i in range(200_003)])})
    assert md.from_arrow(table).take_all() == table.to_pylist()

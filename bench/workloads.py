"""The benchmarks, one function per (benchmark, engine).

millstream and Ray Data run the very same function: it receives the engine's
module (``millstream`` or ``ray.data``) as ``c.lib`` and calls the same API on
it. polars, duckdb and pyarrow get their own version of the relational
benchmarks, doing the same work with their native API.

Every function times only the pipeline, checks its answer against the
data manifest (outside the timed region) and returns a dict with ``wall_s``,
``rows`` and optional ``extra`` metrics.

The UDFs live at module level so Ray workers can import them by reference
(the runner puts this folder on PYTHONPATH).
"""

from __future__ import annotations

import glob
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

DATASET_ENGINES = ("millstream", "ray")
PEER_ENGINES = ("polars", "duckdb", "pyarrow")
ALL_ENGINES = DATASET_ENGINES + PEER_ENGINES


class NotYet(Exception):
    """A benchmark that waits for an operator millstream does not have yet."""

    def __init__(self, operator: str):
        super().__init__(f"not yet: needs {operator}")
        self.operator = operator


class WrongAnswer(Exception):
    """A pipeline ran but produced the wrong result."""


@dataclass
class Ctx:
    """What a benchmark function gets: the data manifest and the engine."""

    engine: str
    manifest: dict
    tmp_root: str
    lib: object = None  # millstream or ray.data for the dataset engines

    @property
    def spec(self) -> dict:
        return self.manifest["spec"]

    def tmp_dir(self, tag: str) -> str:
        path = os.path.join(self.tmp_root, f"{tag}-{self.engine}-{os.getpid()}")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path


def _check(name: str, got, want):
    if got != want:
        raise WrongAnswer(f"{name}: got {got!r}, expected {want!r}")


def _result(wall_s: float, rows: int, **extra) -> dict:
    return {"wall_s": wall_s, "rows": rows, "extra": extra}


# --------------------------------------------------------------------------
# UDFs shared by millstream and Ray Data


def add_column(batch: dict) -> dict:
    """Vectorised numpy arithmetic adding one float64 column ``c``."""
    batch["c"] = batch["a"] * 2.0 + batch["b"] * batch["qty"]
    return batch


def noop(batch):
    return batch


class Scorer:
    """A stateful UDF with a costly constructor and numpy work per batch."""

    def __init__(self, sleep_s: float = 0.5):
        time.sleep(sleep_s)  # stands for loading a model
        rng = np.random.default_rng(7)
        self.big = rng.standard_normal((1024, 1024))  # 8 MiB of state per actor
        self.w = rng.standard_normal((4, 16))

    def __call__(self, batch: dict) -> dict:
        x = np.stack(
            [
                batch["a"],
                batch["b"],
                batch["qty"].astype(np.float64),
                batch["day"].astype(np.float64),
            ],
            axis=1,
        )
        batch["score"] = np.tanh(x @ self.w).sum(axis=1)
        return batch


def _written_rows(out_dir: str, new_column: str) -> int:
    import pyarrow.dataset as pads

    dataset = pads.dataset(out_dir, format="parquet")
    if new_column not in dataset.schema.names:
        raise WrongAnswer(f"output lacks column {new_column!r}: {dataset.schema.names}")
    return dataset.count_rows()


def _parquet_glob(path: str) -> str:
    return os.path.join(path, "*.parquet")


# --------------------------------------------------------------------------
# 1. etl: read Parquet -> filter -> map_batches -> write Parquet


def etl_dataset(c: Ctx) -> dict:
    lib, m = c.lib, c.manifest
    out = c.tmp_dir("etl")
    t0 = time.perf_counter()
    ds = lib.read_parquet(m["main_dir"])
    ds = ds.filter(expr=f"qty > {m['qty_threshold']}")
    ds = ds.map_batches(add_column, batch_format="numpy")
    ds.write_parquet(out)
    wall = time.perf_counter() - t0
    _check("rows written", _written_rows(out, "c"), m["filtered_rows"])
    return _result(wall, m["rows"])


def etl_polars(c: Ctx) -> dict:
    import polars as pl

    m = c.manifest
    out = c.tmp_dir("etl")
    os.makedirs(out)
    t0 = time.perf_counter()
    (
        pl.scan_parquet(_parquet_glob(m["main_dir"]))
        .filter(pl.col("qty") > m["qty_threshold"])
        .with_columns(c=pl.col("a") * 2.0 + pl.col("b") * pl.col("qty"))
        .sink_parquet(os.path.join(out, "part-0.parquet"))
    )
    wall = time.perf_counter() - t0
    _check("rows written", _written_rows(out, "c"), m["filtered_rows"])
    return _result(wall, m["rows"])


def etl_duckdb(c: Ctx) -> dict:
    import duckdb

    m = c.manifest
    out = c.tmp_dir("etl")
    os.makedirs(out)
    con = duckdb.connect()
    t0 = time.perf_counter()
    con.execute(
        f"""COPY (SELECT *, a * 2.0 + b * qty AS c
                  FROM read_parquet('{_parquet_glob(m["main_dir"])}')
                  WHERE qty > {m["qty_threshold"]})
            TO '{os.path.join(out, "part-0.parquet")}' (FORMAT parquet)"""
    )
    wall = time.perf_counter() - t0
    con.close()
    _check("rows written", _written_rows(out, "c"), m["filtered_rows"])
    return _result(wall, m["rows"])


def etl_pyarrow(c: Ctx) -> dict:
    import pyarrow.dataset as pads

    m = c.manifest
    out = c.tmp_dir("etl")
    t0 = time.perf_counter()
    dataset = pads.dataset(m["main_dir"], format="parquet")
    columns = {name: pads.field(name) for name in dataset.schema.names}
    columns["c"] = pads.field("a") * 2.0 + pads.field("b") * pads.field("qty")
    scanner = dataset.scanner(columns=columns, filter=pads.field("qty") > m["qty_threshold"])
    pads.write_dataset(scanner, out, format="parquet")
    wall = time.perf_counter() - t0
    _check("rows written", _written_rows(out, "c"), m["filtered_rows"])
    return _result(wall, m["rows"])


# --------------------------------------------------------------------------
# 2. ingest: read Parquet -> map_batches -> iter_batches(1024, numpy)

INGEST_BATCH = 1024


def ingest_dataset(c: Ctx) -> dict:
    lib, m = c.lib, c.manifest
    t0 = time.perf_counter()
    ds = lib.read_parquet(m["main_dir"]).map_batches(add_column, batch_format="numpy")
    rows = 0
    first = None
    for batch in ds.iter_batches(batch_size=INGEST_BATCH, batch_format="numpy"):
        if first is None:
            first = time.perf_counter() - t0
            _check("batch columns", sorted(batch), sorted(["id", "a", "b", "cat", "qty", "day", "c"]))
        rows += len(batch["id"])
    wall = time.perf_counter() - t0
    _check("rows", rows, m["rows"])
    return _result(wall, rows, first_batch_s=first)


def ingest_polars(c: Ctx) -> dict:
    import polars as pl

    m = c.manifest
    t0 = time.perf_counter()
    lf = pl.scan_parquet(_parquet_glob(m["main_dir"])).with_columns(
        c=pl.col("a") * 2.0 + pl.col("b") * pl.col("qty")
    )
    rows = 0
    first = None
    for chunk in lf.collect_batches(chunk_size=INGEST_BATCH):
        for frame in chunk.iter_slices(INGEST_BATCH):
            batch = {s.name: s.to_numpy() for s in frame.get_columns()}
            if first is None:
                first = time.perf_counter() - t0
            rows += len(batch["id"])
    wall = time.perf_counter() - t0
    _check("rows", rows, m["rows"])
    return _result(wall, rows, first_batch_s=first)


def ingest_duckdb(c: Ctx) -> dict:
    import duckdb

    m = c.manifest
    con = duckdb.connect()
    t0 = time.perf_counter()
    reader = con.execute(
        f"SELECT *, a * 2.0 + b * qty AS c FROM read_parquet('{_parquet_glob(m['main_dir'])}')"
    ).fetch_record_batch(INGEST_BATCH)
    rows = 0
    first = None
    for rb in reader:
        batch = {name: col.to_numpy(zero_copy_only=False) for name, col in zip(rb.schema.names, rb.columns)}
        if first is None:
            first = time.perf_counter() - t0
        rows += len(batch["id"])
    wall = time.perf_counter() - t0
    con.close()
    _check("rows", rows, m["rows"])
    return _result(wall, rows, first_batch_s=first)


# --------------------------------------------------------------------------
# 3. small_files: thousands of tiny files -> map -> count


def small_files_dataset(c: Ctx) -> dict:
    lib, m = c.lib, c.manifest
    t0 = time.perf_counter()
    rows = lib.read_parquet(m["small_dir"]).map_batches(add_column, batch_format="numpy").count()
    wall = time.perf_counter() - t0
    _check("count", rows, m["small_total_rows"])
    return _result(wall, rows, files=c.spec["small_files"])


# The peers would skip reading any column for a bare count, so they also sum
# the new column, which forces them to decode a, b and qty of every file.


def small_files_polars(c: Ctx) -> dict:
    import polars as pl

    m = c.manifest
    t0 = time.perf_counter()
    out = (
        pl.scan_parquet(_parquet_glob(m["small_dir"]))
        .with_columns(c=pl.col("a") * 2.0 + pl.col("b") * pl.col("qty"))
        .select(pl.len().alias("n"), pl.col("c").sum())
        .collect()
    )
    wall = time.perf_counter() - t0
    rows = int(out["n"][0])
    _check("count", rows, m["small_total_rows"])
    return _result(wall, rows, files=c.spec["small_files"])


def small_files_duckdb(c: Ctx) -> dict:
    import duckdb

    m = c.manifest
    con = duckdb.connect()
    t0 = time.perf_counter()
    rows, _ = con.execute(
        f"SELECT count(*), sum(a * 2.0 + b * qty) FROM read_parquet('{_parquet_glob(m['small_dir'])}')"
    ).fetchone()
    wall = time.perf_counter() - t0
    con.close()
    _check("count", rows, m["small_total_rows"])
    return _result(wall, rows, files=c.spec["small_files"])


def small_files_pyarrow(c: Ctx) -> dict:
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    m = c.manifest
    t0 = time.perf_counter()
    dataset = pads.dataset(m["small_dir"], format="parquet")
    scanner = dataset.scanner(columns={"c": pads.field("a") * 2.0 + pads.field("b") * pads.field("qty")})
    rows = 0
    total = 0.0
    for rb in scanner.to_batches():
        rows += rb.num_rows
        total += pc.sum(rb.column(0)).as_py() or 0.0
    wall = time.perf_counter() - t0
    _check("count", rows, m["small_total_rows"])
    return _result(wall, rows, files=c.spec["small_files"])


# --------------------------------------------------------------------------
# 4. actor_udf: a callable class on an actor pool of 2


# Two actors holding a whole CPU each would take every slot of a 2-core
# machine and starve the read/count tasks that feed them (Ray Data then waits
# forever), so each actor asks for a share that leaves one CPU free.
ACTOR_CPUS = min(1.0, max(0.25, ((os.cpu_count() or 2) - 1) / 2))


def actor_udf_dataset(c: Ctx) -> dict:
    lib, m = c.lib, c.manifest
    t0 = time.perf_counter()
    ds = lib.read_parquet(m["main_dir"]).map_batches(
        Scorer,
        concurrency=2,
        num_cpus=ACTOR_CPUS,
        batch_format="numpy",
        fn_constructor_kwargs={"sleep_s": c.spec["actor_sleep_s"]},
    )
    rows = ds.count()
    wall = time.perf_counter() - t0
    _check("count", rows, m["rows"])
    return _result(wall, rows)


# --------------------------------------------------------------------------
# 5. block_overhead: many tiny blocks through three no-op maps


def block_overhead_dataset(c: Ctx) -> dict:
    lib = c.lib
    n, blocks = c.spec["range_rows"], c.spec["range_blocks"]
    t0 = time.perf_counter()
    ds = lib.range(n, override_num_blocks=blocks)
    ds = ds.map_batches(noop, batch_format="pyarrow")
    ds = ds.map_batches(noop, batch_format="pyarrow")
    ds = ds.map_batches(noop, batch_format="pyarrow")
    rows = ds.count()
    wall = time.perf_counter() - t0
    _check("count", rows, n)
    return _result(wall, rows, per_block_us=wall / blocks * 1e6, blocks=blocks)


# --------------------------------------------------------------------------
# 6. pyarrow_ref: the ingest scan in plain pyarrow (the decoder's own speed)


def pyarrow_ref(c: Ctx) -> dict:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    m = c.manifest
    t0 = time.perf_counter()
    rows = 0
    first = None
    for path in sorted(glob.glob(_parquet_glob(m["main_dir"]))):
        table = pq.read_table(path)
        col = pc.add(
            pc.multiply(table["a"], 2.0),
            pc.multiply(table["b"], pc.cast(table["qty"], pa.float64())),
        )
        table = table.append_column("c", col)
        for rb in table.to_batches(max_chunksize=INGEST_BATCH):
            batch = {name: arr.to_numpy(zero_copy_only=False) for name, arr in zip(rb.schema.names, rb.columns)}
            if first is None:
                first = time.perf_counter() - t0
            rows += len(batch["id"])
    wall = time.perf_counter() - t0
    _check("rows", rows, m["rows"])
    return _result(wall, rows, first_batch_s=first)


# --------------------------------------------------------------------------
# 7. sort: read the int64 keys of keys/ -> sort("key") -> consume (or write Parquet)
#
# The keys are generated once by datagen, so every engine reads the same Parquet and
# the generation is out of the timed part. The consumer checks sortedness batch by
# batch (one vectorised comparison per batch, the same code for every engine) and the
# wrapped key sum, which any permutation of the input keeps.

SORT_SEED = 42


class SortedCheck:
    """Consumer-side check that the key batches arrive in ascending order."""

    def __init__(self):
        self.rows = 0
        self.key_sum = 0
        self.last = None

    def add(self, keys: np.ndarray) -> None:
        if len(keys) == 0:
            return
        if self.last is not None and keys[0] < self.last:
            raise WrongAnswer(f"sort: batch starts at {keys[0]} after a batch ending at {self.last} (row {self.rows})")
        if len(keys) > 1 and not bool(np.all(keys[1:] >= keys[:-1])):
            i = int(np.argmax(keys[1:] < keys[:-1]))
            raise WrongAnswer(f"sort: keys out of order at row {self.rows + i + 1}")
        self.last = keys[-1]
        self.rows += len(keys)
        self.key_sum = (self.key_sum + int(keys.view(np.uint64).sum(dtype=np.uint64))) % 2**64

    def verify(self, section: dict) -> None:
        _check("sorted rows", self.rows, section["rows"])
        _check("key sum (mod 2**64)", int(self.key_sum), section["key_sum"])


def _keys_of(batch) -> np.ndarray:
    """The key column of a pyarrow Table/RecordBatch as int64 numpy."""
    return np.asarray(batch.column("key").to_numpy(), dtype=np.int64)


def _check_sorted_files(out_dir: str, section: dict) -> None:
    """Each written file sorted and the files' key ranges disjoint (so the output, read
    file by file in key order, is sorted), and every key there."""
    import pyarrow.parquet as pq

    spans = []
    total = 0
    rows = 0
    for path in glob.glob(_parquet_glob(out_dir)):
        keys = _keys_of(pq.read_table(path, columns=["key"]))
        if len(keys) == 0:
            continue
        if len(keys) > 1 and not bool(np.all(keys[1:] >= keys[:-1])):
            raise WrongAnswer(f"sort: {os.path.basename(path)} is not sorted")
        spans.append((int(keys[0]), int(keys[-1]), os.path.basename(path)))
        total = (total + int(keys.view(np.uint64).sum(dtype=np.uint64))) % 2**64
        rows += len(keys)
    spans.sort()
    for (_, hi, a), (lo, _, b) in zip(spans, spans[1:]):
        if lo < hi:
            raise WrongAnswer(f"sort: the key ranges of {a} and {b} overlap")
    _check("rows written", rows, section["rows"])
    _check("key sum (mod 2**64)", total, section["key_sum"])


def sort_dataset(c: Ctx) -> dict:
    lib, keys = c.lib, c.manifest["keys"]
    check = SortedCheck()
    t0 = time.perf_counter()
    ds = lib.read_parquet(keys["dir"]).sort("key")
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        check.add(_keys_of(batch))
    wall = time.perf_counter() - t0
    check.verify(keys)
    return _result(wall, keys["rows"])


def sort_polars(c: Ctx) -> dict:
    import polars as pl

    keys = c.manifest["keys"]
    check = SortedCheck()
    t0 = time.perf_counter()
    df = pl.scan_parquet(_parquet_glob(keys["dir"])).sort("key").collect()
    check.add(df["key"].to_numpy())
    wall = time.perf_counter() - t0
    check.verify(keys)
    return _result(wall, keys["rows"])


def sort_duckdb(c: Ctx) -> dict:
    import duckdb

    keys = c.manifest["keys"]
    check = SortedCheck()
    con = duckdb.connect()
    t0 = time.perf_counter()
    reader = con.execute(
        f"SELECT key FROM read_parquet('{_parquet_glob(keys['dir'])}') ORDER BY key"
    ).fetch_record_batch(1 << 20)
    for rb in reader:
        check.add(_keys_of(rb))
    wall = time.perf_counter() - t0
    con.close()
    check.verify(keys)
    return _result(wall, keys["rows"])


def sort_parquet_dataset(c: Ctx) -> dict:
    lib, keys = c.lib, c.manifest["keys"]
    out = c.tmp_dir("sort")
    t0 = time.perf_counter()
    lib.read_parquet(keys["dir"]).sort("key").write_parquet(out)
    wall = time.perf_counter() - t0
    _check_sorted_files(out, keys)
    return _result(wall, keys["rows"])


def sort_parquet_polars(c: Ctx) -> dict:
    import polars as pl

    keys = c.manifest["keys"]
    out = c.tmp_dir("sort")
    os.makedirs(out)
    t0 = time.perf_counter()
    pl.scan_parquet(_parquet_glob(keys["dir"])).sort("key").sink_parquet(os.path.join(out, "part-0.parquet"))
    wall = time.perf_counter() - t0
    _check_sorted_files(out, keys)
    return _result(wall, keys["rows"])


def sort_parquet_duckdb(c: Ctx) -> dict:
    import duckdb

    keys = c.manifest["keys"]
    out = c.tmp_dir("sort")
    os.makedirs(out)
    con = duckdb.connect()
    t0 = time.perf_counter()
    con.execute(
        f"""COPY (SELECT key FROM read_parquet('{_parquet_glob(keys["dir"])}') ORDER BY key)
            TO '{os.path.join(out, "part-0.parquet")}' (FORMAT parquet)"""
    )
    wall = time.perf_counter() - t0
    con.close()
    _check_sorted_files(out, keys)
    return _result(wall, keys["rows"])


# --------------------------------------------------------------------------
# 8. random_shuffle: read the main table -> random_shuffle(seed) -> consume


class ShuffleCheck:
    """Consumer-side check that the ids arrive as a shuffled permutation of 0..n-1:
    the right count and sum, and hardly any id directly followed by its successor
    (about one in a uniform permutation; every row unshuffled, most rows when only
    blocks moved)."""

    def __init__(self):
        self.rows = 0
        self.id_sum = 0
        self.in_order = 0
        self.last = None

    def add(self, ids: np.ndarray) -> None:
        if len(ids) == 0:
            return
        self.id_sum += int(ids.sum())
        self.in_order += int(np.count_nonzero(ids[1:] == ids[:-1] + 1))
        if self.last is not None and ids[0] == self.last + 1:
            self.in_order += 1
        self.last = ids[-1]
        self.rows += len(ids)

    def verify(self, m: dict) -> None:
        n = m["rows"]
        _check("shuffled rows", self.rows, n)
        _check("id sum", self.id_sum, n * (n - 1) // 2)
        if self.in_order > max(10, n // 1000):
            raise WrongAnswer(f"random_shuffle: {self.in_order} of {n} rows still follow their predecessor")


def _ids_of(batch) -> np.ndarray:
    return np.asarray(batch.column("id").to_numpy(), dtype=np.int64)


def random_shuffle_dataset(c: Ctx) -> dict:
    lib, m = c.lib, c.manifest
    check = ShuffleCheck()
    t0 = time.perf_counter()
    ds = lib.read_parquet(m["main_dir"]).random_shuffle(seed=SORT_SEED)
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        check.add(_ids_of(batch))
    wall = time.perf_counter() - t0
    check.verify(m)
    return _result(wall, m["rows"])


def random_shuffle_polars(c: Ctx) -> dict:
    import polars as pl

    m = c.manifest
    check = ShuffleCheck()
    t0 = time.perf_counter()
    df = pl.read_parquet(_parquet_glob(m["main_dir"])).sample(fraction=1.0, shuffle=True, seed=SORT_SEED)
    check.add(df["id"].to_numpy())
    wall = time.perf_counter() - t0
    check.verify(m)
    return _result(wall, m["rows"])


def random_shuffle_duckdb(c: Ctx) -> dict:
    import duckdb

    m = c.manifest
    check = ShuffleCheck()
    con = duckdb.connect()
    con.execute("SELECT setseed(0.42)")
    t0 = time.perf_counter()
    reader = con.execute(
        f"SELECT * FROM read_parquet('{_parquet_glob(m['main_dir'])}') ORDER BY random()"
    ).fetch_record_batch(1 << 20)
    for rb in reader:
        check.add(_ids_of(rb))
    wall = time.perf_counter() - t0
    con.close()
    check.verify(m)
    return _result(wall, m["rows"])


# --------------------------------------------------------------------------
# groupby_q1: TPC-H Q1 shape: read -> filter on day -> groupby("cat") -> sum/mean/count

Q1_DAY_CUTOFF = 10591 - 90  # datagen's last day minus 90, as in Q1


def _q1_check(m: dict, got: dict) -> None:
    """``got``: cat -> (sum of qty, rows), checked against pyarrow (outside the timing)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    table = pads.dataset(m["main_dir"], format="parquet").to_table(
        columns=["cat", "qty"], filter=pc.field("day") <= Q1_DAY_CUTOFF)
    want = table.group_by("cat").aggregate([("qty", "sum"), ("qty", "count")]).to_pylist()
    _check("groupby_q1 groups", got, {r["cat"]: (r["qty_sum"], r["qty_count"]) for r in want})


def groupby_q1_dataset(c: Ctx) -> dict:
    import importlib

    lib, m = c.lib, c.manifest
    agg = importlib.import_module(lib.__name__ + ".aggregate")  # millstream.aggregate / ray.data.aggregate
    t0 = time.perf_counter()
    ds = lib.read_parquet(m["main_dir"], columns=["cat", "qty", "a", "day"])
    ds = ds.filter(expr=f"day <= {Q1_DAY_CUTOFF}")
    rows = ds.groupby("cat").aggregate(agg.Sum("qty"), agg.Mean("a"), agg.Count()).take_all()
    wall = time.perf_counter() - t0
    _q1_check(m, {r["cat"]: (r["sum(qty)"], r["count()"]) for r in rows})
    return _result(wall, m["rows"])


def groupby_q1_polars(c: Ctx) -> dict:
    import polars as pl

    m = c.manifest
    t0 = time.perf_counter()
    out = (
        pl.scan_parquet(_parquet_glob(m["main_dir"]))
        .filter(pl.col("day") <= Q1_DAY_CUTOFF)
        .group_by("cat")
        .agg(pl.col("qty").sum().alias("sum_qty"), pl.col("a").mean(), pl.len().alias("n"))
        .sort("cat")
        .collect()
    )
    wall = time.perf_counter() - t0
    _q1_check(m, {r["cat"]: (r["sum_qty"], r["n"]) for r in out.to_dicts()})
    return _result(wall, m["rows"])


def groupby_q1_duckdb(c: Ctx) -> dict:
    import duckdb

    m = c.manifest
    con = duckdb.connect()
    t0 = time.perf_counter()
    rows = con.execute(
        f"""SELECT cat, sum(qty), avg(a), count(*) FROM read_parquet('{_parquet_glob(m["main_dir"])}')
            WHERE day <= {Q1_DAY_CUTOFF} GROUP BY cat ORDER BY cat"""
    ).fetchall()
    wall = time.perf_counter() - t0
    con.close()
    _q1_check(m, {cat: (int(s), n) for cat, s, _, n in rows})
    return _result(wall, m["rows"])


# --------------------------------------------------------------------------
# 9. memory_bounded_sort / memory_bounded_shuffle: big/ (about 5x the memory limit in
# Arrow bytes) sorted or shuffled under DataContext's object_store_memory limit. The
# runner points TMPDIR at a fresh folder for the run (where spill files go) and checks
# it is empty afterwards; peak RSS is what it samples, to be read against the limit.


def _set_memory_limit(lib, limit: int) -> None:
    ctx = lib.DataContext.get_current()
    ctx.execution_options.resource_limits = lib.ExecutionResources.for_limits(object_store_memory=limit)


def _spill_note(ds) -> str:
    """The bytes millstream's exchanges spilled. ``stats()`` text does not print them, so
    this reads the per-operator stats the last execution kept (``spilled_bytes``)."""
    last = getattr(ds, "_last_stats", None)
    if not last:
        return "spilled bytes unknown"
    spilled = sum(op.spilled_bytes for op in last.operators)
    return f"spilled {spilled / 2**20:.0f} MiB"


def memory_bounded_sort(c: Ctx) -> dict:
    lib, big = c.lib, c.manifest["big"]
    _set_memory_limit(lib, big["memory_limit"])
    check = SortedCheck()
    t0 = time.perf_counter()
    ds = lib.read_parquet(big["dir"]).sort("key")
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        check.add(_keys_of(batch))
    wall = time.perf_counter() - t0
    check.verify(big)
    extra = {"memory_limit": big["memory_limit"], "input_bytes": big["rows"] * 32}
    if c.engine == "millstream":
        extra["spill"] = _spill_note(ds)
    return _result(wall, big["rows"], **extra)


def memory_bounded_shuffle(c: Ctx) -> dict:
    lib, big = c.lib, c.manifest["big"]
    _set_memory_limit(lib, big["memory_limit"])
    check = ShuffleCheck()
    t0 = time.perf_counter()
    ds = lib.read_parquet(big["dir"]).random_shuffle(seed=SORT_SEED)
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        check.add(_ids_of(batch))
    wall = time.perf_counter() - t0
    check.verify(big)
    extra = {"memory_limit": big["memory_limit"], "input_bytes": big["rows"] * 32}
    if c.engine == "millstream":
        extra["spill"] = _spill_note(ds)
    return _result(wall, big["rows"], **extra)


# --------------------------------------------------------------------------
# 10. join: main/ (16 M rows quick: id, a) inner-joined with dim/ (1 M rows: key, w) on
# the int64 id = key, every joined row consumed. Each dim row matches exactly one main
# row, so the answer is known: dim's rows, and the sum of w over them.

JOIN_PARTITIONS = 16


def _join_check(dim: dict, rows: int, w_sum: float) -> None:
    n = dim["rows"]
    _check("join rows", rows, n)
    _check("join sum(w)", w_sum, float(n * (n - 1) // 2))


def join_dataset(c: Ctx) -> dict:
    import pyarrow.compute as pc

    lib, m, dim = c.lib, c.manifest, c.manifest["dim"]
    t0 = time.perf_counter()
    main = lib.read_parquet(m["main_dir"], columns=["id", "a"])
    ds = main.join(lib.read_parquet(dim["dir"]), "inner", JOIN_PARTITIONS, on=("id",), right_on=("key",))
    rows, w_sum = 0, 0.0
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        rows += batch.num_rows
        w_sum += pc.sum(batch["w"]).as_py() or 0.0
    wall = time.perf_counter() - t0
    _join_check(dim, rows, w_sum)
    return _result(wall, m["rows"] + dim["rows"])


def join_polars(c: Ctx) -> dict:
    import polars as pl

    m, dim = c.manifest, c.manifest["dim"]
    t0 = time.perf_counter()
    out = (
        pl.scan_parquet(_parquet_glob(m["main_dir"])).select("id", "a")
        .join(pl.scan_parquet(_parquet_glob(dim["dir"])), left_on="id", right_on="key", how="inner")
        .collect()
    )
    rows, w_sum = out.height, float(out["w"].sum())
    wall = time.perf_counter() - t0
    _join_check(dim, rows, w_sum)
    return _result(wall, m["rows"] + dim["rows"])


def join_duckdb(c: Ctx) -> dict:
    import pyarrow.compute as pc

    import duckdb

    m, dim = c.manifest, c.manifest["dim"]
    con = duckdb.connect()
    t0 = time.perf_counter()
    out = con.execute(
        f"""SELECT m.id, m.a, d.w FROM read_parquet('{_parquet_glob(m["main_dir"])}') m
            JOIN read_parquet('{_parquet_glob(dim["dir"])}') d ON m.id = d.key"""
    ).fetch_arrow_table()
    rows, w_sum = out.num_rows, pc.sum(out["w"]).as_py() or 0.0
    wall = time.perf_counter() - t0
    con.close()
    _join_check(dim, rows, w_sum)
    return _result(wall, m["rows"] + dim["rows"])


# --------------------------------------------------------------------------
# 11. torch_ingest: read the numeric columns -> iter_torch_batches(batch_size=4096)
#
# A training loop's input side: every batch a dict of CPU tensors. The pyarrow version is
# the floor: read_table per file, 4096-row batches, each column handed to torch through
# DLPack (no copy).

TORCH_BATCH = 4096
TORCH_COLUMNS = ["id", "a", "b", "qty", "day"]


def _torch_consume(batches, t0: float):
    import torch

    rows = 0
    first = None
    for batch in batches:
        if first is None:
            first = time.perf_counter() - t0
            _check("batch columns", sorted(batch), sorted(TORCH_COLUMNS))
            if not all(isinstance(v, torch.Tensor) for v in batch.values()):
                raise WrongAnswer(f"not tensors: { {k: type(v).__name__ for k, v in batch.items()} }")
        rows += batch["id"].shape[0]
    return rows, first


def torch_ingest_dataset(c: Ctx) -> dict:
    import torch  # noqa: F401  (a one-off import, outside the timing as for every engine)

    lib, m = c.lib, c.manifest
    t0 = time.perf_counter()
    ds = lib.read_parquet(m["main_dir"], columns=TORCH_COLUMNS)
    rows, first = _torch_consume(ds.iter_torch_batches(batch_size=TORCH_BATCH), t0)
    wall = time.perf_counter() - t0
    _check("rows", rows, m["rows"])
    return _result(wall, rows, first_batch_s=first)


def torch_ingest_pyarrow(c: Ctx) -> dict:
    import pyarrow.parquet as pq
    import torch

    m = c.manifest

    def batches():
        for path in sorted(glob.glob(_parquet_glob(m["main_dir"]))):
            table = pq.read_table(path, columns=TORCH_COLUMNS)
            for rb in table.to_batches(max_chunksize=TORCH_BATCH):
                yield {name: torch.from_dlpack(col) for name, col in zip(rb.schema.names, rb.columns)}

    t0 = time.perf_counter()
    rows, first = _torch_consume(batches(), t0)
    wall = time.perf_counter() - t0
    _check("rows", rows, m["rows"])
    return _result(wall, rows, first_batch_s=first)


# --------------------------------------------------------------------------
# 12. streaming_split: the ingest pipeline (read -> map_batches -> 1024-row numpy batches)
# split between two consumer threads by streaming_split(2), against one consumer
# (streaming_split_one: the same pipeline through iter_batches). Each consumer counts its
# rows; together they must see every row once.

SPLIT_N = 2


def _split_pipeline(c: Ctx):
    return c.lib.read_parquet(c.manifest["main_dir"]).map_batches(add_column, batch_format="numpy")


def _count_batches(it) -> int:
    rows = 0
    for batch in it.iter_batches(batch_size=INGEST_BATCH, batch_format="numpy"):
        rows += len(batch["id"])
    return rows


def streaming_split_dataset(c: Ctx) -> dict:
    import threading

    m = c.manifest
    t0 = time.perf_counter()
    iterators = _split_pipeline(c).streaming_split(SPLIT_N, equal=False)
    counts = [0] * SPLIT_N
    errors: list = []

    def consume(i: int) -> None:
        try:
            counts[i] = _count_batches(iterators[i])
        except BaseException as e:  # reported after the join
            errors.append(e)

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(SPLIT_N)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    _check("rows (both consumers)", sum(counts), m["rows"])
    return _result(wall, m["rows"])


def streaming_split_one_dataset(c: Ctx) -> dict:
    m = c.manifest
    t0 = time.perf_counter()
    rows = _count_batches(_split_pipeline(c))
    wall = time.perf_counter() - t0
    _check("rows", rows, m["rows"])
    return _result(wall, rows)


# --------------------------------------------------------------------------
# 13. expressions: the etl query with expressions and no Python UDF: read_parquet ->
# filter(expr=col("qty") > 25) -> with_column("c", col("a") * 2.0 + col("b") * col("qty"))
# -> write_parquet. polars and duckdb run etl's versions (the same query). The output's
# c is checked against pyarrow.compute outside the timing.


def _check_written_c(out_dir: str, m: dict) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    _check("rows written", _written_rows(out_dir, "c"), m["filtered_rows"])
    table = pads.dataset(out_dir, format="parquet").to_table(columns=["a", "b", "qty", "c"])
    if pc.min(table["qty"]).as_py() <= m["qty_threshold"]:
        raise WrongAnswer("rows with qty <= threshold were written")
    want = pc.add(pc.multiply(table["a"], 2.0), pc.multiply(table["b"], pc.cast(table["qty"], pa.float64())))
    if not pc.all(pc.equal(table["c"], want)).as_py():
        raise WrongAnswer("column c differs from a * 2 + b * qty")


def expressions_dataset(c: Ctx) -> dict:
    import importlib

    lib, m = c.lib, c.manifest
    col = importlib.import_module(lib.__name__ + ".expressions").col
    out = c.tmp_dir("expressions")
    t0 = time.perf_counter()
    ds = lib.read_parquet(m["main_dir"])
    ds = ds.filter(expr=col("qty") > m["qty_threshold"])
    ds = ds.with_column("c", col("a") * 2.0 + col("b") * col("qty"))
    ds.write_parquet(out)
    wall = time.perf_counter() - t0
    _check_written_c(out, m)
    return _result(wall, m["rows"])


def expressions_polars(c: Ctx) -> dict:
    out = etl_polars(c)
    _check_written_c(c.tmp_dir("etl"), c.manifest)
    return out


def expressions_duckdb(c: Ctx) -> dict:
    out = etl_duckdb(c)
    _check_written_c(c.tmp_dir("etl"), c.manifest)
    return out


# --------------------------------------------------------------------------
# Registry


@dataclass
class Benchmark:
    name: str
    what: str
    impls: dict[str, Callable[[Ctx], dict]] = field(default_factory=dict)
    # The benchmark whose millstream time is the denominator of the ratio.
    ratio_to: str | None = None
    placeholder: Callable[[Ctx], dict] | None = None
    # On-demand datasets it reads (datagen.EXTRAS), put in the manifest under their name.
    needs: tuple[str, ...] = ()
    # Run with TMPDIR at a fresh folder, checked to be empty afterwards (spill files).
    fresh_tmpdir: bool = False
    # Extra ray.init arguments, from the manifest (e.g. a matching object store size).
    ray_init: Callable[[dict], dict] | None = None
    # Engines left out of --smoke (CI time), still run at the other sizes.
    not_in_smoke: tuple[str, ...] = ()


def _ray_store(m: dict) -> dict:
    """Ray's object store as large as the memory limit (Ray's floor is 75 MiB)."""
    return {"object_store_memory": max(m["big"]["memory_limit"], 80 << 20)}


def _both(fn):
    return {"millstream": fn, "ray": fn}


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in [
        Benchmark(
            "etl",
            "read Parquet -> filter qty > 25 (keeps ~half) -> map_batches numpy arithmetic -> write Parquet",
            {**_both(etl_dataset), "polars": etl_polars, "duckdb": etl_duckdb, "pyarrow": etl_pyarrow},
        ),
        Benchmark(
            "ingest",
            "read Parquet -> map_batches -> iter_batches(batch_size=1024, batch_format='numpy')",
            {**_both(ingest_dataset), "polars": ingest_polars, "duckdb": ingest_duckdb},
        ),
        Benchmark(
            "small_files",
            "read thousands of tiny Parquet files -> map_batches -> count",
            {
                **_both(small_files_dataset),
                "polars": small_files_polars,
                "duckdb": small_files_duckdb,
                "pyarrow": small_files_pyarrow,
            },
        ),
        Benchmark(
            "actor_udf",
            "read Parquet -> map_batches(CallableClass with a 0.5 s constructor, concurrency=2) -> count",
            _both(actor_udf_dataset),
        ),
        Benchmark(
            "block_overhead",
            "range(n, override_num_blocks=k) -> 3 no-op map_batches -> count; per-block cost = wall / k",
            _both(block_overhead_dataset),
        ),
        Benchmark(
            "pyarrow_ref",
            "the ingest scan in plain pyarrow (read_table + compute + 1024-row numpy batches); ratio vs millstream ingest",
            {"pyarrow": pyarrow_ref},
            ratio_to="ingest",
        ),
        Benchmark(
            "sort",
            "read_parquet of random int64 keys -> sort('key') -> consume, sortedness checked per batch",
            {**_both(sort_dataset), "polars": sort_polars, "duckdb": sort_duckdb},
            needs=("keys",),
        ),
        Benchmark(
            "sort_parquet",
            "read_parquet of random int64 keys -> sort('key') -> write_parquet (DuckDB: COPY (... ORDER BY key) TO)",
            {**_both(sort_parquet_dataset), "polars": sort_parquet_polars, "duckdb": sort_parquet_duckdb},
            needs=("keys",),
        ),
        Benchmark(
            "random_shuffle",
            "read_parquet of the main table -> random_shuffle(seed=42) -> consume, permutation checked",
            {**_both(random_shuffle_dataset), "polars": random_shuffle_polars, "duckdb": random_shuffle_duckdb},
        ),
        Benchmark(
            "memory_bounded_sort",
            "sort of an input 5x DataContext's object_store_memory limit (spills); peak RSS vs the limit",
            _both(memory_bounded_sort),
            needs=("big",),
            fresh_tmpdir=True,
            ray_init=_ray_store,
            # Ray's object store cannot go below 75 MiB, so at the smoke size (8 MiB) its
            # run is no like-for-like test, and it costs CI a Ray start.
            not_in_smoke=("ray",),
        ),
        Benchmark(
            "memory_bounded_shuffle",
            "random_shuffle of an input 5x DataContext's object_store_memory limit (spills); peak RSS vs the limit",
            _both(memory_bounded_shuffle),
            needs=("big",),
            fresh_tmpdir=True,
            ray_init=_ray_store,
            # Ray's object store cannot go below 75 MiB, so at the smoke size (8 MiB) its
            # run is no like-for-like test, and it costs CI a Ray start.
            not_in_smoke=("ray",),
        ),
        Benchmark(
            "groupby_q1",
            "TPC-H Q1 shape: read Parquet -> filter day <= cutoff -> groupby(cat) -> sum/mean/count",
            {**_both(groupby_q1_dataset), "polars": groupby_q1_polars, "duckdb": groupby_q1_duckdb},
        ),
        Benchmark(
            "torch_ingest",
            "read_parquet(columns=id,a,b,qty,day) -> iter_torch_batches(batch_size=4096); pyarrow: read_table + DLPack",
            {**_both(torch_ingest_dataset), "pyarrow": torch_ingest_pyarrow},
        ),
        Benchmark(
            "streaming_split",
            "the ingest pipeline -> streaming_split(2), each iterator consumed by its own thread (1024-row numpy batches)",
            _both(streaming_split_dataset),
        ),
        Benchmark(
            "streaming_split_one",
            "the same pipeline consumed by one loop (iter_batches), the baseline of streaming_split",
            _both(streaming_split_one_dataset),
        ),
        Benchmark(
            "expressions",
            "read Parquet -> filter(expr=col('qty') > 25) -> with_column('c', col('a')*2.0 + col('b')*col('qty')) -> write Parquet",
            {**_both(expressions_dataset), "polars": expressions_polars, "duckdb": expressions_duckdb},
        ),
        Benchmark(
            "join",
            "read_parquet main (id, a) inner join read_parquet dim (1/16 of the ids: key, w) on id = key -> consume",
            {**_both(join_dataset), "polars": join_polars, "duckdb": join_duckdb},
            needs=("dim",),
        ),
    ]
}


def placeholder_reason(bench: Benchmark) -> str:
    try:
        bench.placeholder(None)  # type: ignore[arg-type]
    except NotYet as e:
        return str(e)
    return "not yet"

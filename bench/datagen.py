"""Deterministic benchmark data, generated once and cached on disk.

Two datasets per size:

* ``main/``: a table of ``id int64, a float64, b float64, cat string, qty int32,
  day int32`` split over several Parquet files with several row groups each.
* ``small/``: the same schema spread over many tiny Parquet files.

Two more, generated only when a benchmark asks for them (``ensure_extra``):

* ``keys/``: one column ``key int64`` of uniformly random keys (the sort benchmarks).
* ``big/``: ``key int64, id int64, a float64, b float64``, about five times the
  memory limit of the memory-bounded benchmarks (in Arrow bytes).

Every value comes from a seeded numpy generator, so the same size always gives
the same bytes. ``manifest.json`` records the spec and the expected answers
(row counts, filtered row counts) that the benchmarks check their output
against.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

# Bump when the generated data changes, so old caches are rebuilt.
GEN_VERSION = 1
SEED = 20240917
CATS = ["A_F", "N_F", "N_O", "R_F", "A_O", "R_O"]
# The ETL filter keeps rows with qty > QTY_THRESHOLD; qty is uniform in [1, 50].
QTY_THRESHOLD = 25
DAY_MIN, DAY_MAX = 8035, 10591  # 1992-01-01 .. 1998-12-31 as days since epoch

SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("a", pa.float64()),
        ("b", pa.float64()),
        ("cat", pa.string()),
        ("qty", pa.int32()),
        ("day", pa.int32()),
    ]
)


@dataclass(frozen=True)
class SizeSpec:
    name: str
    rows: int  # rows in main/
    files: int  # files in main/
    row_groups: int  # row groups per file in main/
    small_files: int  # files in small/
    small_rows: int  # rows per file in small/
    range_rows: int  # block_overhead: rows of md.range
    range_blocks: int  # block_overhead: override_num_blocks
    actor_sleep_s: float  # actor_udf: constructor cost


SIZES = {
    # A few MB; used by CI to keep the suite running, not for numbers.
    "smoke": SizeSpec("smoke", 200_000, 4, 4, 200, 100, 100_000, 200, 0.5),
    # A few hundred MB of Parquet.
    "quick": SizeSpec("quick", 16_000_000, 8, 8, 2_000, 500, 1_000_000, 2_000, 0.5),
    # Several GB of Parquet.
    "full": SizeSpec("full", 160_000_000, 32, 10, 5_000, 1_000, 1_000_000, 2_000, 0.5),
}


def _make_table(rng: np.random.Generator, start_id: int, n: int) -> tuple[pa.Table, int]:
    ids = np.arange(start_id, start_id + n, dtype=np.int64)
    a = rng.uniform(1.0, 1000.0, n)
    b = np.round(rng.uniform(0.0, 0.1, n), 2)
    cat_idx = rng.integers(0, len(CATS), n, dtype=np.int32)
    qty = rng.integers(1, 51, n, dtype=np.int32)
    day = rng.integers(DAY_MIN, DAY_MAX + 1, n, dtype=np.int32)
    cat = pa.array(CATS, pa.string()).take(pa.array(cat_idx))
    table = pa.table(
        [pa.array(ids), pa.array(a), pa.array(b), cat, pa.array(qty), pa.array(day)],
        schema=SCHEMA,
    )
    return table, int(np.count_nonzero(qty > QTY_THRESHOLD))


@dataclass(frozen=True)
class ExtraSpec:
    """The on-demand datasets of one size (kept out of SizeSpec so adding one does not
    invalidate the cached main data)."""

    sort_rows: int  # keys/: rows of random int64 keys
    sort_files: int
    sort_row_groups: int  # per file
    memory_limit: int  # memory_bounded: DataContext resource_limits.object_store_memory, bytes
    big_rows: int  # big/: rows (32 bytes each in Arrow), ~5x memory_limit
    big_files: int
    big_row_groups: int  # per file


# Bump when an extra dataset's generator changes.
EXTRA_GEN_VERSION = 1
BIG_ROW_BYTES = 32  # key, id, a, b: four 8-byte columns

EXTRA_SIZES = {
    "smoke": ExtraSpec(200_000, 4, 2, 8 << 20, 5 * (8 << 20) // BIG_ROW_BYTES, 4, 4),
    "quick": ExtraSpec(16_000_000, 8, 4, 256 << 20, 5 * (256 << 20) // BIG_ROW_BYTES, 16, 4),
    "full": ExtraSpec(100_000_000, 25, 4, 1 << 30, 5 * (1 << 30) // BIG_ROW_BYTES, 64, 4),
}


def _write_dataset(path: str, files: int, rows_per_file: list[int], row_group_size: int, seed_tag: int):
    os.makedirs(path, exist_ok=True)
    start = 0
    filtered = 0
    for i in range(files):
        rng = np.random.default_rng([SEED, seed_tag, i])
        table, kept = _make_table(rng, start, rows_per_file[i])
        filtered += kept
        pq.write_table(
            table,
            os.path.join(path, f"part-{i:05d}.parquet"),
            row_group_size=max(1, row_group_size),
        )
        start += rows_per_file[i]
    return start, filtered


def _split(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))


def _keys_table(rng: np.random.Generator, start_id: int, n: int) -> pa.Table:
    info = np.iinfo(np.int64)
    return pa.table({"key": rng.integers(info.min, info.max, n, dtype=np.int64, endpoint=True)})


def _big_table(rng: np.random.Generator, start_id: int, n: int) -> pa.Table:
    info = np.iinfo(np.int64)
    return pa.table(
        {
            "key": rng.integers(info.min, info.max, n, dtype=np.int64, endpoint=True),
            "id": np.arange(start_id, start_id + n, dtype=np.int64),
            "a": rng.uniform(1.0, 1000.0, n),
            "b": rng.standard_normal(n),
        }
    )


JOIN_STRIDE = 16  # dim/: one row per 16th id of main/


def _dim_table(rng: np.random.Generator, start_id: int, n: int) -> pa.Table:
    """dim/: the join's dimension table, ``key`` = every JOIN_STRIDE-th id of main/ (so each
    dim row matches one main row), ``w`` = its index, rows in a random order."""
    j = rng.permutation(np.arange(start_id, start_id + n, dtype=np.int64))
    return pa.table({"key": j * JOIN_STRIDE, "w": j.astype(np.float64)})


def _write_tables(path: str, make, files: int, total: int, row_groups: int, seed_tag: int) -> dict:
    """Writes ``files`` Parquet files of ``make(rng, start, n)``; returns the row count and
    the wrapped (mod 2**64) sum of the ``key`` column, which a permutation keeps."""
    os.makedirs(path, exist_ok=True)
    start = 0
    key_sum = 0
    for i, n in enumerate(_split(total, files)):
        rng = np.random.default_rng([SEED, seed_tag, i])
        table = make(rng, start, n)
        key_sum = (key_sum + int(table["key"].to_numpy().view(np.uint64).sum(dtype=np.uint64))) % 2**64
        pq.write_table(table, os.path.join(path, f"part-{i:05d}.parquet"), row_group_size=max(1, -(-n // row_groups)))
        start += n
    return {"rows": start, "key_sum": key_sum}


EXTRAS = ("keys", "big", "dim")


def ensure_extra(root: str, size: str, name: str, log=print) -> dict:
    """Generates the on-demand dataset ``name`` (``keys``, ``big`` or ``dim``) under
    ``root/size/name`` unless cached; returns its manifest section."""
    spec = EXTRA_SIZES[size]
    path = os.path.join(root, size, name)
    marker = os.path.join(root, size, f"{name}.json")
    wanted = {"gen_version": EXTRA_GEN_VERSION, "seed": SEED, "spec": asdict(spec)}
    if os.path.exists(marker):
        with open(marker) as f:
            section = json.load(f)
        if {k: section.get(k) for k in wanted} == wanted:
            return section
    if os.path.exists(path):
        shutil.rmtree(path)
    t0 = time.perf_counter()
    if name == "keys":
        log(f"[data] generating {size} sort keys in {path} ({spec.sort_rows:,} int64 keys)")
        info = _write_tables(path, _keys_table, spec.sort_files, spec.sort_rows, spec.sort_row_groups, seed_tag=3)
    elif name == "big":
        log(f"[data] generating {size} memory-bounded input in {path} ({spec.big_rows:,} rows)")
        info = _write_tables(path, _big_table, spec.big_files, spec.big_rows, spec.big_row_groups, seed_tag=4)
    elif name == "dim":
        rows = spec.sort_rows // JOIN_STRIDE
        log(f"[data] generating {size} join dimension table in {path} ({rows:,} rows)")
        info = _write_tables(path, _dim_table, 2, rows, 2, seed_tag=5)
    else:
        raise ValueError(f"unknown extra dataset {name!r} (choose from {', '.join(EXTRAS)})")
    section = dict(wanted)
    section.update(info, dir=os.path.abspath(path), bytes=_dir_bytes(path), memory_limit=spec.memory_limit)
    tmp = marker + ".tmp"
    with open(tmp, "w") as f:
        json.dump(section, f, indent=2)
    os.replace(tmp, marker)
    log(f"[data] done in {time.perf_counter() - t0:.1f} s: {section['bytes'] / 2**20:.1f} MiB of Parquet")
    return section


def ensure_data(root: str, size: str, log=print) -> dict:
    """Generate the data for ``size`` under ``root/size`` unless already cached.

    Returns the manifest (a dict) with the paths and expected answers.
    """
    spec = SIZES[size]
    base = os.path.join(root, size)
    manifest_path = os.path.join(base, "manifest.json")
    wanted = {"gen_version": GEN_VERSION, "seed": SEED, "spec": asdict(spec)}
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            manifest = json.load(f)
        if {k: manifest.get(k) for k in wanted} == wanted:
            return manifest
        log(f"[data] cached data in {base} is stale, regenerating")
    if os.path.exists(base):
        shutil.rmtree(base)
    os.makedirs(base)

    t0 = time.perf_counter()
    log(f"[data] generating {size} data in {base} ({spec.rows:,} rows, {spec.files} files)")
    main_dir = os.path.join(base, "main")
    per_file = _split(spec.rows, spec.files)
    rows, filtered = _write_dataset(
        main_dir, spec.files, per_file, -(-per_file[0] // spec.row_groups), seed_tag=1
    )
    small_dir = os.path.join(base, "small")
    small_rows, _ = _write_dataset(
        small_dir, spec.small_files, [spec.small_rows] * spec.small_files, spec.small_rows, seed_tag=2
    )
    manifest = dict(wanted)
    manifest.update(
        {
            "main_dir": os.path.abspath(main_dir),
            "small_dir": os.path.abspath(small_dir),
            "rows": rows,
            "filtered_rows": filtered,
            "small_total_rows": small_rows,
            "main_bytes": _dir_bytes(main_dir),
            "small_bytes": _dir_bytes(small_dir),
            "qty_threshold": QTY_THRESHOLD,
        }
    )
    # Write the manifest last: its presence marks a complete dataset.
    tmp = manifest_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=2)
    os.replace(tmp, manifest_path)
    log(
        f"[data] done in {time.perf_counter() - t0:.1f} s: main {manifest['main_bytes'] / 2**20:.1f} MiB, "
        f"small {spec.small_files} files {manifest['small_bytes'] / 2**20:.1f} MiB"
    )
    return manifest

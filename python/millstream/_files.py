"""After a Parquet write: one schema for every file it wrote."""

from __future__ import annotations

import os
from typing import Iterable, List, Set

import pyarrow as pa
import pyarrow.parquet as pq

from millstream import _batch


def listing(directory: str, extension: str) -> Set[str]:
    """Every visible file ending in ``.extension`` under ``directory`` (recursive)."""
    found = set()
    for root, dirs, files in os.walk(directory):
        dirs[:] = [d for d in dirs if not d.startswith((".", "_"))]
        found.update(os.path.join(root, f) for f in files
                     if f.endswith("." + extension) and not f.startswith((".", "_")))
    return found


def _columns(schema: pa.Schema) -> list:
    return [(f.name, f.type) for f in schema]


def unify_parquet_files(paths: Iterable[str]) -> None:
    """Rewrites the files among ``paths`` whose schema differs from the union of all of
    theirs (blocks of different tasks may differ in columns or types), so that
    ``pyarrow.dataset`` and every other reader see one schema and lose no column. Each
    file is replaced atomically (written under a hidden name, then renamed). A conflict
    that cannot be unified raises ``pyarrow.ArrowTypeError`` naming the column and types.
    """
    paths: List[str] = sorted(paths)
    if len(paths) < 2:
        return
    schemas = [pq.read_schema(p) for p in paths]
    if all(_columns(s) == _columns(schemas[0]) for s in schemas):
        return
    unified = pa.unify_schemas(schemas, promote_options="permissive")
    for path, schema in zip(paths, schemas):
        if _columns(schema) == _columns(unified):
            continue
        table = _batch.concat_tables([unified.empty_table(), pq.read_table(path)])
        temp = os.path.join(os.path.dirname(path), ".tmp-unify-" + os.path.basename(path))
        pq.write_table(table.select(unified.names), temp, compression="snappy")
        os.replace(temp, path)

"""``Dataset.write_numpy`` and ``Dataset.write_images``: files written from Python, one
per block (NumPy) or per row (images), with Ray's save modes and file names. Locally each
is written under a hidden temporary name and renamed when complete; on S3 or an fsspec
filesystem each is stored whole through the engine's filesystem (an S3 object appears
only when its upload completes; a failed one is aborted)."""

from __future__ import annotations

import io
import os
import uuid
from typing import Any, Optional

import numpy as np
import pyarrow as pa

from millstream import _batch, _core, _files


def _prepare(fn_name: str, path: Any, mode: Any, filesystem: Any = None) -> Optional[tuple]:
    """(directory, created, filesystem handle or None for local) ready for writing, or None
    when mode="ignore" says skip."""
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str) or not path:
        raise ValueError(f"{fn_name}: path must be a directory path, got {path!r}")
    mode = _files.save_mode(fn_name, mode)
    from millstream import read_api
    spec = read_api.filesystem_spec(fn_name, filesystem)
    if spec is not None or path.lower().startswith(("s3://", "gs://", "gcs://")):
        handle, directory = _core.resolve_path(read_api.fs_path(filesystem, path), spec, fn_name)
        if handle.type_name != "local":
            if not _core.prepare_write_dir_on(handle, directory, mode, fn_name):
                import logging
                logging.getLogger("millstream").warning("[SaveMode=ignore] Skipping %s: it exists", path)
                return None
            return directory, False, handle
        path = directory
    path = _core.local_path(path, fn_name)
    if os.path.isfile(path):
        raise FileExistsError(f"{fn_name}: '{path}' is a file; give a directory")
    directory = os.path.abspath(path)
    created = not os.path.lexists(directory)
    if not _core.prepare_write_dir(directory, mode, fn_name):
        import logging
        logging.getLogger("millstream").warning("[SaveMode=ignore] Skipping %s: it exists", path)
        return None
    return directory, created, None


def _commit(directory: str, name: str, data: bytes, compression: Optional[str], handle=None) -> None:
    if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
        raise ValueError(f"filename_provider: {name!r} is not a file name (one path segment)")
    if handle is not None:
        if compression:
            sink = pa.BufferOutputStream()
            with pa.CompressedOutputStream(sink, compression) as out:
                out.write(data)
            data = sink.getvalue().to_pybytes()
        _core.write_object(handle, f"{directory.rstrip('/')}/{name}", data)
        return
    final = os.path.join(directory, name)
    temp = os.path.join(directory, f".tmp-{uuid.uuid4().hex}-{name}")
    try:
        with pa.OSFile(temp, "wb") as raw:
            if compression:
                with pa.CompressedOutputStream(raw, compression) as out:
                    out.write(data)
            else:
                raw.write(data)
        os.replace(temp, final)
    except BaseException:
        if os.path.lexists(temp):
            os.unlink(temp)
        raise


def _column(fn_name: str, batch: pa.RecordBatch, column: str) -> Any:
    if not isinstance(column, str):
        raise TypeError(f"{fn_name}: column must be a column name, got {column!r}")
    if column not in batch.schema.names:
        raise KeyError(f"{fn_name}: column '{column}' not found; the columns are: "
                       f"{', '.join(batch.schema.names)}")
    return _batch.to_format(batch.select([column]), "numpy")[column]


def write_numpy(ds, path, *, column: str, mode, filename_provider, min_rows_per_file,
                num_rows_per_file, arrow_open_stream_args, filesystem=None) -> None:
    fn_name = "write_numpy"
    min_rows, _ = _files.rows_per_file(fn_name, num_rows_per_file, min_rows_per_file, None)
    _files.filename_provider(fn_name, filename_provider)
    compression = _files.open_stream_args(fn_name, arrow_open_stream_args)
    ready = _prepare(fn_name, path, mode, filesystem)
    if ready is None:
        return
    directory, created, handle = ready
    write_uuid = uuid.uuid4().hex
    wrote = False
    for task_index, batch in enumerate(ds._batches(batch_size=min_rows, ordered=True)):
        if batch.num_rows == 0:
            continue
        values = _column(fn_name, batch, column)
        if values.dtype == object:
            raise ValueError(f"{fn_name}: column '{column}' holds cells of different shapes or "
                             "non-numeric values; .npy needs one array")
        buffer = io.BytesIO()
        np.save(buffer, values, allow_pickle=False)
        name = (filename_provider.get_filename_for_task(write_uuid, task_index) if filename_provider
                else f"{write_uuid}_{task_index:06d}_000000.npy")
        _commit(directory, name, buffer.getvalue(), compression, handle)
        wrote = True
    if created and not wrote:
        _files.remove_if_empty(directory)


def write_images(ds, path, *, column: str, file_format: str, mode, filename_provider,
                 arrow_open_stream_args, filesystem=None) -> None:
    fn_name = "write_images"
    from PIL import Image
    if not isinstance(file_format, str):
        raise TypeError(f"{fn_name}: file_format must be a str such as 'png', got {file_format!r}")
    _files.filename_provider(fn_name, filename_provider)
    compression = _files.open_stream_args(fn_name, arrow_open_stream_args)
    ready = _prepare(fn_name, path, mode, filesystem)
    if ready is None:
        return
    directory, created, handle = ready
    write_uuid = uuid.uuid4().hex
    wrote = False
    for task_index, batch in enumerate(ds._batches(ordered=True)):
        if batch.num_rows == 0:
            continue
        images = _column(fn_name, batch, column)
        for row_index, image in enumerate(images):
            buffer = io.BytesIO()
            try:
                Image.fromarray(np.asarray(image)).save(buffer, format=file_format)
            except (KeyError, ValueError, TypeError, OSError) as e:
                raise ValueError(f"{fn_name}: row {row_index} of column '{column}' cannot be written "
                                 f"as {file_format}: {e}") from e
            if filename_provider is not None:
                name = filename_provider.get_filename_for_task(write_uuid, task_index)
                stem, dot, ext = name.rpartition(".")
                name = f"{stem}_{row_index:06d}.{ext}" if dot else f"{name}_{row_index:06d}"
            else:
                name = f"{write_uuid}_{task_index:06d}_{row_index:06d}.{file_format}"
            _commit(directory, name, buffer.getvalue(), compression, handle)
            wrote = True
    if created and not wrote:
        _files.remove_if_empty(directory)

"""File readers with Ray Data 2.58's names, parameters and defaults: ``read_csv``,
``read_json``, ``read_text``, ``read_binary_files``, ``read_numpy``, ``read_images``.

Files are listed and read in C++ (Arrow's CSV and JSON readers, whole files for text and
binary); NumPy and image files are read as binary files and decoded in a map fused into
the read task (numpy, Pillow). pyarrow's reader option objects are translated field by
field into Arrow C++'s options; a field that cannot be translated raises.
"""

from __future__ import annotations

import io
import os
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import pyarrow as pa

from millstream import _args, _batch, _core, _files, _workers
from millstream._args import NEVER, Passthrough, Unsupported, public
from millstream.dataset import Dataset, MaterializedDataset, _blocks

_ONE_SLOT = "a read task takes one CPU slot"
_NOT_YET = "not implemented yet"

# Ray's parameters every file reader has and this engine does not implement.
_READ_UNSUPPORTED = {
    "num_cpus": Unsupported(None, why=_ONE_SLOT),
    "num_gpus": Unsupported(None, why=_ONE_SLOT),
    "memory": Unsupported(None, why=_ONE_SLOT),
    "ray_remote_args": _args.RAY_REMOTE_ARGS_NO_TASK.rule(),
}

# Ray's default extensions per format.
CSV_FILE_EXTENSIONS = ["csv", "csv.gz", "csv.br", "csv.zst", "csv.lz4"]
JSON_FILE_EXTENSIONS = ["json", "jsonl", "json.gz", "jsonl.gz", "json.br", "jsonl.br",
                        "json.zst", "jsonl.zst", "json.lz4", "jsonl.lz4"]
NUMPY_FILE_EXTENSIONS = ["npy"]
IMAGE_FILE_EXTENSIONS = ["png", "jpg", "jpeg", "tif", "tiff", "bmp", "gif"]


class FileShuffleConfig:
    """Ray's ``FileShuffleConfig``: ``read_*(shuffle=FileShuffleConfig(seed=42))`` reads the
    files in an order drawn from ``seed``; with ``reseed_after_execution`` (the default)
    each execution of the dataset draws a new order (from ``seed`` and the execution's
    number), otherwise every execution has the same order."""

    def __init__(self, seed: Optional[int] = None, reseed_after_execution: bool = True):
        if seed is not None:
            _args.check_int("FileShuffleConfig", "seed", seed)
        self.seed = seed
        self.reseed_after_execution = bool(reseed_after_execution)

    def __repr__(self) -> str:
        return f"FileShuffleConfig(seed={self.seed!r}, reseed_after_execution={self.reseed_after_execution!r})"


def _fsspec_of(filesystem: Any) -> Any:
    """The fsspec filesystem behind ``filesystem`` (itself, or a
    ``pyarrow.fs.PyFileSystem(FSSpecHandler(fs))``'s), else None."""
    import pyarrow.fs as pafs
    if isinstance(filesystem, pafs.PyFileSystem):
        handler = filesystem.handler
        return handler.fs if isinstance(handler, pafs.FSSpecHandler) else None
    try:
        import fsspec
    except ImportError:
        return None
    return filesystem if isinstance(filesystem, fsspec.AbstractFileSystem) else None


def fs_path(filesystem: Any, path: str) -> str:
    """``path`` as ``filesystem`` names it: an fsspec filesystem's protocol stripped
    (``memory://a/b`` -> ``/a/b``); other paths as given."""
    fs = _fsspec_of(filesystem) if filesystem is not None else None
    return fs._strip_protocol(path) if fs is not None else path


def filesystem_spec(fn_name: str, filesystem: Any) -> Optional[Dict[str, Any]]:
    """Ray's ``filesystem=`` as the engine takes it: None (from each path's scheme), a
    ``pyarrow.fs.LocalFileSystem``, a ``pyarrow.fs.S3FileSystem`` or ``GcsFileSystem`` (its
    endpoint, region and credentials, read from what the object pickles), or an fsspec filesystem (itself
    or wrapped as ``pyarrow.fs.PyFileSystem(FSSpecHandler(fs))``), which the engine calls
    under the GIL. Other filesystems (HDFS, a SubTreeFileSystem...) raise
    NotImplementedError."""
    if filesystem is None:
        return None
    import pyarrow.fs as pafs
    if isinstance(filesystem, pafs.LocalFileSystem):
        return {"kind": "local"}
    fsspec_fs = _fsspec_of(filesystem)
    if fsspec_fs is not None:
        return {"kind": "fsspec", "fs": fsspec_fs}
    if isinstance(filesystem, pafs.GcsFileSystem):
        _, args = filesystem.__reduce__()
        spec = dict(args[0]) if args and isinstance(args[0], dict) else {}
        if spec.get("default_metadata"):
            raise NotImplementedError(f"{fn_name}: a GcsFileSystem with default_metadata is not supported")
        spec.pop("default_metadata", None)
        return {"kind": "gcs", **spec}
    if isinstance(filesystem, pafs.S3FileSystem):
        _, args = filesystem.__reduce__()
        spec = dict(args[0]) if args and isinstance(args[0], dict) else {}
        proxy = spec.pop("proxy_options", None) or {}
        if proxy.get("host"):
            raise NotImplementedError(f"{fn_name}: an S3FileSystem with proxy_options is not supported")
        if spec.get("default_metadata"):
            raise NotImplementedError(f"{fn_name}: an S3FileSystem with default_metadata is not supported")
        spec.pop("default_metadata", None)
        return {"kind": "s3", **spec}
    raise NotImplementedError(f"{fn_name}: filesystem={type(filesystem).__name__} is not supported "
                              "(pyarrow's LocalFileSystem, S3FileSystem and GcsFileSystem and fsspec filesystems are)")


def retry_options(fn_name: str) -> Dict[str, Any]:
    """DataContext.retried_io_errors, checked, for the engine's reads."""
    from millstream.context import DataContext
    patterns = DataContext.get_current().retried_io_errors
    if patterns is None:
        return {}
    if isinstance(patterns, str) or not all(isinstance(p, str) for p in patterns):
        raise TypeError(f"{fn_name}: DataContext.retried_io_errors must be a list of strings, got {patterns!r}")
    return {"retried_io_errors": list(patterns)}


def _shuffle_options(fn_name: str, shuffle: Any) -> Dict[str, Any]:
    if shuffle is None:
        return {}
    if shuffle == "files":
        return {"shuffle": True}
    if hasattr(shuffle, "seed") and hasattr(shuffle, "reseed_after_execution"):
        if shuffle.seed is None:
            return {"shuffle": True}
        return {"shuffle": True, "shuffle_seed": int(shuffle.seed) % 2**64,
                "reseed": bool(shuffle.reseed_after_execution)}
    raise ValueError(f"{fn_name}: invalid value for 'shuffle': {shuffle!r}; use None, 'files' or "
                     "a FileShuffleConfig")


def _paths(fn_name: str, paths: Any) -> List[str]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not isinstance(paths, (list, tuple)):
        raise TypeError(f"{fn_name}: paths must be a str, a pathlib.Path or a list of them, got "
                        f"{type(paths).__name__}")
    out = []
    for p in paths:
        if not isinstance(p, (str, os.PathLike)):
            raise TypeError(f"{fn_name}: paths must be a str, a pathlib.Path or a list of them, got "
                            f"{p!r} in the list")
        out.append(os.fspath(p))
    if not out:
        raise ValueError(f"{fn_name}: no paths given")
    return out


def _hive(fn_name: str, partitioning: Any) -> bool:
    """Ray's ``partitioning``: a ``Partitioning("hive")`` (or "hive") turns ``key=value``
    directories into columns; None does not. Other styles and options raise."""
    if partitioning is None:
        return False
    style = getattr(partitioning, "style", partitioning)
    style = getattr(style, "value", style)
    if style != "hive":
        raise NotImplementedError(f"{fn_name}: partitioning style {style!r} is not supported; use "
                                  "Partitioning('hive') or None")
    for attr in ("base_dir", "field_names", "field_types"):
        if getattr(partitioning, attr, None):
            raise NotImplementedError(f"{fn_name}: partitioning {attr}= is not supported (hive "
                                      "partitions are every key=value directory of each file's path)")
    return True


def _skip_set(fn_name: str, skip_paths: Any, filesystem) -> List[str]:
    """``skip_paths`` as paths inside their filesystem (as listed files are named)."""
    if skip_paths is None:
        return []
    if isinstance(skip_paths, (str, os.PathLike)):
        skip_paths = [skip_paths]
    if not isinstance(skip_paths, (list, tuple, set, frozenset)):
        raise TypeError(f"{fn_name}: skip_paths must be a path or a list of paths, got "
                        f"{type(skip_paths).__name__}")
    out = []
    spec = filesystem_spec(fn_name, filesystem)
    for p in skip_paths:
        if not isinstance(p, (str, os.PathLike)):
            raise TypeError(f"{fn_name}: skip_paths must be a path or a list of paths, got {p!r} in the list")
        _, inner = _core.resolve_path(fs_path(filesystem, os.fspath(p)), spec, fn_name)
        out.append(inner.rstrip("/") or inner)
    return out


def _skipped(path: str, skip: List[str]) -> bool:
    return any(path == s or path.startswith(s + "/") for s in skip)


def _list(fn_name: str, paths, file_extensions, ignore_missing_paths, partition_filter, filesystem=None,
          skip_paths=None):
    paths = [fs_path(filesystem, p) for p in _paths(fn_name, paths)]
    skip = _skip_set(fn_name, skip_paths, filesystem)
    if skip:
        # A named path that is skipped is not looked for (it may not exist).
        spec = filesystem_spec(fn_name, filesystem)
        paths = [p for p in paths if not _skipped(_core.resolve_path(p, spec, fn_name)[1].rstrip("/"), skip)]
        if not paths:
            raise ValueError(f"{fn_name}: skip_paths leaves no path to read")
    extensions = _args.check_names(fn_name, "file_extensions", file_extensions, none_ok=True)
    extensions = [e.lstrip(".") for e in (extensions or [])]
    if not isinstance(ignore_missing_paths, bool):
        raise TypeError(f"{fn_name}: ignore_missing_paths must be a bool, got {ignore_missing_paths!r}")
    fs, files = _core.list_files(paths, fn_name, extensions, ignore_missing_paths,
                                 filesystem_spec(fn_name, filesystem))
    if skip:
        files = [f for f in files if not _skipped(f[0], skip)]
        if not files:
            raise ValueError(f"{fn_name}: skip_paths leaves no file to read under '{paths[0]}'")
    if partition_filter is not None:
        if not callable(partition_filter):
            raise TypeError(f"{fn_name}: partition_filter must be a callable taking a list of paths "
                            f"(a PathPartitionFilter), got {type(partition_filter).__name__}")
        keep = partition_filter([f[0] for f in files])
        keep = set(keep)
        files = [f for f in files if f[0] in keep]
        if not files:
            raise ValueError(f"{fn_name}: partition_filter left no file to read under '{paths[0]}'")
    return fs, files


def _read(fn_name: str, fmt: str, paths, *, filesystem=None, partitioning, partition_filter, include_paths: bool,
          ignore_missing_paths: bool, shuffle, file_extensions, override_num_blocks, parallelism,
          arrow_open_stream_args, format_options: Dict[str, Any], concurrency=None) -> Dataset:
    if not isinstance(include_paths, bool):
        raise TypeError(f"{fn_name}: include_paths must be a bool, got {include_paths!r}")
    options = {"operation": fn_name, "hive": _hive(fn_name, partitioning), "include_paths": include_paths,
               **retry_options(fn_name),
               "compression": _files.open_stream_args(fn_name, arrow_open_stream_args),
               "override_num_blocks": _blocks(override_num_blocks, parallelism),
               **_shuffle_options(fn_name, shuffle)}
    concurrency = _args.check_int(fn_name, "concurrency", concurrency, min=1, none_ok=True)
    if concurrency:
        options["concurrency"] = concurrency
    fs, files = _list(fn_name, paths, file_extensions, ignore_missing_paths, partition_filter, filesystem)
    if fs.type_name != "local":
        # An object store: read ahead in large requests (DataContext.streaming_read_buffer_size).
        from millstream.context import DataContext
        size = DataContext.get_current().streaming_read_buffer_size
        options["buffer_size"] = _args.check_int(fn_name, "DataContext.streaming_read_buffer_size", size, min=0)
    return Dataset(_core.read_files(fmt, fs, files, options, format_options))


def parquet_extras(fn_name: str, files, include_row_hash: bool, tensor_column_schema) -> Dict[str, Any]:
    """read_parquet's ``include_row_hash`` (each file's seed, as Ray derives it: the first
    8 bytes of the MD5 of its path, little-endian) and ``tensor_column_schema`` (a schema
    of the columns' value types and their shapes) as the engine's options."""
    import hashlib
    out: Dict[str, Any] = {}
    if include_row_hash:
        out["row_hash_seeds"] = {f[0]: int.from_bytes(hashlib.md5(f[0].encode("utf-8")).digest()[:8], "little")
                                 for f in files}
    if tensor_column_schema is not None:
        if not isinstance(tensor_column_schema, dict):
            raise TypeError(f"{fn_name}: tensor_column_schema must be a dict of column name to "
                            f"(dtype, shape), got {type(tensor_column_schema).__name__}")
        fields, shapes = [], []
        for name, spec in tensor_column_schema.items():
            if not isinstance(name, str) or not isinstance(spec, (tuple, list)) or len(spec) != 2:
                raise TypeError(f"{fn_name}: tensor_column_schema entries must be name: (dtype, shape), "
                                f"got {name!r}: {spec!r}")
            dtype, shape = spec
            try:
                value_type = dtype if isinstance(dtype, pa.DataType) else pa.from_numpy_dtype(np.dtype(dtype))
            except (TypeError, pa.ArrowNotImplementedError) as e:
                raise TypeError(f"{fn_name}: tensor_column_schema['{name}'] has dtype {dtype!r}, which is not "
                                f"a fixed-width numeric dtype: {e}") from None
            if isinstance(shape, int):
                shape = (shape,)
            shape = tuple(_args.check_int(fn_name, f"tensor_column_schema['{name}'] shape", d, min=0)
                          for d in shape)
            fields.append(pa.field(name, value_type))
            shapes.append(list(shape))
        out["tensor_columns"] = pa.schema(fields)
        out["tensor_shapes"] = shapes
    return out


# ---- CSV ---------------------------------------------------------------------------------

_CSV_READ_FIELDS = ("use_threads", "block_size", "skip_rows", "skip_rows_after_names", "column_names",
                    "autogenerate_column_names")
_CSV_PARSE_FIELDS = ("delimiter", "double_quote", "newlines_in_values", "ignore_empty_lines")
_CSV_CONVERT_FIELDS = ("check_utf8", "null_values", "true_values", "false_values", "decimal_point",
                       "strings_can_be_null", "quoted_strings_can_be_null", "include_columns",
                       "include_missing_columns", "auto_dict_encode", "auto_dict_max_cardinality")


CSV_DEFAULT_BLOCK_SIZE = 2 << 20


def _csv_options(fn_name: str, args: Dict[str, Any]) -> Dict[str, Any]:
    """pyarrow.csv's ReadOptions / ParseOptions / ConvertOptions as the engine's fields."""
    import pyarrow.csv as pacsv
    out: Dict[str, Any] = {}
    read, parse, convert = (args.get("read_options"), args.get("parse_options"), args.get("convert_options"))
    for name, value, cls in (("read_options", read, pacsv.ReadOptions),
                             ("parse_options", parse, pacsv.ParseOptions),
                             ("convert_options", convert, pacsv.ConvertOptions)):
        if value is not None and not isinstance(value, cls):
            raise TypeError(f"{fn_name}: {name} must be a pyarrow.csv.{cls.__name__}, got {type(value).__name__}")
    if read is not None:
        read.validate()
        if read.encoding.lower().replace("-", "").replace("_", "") not in ("utf8",):
            raise NotImplementedError(f"{fn_name}: read_options encoding={read.encoding!r} is not supported "
                                      "(CSV files are read as UTF-8)")
        out.update({f: getattr(read, f) for f in _CSV_READ_FIELDS})
        out["column_names"] = list(read.column_names) or None
    else:
        # Without read_options: blocks of 2 MiB of text, not pyarrow's 1 MiB (fewer blocks
        # through the engine), nor more (a parsed block then no longer stays in cache).
        out["block_size"] = CSV_DEFAULT_BLOCK_SIZE
    if parse is not None:
        parse.validate()
        if parse.invalid_row_handler is not None:
            raise NotImplementedError(f"{fn_name}: parse_options invalid_row_handler is not supported "
                                      "(a Python callback per bad row)")
        out.update({f: getattr(parse, f) for f in _CSV_PARSE_FIELDS})
        out["quote_char"] = parse.quote_char or ""
        out["escape_char"] = parse.escape_char or ""
    if convert is not None:
        convert.validate()
        out.update({f: getattr(convert, f) for f in _CSV_CONVERT_FIELDS})
        out["include_columns"] = list(convert.include_columns) or None
        column_types = convert.column_types
        if column_types:
            out["column_types"] = pa.schema([pa.field(k, v) for k, v in column_types.items()])
        parsers = list(convert.timestamp_parsers)
        if parsers:
            if not all(isinstance(p, str) for p in parsers):
                raise NotImplementedError(f"{fn_name}: convert_options timestamp_parsers {parsers!r}: only "
                                          "strptime format strings are supported")
            out["timestamp_parsers"] = parsers
    return out


_CSV_ARGS = Passthrough("arrow_csv_args", honoured=("read_options", "parse_options", "convert_options"),
                        unsupported={"memory_pool": NEVER(why="the engine's memory pool is not configurable")})


@public(passthrough=_CSV_ARGS, unsupported=_READ_UNSUPPORTED)
def read_csv(paths: Union[str, List[str]], *, filesystem=None, parallelism: int = -1,
             num_cpus: Optional[float] = None, num_gpus: Optional[float] = None,
             memory: Optional[float] = None, ray_remote_args: Optional[Dict[str, Any]] = None,
             arrow_open_stream_args: Optional[Dict[str, Any]] = None, partition_filter=None,
             partitioning="hive", include_paths: bool = False, ignore_missing_paths: bool = False,
             shuffle=None, file_extensions: Optional[List[str]] = None,
             concurrency: Optional[int] = None, override_num_blocks: Optional[int] = None,
             **arrow_csv_args) -> Dataset:
    """CSV files (a file, a directory, a glob, a list; ``file://`` URIs), read with Arrow's
    streaming CSV reader: ``read_options``, ``parse_options``, ``convert_options`` are
    pyarrow.csv's objects. Compressed files (``.csv.gz``, ``.bz2``, ``.br``, ``.zst``,
    ``.lz4``, or ``arrow_open_stream_args={"compression": ...}``) are decompressed as
    they are read. ``partitioning`` (hive by default) adds ``key=value`` directories as
    string columns, ``include_paths`` a "path" column; ``shuffle="files"`` reads the files
    in a random order; ``ignore_missing_paths`` skips paths that do not exist."""
    return _read("read_csv", "csv", paths, filesystem=filesystem, partitioning=partitioning, partition_filter=partition_filter,
                 include_paths=include_paths, ignore_missing_paths=ignore_missing_paths, shuffle=shuffle,
                 file_extensions=file_extensions, override_num_blocks=override_num_blocks,
                 parallelism=parallelism, arrow_open_stream_args=arrow_open_stream_args,
                 format_options=_csv_options("read_csv", arrow_csv_args), concurrency=concurrency)


# ---- JSON --------------------------------------------------------------------------------

def _json_options(fn_name: str, args: Dict[str, Any]) -> Dict[str, Any]:
    import pyarrow.json as pajson
    out: Dict[str, Any] = {}
    read, parse = args.get("read_options"), args.get("parse_options")
    if read is not None:
        if not isinstance(read, pajson.ReadOptions):
            raise TypeError(f"{fn_name}: read_options must be a pyarrow.json.ReadOptions, got {type(read).__name__}")
        out.update(use_threads=read.use_threads, block_size=read.block_size)
    if parse is not None:
        if not isinstance(parse, pajson.ParseOptions):
            raise TypeError(f"{fn_name}: parse_options must be a pyarrow.json.ParseOptions, got {type(parse).__name__}")
        out.update(explicit_schema=parse.explicit_schema, newlines_in_values=parse.newlines_in_values,
                   unexpected_field_behavior=parse.unexpected_field_behavior)
    from millstream.context import DataContext
    out["max_block_size"] = DataContext.get_current().target_max_block_size or 2**31 - 1
    return out


_JSON_ARGS = Passthrough("arrow_json_args", honoured=("read_options", "parse_options"),
                         unsupported={"memory_pool": NEVER(why="the engine's memory pool is not configurable")})


@public(passthrough=_JSON_ARGS, unsupported=_READ_UNSUPPORTED)
def read_json(paths: Union[str, List[str]], *, lines: bool = False, filesystem=None, parallelism: int = -1,
              num_cpus: Optional[float] = None, num_gpus: Optional[float] = None,
              memory: Optional[float] = None, ray_remote_args: Optional[Dict[str, Any]] = None,
              arrow_open_stream_args: Optional[Dict[str, Any]] = None, partition_filter=None,
              partitioning="hive", include_paths: bool = False, ignore_missing_paths: bool = False,
              shuffle=None, file_extensions: Optional[List[str]] = JSON_FILE_EXTENSIONS,  # noqa: B006 (Ray's default)
              concurrency: Optional[int] = None, override_num_blocks: Optional[int] = None,
              **arrow_json_args) -> Dataset:
    """JSON files: JSON Lines (one object per line, or objects across lines) or a JSON
    array of objects, read with Arrow's JSON reader (types inferred over each whole
    file); ``read_options``/``parse_options`` are pyarrow.json's. ``lines=True`` says the
    files are JSON Lines (as in Ray, ``arrow_open_stream_args`` and reader options are
    then refused). The common file-reader parameters are as for ``read_csv``; by default
    only ``.json``/``.jsonl`` files (optionally compressed) are read in directories."""
    if not isinstance(lines, bool):
        raise TypeError(f"read_json: lines must be a bool, got {lines!r}")
    if lines:
        for param, value in (("arrow_open_stream_args", arrow_open_stream_args),
                             ("arrow_json_args", arrow_json_args)):
            if value:
                raise ValueError(f"`{param}` is not supported when `lines=True`. ")
    return _read("read_json", "json", paths, filesystem=filesystem, partitioning=partitioning, partition_filter=partition_filter,
                 include_paths=include_paths, ignore_missing_paths=ignore_missing_paths, shuffle=shuffle,
                 file_extensions=file_extensions, override_num_blocks=override_num_blocks,
                 parallelism=parallelism, arrow_open_stream_args=arrow_open_stream_args,
                 format_options=_json_options("read_json", arrow_json_args), concurrency=concurrency)


# ---- text, binary ------------------------------------------------------------------------

def _is_utf8(encoding: str) -> bool:
    import codecs
    try:
        return codecs.lookup(encoding).name == "utf-8"
    except LookupError:
        raise LookupError(f"read_text: unknown encoding: {encoding!r}") from None


@public(unsupported=_READ_UNSUPPORTED)
def read_text(paths: Union[str, List[str]], *, encoding: str = "utf-8", drop_empty_lines: bool = True,
              filesystem=None, parallelism: int = -1, num_cpus: Optional[float] = None,
              num_gpus: Optional[float] = None, memory: Optional[float] = None,
              ray_remote_args: Optional[Dict[str, Any]] = None,
              arrow_open_stream_args: Optional[Dict[str, Any]] = None, partition_filter=None,
              partitioning=None, include_paths: bool = False, ignore_missing_paths: bool = False,
              shuffle=None, file_extensions: Optional[List[str]] = None,
              concurrency: Optional[int] = None, override_num_blocks: Optional[int] = None) -> Dataset:
    """Text files, one row ``{"text": line}`` per line (split as Python's
    ``str.splitlines`` splits); ``drop_empty_lines`` (default True) drops lines of only
    whitespace. UTF-8 is decoded in C++ (an invalid byte raises naming the file and
    line); another ``encoding`` is decoded with Python's codecs."""
    if not isinstance(encoding, str):
        raise TypeError(f"read_text: encoding must be a str, got {encoding!r}")
    if not isinstance(drop_empty_lines, bool):
        raise TypeError(f"read_text: drop_empty_lines must be a bool, got {drop_empty_lines!r}")
    common = dict(filesystem=filesystem, partitioning=partitioning, partition_filter=partition_filter,
                  ignore_missing_paths=ignore_missing_paths, shuffle=shuffle, file_extensions=file_extensions,
                  override_num_blocks=override_num_blocks, parallelism=parallelism,
                  arrow_open_stream_args=arrow_open_stream_args, concurrency=concurrency)
    if _is_utf8(encoding):
        return _read("read_text", "text", paths, include_paths=include_paths,
                     format_options={"drop_empty_lines": drop_empty_lines}, **common)
    files = _read("read_text", "binary", paths, include_paths=True, format_options={}, **common)

    def decode_text(table: pa.Table) -> pa.Table:
        return _per_file(table, include_paths, lambda data, path: _text_lines(data, path, encoding,
                                                                              drop_empty_lines))

    with _workers.internal():
        return files.map_batches(decode_text, batch_format="pyarrow", batch_size=None)


def _text_lines(data: bytes, path: str, encoding: str, drop_empty_lines: bool) -> Dict[str, Any]:
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        raise ValueError(f"read_text: '{path}' is not valid {encoding}: {e}") from None
    lines = [line for line in text.splitlines() if not (drop_empty_lines and line.strip() == "")]
    return {"text": pa.array(lines, type=pa.string())}


@public(unsupported=_READ_UNSUPPORTED)
def read_binary_files(paths: Union[str, List[str]], *, include_paths: bool = False, filesystem=None,
                      parallelism: int = -1, num_cpus: Optional[float] = None,
                      num_gpus: Optional[float] = None, memory: Optional[float] = None,
                      ray_remote_args: Optional[Dict[str, Any]] = None,
                      arrow_open_stream_args: Optional[Dict[str, Any]] = None, partition_filter=None,
                      partitioning=None, ignore_missing_paths: bool = False, shuffle=None,
                      file_extensions: Optional[List[str]] = None, concurrency: Optional[int] = None,
                      override_num_blocks: Optional[int] = None) -> Dataset:
    """Whole files, one row ``{"bytes": b}`` per file (and "path" with ``include_paths``);
    the common file-reader parameters as for ``read_csv`` (no partitioning by default)."""
    return _read("read_binary_files", "binary", paths, filesystem=filesystem, partitioning=partitioning,
                 partition_filter=partition_filter, include_paths=include_paths,
                 ignore_missing_paths=ignore_missing_paths, shuffle=shuffle, file_extensions=file_extensions,
                 override_num_blocks=override_num_blocks, parallelism=parallelism,
                 arrow_open_stream_args=arrow_open_stream_args, format_options={}, concurrency=concurrency)


def _per_file(table: pa.Table, include_paths: bool, decode) -> pa.Table:
    """Decodes each row of a binary-files table (``bytes``, partition columns, ``path``)
    with ``decode(bytes, path) -> {column: values}``; the other columns are repeated for
    each decoded row, "path" kept only when ``include_paths``."""
    others = [n for n in table.column_names if n not in ("bytes", "path")]
    data = table.column("bytes").to_pylist()
    paths = table.column("path").to_pylist()
    pieces = []
    for i, (blob, path) in enumerate(zip(data, paths)):
        columns = decode(blob, path)
        rows = len(next(iter(columns.values())))
        for name in others:
            columns[name] = pa.repeat(table.column(name)[i], rows) if rows else pa.array([], table.column(name).type)
        if include_paths:
            columns["path"] = pa.array([path] * rows, type=pa.string())
        pieces.append(columns)
    if not pieces:
        return pa.table({})
    first = list(pieces[0])
    merged = {}
    for name in first:
        values = [p[name] for p in pieces]
        if isinstance(values[0], list):  # ndarray cells: one tensor column over all files
            merged[name] = _batch._array_from_numpy([c for v in values for c in v], sole_owner=True)
        else:
            merged[name] = pa.concat_arrays([v if isinstance(v, pa.Array) else v.combine_chunks()
                                             for v in values])
    return pa.table(merged)


# ---- NumPy -------------------------------------------------------------------------------

_NUMPY_ARGS = Passthrough("numpy_load_args", honoured=("mmap_mode", "fix_imports", "encoding",
                                                       "max_header_size", "allow_pickle"))


@public(passthrough=_NUMPY_ARGS)
def read_numpy(paths: Union[str, List[str]], *, filesystem=None, parallelism: int = -1,
               arrow_open_stream_args: Optional[Dict[str, Any]] = None, partition_filter=None,
               partitioning=None, include_paths: bool = False, ignore_missing_paths: bool = False,
               shuffle=None, file_extensions: Optional[List[str]] = NUMPY_FILE_EXTENSIONS,  # noqa: B006
               concurrency: Optional[int] = None, override_num_blocks: Optional[int] = None,
               allow_pickle: bool = False, **numpy_load_args) -> Dataset:
    """``.npy`` files: each file's array is rows along its first axis in a column "data"
    (a tensor column when the rows are arrays; ``np.load`` decodes each file, with
    ``allow_pickle`` and ``**numpy_load_args``)."""
    import warnings
    if "allow_pickle" in numpy_load_args:
        warnings.warn("`allow_pickle` in `numpy_load_args` is ignored. Use `read_numpy(..., "
                      "allow_pickle=True)` instead if you want to load object-dtype .npy files.",
                      stacklevel=3)
        numpy_load_args = {k: v for k, v in numpy_load_args.items() if k != "allow_pickle"}
    if numpy_load_args.get("mmap_mode") is not None:
        raise NotImplementedError("read_numpy: mmap_mode is not supported (files are read into memory)")
    load_args = {k: v for k, v in numpy_load_args.items() if k != "mmap_mode"}
    files = _read("read_numpy", "binary", paths, filesystem=filesystem, partitioning=partitioning, partition_filter=partition_filter,
                  include_paths=True, ignore_missing_paths=ignore_missing_paths, shuffle=shuffle,
                  file_extensions=file_extensions, override_num_blocks=override_num_blocks,
                  parallelism=parallelism, arrow_open_stream_args=arrow_open_stream_args, format_options={},
                  concurrency=concurrency)

    def load(data: bytes, path: str) -> Dict[str, Any]:
        try:
            arr = np.load(io.BytesIO(data), allow_pickle=allow_pickle, **load_args)
        except Exception as e:  # noqa: BLE001 (any decoding error, named by file)
            raise ValueError(f"read_numpy: '{path}' is not a readable .npy file: {e}") from e
        if not isinstance(arr, np.ndarray):
            raise ValueError(f"read_numpy: '{path}' holds {type(arr).__name__}, not one array (.npz "
                             "archives are not supported)")
        if arr.ndim == 0:
            arr = arr.reshape(1)
        return {"data": list(arr) if arr.ndim > 1 else pa.array(arr) if arr.dtype != object
                else pa.array(arr.tolist())}

    def decode_numpy(table: pa.Table) -> pa.Table:
        return _per_file(table, include_paths, load)

    with _workers.internal():
        return files.map_batches(decode_numpy, batch_format="pyarrow", batch_size=None)


# ---- images ------------------------------------------------------------------------------

@public(unsupported=_READ_UNSUPPORTED)
def read_images(paths: Union[str, List[str]], *, filesystem=None, parallelism: int = -1,
                num_cpus: Optional[float] = None, num_gpus: Optional[float] = None,
                memory: Optional[float] = None, ray_remote_args: Optional[Dict[str, Any]] = None,
                arrow_open_file_args: Optional[Dict[str, Any]] = None, partition_filter=None,
                partitioning=None, size: Optional[Tuple[int, int]] = None, mode: Optional[str] = None,
                include_paths: bool = False, ignore_missing_paths: bool = False, shuffle=None,
                file_extensions: Optional[List[str]] = IMAGE_FILE_EXTENSIONS,  # noqa: B006
                concurrency: Optional[int] = None, override_num_blocks: Optional[int] = None) -> Dataset:
    """Image files decoded with Pillow, one row per image in a tensor column "image"
    (``np.asarray`` of the image: (height, width) or (height, width, channels), uint8 for
    8-bit modes); ``size=(height, width)`` resizes (bilinear), ``mode`` converts (e.g.
    "RGB", "L"), as Ray does. Images of different shapes make a variable-shape tensor
    column."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise ImportError("read_images needs Pillow: pip install pillow") from None
    if size is not None:
        if not isinstance(size, (tuple, list)) or len(size) != 2:
            raise ValueError("Expected `size` to contain two integers for height and width, "
                             f"but got {size!r} instead.")
        size = tuple(_args.check_int("read_images", "size", s) for s in size)
    if mode is not None and not isinstance(mode, str):
        raise TypeError(f"read_images: mode must be a str such as 'RGB', got {mode!r}")
    files = _read("read_images", "binary", paths, filesystem=filesystem, partitioning=partitioning, partition_filter=partition_filter,
                  include_paths=True, ignore_missing_paths=ignore_missing_paths, shuffle=shuffle,
                  file_extensions=file_extensions, override_num_blocks=override_num_blocks,
                  parallelism=parallelism, arrow_open_stream_args=arrow_open_file_args, format_options={},
                  concurrency=concurrency)

    def load(data: bytes, path: str) -> Dict[str, Any]:
        try:
            image = Image.open(io.BytesIO(data))
            if size is not None and image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), resample=Image.BILINEAR)
            if mode is not None and image.mode != mode:
                image = image.convert(mode)
            array = np.asarray(image)
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise ValueError(f"read_images: PIL couldn't load image file at path '{path}': {e}") from e
        return {"image": [array]}

    def decode_images(table: pa.Table) -> pa.Table:
        return _per_file(table, include_paths, load)

    with _workers.internal():
        return files.map_batches(decode_images, batch_format="pyarrow", batch_size=None)


# ---- blocks ------------------------------------------------------------------------------

@public
def from_blocks(blocks: List[Any]) -> MaterializedDataset:
    """A dataset of exactly these blocks (pyarrow Tables or pandas DataFrames), one block
    each, in order: unlike ``from_arrow``/``from_pandas`` the number of blocks is kept."""
    import pandas as pd
    if not isinstance(blocks, (list, tuple)):
        raise TypeError(f"from_blocks expects a list of blocks, got {type(blocks).__name__}")
    tables = []
    for block in blocks:
        if isinstance(block, pd.DataFrame):
            block = _batch.table_from_pandas(block)
        elif isinstance(block, pa.RecordBatch):
            block = pa.Table.from_batches([block])
        if not isinstance(block, pa.Table):
            raise TypeError(f"from_blocks: a block must be a pyarrow Table or a pandas DataFrame, got "
                            f"{type(block).__name__}")
        tables.append(block.combine_chunks())
    if not tables:
        return MaterializedDataset(_core.Dataset.from_arrow(pa.table({}), None))
    table = _batch.concat_tables(tables)
    _batch.unique_names(table, "from_blocks")
    # One chunk per block: the engine makes one block of each chunk.
    return MaterializedDataset(_core.Dataset.from_arrow(table, None))


# ---- user-written sources ----------------------------------------------------------------

@public(unsupported={**{k: _READ_UNSUPPORTED[k] for k in ("num_cpus", "num_gpus", "memory", "ray_remote_args")},
                     "compute": Unsupported(None, why=_ONE_SLOT)},
        passthrough=Passthrough("read_args", unsupported={}))
def read_datasource(datasource, *, parallelism: int = -1, num_cpus: Optional[float] = None,
                    num_gpus: Optional[float] = None, memory: Optional[float] = None,
                    ray_remote_args: Optional[Dict[str, Any]] = None, concurrency: Optional[int] = None,
                    compute=None, override_num_blocks: Optional[int] = None, **read_args) -> Dataset:
    """A dataset read from a user's ``Datasource`` (Ray's API: ``get_read_tasks(parallelism)``
    returns ``ReadTask``s, callables yielding blocks: pyarrow Tables, pandas DataFrames or
    dicts of arrays). Each read task runs as one task on the engine's workers, at most
    ``concurrency`` of them at once."""
    if not callable(getattr(datasource, "get_read_tasks", None)):
        raise TypeError(f"read_datasource expects a Datasource (with get_read_tasks), got "
                        f"{type(datasource).__name__}")
    from millstream.context import DataContext
    from millstream.dataset import range as _range
    wanted = _blocks(override_num_blocks, parallelism) or DataContext.get_current().read_op_min_num_blocks
    tasks = list(datasource.get_read_tasks(wanted))
    for task in tasks:
        if not callable(task):
            raise TypeError(f"read_datasource: get_read_tasks returned {type(task).__name__}, not a ReadTask")
    name = getattr(datasource, "get_name", lambda: type(datasource).__name__)()

    def run(batch: pa.Table):
        for index in batch.column("id").to_pylist():
            for block in tasks[index]():
                yield block

    run.__name__ = f"Read{name}"
    if not tasks:
        return Dataset(_core.Dataset.from_arrow(pa.table({}), None))
    with _workers.internal():
        return _range(len(tasks), override_num_blocks=len(tasks)).map_batches(
            run, batch_format="pyarrow", batch_size=1,
            concurrency=_args.check_int("read_datasource", "concurrency", concurrency, min=1, none_ok=True))

"""The write path's Python side: Ray's write_* arguments turned into the options the
engine's sink takes (checked here, applied in C++), and, after a Parquet write, one schema
for every file it wrote."""

from __future__ import annotations

import enum
import os
import warnings
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from millstream import _batch


# Ray's SaveMode values; "create" is "error" in Ray's file datasinks.
SAVE_MODES = ("append", "overwrite", "error", "ignore", "create")


def save_mode(fn_name: str, mode: Any) -> str:
    """Ray's ``mode`` (a string or a SaveMode) as the engine's name for it."""
    value = mode.value if isinstance(mode, enum.Enum) else mode
    if value == "upsert":
        raise NotImplementedError(f"{fn_name}: mode='upsert' is not supported (it needs a table "
                                  "format with keys; files are written here)")
    if not isinstance(value, str) or value not in SAVE_MODES:
        raise ValueError(f"{fn_name}: mode must be one of {', '.join(repr(m) for m in SAVE_MODES)}, "
                         f"got {mode!r}")
    return "error" if value == "create" else value


def rows_per_file(fn_name: str, num_rows_per_file, min_rows_per_file,
                  max_rows_per_file) -> Tuple[Optional[int], Optional[int]]:
    """Ray's rules: ``num_rows_per_file`` is the deprecated name of ``min_rows_per_file``
    (a DeprecationWarning; both given is a ValueError); each positive; min <= max."""
    from millstream import _args
    if num_rows_per_file is not None:
        warnings.warn("`num_rows_per_file` is deprecated and will be removed in a future release. "
                      "Use `min_rows_per_file` instead.", DeprecationWarning, stacklevel=4)
        if min_rows_per_file is not None:
            raise ValueError(f"{fn_name}: cannot specify both `num_rows_per_file` and "
                             "`min_rows_per_file`. Use `min_rows_per_file` as `num_rows_per_file` "
                             "is deprecated.")
        min_rows_per_file = num_rows_per_file
        name = "num_rows_per_file"
    else:
        name = "min_rows_per_file"
    low = _args.check_int(fn_name, name, min_rows_per_file, min=1, none_ok=True)
    high = _args.check_int(fn_name, "max_rows_per_file", max_rows_per_file, min=1, none_ok=True)
    if low is not None and high is not None and low > high:
        raise ValueError(f"{fn_name}: min_rows_per_file ({low}) cannot be greater than "
                         f"max_rows_per_file ({high})")
    return low, high


def filename_provider(fn_name: str, provider: Any) -> Any:
    """Ray's FilenameProvider: anything with ``get_filename_for_task(write_uuid, task_index)``."""
    if provider is not None and not callable(getattr(provider, "get_filename_for_task", None)):
        raise TypeError(f"{fn_name}: filename_provider must have a get_filename_for_task(write_uuid, "
                        f"task_index) method (a ray.data.datasource.FilenameProvider), got "
                        f"{type(provider).__name__}")
    return provider


class TaskNames:
    """A FilenameProvider for a write made of many executions (the Ray backend's write
    tasks, each running the engine on its own blocks): the user's provider is asked with
    the write's one uuid and the task's index in the write, not the uuid and index of the
    execution making the files. An execution's write task k > 0 (a task given blocks the
    engine writes in more than one task) is index ``task + k * 2**32``: unique, and the
    index itself in the usual case of one."""

    STRIDE = 1 << 32

    def __init__(self, provider: Any, write_uuid: str, mode: str, task_index: Optional[int] = None):
        self.provider, self.write_uuid, self.mode, self.task_index = provider, write_uuid, mode, task_index

    def for_task(self, task_index: int) -> "TaskNames":
        return TaskNames(self.provider, self.write_uuid, self.mode, task_index)

    def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
        if self.task_index is None:
            raise RuntimeError("filename_provider: a write task was started without its index")
        return self.provider.get_filename_for_task(self.write_uuid, self.task_index + task_index * self.STRIDE)


class ParquetNames:
    """Ray's Parquet file names from a FilenameProvider: the task's name made a template
    for its files as Ray's ParquetDatasink makes it (``part.parquet`` ->
    ``part-{i}.parquet``, ``part`` -> ``part-{i}.parquet``, a name holding ``{i}`` kept,
    ``.parquet`` added if missing), ``{i}`` numbering the task's files from 0. With
    mode="append" the name must hold the write's uuid (ValueError otherwise), as in Ray,
    so that appends never replace earlier files."""

    def __init__(self, provider: Any, mode: str):
        self.provider = provider
        self.mode = mode
        if isinstance(provider, TaskNames):  # one of many executions: the write's uuid and mode
            self.mode = provider.mode

    def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
        filename = self.provider.get_filename_for_task(write_uuid, task_index)
        if isinstance(self.provider, TaskNames):
            write_uuid = self.provider.write_uuid
        if not isinstance(filename, str):
            return filename  # the engine says what is wrong with it
        if write_uuid not in filename and self.mode == "append":
            raise ValueError(
                f"Write UUID '{write_uuid}' missing from filename template '{filename}'. This could "
                "result in files being overwritten. Modify your FileNameProvider implementation to "
                "include the `write_uuid` into the filename template or change your write mode to "
                "SaveMode.OVERWRITE.")
        if "{i}" in filename:
            return filename if "parquet" in filename else f"{filename}.parquet"
        if "parquet" not in filename:
            return f"{filename}-{{i}}.parquet"
        stem, dot, suffix = filename.partition(".")
        if "." in suffix:
            raise ValueError(f"filename_provider: Parquet file name {filename!r} has more than one "
                             "dot; Ray's Parquet writer refuses it too")
        return f"{stem}-{{i}}{dot}{suffix}"


def open_stream_args(fn_name: str, args: Any) -> Optional[str]:
    """Ray's ``arrow_open_stream_args`` (pyarrow's ``open_output_stream`` options): the
    stream ``compression`` every file's bytes go through, or None. "detect" (pyarrow's
    default) detects from the file's extension: .parquet/.csv/.json are not compressed
    names, so none. ``buffer_size`` and ``metadata`` are not supported."""
    if args is None:
        return None
    if not isinstance(args, dict):
        raise TypeError(f"{fn_name}: arrow_open_stream_args must be a dict, got {type(args).__name__}")
    for key, value in args.items():
        if key in ("buffer_size", "metadata"):
            if value is not None:
                raise NotImplementedError(f"{fn_name}: arrow_open_stream_args {key}={value!r} is not "
                                          "supported (only compression)")
        elif key != "compression":
            from millstream import _args
            raise _args.unknown_keyword(f"{fn_name}(arrow_open_stream_args=...)", key,
                                        ("compression", "buffer_size", "metadata"))
    compression = args.get("compression")
    if compression in (None, "detect"):
        return None
    if not isinstance(compression, str):
        raise TypeError(f"{fn_name}: arrow_open_stream_args compression must be a str, got {compression!r}")
    return compression


def resolve_args(fn_name: str, passthrough, args: Dict[str, Any], args_fn, fn_param: str) -> Dict[str, Any]:
    """``**args`` updated with what ``args_fn()`` returns (its keys win, as in Ray),
    checked key by key like the keywords themselves."""
    if args_fn is None:
        return dict(args)
    if not callable(args_fn):
        raise TypeError(f"{fn_name}: {fn_param} must be a callable returning a dict, got "
                        f"{type(args_fn).__name__}")
    more = args_fn()
    if not isinstance(more, dict):
        raise TypeError(f"{fn_name}: {fn_param}() must return a dict, got {type(more).__name__}")
    passthrough.check(f"{fn_name}({fn_param}=...)", more)
    return {**args, **more}


# pyarrow.parquet.write_table's options that the engine's Parquet writer applies, with
# the pyarrow default of each.
PARQUET_DEFAULTS = {"compression": "snappy", "compression_level": None, "row_group_size": None,
                    "use_dictionary": None, "write_statistics": True, "version": "2.6",
                    "data_page_size": None, "schema": None}


def parquet_options(fn_name: str, args: Dict[str, Any]) -> Dict[str, Any]:
    """The engine's Parquet options from pyarrow's ``write_table`` arguments."""
    from millstream import _args
    out = {}
    compression = args.get("compression", "snappy")
    if compression is None:
        compression = "none"
    if not isinstance(compression, str):
        raise NotImplementedError(f"{fn_name}: compression={compression!r} is not supported (one "
                                  "codec name for every column; a per-column dict is not)")
    out["compression"] = compression
    out["compression_level"] = _args.check_int(fn_name, "compression_level", args.get("compression_level"),
                                               min=-(2**31), max=2**31 - 1, none_ok=True)
    out["row_group_size"] = _args.check_int(fn_name, "row_group_size", args.get("row_group_size"),
                                            min=1, none_ok=True)
    out["data_page_size"] = _args.check_int(fn_name, "data_page_size", args.get("data_page_size"),
                                            min=1, none_ok=True)
    for key in ("use_dictionary", "write_statistics"):
        value = args.get(key, PARQUET_DEFAULTS[key])
        if value is None and key == "use_dictionary":
            out[key] = None  # each column as its values tell (the writer's sample)
            continue
        if not isinstance(value, bool):
            raise NotImplementedError(f"{fn_name}: {key}={value!r} is not supported (True or False "
                                      "for every column; a list of columns is not)")
        out[key] = value
    version = args.get("version", "2.6")
    if version not in ("1.0", "2.4", "2.6"):
        raise ValueError(f"{fn_name}: version must be '1.0', '2.4' or '2.6', got {version!r}")
    out["version"] = version
    schema = args.get("schema")
    if schema is not None and not isinstance(schema, pa.Schema):
        raise TypeError(f"{fn_name}: schema must be a pyarrow.Schema, got {type(schema).__name__}")
    out["schema"] = schema
    return out


def parquet_rewrite_args(options: Dict[str, Any]) -> Dict[str, Any]:
    """pyarrow.parquet.write_table's arguments for rewriting a file as the write wrote it."""
    return {key: options[key] for key in ("compression", "compression_level", "row_group_size",
                                          "use_dictionary", "write_statistics", "version",
                                          "data_page_size") if options.get(key) is not None}


_CSV_OPTION_DEFAULTS = {"include_header": True, "delimiter": ",", "quoting_style": "needed",
                        "quoting_header": "needed", "batch_size": 1024}


def csv_options(fn_name: str, args: Dict[str, Any]) -> Dict[str, Any]:
    """The engine's CSV options from pyarrow.csv.write_csv's ``write_options``."""
    import pyarrow.csv as pacsv
    write_options = args.get("write_options")
    if write_options is None:
        return {}
    if not isinstance(write_options, pacsv.WriteOptions):
        raise TypeError(f"{fn_name}: write_options must be a pyarrow.csv.WriteOptions, got "
                        f"{type(write_options).__name__}")
    write_options.validate()
    return {key: getattr(write_options, key) for key in _CSV_OPTION_DEFAULTS}


# The keys of the dict Dataset._write assembles that are WriteOptions' own fields.
_WRITE_OPTION_KEYS = ("partition_cols", "min_rows_per_file", "max_rows_per_file", "filename_provider",
                      "filename_template", "stream_compression", "filesystem", "retried_io_errors",
                      "concurrency")


def core_write_options(options: Dict[str, Any]):
    """The engine's typed ``_core.WriteOptions`` from the options Dataset._write assembles
    (WriteOptions' fields, ``parquet_options``' and ``csv_options``' keys): the one place
    they are converted. A key that is None keeps the engine's default."""
    from millstream import _core
    given = {key: value for key, value in options.items() if value is not None}
    unknown = sorted(set(given) - set(_WRITE_OPTION_KEYS) - set(PARQUET_DEFAULTS) - set(_CSV_OPTION_DEFAULTS))
    if unknown:
        raise TypeError(f"write options: unknown option(s) {', '.join(unknown)}")
    parquet = _core.ParquetWriteOptions(**{k: v for k, v in given.items() if k in PARQUET_DEFAULTS})
    csv = _core.CsvWriteOptions(**{k: v for k, v in given.items() if k in _CSV_OPTION_DEFAULTS})
    return _core.WriteOptions(parquet=parquet, csv=csv,
                              **{k: v for k, v in given.items() if k in _WRITE_OPTION_KEYS})


def core_format(fmt: str):
    """The engine's FileFormat for "parquet", "csv" or "json"."""
    from millstream import _core
    return {"parquet": _core.FileFormat.PARQUET, "csv": _core.FileFormat.CSV,
            "json": _core.FileFormat.JSON}[fmt]


def remove_if_empty(directory: str) -> bool:
    """Removes ``directory`` when it holds no file at any depth (only empty directories);
    whether it did. Never removes a file, nor follows a link."""
    for root, dirs, files in os.walk(directory):
        if files or any(os.path.islink(os.path.join(root, d)) for d in dirs):
            return False
    for root, dirs, files in os.walk(directory, topdown=False):
        try:
            os.rmdir(root)
        except OSError:
            return False
    return True


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


def unify_parquet_files(paths: Iterable[str], write_args: Optional[Dict[str, Any]] = None) -> None:
    """Rewrites the files among ``paths`` whose schema differs from the union of all of
    theirs (blocks of different tasks may differ in columns or types), so that
    ``pyarrow.dataset`` and every other reader see one schema and lose no column. Each
    file is replaced atomically (written under a hidden name, then renamed). A conflict
    that cannot be unified raises ``pyarrow.ArrowTypeError`` naming the column and types.
    ``write_args``: pyarrow.parquet.write_table's arguments the write used (compression...).
    """
    paths: List[str] = sorted(paths)
    if len(paths) < 2:
        return
    # Plain local paths: a name such as 's3:' or '~' in them is a directory, not a URI.
    local = pafs.LocalFileSystem()
    paths = [os.path.abspath(p) for p in paths]
    schemas = [pq.read_schema(p, filesystem=local) for p in paths]
    if all(_columns(s) == _columns(schemas[0]) for s in schemas):
        return
    unified = pa.unify_schemas(schemas, promote_options="permissive")
    for path, schema in zip(paths, schemas):
        if _columns(schema) == _columns(unified):
            continue
        table = _batch.concat_tables([unified.empty_table(), pq.read_table(path, filesystem=local)])
        temp = os.path.join(os.path.dirname(path), ".tmp-unify-" + os.path.basename(path))
        pq.write_table(table.select(unified.names), temp, filesystem=local,
                       **(write_args or {"compression": "snappy"}))
        os.replace(temp, path)

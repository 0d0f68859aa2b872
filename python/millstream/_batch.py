"""Batch formats at the Python boundary: Arrow blocks to numpy / pandas / pyarrow and back."""

from __future__ import annotations

import asyncio
import ctypes
import datetime
import inspect
import sys
import threading
import weakref
from typing import Any, Callable, Dict, Iterable

import numpy as np
import pyarrow as pa

from millstream import _core, _objects

BATCH_FORMATS = ("default", "numpy", "pandas", "pyarrow")


def check_batch_format(batch_format: str | None) -> str:
    """The format batches are handed over in; None is the native block: a pyarrow Table."""
    if batch_format is None:
        return "pyarrow"
    if batch_format not in BATCH_FORMATS:
        raise ValueError(
            f"batch_format must be one of {', '.join(repr(f) for f in BATCH_FORMATS)} or None, "
            f"got {batch_format!r}"
        )
    return "numpy" if batch_format == "default" else batch_format


# Fixed-width numeric types whose Arrow data buffer is laid out as numpy's. pyarrow's own
# conversion imports pandas on first use (~150 ms); until something has imported pandas,
# such columns are viewed directly instead. Once pandas is loaded, pyarrow's conversion is
# the cheaper of the two (0.4 vs 0.8 us a column).
_NUMERIC = {
    pa.int8(): np.dtype(np.int8), pa.int16(): np.dtype(np.int16),
    pa.int32(): np.dtype(np.int32), pa.int64(): np.dtype(np.int64),
    pa.uint8(): np.dtype(np.uint8), pa.uint16(): np.dtype(np.uint16),
    pa.uint32(): np.dtype(np.uint32), pa.uint64(): np.dtype(np.uint64),
    pa.float16(): np.dtype(np.float16), pa.float32(): np.dtype(np.float32),
    pa.float64(): np.dtype(np.float64),
}
_NUMERIC_BY_DTYPE = {dtype: arrow_type for arrow_type, dtype in _NUMERIC.items()}


def _column_to_numpy(column: pa.Array | pa.ChunkedArray, writable: bool) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    dtype = _NUMERIC.get(column.type) if "pandas" not in sys.modules else None
    if dtype is not None and column.null_count == 0:
        data = column.buffers()[1]
        if data is None or len(column) == 0:
            out = np.empty(0, dtype=dtype)
        else:
            # A read-only view of the Arrow buffer (zero-copy).
            out = np.frombuffer(data, dtype=dtype, count=len(column), offset=column.offset * dtype.itemsize)
        return out.copy() if writable else out
    if isinstance(column.type, pa.FixedShapeTensorType):
        out = column.to_numpy_ndarray()
    elif _objects.is_object_type(column.type):
        out = _objects.object_ndarray(column)
    elif _is_tensor(column.type):
        out = np.empty(len(column), dtype=object)
        out[:] = _tensor_cells(column) if len(column) else []
    elif pa.types.is_fixed_size_list(column.type) and column.null_count == 0:
        width = column.type.list_size
        out = column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), width)
    elif _is_text(column.type):
        # Made by the engine from the Arrow buffers: one str (bytes) per distinct value of
        # a column of few values, shared by its rows (str and bytes are immutable), a new
        # one a cell otherwise; pyarrow's conversion would import pandas first (150-300 ms).
        out = _core.strings_to_objects(column)
    else:
        out = column.to_numpy(zero_copy_only=False)
    if writable and not out.flags.writeable:
        out = out.copy()
    return out


def _is_text(arrow_type: pa.DataType) -> bool:
    return (pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)
            or pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type))


# ---- array cells (Ray's tensor columns) --------------------------------------------------
#
# A column whose cells are numpy arrays becomes, as in Ray Data, a tensor column: when
# every cell has one shape and numeric dtype, Arrow's canonical fixed-shape tensor type
# (numpy batches get one ndarray of shape (rows, *shape)); when the shapes differ (or a
# cell is missing), Arrow's canonical variable-shape tensor type (numpy batches get an
# object array of ndarrays). Rows and pandas cells of either are ndarrays of the cell's
# shape. Cells of other dtypes, or of different numbers of dimensions, become (nested)
# list columns.

_VARIABLE_SHAPE_TENSOR = "arrow.variable_shape_tensor"


def _is_tensor(arrow_type: pa.DataType) -> bool:
    return isinstance(arrow_type, pa.FixedShapeTensorType) or (
        isinstance(arrow_type, pa.BaseExtensionType) and arrow_type.extension_name == _VARIABLE_SHAPE_TENSOR)


class _Exported:
    """Hands a RecordBatch over through the Arrow C data interface, where the field's
    extension metadata makes Arrow C++ build the extension type it has registered."""

    def __init__(self, batch: pa.RecordBatch):
        self._batch = batch

    def __arrow_c_array__(self, requested_schema=None):
        return self._batch.__arrow_c_array__()


def _variable_shape_tensor(cells: list, dtype: np.dtype) -> pa.Array:
    """``cells`` (ndarrays of one number of dimensions, or None) as a variable-shape tensor
    column: a struct of the flattened values and the shape of each cell."""
    ndim = next(c.ndim for c in cells if c is not None)
    data = pa.array([None if c is None else np.ascontiguousarray(c, dtype=dtype).ravel() for c in cells],
                    type=pa.list_(_NUMERIC_BY_DTYPE[dtype]))
    shape = pa.array([None if c is None else list(c.shape) for c in cells], type=pa.list_(pa.int32(), ndim))
    mask = pa.array([c is None for c in cells]) if any(c is None for c in cells) else None
    storage = pa.StructArray.from_arrays([data, shape], names=["data", "shape"], mask=mask)
    field = pa.field("cells", storage.type, metadata={"ARROW:extension:name": _VARIABLE_SHAPE_TENSOR,
                                                       "ARROW:extension:metadata": "{}"})
    batch = pa.RecordBatch.from_arrays([storage], schema=pa.schema([field]))
    return pa.record_batch(_Exported(batch)).column(0)


def _cells_to_arrow(values) -> pa.Array | None:
    """``values`` (a sequence) as a tensor column when its cells are numpy arrays (None
    for missing ones); None when they are not."""
    first = next((v for v in values if v is not None), None)
    if not isinstance(first, np.ndarray) or first.ndim == 0:
        return None
    cells = [v for v in values if v is not None]
    if not all(isinstance(v, np.ndarray) and v.ndim >= 1 for v in cells):
        return None
    dtype = np.result_type(*{v.dtype for v in cells})
    if dtype not in _NUMERIC_BY_DTYPE or any(v.ndim != first.ndim for v in cells):
        return pa.array([None if v is None else v.tolist() for v in values])
    if len(cells) == len(values) and all(v.shape == first.shape for v in cells):
        return pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(np.stack(cells), dtype=dtype))
    return _variable_shape_tensor(list(values), dtype)


def _tensor_cells(column: pa.Array | pa.ChunkedArray) -> list:
    """The cells of a tensor column as writable ndarrays of each cell's shape (None for
    a missing one)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if isinstance(column.type, pa.FixedShapeTensorType):
        return list(column.to_numpy_ndarray().copy())
    storage = column.storage
    data, shape = storage.field("data"), storage.field("shape")
    offsets = data.offsets.to_numpy()
    values = data.values.to_numpy(zero_copy_only=False)
    shapes = shape.flatten().to_numpy().reshape(-1, shape.type.list_size) if len(shape) else []
    valid = storage.is_valid().to_numpy(zero_copy_only=False)
    return [values[offsets[i]:offsets[i + 1]].reshape(shapes[i]).copy() if valid[i] else None
            for i in range(len(column))]


def _as_variable_shape(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A fixed-shape tensor column as a variable-shape one holding the same cells."""
    if not isinstance(column.type, pa.FixedShapeTensorType):
        return column
    dtype = np.dtype(column.type.value_type.to_pandas_dtype())
    return pa.chunked_array([_variable_shape_tensor(_tensor_cells(column), dtype)])


def _unify_tensor_shapes(tables: list) -> list:
    """Tables whose tensor columns of one name differ in shape, with those columns as
    variable-shape tensors in every table (as Ray unifies them)."""
    types: dict = {}
    for table in tables:
        for field in table.schema:
            types.setdefault(field.name, set()).add(field.type)
    varying = {name for name, kinds in types.items() if len(kinds) > 1 and any(_is_tensor(t) for t in kinds)}
    if not varying:
        return tables
    out = []
    for table in tables:
        for i, name in enumerate(table.column_names):
            if name in varying:
                table = table.set_column(i, name, _as_variable_shape(table.column(i)))
        out.append(table)
    return out


_ROWS_PER_SLICE = 65536


def rows_of(batch: pa.RecordBatch | pa.Table) -> list[Dict[str, Any]]:
    """The rows as dicts; a tensor column's values are ndarrays (as Ray's rows are).

    A large batch is converted a slice at a time, so Ctrl-C reaches the caller between
    slices instead of after the whole batch."""
    if batch.num_rows > _ROWS_PER_SLICE:
        rows: list[Dict[str, Any]] = []
        for start in range(0, batch.num_rows, _ROWS_PER_SLICE):
            rows.extend(rows_of(batch.slice(start, _ROWS_PER_SLICE)))
        return rows
    names, columns = batch.schema.names, batch.columns
    if not any(_is_tensor(column.type) for column in columns):
        return batch.to_pylist()
    values = [_tensor_cells(c) if _is_tensor(c.type) else c.to_pylist() for c in columns]
    return [dict(zip(names, row)) for row in zip(*values)]


def to_pandas(batch: pa.RecordBatch | pa.Table, memory_pool: pa.MemoryPool | None = None):
    """``batch`` as a DataFrame; a tensor column holds ndarrays of the cell's shape."""
    df = batch.to_pandas(memory_pool=memory_pool)
    for name, column in zip(batch.schema.names, batch.columns):
        if _is_tensor(column.type):
            cells = np.empty(len(column), dtype=object)
            cells[:] = _tensor_cells(column) if len(column) else []
            df[name] = cells
        elif _objects.is_object_type(column.type):
            df[name] = _objects.object_ndarray(column)
    return df


# ---- async UDFs --------------------------------------------------------------------------

class AsyncRunner:
    """Runs what an ``async def`` UDF returns to completion. Each UDF instance (an actor's,
    or a function's) has its own event loop, kept for its lifetime, so state bound to the
    loop survives between calls; an actor runs one task at a time, so its loop is always
    free. A function run by several tasks at once gets a fresh loop on the other threads."""

    def __init__(self):
        self._lock = threading.Lock()
        self._loop = None

    def _run(self, coroutine):
        if not self._lock.acquire(blocking=False):
            return asyncio.run(coroutine)
        try:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                weakref.finalize(self, self._loop.close)
            return self._loop.run_until_complete(coroutine)
        finally:
            self._lock.release()

    def resolve(self, result: Any) -> tuple[Any, bool]:
        """``result`` with async work done: a coroutine gives its value, an async generator
        the list of what it yields. Second item: whether it produced many outputs (a
        generator, sync or async)."""
        if inspect.iscoroutine(result):
            return self._run(result), False
        if inspect.isasyncgen(result):
            async def collect():
                return [item async for item in result]

            return self._run(collect()), True
        return result, inspect.isgenerator(result)


def to_format(batch: pa.RecordBatch | pa.Table, batch_format: str, writable: bool = False) -> Any:
    """`batch` in the user's format: dict of numpy arrays (zero-copy where Arrow allows),
    a pandas DataFrame, or a pyarrow Table."""
    if batch_format == "numpy":
        # Names and columns fetched once: each `batch.schema` builds a new O(columns) object.
        out = {}
        for name, column in zip(batch.schema.names, batch.columns):
            try:
                out[name] = _column_to_numpy(column, writable)
            except UnicodeDecodeError as e:  # a string column that is not UTF-8
                raise UnicodeDecodeError(e.encoding, e.object, e.start, e.end,
                                         f"{e.reason} in column {name!r}") from None
        return out
    if batch_format == "pandas":
        return to_pandas(batch)
    if isinstance(batch, pa.RecordBatch):
        return pa.Table.from_batches([batch])
    return batch


# ---- ownership of what a UDF or a source hands over ------------------------------------
#
# Blocks are immutable once produced. An Arrow array built from a numpy array without a
# copy shares its memory, so a later write to the numpy array (a UDF refilling a buffer it
# keeps, a user changing the array given to from_numpy) would change the block. The
# engine therefore takes a numpy array over without a copy only when it can prove that
# nobody else holds it: the array owns its memory (``base is None and flags.owndata``: no
# view of someone else's memory), and its only references are the engine's own (the
# returned dict, which in turn only the engine holds). Reference counts are compared with
# those of a fresh object measured through the same code at import time, so the rule holds
# whatever the interpreter counts for arguments and locals. Anything else is copied. A
# fresh result of the UDF (``b["x"] * 2``, ``np.zeros(n)``), the common case, stays
# zero-copy.


def _local_refs(obj) -> int:
    return sys.getrefcount(obj)


def _measure_local() -> int:
    result = {}
    return _local_refs(result)


def _value_refs(container: dict, key) -> int:
    value = container[key]
    return sys.getrefcount(value)


# References to a dict held only in a local of the engine's caller, and to a value held
# only by such a dict, as counted through the functions above.
_SOLE_LOCAL_REFS = _measure_local()
_SOLE_VALUE_REFS = _value_refs({"x": object()}, "x")


def _owns_memory(arr: np.ndarray) -> bool:
    return arr.base is None and arr.flags.owndata


def _array_from_numpy(values: Any, sole_owner: bool = False) -> pa.Array:
    """``values`` as an Arrow array that shares no memory anyone else can write: numpy
    memory is taken over only when ``sole_owner`` (the caller proved nobody else holds the
    array) and the array owns it; otherwise it is copied."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values
    if isinstance(values, (list, tuple)) or (isinstance(values, np.ndarray) and values.dtype == object):
        cells = _cells_to_arrow(values)
        if cells is not None:
            return cells
        if isinstance(values, np.ndarray) and values.ndim == 1:
            return _objects_or_raise(values, lambda: pa.array(values))
    try:
        arr = np.asarray(values)
    except ValueError:
        if not isinstance(values, (list, tuple)):
            raise
        # lists of different lengths: a list column
        return _objects_or_raise(values, lambda: pa.array(values))
    # Numeric, temporal and tensor arrays become Arrow arrays over the same memory.
    shares_memory = arr.dtype.kind in "iufcmM" or arr.ndim > 1
    if shares_memory and not (sole_owner and _owns_memory(arr)):
        arr = arr.copy()
    arrow_type = _NUMERIC_BY_DTYPE.get(arr.dtype) if arr.ndim == 1 else None
    if arrow_type is not None and arr.flags.c_contiguous and arr.dtype.isnative:
        # Zero-copy: the Arrow array keeps the numpy array alive through the buffer.
        return pa.Array.from_buffers(arrow_type, len(arr), [None, pa.py_buffer(arr)])
    if arr.ndim > 1 and arr.dtype != object:
        return pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(arr))
    if arr.dtype == object and arr.ndim == 1:
        return _objects_or_raise(arr, lambda: pa.array(arr))
    return pa.array(arr)


def _objects_or_raise(values, convert):
    """``convert()``, or, when Arrow has no type for the values (objects of a user class,
    dicts with non-string keys, mixed types), a column of pickled objects (as Ray falls
    back to one) unless DataContext.enable_fallback_to_arrow_object_ext_type is False."""
    try:
        return convert()
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        if not _objects.fallback_enabled():
            raise
        return _objects.object_array(values)


def table_from_pandas(df) -> pa.Table:
    """``df`` as a Table that shares no memory with it: pyarrow takes numeric columns over
    without a copy, and the frame (or a view of it) may still be written to."""
    tensors = {}
    for i in range(df.shape[1]):
        source = df.iloc[:, i]
        if source.dtype == object and isinstance(next((v for v in source if v is not None), None), np.ndarray):
            cells = _cells_to_arrow(source.tolist())
            if cells is not None:
                tensors[i] = cells
    if tensors:
        # Array cells become tensor columns; pyarrow's conversion takes the others.
        plain = table_from_pandas(df.iloc[:, [i for i in range(df.shape[1]) if i not in tensors]])
        columns = [tensors[i] if i in tensors else plain.column(str(name)) for i, name in enumerate(df.columns)]
        return pa.table(columns, names=[str(n) for n in df.columns])
    if df.shape[1] == 0:
        # pyarrow makes no rows of a frame without columns; pandas counts its index.
        return pa.table({"": pa.nulls(len(df))}).drop_columns([""])
    table = pa.Table.from_pandas(df, preserve_index=False)
    for i, name in enumerate(table.column_names):
        column = table.column(i)
        if column.num_chunks != 1 or len(column) == 0:
            continue
        data = column.chunk(0).buffers()
        if len(data) < 2 or data[1] is None:
            continue
        source = df.iloc[:, i]
        values = getattr(source, "values", None)
        if isinstance(values, np.ndarray) and values.size and values.ctypes.data <= data[1].address < values.ctypes.data + values.nbytes:
            table = table.set_column(i, table.field(i), pa.chunked_array([pa.concat_arrays([column.chunk(0)])]))
    return table


def unique_names(table: pa.Table, operator: str) -> pa.Table:
    """``table``, or ValueError if a column name occurs twice (rows as dicts, pandas frames
    and writes would keep only one of them), as pyarrow's from_pandas says it."""
    names = table.column_names
    if len(set(names)) < len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"{operator}: duplicate column names found: {', '.join(map(repr, twice))}; "
                         f"the columns are: {', '.join(names)}")
    return table


def from_format(result: Any, operator: str, originals: dict | None = None,
                owned: bool = False, handed: dict | None = None) -> pa.Table:
    """A UDF's return value as a pyarrow Table; a clear TypeError otherwise.

    ``originals`` maps ``id(array)`` to ``(array, arrow_column, pointers)`` for the arrays
    handed to the UDF (in the dict ``handed``): one it returns unchanged goes back as the
    original Arrow column, with no conversion (see ``_unchanged``). ``owned``: nobody but
    the engine holds ``result`` (see the ownership rule above).
    """
    if isinstance(result, pa.Table):
        return unique_names(result, operator)
    if isinstance(result, pa.RecordBatch):
        return unique_names(pa.Table.from_batches([result]), operator)
    if isinstance(result, dict):
        if not result:
            return pa.table({})
        handed_ids = {id(v) for v in handed.values()} if isinstance(handed, dict) and handed is not result else ()
        columns = {}
        for key in list(result):
            refs = _value_refs(result, key)
            value = result[key]
            known = originals.get(id(value)) if originals else None
            if known is not None and known[0] is value:
                if _unchanged(value, known[2]):
                    columns[str(key)] = known[1]
                    continue
                # An array the engine made for the UDF: `originals` holds it, and the dict
                # handed to the UDF too when that is not the dict returned.
                refs -= 1 + (id(value) in handed_ids)
            try:
                columns[str(key)] = _array_from_numpy(value, owned and refs <= _SOLE_VALUE_REFS)
            except (pa.ArrowInvalid, ValueError) as e:
                raise ValueError(f"{operator}: the returned dict of columns is not a valid batch: {e}") from e
        try:
            return pa.table(columns)
        except (pa.ArrowInvalid, ValueError) as e:
            raise ValueError(f"{operator}: the returned dict of columns is not a valid batch: {e}") from e
    if "pandas" in sys.modules:
        import pandas as pd

        if isinstance(result, pd.DataFrame):
            return table_from_pandas(result)
    if hasattr(result, "__arrow_c_stream__"):
        return unique_names(pa.table(result), operator)
    raise TypeError(
        f"{operator} must return a dict of numpy arrays, a pandas DataFrame or a pyarrow Table; "
        f"it returned {type(result).__name__}"
    )


def concat_results(results: Iterable[Any], operator: str) -> pa.Table:
    tables = []
    for result in results:
        tables.append(from_format(result, operator, owned=_local_refs(result) <= _SOLE_LOCAL_REFS))
    if not tables:
        return pa.table({})
    return concat_tables(tables)


def concat_tables(tables: list) -> pa.Table:
    """One Table of ``tables`` (at least one), whose columns and types may differ: the
    union of columns (missing ones null) with types promoted as the engine does
    (``promote_options="permissive"``: null to any type, int to float, wider ints...).
    Types that cannot be unified raise ``pyarrow.ArrowTypeError`` naming the column and
    both types."""
    if len(tables) == 1:
        return tables[0]
    return pa.concat_tables(_unify_tensor_shapes(tables), promote_options="permissive")


def concat_batches(batches: list, schema: pa.Schema | None = None) -> pa.Table:
    """``batches`` (RecordBatches from different blocks) as one Table, as ``concat_tables``."""
    if not batches:
        return (schema or pa.schema([])).empty_table()
    first = batches[0].schema
    if all(b.schema.equals(first) for b in batches):
        return pa.Table.from_batches(batches)
    return concat_tables([pa.Table.from_batches([b]) for b in batches])


def _element_pointers(arr: np.ndarray) -> np.ndarray:
    """The object pointers of a contiguous 1-D object array, viewed as integers (no copy)."""
    if arr.size == 0:
        return np.empty(0, dtype=np.uintp)
    raw = (ctypes.c_size_t * arr.size).from_address(arr.ctypes.data)
    return np.ctypeslib.as_array(raw)


def _holds_immutable_objects(arrow_type: pa.DataType) -> bool:
    """Columns whose numpy form is an object array of str/bytes (immutable objects)."""
    return (pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)
            or pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type))


def _snapshot(arr: np.ndarray, arrow_type: pa.DataType):
    """What ``_unchanged`` needs to tell later whether ``arr`` was modified in place."""
    if (_holds_immutable_objects(arrow_type) and arr.dtype == object and arr.ndim == 1
            and arr.flags.c_contiguous and arr.flags.writeable):
        return _element_pointers(arr).copy()
    return None


def _unchanged(arr: np.ndarray, pointers) -> bool:
    """True when ``arr`` still holds what it was given: a read-only view can't change; an
    object array of strings or bytes holding the very same objects can't either, since
    those objects are immutable. Anything else is converted again, to be safe."""
    if not arr.flags.writeable:
        return True
    if pointers is None or arr.dtype != object or arr.size != pointers.size:
        return False
    return bool(np.array_equal(_element_pointers(arr), pointers))


def keep_input_types(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """What numpy and pandas batches cannot say, restored from the input ``schema`` for a
    returned column of the same name: the type of a column with no values (an all-None
    object column, or an empty one, would be Arrow's null type and clash with the other
    blocks), and the time zone of a timestamp (numpy's datetime64 has none; the instants
    are the same, UTC-based in both). A column the UDF gave a zone of its own keeps it."""
    for i, field in enumerate(table.schema):
        index = schema.get_field_index(field.name)
        if index < 0:
            continue
        before = schema.field(index).type
        if pa.types.is_null(field.type) and not pa.types.is_null(before):
            wanted = before
        elif (pa.types.is_timestamp(before) and before.tz and pa.types.is_timestamp(field.type)
                and field.type.tz is None):
            wanted = pa.timestamp(field.type.unit, before.tz)
        else:
            continue
        table = table.set_column(i, field.with_type(wanted), table.column(i).cast(wanted))
    return table


def batch_adapter(fn: Callable, batch_format: str, operator: str, writable: bool,
                  fn_args=(), fn_kwargs=None) -> Callable[[pa.RecordBatch], pa.Table]:
    """Wraps a user batch function into the engine's RecordBatch -> Table call."""
    fn_kwargs = fn_kwargs or {}
    runner = AsyncRunner()
    pyarrow_format = batch_format == "pyarrow"
    if not fn_args and not fn_kwargs:
        user_fn = fn
    else:
        def user_fn(user_batch):
            return fn(user_batch, *fn_args, **fn_kwargs)

    def call(batch: pa.RecordBatch) -> pa.Table:
        if pyarrow_format:
            # The common case first, without the format and async checks: a Table in, a
            # Table out (the one given back as it is: its names are the input's).
            user_batch = pa.Table.from_batches([batch]) if type(batch) is pa.RecordBatch else batch
            result = user_fn(user_batch)
            if type(result) is pa.Table:
                return result if result is user_batch else unique_names(result, operator)
            return finish(result, user_batch, None)
        user_batch = to_format(batch, batch_format, writable)
        originals = None
        if batch_format == "numpy":
            # Linear in the columns: schema and columns fetched once, not per column.
            originals = {id(a): (a, column, _snapshot(a, column.type))
                         for a, column in zip(user_batch.values(), batch.columns)}
        # Inline, not through `finish`: the ownership test counts references to `result`,
        # and an argument passed down a call is one more reference on some Python versions.
        result, many = runner.resolve(user_fn(user_batch))
        if many or (hasattr(result, "__next__") and not isinstance(result, dict)):
            table = concat_results(result, operator)
        else:
            # `user_batch` is a second local reference when the UDF returned the batch itself.
            owned = _local_refs(result) <= _SOLE_LOCAL_REFS + (result is user_batch)
            table = from_format(result, operator, originals, owned, user_batch)
        return keep_input_types(table, batch.schema)

    def finish(result, user_batch, originals) -> pa.Table:
        result, many = runner.resolve(result)
        if many or (hasattr(result, "__next__") and not isinstance(result, dict)):
            return concat_results(result, operator)
        # When the UDF returned the batch itself, `user_batch` here and in `call` are two
        # more local references.
        owned = _local_refs(result) <= _SOLE_LOCAL_REFS + 2 * (result is user_batch)
        return from_format(result, operator, originals, owned, user_batch)

    return call


def _row_column(values: list, key: str, like: pa.Schema | None):
    """A column of row values: a column of ``like`` (the input rows' schema) keeps its type
    when every value is None (else Arrow's null type) and, for a timestamp, its unit and
    zone while the values are still datetimes; numpy array cells make a tensor column;
    otherwise pyarrow's inference (which makes every zoned datetime microseconds)."""
    cells = _cells_to_arrow(values)
    if cells is not None:
        return cells
    index = like.get_field_index(key) if like is not None else -1
    if index >= 0:
        first = next((v for v in values if v is not None), None)
        if first is None or (pa.types.is_timestamp(like.field(index).type)
                             and isinstance(first, datetime.datetime)):
            try:
                return pa.array(values, type=like.field(index).type)
            except (pa.ArrowException, TypeError, ValueError):
                pass
    return _objects_or_raise(values, lambda: pa.array(values))


def table_from_rows(rows: list, schema_hint: pa.Schema | None, operator: str,
                    like: pa.Schema | None = None) -> pa.Table:
    """Rows (dicts) as a Table with the union of their keys as columns (``like``: see
    ``_row_column``)."""
    for row in rows:
        if not isinstance(row, dict):
            raise TypeError(f"{operator} must return a dict per row, got {type(row).__name__}")
    if not rows:
        return pa.table({}) if schema_hint is None else schema_hint.empty_table()
    # Every key any row has, in order of first appearance; a row without a key gets null
    # there (as Ray and ``pd.DataFrame(rows)`` do). ``from_pylist`` alone would keep only
    # the first row's keys.
    keys = dict.fromkeys(key for row in rows for key in row)
    return pa.table({str(key): _row_column([row.get(key) for row in rows], str(key), like) for key in keys})

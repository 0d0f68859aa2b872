"""Columns of arbitrary Python objects: values Arrow has no type for (instances of a user
class, dicts with non-string keys, mixed types) are kept, as Ray keeps them, in an
extension type whose storage is each value pickled (``large_binary``). The type is
registered with pyarrow, and the engine passes it through untouched (its field metadata
names it), so such a column survives ``map_batches``, ``materialize`` and re-batching;
numpy batches and rows get the objects back.
"""

from __future__ import annotations

import pickle
from typing import Any, List

import numpy as np
import pyarrow as pa

EXTENSION_NAME = "millstream.python_object"


class PythonObjectScalar(pa.ExtensionScalar):
    """One cell: ``as_py()`` is the object."""

    def as_py(self, **kwargs):
        return None if self.value is None else pickle.loads(self.value.as_py())


class PythonObjectType(pa.ExtensionType):
    """Arrow type of a column of pickled Python objects."""

    def __init__(self):
        super().__init__(pa.large_binary(), EXTENSION_NAME)

    def __arrow_ext_serialize__(self) -> bytes:
        return b""

    @classmethod
    def __arrow_ext_deserialize__(cls, storage_type, serialized):
        return cls()

    def __arrow_ext_scalar_class__(self):
        return PythonObjectScalar

    def __reduce__(self):
        return PythonObjectType, ()


try:
    pa.register_extension_type(PythonObjectType())
except pa.ArrowKeyError:  # registered already (the module imported twice)
    pass


def is_object_type(arrow_type: pa.DataType) -> bool:
    return isinstance(arrow_type, PythonObjectType)


def object_array(values) -> pa.ExtensionArray:
    """``values`` (a sequence; None stays null) as a column of pickled objects."""
    storage = pa.array([None if v is None else pickle.dumps(v, protocol=pickle.HIGHEST_PROTOCOL)
                        for v in values], type=pa.large_binary())
    return pa.ExtensionArray.from_storage(PythonObjectType(), storage)


def objects(column) -> List[Any]:
    """The objects of a column of this type (None for nulls)."""
    if isinstance(column, pa.ChunkedArray):
        return [v for chunk in column.chunks for v in objects(chunk)]
    return [None if b is None else pickle.loads(b) for b in column.storage.to_pylist()]


def object_ndarray(column) -> np.ndarray:
    """The objects as a numpy object array (what numpy batches hold)."""
    cells = objects(column)
    out = np.empty(len(cells), dtype=object)
    out[:] = cells
    return out


def fallback_enabled() -> bool:
    """Whether values Arrow cannot type become a pickled-object column (DataContext's
    ``enable_fallback_to_arrow_object_ext_type``: None or True) or raise (False)."""
    from millstream.context import DataContext

    return DataContext.get_current().enable_fallback_to_arrow_object_ext_type is not False

"""Arrow batches as torch tensors, for ``iter_torch_batches``.

Numeric columns without nulls are handed to torch through DLPack: the tensor views the
Arrow buffer (no copy, and no warning about a read-only numpy array, which
``torch.as_tensor`` would give for the read-only views numpy batches are). Fixed-shape
tensor columns become one tensor of shape ``(rows, *shape)`` the same way. Everything
else (booleans, columns with nulls) goes through numpy and is copied once.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import pyarrow as pa

from millstream import _batch

# Arrow types DLPack hands over as they are.
_DLPACK_TYPES = (
    pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32(),
    pa.uint64(), pa.float16(), pa.float32(), pa.float64(),
)


def require_torch(what: str):
    try:
        import torch
    except ImportError:
        raise ImportError(f"{what} needs the 'torch' package, which is not installed "
                          "(pip install torch)") from None
    return torch


def _device(torch, device):
    """The torch.device for Ray's ``device`` argument; None: leave tensors on the CPU."""
    if device == "auto" or device is None:
        return None
    if isinstance(device, int) and not isinstance(device, bool):
        device = torch.device("cuda", device)
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"iter_torch_batches: device must be 'auto', 'cpu', 'cuda[:i]', an index "
                         f"or a torch.device, got {device!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"iter_torch_batches: device {str(device)!r} asked for, but torch sees no CUDA device")
    return None if device.type == "cpu" else device


def _dense(torch, array: pa.Array):
    """A tensor over a flat numeric Arrow array without nulls, without a copy."""
    if len(array) and array.type in _DLPACK_TYPES:
        return torch.from_dlpack(array)
    return torch.from_numpy(_batch._column_to_numpy(array, writable=True))


def column_tensor(torch, name: str, column):
    """One column as a tensor (a list of tensors for a variable-shape tensor column)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    kind = column.type
    if column.null_count == 0:
        if kind in _DLPACK_TYPES:
            return _dense(torch, column)
        if isinstance(kind, pa.FixedShapeTensorType):
            order = list(kind.permutation) if kind.permutation is not None else None
            flat = column.storage.flatten()
            if flat.null_count == 0 and flat.type in _DLPACK_TYPES and order in (None, sorted(order)):
                return _dense(torch, flat).reshape((len(column),) + tuple(kind.shape))
    values = _batch._column_to_numpy(column, writable=True)
    if values.dtype == object:
        if _batch._is_tensor(kind):
            return [torch.from_numpy(cell.copy() if not cell.flags.writeable else cell) for cell in values]
        raise TypeError(f"iter_torch_batches: column '{name}' of type {kind} has no tensor form; "
                        "drop it (select_columns) or convert it in a collate_fn")
    return torch.from_numpy(values)


def _move(torch, value, device, pin: bool):
    if isinstance(value, torch.Tensor):
        if pin and value.device.type == "cpu":
            value = value.pin_memory()
        return value.to(device, non_blocking=True) if device is not None else value
    if isinstance(value, dict):
        return {k: _move(torch, v, device, pin) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_move(torch, v, device, pin) for v in value)
    return value


def converter(dtypes, device, collate_fn: Optional[Callable], pin_memory: bool) -> Callable[[Any], Any]:
    """The function turning one Arrow batch into what ``iter_torch_batches`` yields."""
    torch = require_torch("iter_torch_batches")
    if dtypes is not None and not isinstance(dtypes, (dict, torch.dtype)):
        raise TypeError(f"iter_torch_batches: dtypes must be a torch.dtype or a dict of them, got {dtypes!r}")
    if isinstance(dtypes, dict):
        for key, value in dtypes.items():
            if not isinstance(value, torch.dtype):
                raise TypeError(f"iter_torch_batches: dtypes[{key!r}] must be a torch.dtype, got {value!r}")
    if collate_fn is not None and dtypes is not None:
        raise ValueError("iter_torch_batches: dtypes apply to the default conversion; with a collate_fn, "
                         "set the dtypes in it")
    if collate_fn is not None and not callable(collate_fn):
        raise TypeError(f"iter_torch_batches: collate_fn must be callable, got {type(collate_fn).__name__}")
    target = _device(torch, device)
    if pin_memory and not torch.cuda.is_available():
        raise ValueError("iter_torch_batches: pin_memory=True needs CUDA, which torch does not see")
    # Pinned memory lets the copy to the GPU run without blocking the loop.
    pin = pin_memory or target is not None and target.type == "cuda"

    # A Ray-style collate class says which format it takes (see millstream.collate_fn);
    # a plain function gets numpy batches, as in Ray.
    collate_format = getattr(collate_fn, "batch_format", "numpy") if collate_fn is not None else None
    if collate_format not in (None, "numpy", "pandas", "pyarrow"):
        raise ValueError(f"iter_torch_batches: collate_fn.batch_format must be 'numpy', 'pandas' or "
                         f"'pyarrow', got {collate_format!r}")

    def convert(batch):
        if collate_fn is not None:
            return _move(torch, collate_fn(_batch.to_format(batch, collate_format)), target, pin)
        if isinstance(dtypes, dict):
            missing = [c for c in dtypes if c not in batch.schema.names]
            if missing:
                raise KeyError(f"iter_torch_batches: dtypes names column(s) {missing} that the batch lacks; "
                               f"the columns are {batch.schema.names}")
        out = {}
        for name, column in zip(batch.schema.names, batch.columns):
            tensor = column_tensor(torch, name, column)
            dtype = dtypes.get(name) if isinstance(dtypes, dict) else dtypes
            if dtype is not None:
                tensor = [t.to(dtype) for t in tensor] if isinstance(tensor, list) else tensor.to(dtype)
            out[name] = _move(torch, tensor, target, pin)
        return out

    return convert


def from_torch_items(dataset) -> list:
    """The items of a torch ``Dataset`` (map-style or iterable) as rows ``{"item": x}``;
    a tensor item becomes an ndarray (a tensor column), anything else stays as it is (a
    tuple of an image and a label becomes a column of Python objects)."""
    torch = require_torch("from_torch")
    if not isinstance(dataset, (torch.utils.data.Dataset, torch.utils.data.IterableDataset)):
        raise TypeError(f"from_torch expects a torch.utils.data.Dataset, got {type(dataset).__name__}")
    if isinstance(dataset, torch.utils.data.IterableDataset) or not hasattr(dataset, "__len__"):
        items = iter(dataset)
    else:
        items = (dataset[i] for i in range(len(dataset)))
    return [{"item": x.numpy() if isinstance(x, torch.Tensor) else x} for x in items]

"""Collate functions for ``iter_torch_batches(collate_fn=...)``, with Ray Data's class
names: subclass one to say which batch format ``__call__`` gets.

- ``ArrowBatchCollateFn``: a ``pyarrow.Table``;
- ``NumpyBatchCollateFn``: a dict of numpy arrays (what a plain function gets too);
- ``PandasBatchCollateFn``: a ``pandas.DataFrame``;
- ``DefaultCollateFn``: the default conversion (a dict of tensors), as an object.

What ``__call__`` returns is what the loop gets; tensors in it (alone, or in a dict, list
or tuple) are moved to the iterator's ``device``.
"""

from __future__ import annotations

from typing import Any


class CollateFn:
    """A callable turning one batch into what a training loop takes."""

    batch_format = "numpy"

    def __call__(self, batch: Any) -> Any:
        raise NotImplementedError


class ArrowBatchCollateFn(CollateFn):
    """``__call__`` gets each batch as a ``pyarrow.Table``."""

    batch_format = "pyarrow"


class NumpyBatchCollateFn(CollateFn):
    """``__call__`` gets each batch as a dict of numpy arrays."""

    batch_format = "numpy"


class PandasBatchCollateFn(CollateFn):
    """``__call__`` gets each batch as a ``pandas.DataFrame``."""

    batch_format = "pandas"


class DefaultCollateFn(ArrowBatchCollateFn):
    """The default conversion of ``iter_torch_batches``: a dict of tensors, ``dtypes``
    (one ``torch.dtype`` or a dict column -> dtype) applied; ``device``: where they go."""

    def __init__(self, dtypes=None, device=None, pin_memory: bool = False):
        from millstream import torch_ingest

        self._convert = torch_ingest.converter(dtypes, "auto" if device is None else device, None, pin_memory)

    def __call__(self, batch: Any) -> Any:
        return self._convert(batch)

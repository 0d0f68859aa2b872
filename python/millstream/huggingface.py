"""``from_huggingface``: a Hugging Face ``datasets`` dataset as a millstream Dataset."""

from __future__ import annotations

import pyarrow as pa


def table_of(dataset) -> pa.Table | list:
    """A ``datasets.Dataset``'s rows as a pyarrow Table (its own Arrow data, with any
    ``select``/``shuffle`` applied), or an ``IterableDataset``'s rows as a list of dicts."""
    try:
        import datasets
    except ImportError:
        raise ImportError("from_huggingface needs the 'datasets' package, which is not installed "
                          "(pip install datasets)") from None
    if isinstance(dataset, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        raise ValueError("from_huggingface takes one split, not a DatasetDict: pass e.g. "
                         f"dataset['train'] (the splits are {list(dataset.keys())})")
    if isinstance(dataset, datasets.IterableDataset):
        return list(dataset)
    if not isinstance(dataset, datasets.Dataset):
        raise TypeError(f"from_huggingface expects a datasets.Dataset or IterableDataset, got {type(dataset).__name__}")
    table = dataset.with_format("arrow")[:]
    return table if isinstance(table, pa.Table) else pa.table(table)

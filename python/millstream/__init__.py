"""millstream: a streaming batch engine for ML and ETL data, with Ray Data's API.

    import millstream as md
    ds = md.read_parquet("data/").filter(expr="qty > 10").map_batches(fn)
    ds.write_parquet("out/")
"""

import atexit as _atexit

import pyarrow as _pyarrow  # noqa: F401  (loads Arrow's libraries before the engine)

from millstream import _core, aggregate, expressions  # noqa: F401  (millstream.expressions: col, lit...)
from millstream.compute import ActorPoolStrategy, TaskPoolStrategy, get_gpu_ids
from millstream.datasource import BlockMetadata, Datasink, Datasource, ReadTask, WriteResult
from millstream.context import DataContext, ExecutionOptions, ExecutionResources, ShuffleStrategy
from millstream.dataset import (
    DataIterator,
    Dataset,
    MaterializedDataset,
    RandomSeedConfig,
    Schema,
    from_arrow,
    from_huggingface,
    from_items,
    from_numpy,
    from_pandas,
    from_torch,
    range,
    range_tensor,
    read_parquet,
)
from millstream.grouped_data import GroupedData  # noqa: F401
from millstream._workers import WorkerDiedError  # noqa: F401  (a UDF's worker process died)
from millstream.read_api import (
    FileShuffleConfig,
    from_blocks,
    read_datasource,
    read_binary_files,
    read_csv,
    read_images,
    read_json,
    read_numpy,
    read_text,
)

__version__ = "0.1.0"

# At exit: stop executions and keep engine threads out of the finalizing interpreter.
_atexit.register(_core.shutdown)

__all__ = [
    "ActorPoolStrategy", "TaskPoolStrategy", "DataContext", "DataIterator", "Dataset", "ExecutionOptions", "ExecutionResources",
    "MaterializedDataset", "RandomSeedConfig", "Schema", "ShuffleStrategy", "from_arrow", "from_huggingface", "from_items",
    "from_numpy", "from_pandas", "from_torch", "range", "range_tensor", "read_parquet", "FileShuffleConfig", "from_blocks",
    "read_binary_files", "read_csv", "read_images", "read_json", "read_numpy", "read_text", "GroupedData", "aggregate",
    "get_gpu_ids", "read_datasource", "Datasource", "Datasink", "ReadTask", "BlockMetadata", "WriteResult",
]

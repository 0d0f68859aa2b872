"""Ray Data's API for sources and sinks users write themselves: ``Datasource`` /
``ReadTask`` / ``BlockMetadata`` for ``read_datasource``, ``Datasink`` / ``WriteResult`` /
``TaskContext`` for ``Dataset.write_datasink``, with Ray 2.58's names. Read tasks and
``Datasink.write`` run as Python UDF calls on the engine's worker threads."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, List, Optional, Tuple

from millstream._args import public


@dataclasses.dataclass
class BlockMetadata:
    """What a read task expects to produce (Ray's fields; all optional)."""

    num_rows: Optional[int] = None
    size_bytes: Optional[int] = None
    input_files: Optional[Tuple[str, ...]] = None
    exec_stats: Any = None


class ReadTask:
    """A callable producing blocks (pyarrow Tables, pandas DataFrames or dicts of
    arrays), as Ray's ``ReadTask(read_fn, metadata)``."""

    def __init__(self, read_fn: Callable[[], Iterable[Any]], metadata: BlockMetadata,
                 schema: Any = None, per_task_row_limit: Optional[int] = None):
        self._read_fn = read_fn
        self._metadata = metadata
        self._schema = schema
        self._per_task_row_limit = per_task_row_limit

    @property
    def metadata(self) -> BlockMetadata:
        return self._metadata

    @property
    def schema(self) -> Any:
        return self._schema

    @property
    def read_fn(self) -> Callable[[], Iterable[Any]]:
        return self._read_fn

    @property
    def per_task_row_limit(self) -> Optional[int]:
        return self._per_task_row_limit

    def __call__(self) -> Iterable[Any]:
        return self._read_fn()


class Datasource:
    """Subclass and implement ``get_read_tasks(parallelism)`` (and
    ``estimate_inmemory_data_size``) to read from something not built in."""

    @public
    def __init__(self):
        pass

    def get_name(self) -> str:
        name = type(self).__name__
        return name[: -len("Datasource")] if name.endswith("Datasource") and name != "Datasource" else name

    def estimate_inmemory_data_size(self) -> Optional[int]:
        raise NotImplementedError

    def get_read_tasks(self, parallelism: int, per_task_row_limit: Optional[int] = None,
                       data_context: Any = None) -> List[ReadTask]:
        raise NotImplementedError

    @property
    def supports_distributed_reads(self) -> bool:
        return True


@dataclasses.dataclass
class WriteResult:
    """What every ``Datasink.write`` call returned, with the rows and bytes written."""

    num_rows: int
    size_bytes: int
    write_returns: List[Any]

    @classmethod
    def combine(cls, *results: "WriteResult") -> "WriteResult":
        return WriteResult(sum(r.num_rows for r in results), sum(r.size_bytes for r in results),
                           [x for r in results for x in r.write_returns])


@dataclasses.dataclass
class TaskContext:
    """The write task a ``Datasink.write`` call runs in."""

    task_idx: int
    op_name: str = "Write"


class Datasink:
    """Subclass and implement ``write(blocks, ctx)`` to write to something not built in;
    ``on_write_start``, ``on_write_complete(WriteResult)`` and ``on_write_failed(error)`` are
    called around the write, as in Ray."""

    @public
    def __init__(self):
        pass

    def on_write_start(self, schema: Any = None) -> None:
        pass

    def write(self, blocks: Iterable[Any], ctx: TaskContext) -> Any:
        raise NotImplementedError

    def on_write_complete(self, write_result: WriteResult) -> None:
        pass

    def on_write_failed(self, error: Exception) -> None:
        pass

    def get_name(self) -> str:
        name = type(self).__name__.lstrip("_")
        return name[: -len("Datasink")] if name.endswith("Datasink") and name != "Datasink" else name

    @property
    def supports_distributed_writes(self) -> bool:
        return True

    @property
    def min_rows_per_write(self) -> Optional[int]:
        return None

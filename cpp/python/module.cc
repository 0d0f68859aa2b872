// The Python extension module `millstream._core`: the only place C++ meets Python.
// The Python package (python/millstream) builds its Ray-Data-style API on these types.

#include <chrono>
#include <memory>
#include <mutex>
#include <set>
#include <system_error>
#include <thread>
#include <variant>

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <arrow/api.h>
#include <arrow/compute/expression.h>

#include "millstream/millstream.h"
#include "py_interop.h"
#include "runtime/jemalloc_ctl.h"

namespace py = pybind11;
using namespace millstream;
using millstream::python::CheckStatus;
using millstream::python::ValueOrRaise;

namespace {

arrow::compute::Expression ExpressionFromBytes(const py::bytes& data) {
  auto buffer = arrow::Buffer::FromString(std::string(data));
  return ValueOrRaise(arrow::compute::Deserialize(buffer));
}

/// Every execution the module started and Python has not yet closed: cancelled at
/// interpreter exit. Locked only with the GIL released (Cancel may need the GIL).
std::mutex g_live_mutex;
std::set<BatchIterator*> g_live;

/// How long closing an execution (its end, a consumer walking away, Ctrl-C) waits for its
/// running tasks before leaving them to finish in the background.
constexpr std::chrono::milliseconds kCloseWait{250};
/// How long interpreter exit waits for engine threads to leave Python (see py_interop.h).
constexpr std::chrono::milliseconds kExitWait{3000};

/// Destroys a cancelled execution on a thread of its own once its tasks are done (a UDF
/// call in progress runs to its end), so the caller does not wait for it. At interpreter
/// exit it is left undestroyed instead.
void Abandon(std::unique_ptr<BatchIterator> it) {
  auto destroy = [it = std::shared_ptr<BatchIterator>(std::move(it))]() mutable {
    it->stream().WaitForTasks(std::chrono::milliseconds(-1));
    if (!python::EnterReaper()) {
      new std::shared_ptr<BatchIterator>(std::move(it));  // exiting: never destroyed
      return;
    }
    it.reset();
    python::LeaveReaper();
  };
  try {
    std::thread(destroy).detach();
  } catch (const std::system_error&) {
    destroy();  // no thread to spare: wait here
  }
}

/// A running execution seen from Python: batches out, Ctrl-C in.
///
/// Lock order: the engine may need the GIL while it holds its own lock (dropping a block
/// whose memory a Python object owns), so every call into the engine that can wait on that
/// lock releases the GIL first.
class PyBatchIterator {
 public:
  /// Registers the execution as live; call with the GIL released.
  explicit PyBatchIterator(std::unique_ptr<BatchIterator> it) : it_(std::move(it)) {
    std::lock_guard<std::mutex> lock(g_live_mutex);
    g_live.insert(it_.get());
  }
  ~PyBatchIterator() { Close(); }

  /// The next batch as a pyarrow.RecordBatch, or None at the end. Waits with the GIL
  /// released, checking for signals (Ctrl-C cancels the execution and raises).
  py::object Next() {
    if (!it_) return py::none();
    while (true) {
      bool timed_out = false;
      arrow::Result<Block> next;
      {
        python::GilRelease release;
        next = it_->NextFor(std::chrono::milliseconds(100), &timed_out);
        if (!next.ok()) python::ParkWaiterIfExiting();
      }
      if (!next.ok()) CheckStatus(next.status());
      CheckSignals();
      if (timed_out) continue;
      if (!*next) return py::none();
      return python::BatchToPyArrow(*next);
    }
  }

  /// Runs to the end, counting rows without handing batches to Python. The GIL stays
  /// released except for a signal check every 100 ms.
  int64_t Drain() {
    int64_t rows = 0;
    bool done = false;
    while (it_ && !done) {
      arrow::Status status;
      {
        python::GilRelease release;
        auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(100);
        while (std::chrono::steady_clock::now() < until) {
          bool timed_out = false;
          auto next = it_->NextFor(std::chrono::milliseconds(100), &timed_out);
          if (!next.ok()) {
            python::ParkWaiterIfExiting();
            status = next.status();
            break;
          }
          if (timed_out) break;
          if (!*next) {
            done = true;
            break;
          }
          rows += (*next)->num_rows();
        }
      }
      CheckStatus(status);
      CheckSignals();
    }
    return rows;
  }

  void Cancel() {
    python::GilRelease release;
    if (it_) it_->stream().Cancel();
  }

  /// Ctrl-C (or any signal handler raising) cancels the execution and raises.
  void CheckSignals() {
    if (PyErr_CheckSignals() != 0) {
      py::error_already_set error;
      Close();
      throw error;
    }
  }

  /// Cancels the execution and waits up to kCloseWait for its running tasks (they may
  /// need the GIL, so it is released); tasks still running then (a slow or stuck UDF
  /// call) finish in the background and the execution is destroyed after them. Once the
  /// interpreter exits, nothing is destroyed.
  void Close() {
    if (!it_) return;
    bool done = false;
    {
      python::GilRelease release;
      {
        std::lock_guard<std::mutex> lock(g_live_mutex);
        g_live.erase(it_.get());
      }
      if (!python::PythonExiting()) {
        it_->stream().Cancel();
        done = it_->stream().WaitForTasks(kCloseWait);
        if (done) it_.reset();
      }
    }
    if (python::PythonExiting()) {
      (void)it_.release();  // never destroyed at exit: see py_interop.h
    } else if (!done) {
      Abandon(std::move(it_));
    }
  }

  /// The counters so far (complete once the execution ended); zeros once closed.
  ExecutionStats Stats() const {
    if (!it_) return {};
    python::GilRelease release;
    return it_->stream().stats();
  }

  int64_t AccountedBytes() const {
    python::GilRelease release;
    return it_ ? it_->stream().accounted_bytes() : 0;
  }

 private:
  std::unique_ptr<BatchIterator> it_;
};

/// The atexit hook: closes the exit gate, cancels every live execution, and waits (GIL
/// released) until engine threads are idle or inside a UDF call that may never return.
void ShutDown() {
  python::CloseGate();
  py::gil_scoped_release release;  // the main thread, before finalization
  {
    std::lock_guard<std::mutex> lock(g_live_mutex);
    for (auto* it : g_live) it->stream().Cancel();
  }
  python::WaitForEngineToSettle(kExitWait);
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "millstream's C++ engine";
  CheckStatus(millstream::Initialize());
  python::LoadPyArrowApi();

  // The typed settings first: the Dataset methods below take them.
  python::RegisterContext(m);
  python::RegisterOptions(m);
  python::RegisterStats(m);

  m.def("prepare_write_dir", [](const std::string& path, const std::string& mode,
                                const std::string& operation) {
    SaveMode save_mode = mode == "overwrite" ? SaveMode::kOverwrite
                         : mode == "error"   ? SaveMode::kError
                         : mode == "ignore"  ? SaveMode::kIgnore
                                             : SaveMode::kAppend;
    return ValueOrRaise(PrepareWriteDirectory(path, save_mode, operation));
  }, "Makes a write's directory ready for a save mode; returns whether to write.");
  m.def("local_path", [](const std::string& path, const std::string& operation) {
    return ValueOrRaise(LocalPath(path, operation));
  }, "The local path of `path` (a plain path or a file:// URI); other URI schemes raise.");
  m.def("pyarrow_api_loaded", &python::PyArrowApiLoaded,
        "Whether Arrow data crosses to and from pyarrow as pyarrow's own objects (its C++ "
        "api), not through the C Data Interface.");
  m.def("jemalloc_purge_available", &JemallocControl::Available,
        "Whether the engine can give jemalloc's freed pages back to the system at once "
        "(libarrow's jemalloc control found).");
  m.def("current_gpu_ids", [] { return millstream::CurrentGpuIds(); },
        "The GPU ids of the actor or task whose UDF runs on this thread.");
  m.def("shutdown", &ShutDown,
        "Stop every execution and keep engine threads out of Python from now on (called at "
        "interpreter exit; later executions fail).");

  py::class_<PyBatchIterator>(m, "BatchIterator")
      .def("next", &PyBatchIterator::Next)
      .def("drain", &PyBatchIterator::Drain)
      .def("cancel", &PyBatchIterator::Cancel)
      .def("close", &PyBatchIterator::Close)
      .def("stats", &PyBatchIterator::Stats)
      .def("accounted_bytes", &PyBatchIterator::AccountedBytes);

  py::class_<Dataset>(m, "Dataset")
      .def_static("range", [](int64_t n, std::optional<int64_t> blocks) {
        return ValueOrRaise(Dataset::Range(n, blocks));
      })
      .def_static("from_arrow", [](py::object table, std::optional<int64_t> blocks) {
        auto t = ValueOrRaise(python::TableFromPython(table));
        return ValueOrRaise(Dataset::FromArrow(std::move(t), blocks));
      })
      .def_static("from_arrow_blocks", [](py::object table, std::vector<int64_t> block_rows) {
        // `table` cut into blocks of these row counts (zero-copy where a block is one
        // chunk), empty blocks kept: a materialized dataset's blocks as they were made.
        auto t = ValueOrRaise(python::TableFromPython(table));
        std::vector<Block> blocks;
        int64_t offset = 0;
        for (int64_t rows : block_rows) {
          if (rows < 0 || offset + rows > t->num_rows()) {
            throw std::invalid_argument("from_arrow_blocks: block row counts do not add up to the table's rows");
          }
          if (rows == 0) {
            blocks.push_back(ValueOrRaise(arrow::RecordBatch::MakeEmpty(t->schema())));
            continue;
          }
          auto slice = t->Slice(offset, rows);
          arrow::TableBatchReader reader(*slice);
          auto pieces = ValueOrRaise(reader.ToRecordBatches());
          blocks.push_back(pieces.size() == 1 ? pieces[0] : ValueOrRaise(arrow::ConcatenateRecordBatches(pieces)));
          offset += rows;
        }
        if (offset != t->num_rows()) {
          throw std::invalid_argument("from_arrow_blocks: block row counts do not add up to the table's rows");
        }
        return ValueOrRaise(Dataset::FromBlocks(std::move(blocks), t->schema()));
      })
      .def_static("read_parquet", [](std::vector<std::string> paths, std::vector<std::string> columns,
                                     std::optional<py::bytes> filter, std::optional<int64_t> blocks,
                                     std::vector<std::string> file_extensions, bool hive) {
        ReadParquetOptions options;
        options.file_extensions = std::move(file_extensions);
        options.hive_partitioning = hive;
        options.columns = std::move(columns);
        if (filter) options.filter = ExpressionFromBytes(*filter);
        options.override_num_blocks = blocks;
        arrow::Result<Dataset> result;
        {
          python::GilRelease release;
          result = Dataset::ReadParquet(std::move(paths), std::move(options));
        }
        return ValueOrRaise(std::move(result));
      })
      .def("map_batches", [](const Dataset& self, py::object fn, bool is_class, std::string name,
                             std::optional<int64_t> batch_size, bool row_preserving,
                             bool actors, int min_size, int max_size, double num_cpus,
                             double num_gpus, int max_tasks_in_flight, int64_t memory,
                             int max_concurrency, bool enable_true_multi_threading) {
        MapBatchesOptions options;
        options.batch_size = batch_size;
        options.name = name;
        options.row_preserving = row_preserving;
        options.compute = actors ? ComputeStrategy::Actors(min_size, max_size, max_tasks_in_flight,
                                                           max_concurrency, enable_true_multi_threading)
                                 : ComputeStrategy::Tasks(max_size);
        options.num_cpus = num_cpus;
        options.num_gpus = num_gpus;
        options.memory = memory;
        return self.MapBatches(python::MakePythonUdfFactory(std::move(fn), is_class, name), options);
      })
      .def("filter_expr", [](const Dataset& self, py::bytes expr) {
        return self.Filter(ExpressionFromBytes(expr));
      })
      .def("with_column", [](const Dataset& self, std::string name, py::bytes expr) {
        return self.WithColumn(std::move(name), ExpressionFromBytes(expr));
      })
      .def("select_columns", [](const Dataset& self, std::vector<std::string> cols) {
        return ValueOrRaise(self.SelectColumns(std::move(cols)));
      })
      .def("drop_columns", [](const Dataset& self, std::vector<std::string> cols) {
        return ValueOrRaise(self.DropColumns(std::move(cols)));
      })
      .def("rename_columns", [](const Dataset& self, std::map<std::string, std::string> renames) {
        return ValueOrRaise(self.RenameColumns(std::move(renames)));
      })
      .def("limit", &Dataset::Limit)
      .def("sort", [](const Dataset& self, std::vector<std::string> columns, std::vector<bool> descending,
                      std::vector<std::variant<int64_t, double>> boundaries) {
        std::vector<SortKey> keys;
        for (size_t i = 0; i < columns.size(); ++i) keys.push_back({columns[i], descending.at(i)});
        std::vector<SortBoundary> bounds;
        for (const auto& b : boundaries) {
          bounds.push_back(std::holds_alternative<int64_t>(b) ? SortBoundary::Int(std::get<int64_t>(b))
                                                              : SortBoundary::Real(std::get<double>(b)));
        }
        return ValueOrRaise(self.Sort(std::move(keys), std::move(bounds)));
      }, py::arg("columns"), py::arg("descending"), py::arg("boundaries") = std::vector<std::variant<int64_t, double>>{})
      .def("group_by_aggregate", [](const Dataset& self, std::vector<std::string> keys,
                                    std::vector<std::tuple<std::string, std::string, bool, int64_t, std::string, double>> aggs,
                                    int64_t num_partitions) {
        // Each aggregation: (kind, column or "", ignore_nulls, ddof, output name, q).
        static const std::map<std::string, AggregateSpec::Kind> kinds = {
            {"count", AggregateSpec::Kind::kCount}, {"sum", AggregateSpec::Kind::kSum},
            {"min", AggregateSpec::Kind::kMin},     {"max", AggregateSpec::Kind::kMax},
            {"mean", AggregateSpec::Kind::kMean},   {"std", AggregateSpec::Kind::kStd},
            {"abs_max", AggregateSpec::Kind::kAbsMax}, {"quantile", AggregateSpec::Kind::kQuantile},
            {"unique", AggregateSpec::Kind::kUnique}, {"count_distinct", AggregateSpec::Kind::kCountDistinct}};
        std::vector<AggregateSpec> specs;
        for (auto& [kind, column, ignore_nulls, ddof, name, q] : aggs) {
          auto it = kinds.find(kind);
          if (it == kinds.end()) throw py::value_error("unknown aggregation kind " + kind);
          specs.push_back({it->second, column, ignore_nulls, ddof, name, q});
        }
        return ValueOrRaise(self.GroupByAggregate(std::move(keys), std::move(specs), num_partitions));
      })
      .def("random_shuffle", [](const Dataset& self, std::optional<uint64_t> seed, bool reseed) {
        return self.RandomShuffle({seed, reseed});
      })
      .def("randomize_block_order", [](const Dataset& self, std::optional<uint64_t> seed, bool reseed) {
        return self.RandomizeBlockOrder({seed, reseed});
      })
      .def("repartition", [](const Dataset& self, int64_t num_blocks, bool shuffle, std::vector<std::string> keys,
                             bool sort) {
        return ValueOrRaise(self.Repartition(num_blocks, shuffle, std::move(keys), sort));
      }, py::arg("num_blocks"), py::arg("shuffle"), py::arg("keys"), py::arg("sort") = false)
      .def("join", [](const Dataset& self, const Dataset& right, const std::string& join_type,
                      int64_t num_partitions, std::vector<std::string> on, std::vector<std::string> right_on,
                      std::optional<std::string> left_suffix, std::optional<std::string> right_suffix) {
        JoinSpec spec;
        spec.type = ValueOrRaise(ParseJoinType(join_type));
        spec.left_keys = std::move(on);
        spec.right_keys = std::move(right_on);
        spec.left_suffix = std::move(left_suffix);
        spec.right_suffix = std::move(right_suffix);
        spec.num_partitions = num_partitions;
        return ValueOrRaise(self.Join(right, std::move(spec)));
      })
      .def("union", [](const Dataset& self, std::vector<Dataset> others) { return self.Union(others); })
      .def("repartition_rows", [](const Dataset& self, int64_t target_rows, bool strict) {
        return ValueOrRaise(self.RepartitionRows(target_rows, strict));
      })
      .def("zip", [](const Dataset& self, std::vector<Dataset> others) { return self.Zip(others); })
      .def("random_sample", [](const Dataset& self, double fraction, std::optional<uint64_t> seed, bool reseed) {
        return ValueOrRaise(self.RandomSample(fraction, {seed, reseed}));
      })
      .def("with_write", [](const Dataset& self, const std::string& dir, FileFormat format,
                            const WriteOptions& options) {
        // A bad option raises here, before the directory is prepared (see _write).
        CheckStatus(ValidateWriteOptions(format, options));
        return self.WithWrite(dir, format, options);
      }, py::arg("directory"), py::arg("format"), py::arg("options"))
      .def("execute", [](const Dataset& self, const DataContext& context, std::optional<int64_t> batch_size,
                         bool drop_last, bool keep_empty_blocks) {
        if (python::PythonExiting()) {
          throw std::runtime_error("millstream: the interpreter is exiting; no execution starts now");
        }
        arrow::Result<std::unique_ptr<PyBatchIterator>> it;
        {
          python::GilRelease release;
          it = self.Execute(context).Map([&](std::unique_ptr<BlockStream> stream) {
            return std::make_unique<PyBatchIterator>(
                std::make_unique<BatchIterator>(std::move(stream), batch_size, drop_last,
                                                keep_empty_blocks));
          });
        }
        return ValueOrRaise(std::move(it));
      }, py::arg("ctx"), py::arg("batch_size"), py::arg("drop_last"), py::arg("keep_empty_blocks") = false)
      .def("count_from_metadata", &Dataset::CountFromMetadata)
      .def("known_to_have_no_blocks", &Dataset::KnownToHaveNoBlocks)
      .def("known_schema", [](const Dataset& self) -> py::object {
        auto schema = self.KnownSchema();
        if (!schema) return py::none();
        return python::SchemaToPyArrow(schema);
      })
      .def("explain", [](const Dataset& self, const DataContext& ctx) { return self.Explain(ctx); })
      .def("__str__", &Dataset::ToString);

  python::RegisterIo(m);
  python::RegisterStrings(m);
}

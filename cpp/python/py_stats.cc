// Typed bindings of an execution's counters: OperatorStats and ExecutionStats, with
// keyword constructors (the Ray backend and tests make their own). A running execution's
// `stats()` returns an ExecutionStats; progress and Dataset.stats() read its fields.

#include <string>
#include <vector>

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "millstream/dataset.h"
#include "py_interop.h"

namespace millstream::python {

void RegisterStats(py::module_& m) {
  py::class_<OperatorStats>(m, "OperatorStats", "Counters of one operator over one execution.")
      .def(py::init([](py::kwargs kwargs) {
             OperatorStats op;
             py::object self = py::cast(op);
             for (auto [key, value] : kwargs) {
               std::string name = py::str(key);
               if (!py::hasattr(self, name.c_str()) || name.rfind("_", 0) == 0) {
                 throw py::type_error("OperatorStats: unexpected keyword argument '" + name + "'");
               }
               self.attr(key) = value;
             }
             return self.cast<OperatorStats>();
           }),
           "Every field is a keyword argument (default: zero, estimated_rows_out -1).")
      .def_readwrite("name", &OperatorStats::name)
      .def_readwrite("display_name", &OperatorStats::display_name)
      .def_readwrite("tasks", &OperatorStats::tasks)
      .def_readwrite("blocks_in", &OperatorStats::blocks_in)
      .def_readwrite("rows_in", &OperatorStats::rows_in)
      .def_readwrite("bytes_in", &OperatorStats::bytes_in)
      .def_readwrite("blocks_out", &OperatorStats::blocks_out)
      .def_readwrite("rows_out", &OperatorStats::rows_out)
      .def_readwrite("bytes_out", &OperatorStats::bytes_out)
      .def_readwrite("task_wall_s", &OperatorStats::task_wall_s)
      .def_readwrite("backpressure_s", &OperatorStats::backpressure_s)
      .def_readwrite("cpu_s", &OperatorStats::cpu_s)
      .def_readwrite("udf_s", &OperatorStats::udf_s)
      .def_readwrite("peak_bytes", &OperatorStats::peak_bytes)
      .def_readwrite("active_tasks", &OperatorStats::active_tasks)
      .def_readwrite("queued_bundles", &OperatorStats::queued_bundles)
      .def_readwrite("queued_bytes", &OperatorStats::queued_bytes)
      .def_readwrite("actors", &OperatorStats::actors)
      .def_readwrite("peak_actors", &OperatorStats::peak_actors)
      .def_readwrite("actors_started", &OperatorStats::actors_started)
      .def_readwrite("estimated_rows_out", &OperatorStats::estimated_rows_out)
      .def_readwrite("done", &OperatorStats::done)
      .def_readwrite("errored_tasks", &OperatorStats::errored_tasks)
      .def_readwrite("spilled_bytes", &OperatorStats::spilled_bytes)
      .def_readwrite("peak_task_scratch_bytes", &OperatorStats::peak_task_scratch_bytes)
      .def_readwrite("regrouped_partitions", &OperatorStats::regrouped_partitions)
      .def_readwrite("streamed_partitions", &OperatorStats::streamed_partitions)
      .def("__repr__", [](const OperatorStats& op) {
        return "<OperatorStats " + op.name + ": " + std::to_string(op.rows_out) + " rows out>";
      });

  py::class_<ExecutionStats>(m, "ExecutionStats",
                             "Counters of one execution: each operator's, then the totals.")
      .def(py::init([](std::vector<OperatorStats> operators, double wall_s, int64_t peak_bytes,
                       int64_t held_bytes, int64_t memory_limit, bool finished) {
             ExecutionStats stats;
             stats.operators = std::move(operators);
             stats.wall_s = wall_s;
             stats.peak_bytes = peak_bytes;
             stats.held_bytes = held_bytes;
             stats.memory_limit = memory_limit;
             stats.finished = finished;
             return stats;
           }),
           py::kw_only(), py::arg("operators") = std::vector<OperatorStats>{}, py::arg("wall_s") = 0.0,
           py::arg("peak_bytes") = 0, py::arg("held_bytes") = 0, py::arg("memory_limit") = 0,
           py::arg("finished") = false)
      .def_readwrite("operators", &ExecutionStats::operators)
      .def_readwrite("wall_s", &ExecutionStats::wall_s)
      .def_readwrite("peak_bytes", &ExecutionStats::peak_bytes)
      .def_readwrite("held_bytes", &ExecutionStats::held_bytes)
      .def_readwrite("memory_limit", &ExecutionStats::memory_limit)
      .def_readwrite("finished", &ExecutionStats::finished)
      .def("to_string", &ExecutionStats::ToString,
           "The printable summary: one block per operator, then the totals (Dataset.stats()).");
}

}  // namespace millstream::python

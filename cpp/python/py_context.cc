// Typed bindings of the engine's settings: DataContext and its parts, with keyword
// constructors. Python's DataContext (python/millstream/context.py) keeps Ray's API and
// converts itself to these in one place (`DataContext._to_core`).

#include <optional>
#include <string>

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "millstream/context.h"
#include "py_interop.h"

namespace millstream::python {

void RegisterContext(py::module_& m) {
  using OptDouble = std::optional<double>;
  using OptInt = std::optional<int64_t>;

  py::class_<ResourceLimits>(m, "ExecutionResources",
                             "Amounts of CPU, GPU and bytes of blocks; None: derive from the machine.")
      .def(py::init([](OptDouble cpu, OptDouble gpu, OptInt object_store_memory) {
             return ResourceLimits{cpu, gpu, object_store_memory};
           }),
           py::kw_only(), py::arg("cpu") = py::none(), py::arg("gpu") = py::none(),
           py::arg("object_store_memory") = py::none())
      .def_readwrite("cpu", &ResourceLimits::cpu)
      .def_readwrite("gpu", &ResourceLimits::gpu)
      .def_readwrite("object_store_memory", &ResourceLimits::object_store_memory);

  py::class_<ExecutionOptions>(m, "ExecutionOptions", "Options of one execution.")
      .def(py::init([](const ResourceLimits& resource_limits, const ResourceLimits& exclude_resources,
                       bool preserve_order) {
             ExecutionOptions options;
             options.resource_limits = resource_limits;
             options.exclude_resources = exclude_resources;
             options.preserve_order = preserve_order;
             return options;
           }),
           py::kw_only(), py::arg("resource_limits") = ResourceLimits{},
           py::arg("exclude_resources") = ResourceLimits{}, py::arg("preserve_order") = false)
      .def_readwrite("resource_limits", &ExecutionOptions::resource_limits)
      .def_readwrite("exclude_resources", &ExecutionOptions::exclude_resources)
      .def_readwrite("preserve_order", &ExecutionOptions::preserve_order);

  const AutoscalingConfig autoscaling;
  py::class_<AutoscalingConfig>(m, "AutoscalingConfig", "When an autoscaling actor pool grows and shrinks.")
      .def(py::init([](double up, double down, int delta) { return AutoscalingConfig{up, down, delta}; }),
           py::kw_only(),
           py::arg("actor_pool_util_upscaling_threshold") = autoscaling.actor_pool_util_upscaling_threshold,
           py::arg("actor_pool_util_downscaling_threshold") = autoscaling.actor_pool_util_downscaling_threshold,
           py::arg("actor_pool_max_upscaling_delta") = autoscaling.actor_pool_max_upscaling_delta)
      .def_readwrite("actor_pool_util_upscaling_threshold", &AutoscalingConfig::actor_pool_util_upscaling_threshold)
      .def_readwrite("actor_pool_util_downscaling_threshold",
                     &AutoscalingConfig::actor_pool_util_downscaling_threshold)
      .def_readwrite("actor_pool_max_upscaling_delta", &AutoscalingConfig::actor_pool_max_upscaling_delta);

  const DataContext defaults;
  py::class_<DataContext>(m, "DataContext",
                          "The settings the engine reads (checked by validate(), and when an execution starts).")
      .def(py::init([](int64_t target_max_block_size, int64_t target_min_block_size,
                       int64_t read_op_min_num_blocks, const ExecutionOptions& execution_options,
                       bool op_resource_reservation_enabled, double op_resource_reservation_ratio,
                       const AutoscalingConfig& autoscaling_config, int64_t max_errored_blocks,
                       double downstream_capacity_backpressure_ratio, std::string spill_directory) {
             DataContext ctx;
             ctx.target_max_block_size = target_max_block_size;
             ctx.target_min_block_size = target_min_block_size;
             ctx.read_op_min_num_blocks = read_op_min_num_blocks;
             ctx.execution_options = execution_options;
             ctx.op_resource_reservation_enabled = op_resource_reservation_enabled;
             ctx.op_resource_reservation_ratio = op_resource_reservation_ratio;
             ctx.autoscaling_config = autoscaling_config;
             ctx.max_errored_blocks = max_errored_blocks;
             ctx.downstream_capacity_backpressure_ratio = downstream_capacity_backpressure_ratio;
             ctx.spill_directory = std::move(spill_directory);
             return ctx;
           }),
           py::kw_only(), py::arg("target_max_block_size") = defaults.target_max_block_size,
           py::arg("target_min_block_size") = defaults.target_min_block_size,
           py::arg("read_op_min_num_blocks") = defaults.read_op_min_num_blocks,
           py::arg("execution_options") = ExecutionOptions{},
           py::arg("op_resource_reservation_enabled") = defaults.op_resource_reservation_enabled,
           py::arg("op_resource_reservation_ratio") = defaults.op_resource_reservation_ratio,
           py::arg("autoscaling_config") = AutoscalingConfig{},
           py::arg("max_errored_blocks") = defaults.max_errored_blocks,
           py::arg("downstream_capacity_backpressure_ratio") = defaults.downstream_capacity_backpressure_ratio,
           py::arg("spill_directory") = defaults.spill_directory)
      .def_readwrite("target_max_block_size", &DataContext::target_max_block_size)
      .def_readwrite("target_min_block_size", &DataContext::target_min_block_size)
      .def_readwrite("read_op_min_num_blocks", &DataContext::read_op_min_num_blocks)
      .def_readwrite("execution_options", &DataContext::execution_options)
      .def_readwrite("op_resource_reservation_enabled", &DataContext::op_resource_reservation_enabled)
      .def_readwrite("op_resource_reservation_ratio", &DataContext::op_resource_reservation_ratio)
      .def_readwrite("autoscaling_config", &DataContext::autoscaling_config)
      .def_readwrite("max_errored_blocks", &DataContext::max_errored_blocks)
      .def_readwrite("downstream_capacity_backpressure_ratio", &DataContext::downstream_capacity_backpressure_ratio)
      .def_readwrite("spill_directory", &DataContext::spill_directory)
      .def("validate", [](const DataContext& ctx) { CheckStatus(ctx.Validate()); },
           "Raises ValueError naming the first field outside its range.");
}

}  // namespace millstream::python

#include "exec/operators/operators.h"
#include "plan/logical_operators.h"
#include "planner/planner.h"
#include "shuffle/aggregate.h"
#include "shuffle/hash_join.h"
#include "shuffle/random_shuffle.h"
#include "shuffle/randomize_block_order.h"
#include "shuffle/repartition.h"
#include "shuffle/sort.h"

namespace millstream {
namespace {

using Made = arrow::Result<std::unique_ptr<PhysicalOperator>>;

/// The checks a map's resources must pass before it runs.
arrow::Status CheckMapResources(const MapOp& spec, const EffectiveLimits& limits) {
  const std::string name = spec.Name();
  if (spec.num_cpus > limits.cpu) {
    return arrow::Status::Invalid(name, " asks for num_cpus=", spec.num_cpus,
                                  " per task but the CPU limit is ", limits.cpu,
                                  "; lower num_cpus or raise resource_limits.cpu");
  }
  if (const auto& compute = spec.compute; compute.kind == ComputeStrategy::Kind::kActors) {
    if (compute.min_size < 1 || compute.max_size < compute.min_size) {
      return arrow::Status::Invalid(name, ": an actor pool needs 1 <= min_size <= max_size; got ",
                                    compute.min_size, ", ", compute.max_size);
    }
    if (compute.max_tasks_in_flight_per_actor < 1) {
      return arrow::Status::Invalid(name, ": max_tasks_in_flight_per_actor must be >= 1, got ",
                                    compute.max_tasks_in_flight_per_actor);
    }
    if (compute.max_concurrency < 1) {
      return arrow::Status::Invalid(name, ": max_concurrency must be >= 1, got ",
                                    compute.max_concurrency);
    }
  }
  if (spec.num_gpus > limits.gpu) {
    return arrow::Status::Invalid(name, " asks for num_gpus=", spec.num_gpus, " per task but ",
                                  limits.gpu,
                                  " GPUs are available; set resource_limits.gpu if the "
                                  "machine has GPUs, or drop num_gpus");
  }
  if (spec.memory > limits.memory) {
    return arrow::Status::Invalid(name, " asks for memory=", spec.memory,
                                  " bytes per task but the memory limit "
                                  "(object_store_memory) is ",
                                  limits.memory, " bytes; lower memory or raise the limit");
  }
  return arrow::Status::OK();
}

Made PlanMap(std::shared_ptr<const MapOp> spec, const PlanningContext& planning) {
  ARROW_RETURN_NOT_OK(CheckMapResources(*spec, planning.limits));
  // Transforms that differ per execution (a reseeded sample) are bound to this one.
  std::vector<std::shared_ptr<const Transform>> bound;
  bool rebound = false;
  for (const auto& transform : spec->transforms) {
    auto for_execution = transform->ForExecution();
    rebound = rebound || for_execution != nullptr;
    bound.push_back(for_execution ? std::move(for_execution) : transform);
  }
  if (rebound) {
    auto copy = spec->CopyOver(spec->input());
    copy->transforms = std::move(bound);
    spec = std::move(copy);
  }
  std::unique_ptr<MapOperator> op =
      spec->compute.kind == ComputeStrategy::Kind::kActors
          ? MakeActorPoolMapOperator(spec, planning.context)
          : MakeTaskPoolMapOperator(spec);
  op->SetGpuAllocator(planning.gpus);
  if (spec->source) {
    ReadTaskOptions options;
    options.parallelism = spec->override_num_blocks.value_or(0);
    options.min_tasks = planning.context.read_op_min_num_blocks;
    options.target_max_block_size = planning.context.target_max_block_size;
    // Read -> (row-preserving steps) -> Limit[n]: no more than n rows are needed.
    const bool row_preserving = std::all_of(spec->transforms.begin(), spec->transforms.end(),
                                            [](const auto& t) { return t->row_preserving(); });
    if (row_preserving) options.row_limit = planning.row_limit;
    ARROW_ASSIGN_OR_RAISE(auto tasks, spec->source->GetReadTasks(options));
    op->SetReadTasks(std::move(tasks));
  }
  return op;
}

ExchangeOptions ExchangeOptionsFor(const PlanningContext& planning) {
  ExchangeOptions options;
  options.target_max_block_size = planning.context.target_max_block_size;
  options.memory_limit = planning.limits.memory;
  options.parallelism = std::max<int64_t>(1, static_cast<int64_t>(planning.limits.cpu));
  return options;
}

/// An all-to-all operator over the exchange `make` builds from the exchange options.
template <typename Logical, typename MakeExchange>
PlannerRegistry::Factory AllToAll(MakeExchange make) {
  return [make](const PlanPtr& node, const PlanningContext& planning) -> Made {
    const auto& logical = *node->As<Logical>();
    ARROW_ASSIGN_OR_RAISE(auto exchange, make(logical, ExchangeOptionsFor(planning)));
    return MakeAllToAllOperator(logical.Name(), std::move(exchange), planning.context);
  };
}

/// The bytes `plan` will produce, estimated before running it: a read's tasks' estimates
/// (file sizes, metadata, a from_arrow's bytes), through row-preserving steps only (a
/// projection); unknown (nullopt) for anything else.
std::optional<int64_t> EstimatedBytes(const PlanPtr& plan, const PlanningContext& planning) {
  std::shared_ptr<Datasource> source;
  if (const auto* read = plan->As<ReadOp>()) {
    source = read->source;
  } else if (const auto* map = plan->As<MapOp>(); map && map->source) {
    const bool row_preserving = std::all_of(map->transforms.begin(), map->transforms.end(),
                                            [](const auto& t) { return t->row_preserving(); });
    if (row_preserving) source = map->source;
  }
  if (!source) return std::nullopt;
  ReadTaskOptions options;
  options.target_max_block_size = planning.context.target_max_block_size;
  auto tasks = source->GetReadTasks(options);
  if (!tasks.ok()) return std::nullopt;
  int64_t bytes = 0;
  for (const auto& task : *tasks) bytes += std::max<int64_t>(task->estimated_bytes(), 0);
  return bytes;
}

/// A join: broadcast (BroadcastJoinOperator) when one side's estimate is at most the
/// broadcast cap and the join type lets that side be the build side; the hash join's
/// exchange otherwise (and as the broadcast's fallback).
Made PlanJoin(const PlanPtr& node, const PlanningContext& planning) {
  const auto& join = *node->As<JoinOp>();
  auto exchange = [spec = join.spec, name = join.Name(), options = ExchangeOptionsFor(planning),
                   context = planning.context]() -> Made {
    ARROW_ASSIGN_OR_RAISE(auto exchange, MakeHashJoinExchange(spec, options));
    return MakeAllToAllOperator(name, std::move(exchange), context);
  };
  const int64_t cap = BroadcastJoinCap(planning.limits.memory);
  int build = -1;
  int64_t build_bytes = 0;
  for (int side : {1, 0}) {
    if (!BroadcastJoinSupports(join.spec.type, side)) continue;
    auto bytes = EstimatedBytes(join.inputs().at(side), planning);
    if (!bytes || *bytes > cap || (build >= 0 && *bytes >= build_bytes)) continue;
    build = side;
    build_bytes = *bytes;
  }
  if (build < 0) return exchange();
  std::string name = "Join[" + JoinTypeName(join.spec.type) + "; ";
  for (size_t k = 0; k < join.spec.left_keys.size(); ++k) {
    name += (k ? ", " : "") + join.spec.left_keys[k] + " = " + join.spec.right_keys.at(k);
  }
  name += "; broadcast, build=" + std::string(build == 0 ? "left" : "right") + " (est. " +
          std::to_string(build_bytes) + " bytes)]";
  return MakeBroadcastJoinOperator(std::move(name), join.spec, build, cap, std::move(exchange));
}

}  // namespace

const PlannerRegistry& PlannerRegistry::Default() {
  static const PlannerRegistry registry = [] {
    PlannerRegistry r;
    r.Register<ReadOp>([](const PlanPtr& node, const PlanningContext& planning) -> Made {
      // A read on its own: a map with no transforms after it.
      const auto& read = *node->As<ReadOp>();
      auto spec = std::make_shared<MapOp>(nullptr);
      spec->source = read.source;
      spec->override_num_blocks = read.override_num_blocks;
      spec->compute = ComputeStrategy::Tasks(read.concurrency);
      return PlanMap(std::move(spec), planning);
    });
    r.Register<MapOp>([](const PlanPtr& node, const PlanningContext& planning) -> Made {
      return PlanMap(std::static_pointer_cast<const MapOp>(node), planning);
    });
    r.Register<LimitOp>([](const PlanPtr& node, const PlanningContext&) -> Made {
      return MakeLimitOperator(std::max<int64_t>(0, node->As<LimitOp>()->limit));
    });
    r.Register<UnionOp>([](const PlanPtr& node, const PlanningContext&) -> Made {
      return MakeUnionOperator(static_cast<int>(node->inputs().size()));
    });
    r.Register<ZipOp>([](const PlanPtr& node, const PlanningContext&) -> Made {
      return MakeZipOperator(static_cast<int>(node->inputs().size()));
    });
    r.Register<SortOp>(AllToAll<SortOp>([](const SortOp& op, ExchangeOptions options) {
      return MakeSortExchange(op.keys, std::move(options), op.boundaries);
    }));
    r.Register<RandomShuffleOp>(AllToAll<RandomShuffleOp>([](const RandomShuffleOp& op, ExchangeOptions options) {
      return MakeRandomShuffleExchange(op.seed.ForExecution(), std::move(options));
    }));
    r.Register<RandomizeBlockOrderOp>(AllToAll<RandomizeBlockOrderOp>([](const RandomizeBlockOrderOp& op, ExchangeOptions options) {
      return MakeRandomizeBlockOrderExchange(op.seed.ForExecution(), std::move(options));
    }));
    r.Register<RepartitionOp>(AllToAll<RepartitionOp>([](const RepartitionOp& op, ExchangeOptions options) {
      return MakeRepartitionExchange(op.num_blocks, op.shuffle, op.keys, std::move(options), op.sort);
    }));
    r.Register<AggregateOp>(AllToAll<AggregateOp>([](const AggregateOp& op, ExchangeOptions options) {
      options.num_partitions = op.num_partitions;
      return MakeAggregateExchange(op.keys, op.aggregates, std::move(options), op.filter, op.input_is_partial);
    }));
    r.Register<JoinOp>(PlanJoin);
    return r;
  }();
  return registry;
}

}  // namespace millstream

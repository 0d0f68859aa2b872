#include "plan/logical_operator.h"

#include <algorithm>

namespace millstream {

std::string LogicalOperator::Name() const {
  switch (kind) {
    case Kind::kRead:
      return source->name();
    case Kind::kLimit:
      return "Limit[" + std::to_string(limit) + "]";
    case Kind::kMap:
      break;
  }
  std::string name = source ? source->name() : "";
  for (const auto& transform : transforms) {
    if (!name.empty()) name += "->";
    name += transform->name();
  }
  return name;
}

bool LogicalOperator::RowPreserving() const {
  if (kind != Kind::kMap || source) return false;
  return std::all_of(transforms.begin(), transforms.end(),
                     [](const auto& t) { return t->row_preserving(); });
}

PlanPtr LogicalOperator::MakeRead(std::shared_ptr<Datasource> source,
                                  std::optional<int64_t> num_blocks) {
  auto op = std::make_shared<LogicalOperator>();
  op->kind = Kind::kRead;
  op->source = std::move(source);
  op->override_num_blocks = num_blocks;
  return op;
}

PlanPtr LogicalOperator::MakeMap(PlanPtr input, std::shared_ptr<const Transform> transform,
                                 ComputeStrategy compute, double num_cpus, double num_gpus,
                                 int64_t min_rows_per_bundle) {
  auto op = std::make_shared<LogicalOperator>();
  op->kind = Kind::kMap;
  op->input = std::move(input);
  op->transforms.push_back(std::move(transform));
  op->compute = compute;
  op->num_cpus = num_cpus;
  op->num_gpus = num_gpus;
  op->min_rows_per_bundle = min_rows_per_bundle;
  return op;
}

PlanPtr LogicalOperator::MakeLimit(PlanPtr input, int64_t limit) {
  auto op = std::make_shared<LogicalOperator>();
  op->kind = Kind::kLimit;
  op->input = std::move(input);
  op->limit = limit;
  return op;
}

std::vector<PlanPtr> PlanChain(const PlanPtr& sink) {
  std::vector<PlanPtr> chain;
  for (PlanPtr op = sink; op; op = op->input) chain.push_back(op);
  std::reverse(chain.begin(), chain.end());
  return chain;
}

std::string FormatPlan(const PlanPtr& sink) {
  std::string out;
  int depth = 0;
  for (PlanPtr op = sink; op; op = op->input, ++depth) {
    out += std::string(2 * depth, ' ') + (depth ? "+- " : "") + op->Name() + "\n";
  }
  return out;
}

}  // namespace millstream

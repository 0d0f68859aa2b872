#include "planner/planner.h"

#include <cmath>

#include "exec/operators/map_operator.h"
#include "plan/logical_operators.h"

namespace millstream {

const PlannerRegistry::Factory* PlannerRegistry::Find(const LogicalOperator& logical) const {
  auto it = factories_.find(std::type_index(typeid(logical)));
  return it == factories_.end() ? nullptr : &it->second;
}

namespace {

/// Plans `node` and its inputs into `plan`; returns its operator's index.
arrow::Result<int> PlanNode(const PlanPtr& node, std::optional<int64_t> row_limit,
                            const DataContext& context,
                            const std::shared_ptr<GpuAllocator>& gpus, PhysicalPlan& plan) {
  // What a consumer's limit allows below it: a limit's own rows, passed through
  // row-preserving steps.
  std::optional<int64_t> input_limit;
  if (const auto* limit = node->As<LimitOp>()) {
    input_limit = row_limit ? std::min(*row_limit, limit->limit) : limit->limit;
  } else if (node->RowPreserving()) {
    input_limit = row_limit;
  }
  std::vector<int> inputs;
  for (const auto& input : node->inputs()) {
    ARROW_ASSIGN_OR_RAISE(int index, PlanNode(input, input_limit, context, gpus, plan));
    inputs.push_back(index);
  }
  const auto* factory = PlannerRegistry::Default().Find(*node);
  if (!factory) {
    return arrow::Status::NotImplemented("no physical operator for ", node->Name());
  }
  PlanningContext planning{context, ResolveLimits(context), row_limit, gpus};
  ARROW_ASSIGN_OR_RAISE(auto op, (*factory)(node, planning));
  const int index = static_cast<int>(plan.operators.size());
  for (size_t k = 0; k < inputs.size(); ++k) {
    auto& input = *plan.operators[inputs[k]];
    input.downstream = index;
    input.downstream_input = static_cast<int>(k);
  }
  op->upstream = std::move(inputs);
  op->stats.name = op->Describe();
  op->stats.display_name = op->display_name();
  plan.operators.push_back(std::move(op));
  return index;
}

/// A limit keeps the first rows: everything upstream of one hands on its output in order.
void MarkOrdered(PhysicalPlan& plan, int index, bool ordered) {
  auto& op = *plan.operators[index];
  op.set_ordered(ordered);
  ordered = ordered || op.NeedsOrderedInput();
  for (int u : op.upstream) MarkOrdered(plan, u, ordered);
}

}  // namespace

arrow::Result<PhysicalPlan> PlanPhysical(const PlanPtr& optimized, const DataContext& context) {
  ARROW_RETURN_NOT_OK(context.Validate());
  PhysicalPlan plan;
  const auto gpus = std::make_shared<GpuAllocator>(
      static_cast<int>(std::floor(ResolveLimits(context).gpu + 1e-9)));
  ARROW_ASSIGN_OR_RAISE(int root, PlanNode(optimized, std::nullopt, context, gpus, plan));
  MarkOrdered(plan, root, context.execution_options.preserve_order);
  return plan;
}

namespace {

int64_t ReadTasks(const PhysicalOperator& op) {
  auto map = dynamic_cast<const MapOperator*>(&op);
  return map && map->upstream.empty() ? map->QueuedInputBundles() : 0;
}

void FormatTree(const PhysicalPlan& plan, int index, int depth, std::string& out) {
  const auto& op = *plan.operators[index];
  out += std::string(2 * depth, ' ') + (depth ? "+- " : "") + op.Describe();
  if (int64_t tasks = ReadTasks(op)) out += " <- Input[" + std::to_string(tasks) + " read tasks]";
  out += "\n";
  for (int u : op.upstream) FormatTree(plan, u, depth + 1, out);
}

}  // namespace

std::string PhysicalPlan::ToString() const {
  bool chain = true;
  for (const auto& op : operators) chain = chain && op->upstream.size() <= 1;
  std::string out;
  if (!chain) {
    FormatTree(*this, static_cast<int>(operators.size()) - 1, 0, out);
    return out;
  }
  out = "Input[" + std::to_string(ReadTasks(*operators.front())) + " read tasks]";
  for (const auto& op : operators) out += " -> " + op->Describe();
  return out + "\n";
}

}  // namespace millstream

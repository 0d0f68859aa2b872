#include "plan/logical_operator.h"

#include <algorithm>
#include <iomanip>
#include <set>
#include <sstream>

#include <arrow/type.h>

#include "exec/schema_unify.h"
#include "plan/logical_operators.h"
#include "shuffle/hash_join.h"

namespace millstream {

const PlanPtr& LogicalOperator::input() const {
  static const PlanPtr kNone;
  return inputs_.empty() ? kNone : inputs_.front();
}

// ---- MapOp ---------------------------------------------------------------------------

std::string MapOp::Name() const {
  std::string name = source ? source->name() : "";
  for (const auto& transform : transforms) {
    if (!name.empty()) name += "->";
    name += transform->name();
  }
  return name;
}

bool MapOp::RowPreserving() const {
  if (source) return false;
  return std::all_of(transforms.begin(), transforms.end(),
                     [](const auto& t) { return t->row_preserving(); });
}

std::optional<int64_t> MapOp::RowsOut(const std::vector<std::optional<int64_t>>& inputs) const {
  std::optional<int64_t> rows = source ? source->num_rows() : inputs.at(0);
  const bool preserving = std::all_of(transforms.begin(), transforms.end(),
                                      [](const auto& t) { return t->row_preserving(); });
  return preserving ? rows : std::nullopt;
}

std::shared_ptr<arrow::Schema> MapOp::SchemaOut(
    const std::vector<std::shared_ptr<arrow::Schema>>& inputs) const {
  std::shared_ptr<arrow::Schema> schema = source ? source->schema() : inputs.at(0);
  for (const auto& transform : transforms) {
    if (!schema) return nullptr;
    auto out = transform->SchemaOut(schema);
    if (!out.ok()) return nullptr;
    schema = *out;
  }
  return schema;
}

PlanPtr MapOp::WithInputs(std::vector<PlanPtr> inputs) const {
  return CopyOver(inputs.empty() ? nullptr : inputs.front());
}

std::shared_ptr<MapOp> MapOp::CopyOver(PlanPtr input) const {
  auto op = std::make_shared<MapOp>(std::move(input));
  op->source = source;
  op->override_num_blocks = override_num_blocks;
  op->transforms = transforms;
  op->compute = compute;
  op->num_cpus = num_cpus;
  op->num_gpus = num_gpus;
  op->memory = memory;
  op->min_rows_per_bundle = min_rows_per_bundle;
  op->exact_bundles = exact_bundles;
  return op;
}

PlanPtr MapOp::Make(PlanPtr input, std::shared_ptr<const Transform> transform,
                    ComputeStrategy compute, double num_cpus, double num_gpus,
                    int64_t min_rows_per_bundle, int64_t memory) {
  auto op = std::make_shared<MapOp>(std::move(input));
  op->transforms.push_back(std::move(transform));
  op->compute = compute;
  op->num_cpus = num_cpus;
  op->num_gpus = num_gpus;
  op->min_rows_per_bundle = min_rows_per_bundle;
  op->memory = memory;
  return op;
}

// ---- LimitOp, UnionOp ------------------------------------------------------------------

std::optional<int64_t> LimitOp::RowsOut(const std::vector<std::optional<int64_t>>& inputs) const {
  if (!inputs.at(0)) return std::nullopt;
  return std::min(*inputs[0], limit);
}

std::optional<int64_t> UnionOp::RowsOut(const std::vector<std::optional<int64_t>>& inputs) const {
  int64_t rows = 0;
  for (const auto& in : inputs) {
    if (!in) return std::nullopt;
    rows += *in;
  }
  return rows;
}

std::shared_ptr<arrow::Schema> UnionOp::SchemaOut(
    const std::vector<std::shared_ptr<arrow::Schema>>& inputs) const {
  std::vector<std::shared_ptr<arrow::Schema>> known;
  for (const auto& schema : inputs) {
    if (!schema) return nullptr;
    known.push_back(schema);
  }
  auto unified = UnifyBlockSchemas(known);
  return unified.ok() ? *unified : nullptr;
}

// ---- ZipOp ---------------------------------------------------------------------------

std::optional<int64_t> ZipOp::RowsOut(const std::vector<std::optional<int64_t>>& inputs) const {
  // Known only when every input's count is known and they agree (else the run fails).
  for (const auto& in : inputs) {
    if (!in || *in != *inputs.front()) return std::nullopt;
  }
  return inputs.front();
}

std::shared_ptr<arrow::Schema> ZipOp::SchemaOut(
    const std::vector<std::shared_ptr<arrow::Schema>>& inputs) const {
  for (const auto& schema : inputs) {
    if (!schema) return nullptr;
  }
  return ZipSchemas(inputs);
}

std::shared_ptr<arrow::Schema> ZipSchemas(const std::vector<std::shared_ptr<arrow::Schema>>& inputs) {
  arrow::FieldVector fields;
  std::set<std::string> taken;
  for (const auto& schema : inputs) {
    for (const auto& field : schema->fields()) {
      std::string name = field->name();
      for (int i = 1; taken.count(name); ++i) name = field->name() + "_" + std::to_string(i);
      taken.insert(name);
      fields.push_back(name == field->name() ? field : field->WithName(name));
    }
  }
  return arrow::schema(std::move(fields));
}

// ---- JoinOp --------------------------------------------------------------------------

std::string JoinOp::Name() const {
  std::string name = "Join[" + JoinTypeName(spec.type) + "; ";
  for (size_t k = 0; k < spec.left_keys.size(); ++k) {
    name += (k ? ", " : "") + spec.left_keys[k] + " = " + spec.right_keys.at(k);
  }
  // Each partition builds its hash table on its smaller side (by bytes); from the row
  // counts metadata gives, the side that will likely be.
  name += "; build=smaller side per partition";
  auto left = PlanRows(inputs().at(0)), right = PlanRows(inputs().at(1));
  if (left && right) name += std::string(" (est. ") + (*left < *right ? "left" : "right") + ")";
  return name + "]";
}

std::shared_ptr<arrow::Schema> JoinOp::SchemaOut(
    const std::vector<std::shared_ptr<arrow::Schema>>& inputs) const {
  if (!inputs.at(0) || !inputs.at(1) || inputs[0]->num_fields() == 0 || inputs[1]->num_fields() == 0) {
    return nullptr;
  }
  auto schema = JoinOutputSchema(spec, *inputs[0], *inputs[1]);
  return schema.ok() ? *schema : nullptr;
}

// ---- All-to-all operators -------------------------------------------------------------

std::optional<uint64_t> RandomSeed::ForExecution() const {
  if (!seed || !reseed_after_execution) return seed;
  // A different, reproducible seed per execution: the base seed mixed with the count.
  uint64_t x = *seed + 0x9E3779B97F4A7C15ULL * (executions->fetch_add(1) + 1);
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

std::string SortOp::Name() const {
  std::string name = "Sort[";
  for (size_t i = 0; i < keys.size(); ++i) {
    name += (i ? ", " : "") + keys[i].column + (keys[i].descending ? " desc" : "");
  }
  if (!boundaries.empty()) {
    std::ostringstream out;
    out << std::setprecision(17);
    for (size_t i = 0; i < boundaries.size(); ++i) {
      out << (i ? ", " : "");
      if (boundaries[i].is_integer) {
        out << boundaries[i].integer;
      } else {
        out << boundaries[i].real;
      }
    }
    name += ", boundaries=[" + out.str() + "]";
  }
  return name + "]";
}

std::string RepartitionOp::Name() const {
  std::string name = "Repartition[" + (num_blocks > 0 ? std::to_string(num_blocks) : std::string("auto"));
  if (shuffle) name += ", shuffle";
  for (const auto& key : keys) name += ", " + key;
  if (sort) name += ", sort";
  return name + "]";
}

// ---- Plan helpers ---------------------------------------------------------------------

std::vector<PlanPtr> PlanChain(const PlanPtr& sink) {
  std::vector<PlanPtr> chain;
  for (PlanPtr op = sink; op; op = op->input()) chain.push_back(op);
  std::reverse(chain.begin(), chain.end());
  return chain;
}

namespace {

void Format(const PlanPtr& op, int depth, std::string& out) {
  out += std::string(2 * depth, ' ') + (depth ? "+- " : "") + op->Name() + "\n";
  for (const auto& input : op->inputs()) Format(input, depth + 1, out);
}

}  // namespace

std::string FormatPlan(const PlanPtr& sink) {
  std::string out;
  Format(sink, 0, out);
  return out;
}

arrow::Result<PlanPtr> RewriteBottomUp(
    const PlanPtr& plan, const std::function<arrow::Result<PlanPtr>(PlanPtr)>& rewrite) {
  std::vector<PlanPtr> inputs;
  bool changed = false;
  for (const auto& input : plan->inputs()) {
    ARROW_ASSIGN_OR_RAISE(auto rewritten, RewriteBottomUp(input, rewrite));
    changed = changed || rewritten != input;
    inputs.push_back(std::move(rewritten));
  }
  return rewrite(changed ? plan->WithInputs(std::move(inputs)) : plan);
}

std::optional<int64_t> PlanRows(const PlanPtr& plan) {
  std::vector<std::optional<int64_t>> inputs;
  for (const auto& input : plan->inputs()) inputs.push_back(PlanRows(input));
  return plan->RowsOut(inputs);
}

std::shared_ptr<arrow::Schema> PlanSchema(const PlanPtr& plan) {
  std::vector<std::shared_ptr<arrow::Schema>> inputs;
  for (const auto& input : plan->inputs()) inputs.push_back(PlanSchema(input));
  return plan->SchemaOut(inputs);
}

}  // namespace millstream

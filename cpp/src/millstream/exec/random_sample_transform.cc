#include <arrow/api.h>
#include <arrow/compute/api.h>

#include <random>
#include <sstream>

#include "exec/transforms.h"
#include "plan/logical_operators.h"
#include "runtime/counting_memory_pool.h"

namespace millstream {
namespace {

/// SplitMix64's finalizer: spreads the bits of `x` over the whole word.
uint64_t Mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

class RandomSampleState : public TransformState {
 public:
  RandomSampleState(double fraction, std::optional<uint64_t> seed, int64_t task_index)
      : fraction_(fraction), seed_(seed), task_index_(task_index) {}

  arrow::Status Push(Block block, const Emit& emit) override {
    const int64_t rows = block->num_rows();
    const int64_t index = blocks_++;
    if (fraction_ >= 1.0) return emit(std::move(block));
    if (fraction_ <= 0.0 || rows == 0) return emit(block->Slice(0, 0));
    // Block `index` of task `task_index_` draws from its own generator: the same rows on
    // every run for a given seed, whichever thread runs the task and when.
    const uint64_t seed = seed_ ? Mix(Mix(*seed_ ^ Mix(static_cast<uint64_t>(task_index_))) +
                                      static_cast<uint64_t>(index))
                                : (static_cast<uint64_t>(std::random_device{}()) << 32) ^
                                      std::random_device{}();
    std::mt19937_64 rng(seed);
    arrow::BooleanBuilder mask;
    ARROW_RETURN_NOT_OK(mask.Reserve(rows));
    int64_t kept = 0;
    for (int64_t i = 0; i < rows; ++i) {
      // A uniform double in [0, 1) from the top 53 bits, kept when below the fraction.
      const bool keep = static_cast<double>(rng() >> 11) * 0x1.0p-53 < fraction_;
      kept += keep;
      mask.UnsafeAppend(keep);
    }
    if (kept == rows) return emit(std::move(block));
    ARROW_ASSIGN_OR_RAISE(auto selection, mask.Finish());
    arrow::compute::ExecContext exec(EngineMemoryPool());
    ARROW_ASSIGN_OR_RAISE(auto filtered, arrow::compute::Filter(block, selection,
                                                                arrow::compute::FilterOptions::Defaults(), &exec));
    return emit(filtered.record_batch());
  }

 private:
  double fraction_;
  std::optional<uint64_t> seed_;
  int64_t task_index_;
  int64_t blocks_ = 0;
};

class RandomSampleTransform : public Transform {
 public:
  RandomSampleTransform(double fraction, RandomSeed seed, std::optional<uint64_t> execution_seed)
      : fraction_(fraction), seed_(std::move(seed)), execution_seed_(execution_seed) {}

  std::string name() const override {
    std::ostringstream out;
    out << "RandomSample(" << fraction_ << ")";
    return out.str();
  }
  bool needs_ordered_input() const override { return seed_.seed.has_value(); }
  bool output_sized_by_input() const override { return true; }
  std::shared_ptr<const Transform> ForExecution() const override {
    return std::make_shared<RandomSampleTransform>(fraction_, seed_, seed_.ForExecution());
  }
  arrow::Result<std::unique_ptr<TransformState>> MakeState(const TaskContext& task) const override {
    return std::make_unique<RandomSampleState>(fraction_, execution_seed_, task.task_index);
  }
  arrow::Result<std::shared_ptr<arrow::Schema>> SchemaOut(
      const std::shared_ptr<arrow::Schema>& input) const override {
    return input;
  }

 private:
  double fraction_;
  RandomSeed seed_;
  /// The seed of the execution this copy belongs to (set by ForExecution).
  std::optional<uint64_t> execution_seed_;
};

}  // namespace

std::shared_ptr<const Transform> MakeRandomSampleTransform(double fraction, RandomSeedConfig seed) {
  RandomSeed random_seed(seed);
  // Before planning (ForExecution), the base seed itself.
  std::optional<uint64_t> first = random_seed.seed;
  return std::make_shared<RandomSampleTransform>(fraction, std::move(random_seed), first);
}

}  // namespace millstream

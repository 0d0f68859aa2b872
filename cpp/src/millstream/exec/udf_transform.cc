#include <algorithm>
#include <chrono>
#include <limits>

#include <arrow/api.h>

#include "exec/schema_unify.h"
#include "exec/transforms.h"

namespace millstream {
namespace {

class UdfTransform;

/// Hands each record batch of `table`, its chunks as they are, to `each`.
template <typename Each>
arrow::Status ForEachBatch(const arrow::Table& table, Each&& each) {
  arrow::TableBatchReader reader(table);
  reader.set_chunksize(std::numeric_limits<int64_t>::max());
  std::shared_ptr<arrow::RecordBatch> out;
  while (true) {
    ARROW_RETURN_NOT_OK(reader.ReadNext(&out));
    if (!out) return arrow::Status::OK();
    ARROW_RETURN_NOT_OK(each(std::move(out)));
  }
}


/// Cuts incoming blocks into batches of exactly `batch_size` rows (the task's last batch
/// may be shorter) and calls the UDF on each; under `call_lock` when one is given (an
/// actor's instance, one call at a time).
class UdfState : public TransformState {
 public:
  UdfState(std::shared_ptr<BatchUdf> udf, std::optional<int64_t> batch_size,
           const TaskContext& task, CancellableLock* call_lock)
      : udf_(std::move(udf)), batch_size_(batch_size), udf_seconds_(task.udf_seconds),
        cancelled_(task.cancelled), call_lock_(call_lock) {}

  arrow::Status Push(Block block, const Emit& emit) override {
    if (!batch_size_) return Call(block, emit);
    if (pending_.empty() && block->num_rows() == *batch_size_) return Call(block, emit);
    int64_t offset = 0;
    while (offset < block->num_rows()) {
      int64_t take = std::min(*batch_size_ - pending_rows_, block->num_rows() - offset);
      pending_.push_back(block->Slice(offset, take));
      pending_rows_ += take;
      offset += take;
      if (pending_rows_ == *batch_size_) ARROW_RETURN_NOT_OK(Flush(emit));
    }
    return arrow::Status::OK();
  }

  arrow::Status Finish(const Emit& emit) override {
    if (pending_rows_ > 0) return Flush(emit);
    return arrow::Status::OK();
  }

 private:
  arrow::Status Flush(const Emit& emit) {
    // The bundled blocks may come from different upstream tasks, with different schemas.
    ARROW_ASSIGN_OR_RAISE(auto batch, ConcatenateBlocks(std::move(pending_)));
    pending_.clear();
    pending_rows_ = 0;
    return Call(batch, emit);
  }

  arrow::Result<std::vector<std::shared_ptr<arrow::Table>>> CallUdf(const Block& batch) {
    CancellableLockHolder serial;
    if (call_lock_) ARROW_RETURN_NOT_OK(serial.Acquire(*call_lock_, cancelled_));
    // Time inside the function only, not the wait for the actor's other call to end.
    auto started = std::chrono::steady_clock::now();
    auto result = udf_->CallAll(batch);
    if (udf_seconds_) {
      *udf_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    }
    return result;
  }

  arrow::Status Call(const Block& batch, const Emit& emit) {
    auto result = CallUdf(batch);
    ARROW_ASSIGN_OR_RAISE(auto tables, std::move(result));
    for (const auto& table : tables) {
      if (!table) return arrow::Status::Invalid("the function returned no batch");
      ARROW_RETURN_NOT_OK(ForEachBatch(*table, emit));
    }
    return arrow::Status::OK();
  }

  std::shared_ptr<BatchUdf> udf_;
  std::optional<int64_t> batch_size_;
  double* udf_seconds_;
  const std::atomic<bool>* cancelled_;
  CancellableLock* call_lock_;
  std::vector<Block> pending_;
  int64_t pending_rows_ = 0;
};

/// Task-pool UDFs run one after another in one call, for UDFs that cannot join their
/// own way (`BatchUdf::Then` gave null): each step is called on every batch of the
/// step before's output, as fused transforms would hand them on.
class SequenceUdf : public BatchUdf {
 public:
  explicit SequenceUdf(std::vector<std::shared_ptr<BatchUdf>> steps) : steps_(std::move(steps)) {}

  arrow::Result<std::shared_ptr<arrow::Table>> Call(const Block& batch) override {
    ARROW_ASSIGN_OR_RAISE(auto tables, CallAll(batch));
    if (tables.size() == 1) return tables[0];
    return arrow::Status::Invalid("a chain of UDFs made ", tables.size(), " tables; use CallAll");
  }

  arrow::Result<std::vector<std::shared_ptr<arrow::Table>>> CallAll(const Block& batch) override {
    std::vector<Block> batches{batch};
    std::vector<std::shared_ptr<arrow::Table>> outputs;
    for (size_t k = 0; k < steps_.size(); ++k) {
      outputs.clear();
      for (const auto& input : batches) {
        ARROW_ASSIGN_OR_RAISE(auto tables, steps_[k]->CallAll(input));
        for (auto& table : tables) {
          if (!table) return arrow::Status::Invalid("the function returned no batch");
          outputs.push_back(std::move(table));
        }
      }
      if (k + 1 == steps_.size()) break;
      batches.clear();
      for (const auto& table : outputs) {
        ARROW_RETURN_NOT_OK(ForEachBatch(*table, [&](std::shared_ptr<arrow::RecordBatch> out) {
          batches.push_back(std::move(out));
          return arrow::Status::OK();
        }));
      }
    }
    return outputs;
  }

 private:
  std::vector<std::shared_ptr<BatchUdf>> steps_;
};

/// One user function, or several consecutive task-pool functions fused into one step
/// (`FuseUdfTransforms`): their instances joined by `BatchUdf::Then`, so a block enters
/// and leaves the chain once. The first step's batch size applies; every later step
/// takes whole batches.
class UdfTransform : public Transform {
 public:
  struct Step {
    BatchUdfFactory factory;
    MapBatchesOptions options;
  };

  UdfTransform(BatchUdfFactory factory, const MapBatchesOptions& options)
      : steps_{Step{std::move(factory), options}}, options_(options) {}
  explicit UdfTransform(std::vector<Step> steps)
      : steps_(std::move(steps)), options_(steps_.front().options) {}

  std::string name() const override {
    std::string name;
    for (const auto& step : steps_) name += (name.empty() ? "" : "->") + step.options.name;
    return name;
  }
  bool row_preserving() const override {
    return std::all_of(steps_.begin(), steps_.end(),
                       [](const Step& step) { return step.options.row_preserving; });
  }

  const std::vector<Step>& steps() const { return steps_; }

  arrow::Result<std::unique_ptr<TransformState>> MakeState(
      const TaskContext& task) const override {
    std::shared_ptr<BatchUdf> udf;
    CancellableLock* call_lock = nullptr;
    if (task.actor && options_.compute.kind == ComputeStrategy::Kind::kActors) {
      // One instance per actor, built by the actor's first task. (A function fused into
      // the actor's tasks keeps its one shared instance, called without the actor's lock.)
      if (!task.concurrent_calls) call_lock = &task.actor->call_lock;
      CancellableLockHolder lock;
      ARROW_RETURN_NOT_OK(lock.Acquire(task.actor->instances_lock, task.cancelled));
      auto& slot = task.actor->instances[this];
      if (!slot) {
        ARROW_ASSIGN_OR_RAISE(auto made, MakeInstance());
        slot = made;
        task.actor->constructed += 1;
      }
      udf = std::static_pointer_cast<BatchUdf>(slot);
    } else {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!shared_) {
        ARROW_ASSIGN_OR_RAISE(shared_, steps_.size() == 1 ? MakeInstance() : MakeChain());
      }
      udf = shared_;
    }
    return std::make_unique<UdfState>(std::move(udf), options_.batch_size, task, call_lock);
  }

 private:
  arrow::Result<std::shared_ptr<BatchUdf>> MakeInstance(size_t k = 0) const {
    const auto& step = steps_[k];
    auto made = step.factory();
    if (!made.ok()) return made.status().WithMessage(
        "constructing ", step.options.name, " failed: ", made.status().message());
    if (!*made) return arrow::Status::Invalid(step.options.name, ": the UDF factory made nothing");
    return made;
  }

  /// The steps' instances joined into one UDF: by `Then` where they can, else in sequence.
  arrow::Result<std::shared_ptr<BatchUdf>> MakeChain() const {
    std::vector<std::shared_ptr<BatchUdf>> parts;
    for (size_t k = 0; k < steps_.size(); ++k) {
      ARROW_ASSIGN_OR_RAISE(auto instance, MakeInstance(k));
      if (!parts.empty()) {
        if (auto joined = parts.back()->Then(instance)) {
          parts.back() = std::move(joined);
          continue;
        }
      }
      parts.push_back(std::move(instance));
    }
    if (parts.size() == 1) return parts[0];
    return std::make_shared<SequenceUdf>(std::move(parts));
  }

  std::vector<Step> steps_;
  MapBatchesOptions options_;  // the first step's (batch size, compute)
  // Task pools share one instance, made by the first task that needs it.
  mutable std::mutex mutex_;
  mutable std::shared_ptr<BatchUdf> shared_;
};

}  // namespace

std::shared_ptr<const Transform> MakeUdfTransform(BatchUdfFactory factory,
                                                  const MapBatchesOptions& options) {
  return std::make_shared<UdfTransform>(std::move(factory), options);
}

std::shared_ptr<const Transform> FuseUdfTransforms(const Transform& first, const Transform& second) {
  const auto* a = dynamic_cast<const UdfTransform*>(&first);
  const auto* b = dynamic_cast<const UdfTransform*>(&second);
  if (!a || !b) return nullptr;
  auto tasks = [](const UdfTransform::Step& step) {
    return step.options.compute.kind == ComputeStrategy::Kind::kTasks;
  };
  // An actor's instance is its own and called under its lock; a batch size after the
  // first step would re-cut what the step before made.
  if (!std::all_of(a->steps().begin(), a->steps().end(), tasks) ||
      !std::all_of(b->steps().begin(), b->steps().end(), tasks) ||
      b->steps().front().options.batch_size) {
    return nullptr;
  }
  std::vector<UdfTransform::Step> steps = a->steps();
  steps.insert(steps.end(), b->steps().begin(), b->steps().end());
  return std::make_shared<UdfTransform>(std::move(steps));
}

}  // namespace millstream

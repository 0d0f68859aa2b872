#include <chrono>

#include <arrow/api.h>

#include "exec/schema_unify.h"
#include "exec/transforms.h"

namespace millstream {
namespace {

class UdfTransform;


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

  arrow::Result<std::shared_ptr<arrow::Table>> CallUdf(const Block& batch) {
    CancellableLockHolder serial;
    if (call_lock_) ARROW_RETURN_NOT_OK(serial.Acquire(*call_lock_, cancelled_));
    // Time inside the function only, not the wait for the actor's other call to end.
    auto started = std::chrono::steady_clock::now();
    auto result = udf_->Call(batch);
    if (udf_seconds_) {
      *udf_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    }
    return result;
  }

  arrow::Status Call(const Block& batch, const Emit& emit) {
    auto result = CallUdf(batch);
    ARROW_ASSIGN_OR_RAISE(auto table, std::move(result));
    if (!table) return arrow::Status::Invalid("the function returned no batch");
    arrow::TableBatchReader reader(*table);
    reader.set_chunksize(std::numeric_limits<int64_t>::max());
    std::shared_ptr<arrow::RecordBatch> out;
    while (true) {
      ARROW_RETURN_NOT_OK(reader.ReadNext(&out));
      if (!out) break;
      ARROW_RETURN_NOT_OK(emit(std::move(out)));
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

class UdfTransform : public Transform {
 public:
  UdfTransform(BatchUdfFactory factory, const MapBatchesOptions& options)
      : factory_(std::move(factory)), options_(options) {}

  std::string name() const override { return options_.name; }
  bool row_preserving() const override { return options_.row_preserving; }

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
        ARROW_ASSIGN_OR_RAISE(shared_, MakeInstance());
      }
      udf = shared_;
    }
    return std::make_unique<UdfState>(std::move(udf), options_.batch_size, task, call_lock);
  }

 private:
  arrow::Result<std::shared_ptr<BatchUdf>> MakeInstance() const {
    auto made = factory_();
    if (!made.ok()) return made.status().WithMessage(
        "constructing ", options_.name, " failed: ", made.status().message());
    if (!*made) return arrow::Status::Invalid(options_.name, ": the UDF factory made nothing");
    return made;
  }

  BatchUdfFactory factory_;
  MapBatchesOptions options_;
  // Task pools share one instance, made by the first task that needs it.
  mutable std::mutex mutex_;
  mutable std::shared_ptr<BatchUdf> shared_;
};

}  // namespace

std::shared_ptr<const Transform> MakeUdfTransform(BatchUdfFactory factory,
                                                  const MapBatchesOptions& options) {
  return std::make_shared<UdfTransform>(std::move(factory), options);
}

}  // namespace millstream

#include "exec/streaming_executor.h"

#include <time.h>

#include <algorithm>
#include <cmath>

#include "exec/block_shaper.h"
#include "runtime/memory.h"

namespace millstream {

namespace {

bool IsCancellation(const arrow::Status& status) {
  return status.code() == arrow::StatusCode::Cancelled;
}

/// Worker threads for a CPU limit: one per CPU slot, at most 4 per core (and at least 256
/// allowed), so a cluster-sized limit (`cpu=40000`) keeps its slots without 40000 threads.
int WorkerThreads(double cpu) {
  const double cap = std::max(256.0, 4.0 * std::thread::hardware_concurrency());
  return static_cast<int>(std::clamp(std::ceil(cpu), 1.0, cap));
}

double ThreadCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

}  // namespace

std::string PhysicalPlan::ToString() const {
  std::string out = "Input[" + std::to_string(read_tasks.size()) + " read tasks]";
  for (const auto& op : operators) out += " -> " + op->Describe();
  return out + "\n";
}

arrow::Result<PhysicalPlan> PlanPhysical(const PlanPtr& optimized, const DataContext& context) {
  ARROW_RETURN_NOT_OK(context.Validate());
  PhysicalPlan plan;
  auto limits = ResolveLimits(context);
  const auto chain = PlanChain(optimized);
  for (size_t index = 0; index < chain.size(); ++index) {
    const auto& logical = chain[index];
    auto op = std::make_unique<PhysicalOperator>();
    op->logical = logical;
    using Kind = LogicalOperator::Kind;
    if (logical->kind == Kind::kLimit) {
      op->kind = PhysicalOperator::Kind::kLimit;
      op->name = std::to_string(logical->limit);
    } else {
      op->kind = PhysicalOperator::Kind::kMap;
      op->name = logical->Name();
      if (op->spec().num_cpus > limits.cpu) {
        return arrow::Status::Invalid(op->name, " asks for num_cpus=", op->spec().num_cpus,
                                      " per task but the CPU limit is ", limits.cpu,
                                      "; lower num_cpus or raise resource_limits.cpu");
      }
      if (const auto& compute = op->spec().compute; compute.kind == ComputeStrategy::Kind::kActors) {
        if (compute.min_size < 1 || compute.max_size < compute.min_size) {
          return arrow::Status::Invalid(op->name, ": an actor pool needs 1 <= min_size <= max_size; got ",
                                        compute.min_size, ", ", compute.max_size);
        }
        if (compute.max_tasks_in_flight_per_actor < 1) {
          return arrow::Status::Invalid(op->name, ": max_tasks_in_flight_per_actor must be >= 1, got ",
                                        compute.max_tasks_in_flight_per_actor);
        }
        if (compute.max_concurrency < 1) {
          return arrow::Status::Invalid(op->name, ": max_concurrency must be >= 1, got ",
                                        compute.max_concurrency);
        }
      }
      if (op->spec().num_gpus > limits.gpu) {
        return arrow::Status::Invalid(op->name, " asks for num_gpus=", op->spec().num_gpus,
                                      " per task but ", limits.gpu,
                                      " GPUs are available; set resource_limits.gpu if the "
                                      "machine has GPUs, or drop num_gpus");
      }
      if (op->spec().memory > limits.memory) {
        return arrow::Status::Invalid(op->name, " asks for memory=", op->spec().memory,
                                      " bytes per task but the memory limit "
                                      "(object_store_memory) is ", limits.memory,
                                      " bytes; lower memory or raise the limit");
      }
      if (logical->source) {
        if (!plan.operators.empty()) {
          return arrow::Status::Invalid("a read must be the first operator of a plan");
        }
        ReadTaskOptions read_options;
        read_options.parallelism = logical->override_num_blocks.value_or(0);
        read_options.min_tasks = context.read_op_min_num_blocks;
        read_options.target_max_block_size = context.target_max_block_size;
        // Read -> (row-preserving steps) -> Limit[n]: no more than n rows are needed.
        const bool row_preserving = std::all_of(
            logical->transforms.begin(), logical->transforms.end(),
            [](const auto& t) { return t->row_preserving(); });
        if (row_preserving && index + 1 < chain.size() &&
            chain[index + 1]->kind == Kind::kLimit) {
          read_options.row_limit = chain[index + 1]->limit;
        }
        ARROW_ASSIGN_OR_RAISE(plan.read_tasks, logical->source->GetReadTasks(read_options));
      }
    }
    op->stats.name = op->Describe();
    plan.operators.push_back(std::move(op));
  }
  if (plan.operators.empty() || plan.operators.front()->kind != PhysicalOperator::Kind::kMap) {
    return arrow::Status::Invalid("a plan must start with a read");
  }
  // A limit keeps the first rows: everything upstream of one hands on its output in order.
  bool limit_downstream = false;
  for (size_t i = plan.operators.size(); i-- > 0;) {
    auto& op = *plan.operators[i];
    op.ordered = context.execution_options.preserve_order || limit_downstream;
    limit_downstream = limit_downstream || op.kind == PhysicalOperator::Kind::kLimit;
  }
  return plan;
}

Execution::Execution(PhysicalPlan plan, const DataContext& context)
    : context_(context), limits_(ResolveLimits(context)), plan_(std::move(plan)),
      ops_(plan_.operators), start_(std::chrono::steady_clock::now()) {
  MemoryReturn::ExecutionStarted();
}

arrow::Result<std::unique_ptr<Execution>> Execution::Start(PhysicalPlan plan,
                                                           const DataContext& context) {
  ARROW_RETURN_NOT_OK(context.Validate());
  std::unique_ptr<Execution> execution(new Execution(std::move(plan), context));
  ARROW_ASSIGN_OR_RAISE(execution->pool_, ThreadPool::Make(WorkerThreads(execution->limits_.cpu)));
  auto& first = *execution->ops_.front();
  for (auto& task : execution->plan_.read_tasks) {
    RefBundle bundle;
    bundle.read_tasks.push_back(task);
    bundle.rows = task->estimated_rows();
    execution->estimated_input_rows_ += bundle.rows;
    first.input_queue.push_back(std::move(bundle));
  }
  first.inputs_done = true;
  // A limit of 0 needs nothing from upstream: run none of it.
  for (size_t i = 0; i < execution->ops_.size(); ++i) {
    auto& op = *execution->ops_[i];
    if (op.kind == PhysicalOperator::Kind::kLimit && op.spec().limit <= 0) {
      execution->StopUpstream(i);
      op.inputs_done = true;
    }
  }
  {
    std::unique_lock<std::mutex> lock(execution->mutex_);
    execution->Drive(lock);
  }
  return execution;
}

Execution::~Execution() {
  Cancel();
  {
    // Running tasks end early once cancelled; wait for the last one to report.
    std::unique_lock<std::mutex> lock(mutex_);
    consumer_wake_.wait(lock, [this] { return running_tasks_ == 0; });
  }
  pool_.reset();
  int64_t produced = 0;
  for (const auto& op : ops_) produced += op->stats.bytes_out;
  // The blocks still queued go now; give what was freed back to the system.
  plan_.operators.clear();
  plan_.read_tasks.clear();
  MemoryReturn::ExecutionEnded(produced);
}

bool Execution::WaitForTasks(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  auto idle = [this] { return running_tasks_ == 0; };
  if (timeout.count() < 0) {
    consumer_wake_.wait(lock, idle);
    return true;
  }
  return consumer_wake_.wait_for(lock, timeout, idle);
}

double Execution::Now() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Execution::Cancel() {
  std::unique_lock<std::mutex> lock(mutex_);
  if (!cancelled_) {
    cancelled_ = true;
    for (auto& op : ops_) *op->stopped = true;
  }
  Drive(lock);
}

void Execution::Fail(arrow::Status status) {
  if (error_.ok()) error_ = std::move(status);
  cancelled_ = true;
  for (auto& op : ops_) *op->stopped = true;
  consumer_wake_.notify_all();
}

void Execution::Post(Event event) {
  // The posting worker runs the scheduling pass itself: no hand-off to another thread,
  // and the task it launches next is usually picked up by this same thread.
  std::unique_lock<std::mutex> lock(mutex_);
  events_.push_back(std::move(event));
  Drive(lock);
}

arrow::Result<Block> Execution::Next(std::chrono::milliseconds timeout, bool* timed_out) {
  std::unique_lock<std::mutex> lock(mutex_);
  auto& last = *ops_.back();
  auto ready = [&] {
    return !error_.ok() || !last.output_queue.empty() || finished_ || cancelled_;
  };
  if (timed_out) *timed_out = false;
  if (timeout.count() < 0) {
    consumer_wake_.wait(lock, ready);
  } else if (!consumer_wake_.wait_for(lock, timeout, ready)) {
    if (timed_out) *timed_out = true;
    return nullptr;
  }
  if (!error_.ok()) return error_;
  if (cancelled_) return arrow::Status::Cancelled("the execution was cancelled");
  if (!last.output_queue.empty()) {
    Block block = std::move(last.output_queue.front());
    last.output_queue.pop_front();
    last.output_bytes -= BlockBytes(*block);
    Drive(lock);  // room freed: launch what the budget now allows
    return block;
  }
  return nullptr;
}

void Execution::Drive(std::unique_lock<std::mutex>& lock) {
  auto events = std::move(events_);
  events_.clear();
  for (auto& event : events) ProcessEvent(event);
  // What the events still hold (dropped blocks, extra errors) and retired actors may own
  // Python objects whose release takes the GIL: let them go outside the lock.
  auto retired = std::move(retired_actors_);
  retired_actors_.clear();
  if (!events.empty() || !retired.empty()) {
    lock.unlock();
    events.clear();
    retired.clear();
    lock.lock();
  }
  for (size_t i = 0; i < ops_.size(); ++i) Forward(i);
  // Completion flows downstream.
  for (size_t i = 0; i + 1 < ops_.size(); ++i) {
    if (ops_[i]->Completed() && ops_[i]->output_queue.empty()) ops_[i + 1]->inputs_done = true;
  }
  ScaleActorPools();
  if (!cancelled_) {
    if (!TryLaunch(false) && running_tasks_ == 0 && ops_.back()->output_queue.empty()) {
      TryLaunch(true);  // liveness: nothing runs and the consumer waits
    }
  }
  UpdatePeaks();
  if (ops_.back()->Completed() && !finished_) {
    finished_ = true;
    end_s_ = Now();
  }
  if ((finished_ || cancelled_) && running_tasks_ == 0 && end_s_ < 0) end_s_ = Now();
  // Wakes the consumer (output, end, error) and a destructor waiting for tasks to drain.
  consumer_wake_.notify_all();
}

void Execution::ProcessEvent(Event& event) {
  auto& op = *ops_[event.op];
  auto it = op.running.find(event.task);
  if (it == op.running.end()) return;
  auto& task = it->second;
  if (event.sunk) {
    if (*op.stopped) return;
    op.stats.blocks_out += 1;
    op.stats.rows_out += event.sunk_rows;
    op.stats.bytes_out += event.sunk_bytes;
    task.sunk_blocks += 1;
    task.sunk_rows += event.sunk_rows;
    task.sunk_bytes += event.sunk_bytes;
    task.output_rows += event.sunk_rows;
    NotePeak(event.op, event.sunk_bytes);  // alive in the task until it was written
    return;
  }
  if (!event.done) {
    if (*op.stopped) return;  // a satisfied limit or a failure: drop late output
    int64_t bytes = BlockBytes(*event.block);
    op.stats.blocks_out += 1;
    op.stats.rows_out += event.block->num_rows();
    op.stats.bytes_out += bytes;
    task.produced_bytes += bytes;
    task.output_bytes += bytes;
    task.output_rows += event.block->num_rows();
    task.produced.push_back(std::move(event.block));
    NotePeak(event.op, 0);  // before it moves on (a limit passes it straight through)
  } else {
    task.done = true;
    op.active_tasks -= 1;
    running_tasks_ -= 1;
    cpus_in_use_ -= op.TaskCpus();
    gpus_in_use_ -= op.TaskGpus();
    if (task.actor) task.actor->running -= 1;
    op.stats.task_wall_s += event.wall_s;
    op.stats.cpu_s += event.cpu_s;
    op.stats.udf_s += event.udf_s;
    op.stats.blocks_in += event.read_blocks;
    op.stats.rows_in += event.read_rows;
    op.stats.bytes_in += event.read_bytes;
    op.finished_tasks += 1;
    op.finished_output_bytes += task.output_bytes;
    op.finished_rows_in += task.input_rows;
    op.finished_rows_out += task.output_rows;
    if (!event.status.ok() && !(IsCancellation(event.status) && (*op.stopped || cancelled_))) {
      int64_t tolerated = context_.max_errored_blocks;
      if (tolerated < 0 || errored_tasks_ < tolerated) {
        // Tolerated: drop what the task has not yet handed on, keep going.
        errored_tasks_ += 1;
        op.stats.errored_tasks += 1;
        task.produced.clear();
        task.produced_bytes = 0;
        // What it wrote is never committed: not output.
        op.stats.blocks_out -= task.sunk_blocks;
        op.stats.rows_out -= task.sunk_rows;
        op.stats.bytes_out -= task.sunk_bytes;
        task.output_rows -= task.sunk_rows;
      } else {
        Fail(event.status.WithMessage(op.name, ": ", event.status.message()));
      }
    }
  }
  // Release outputs: all at once, or in task order (preserve_order, or before a limit).
  const bool ordered = op.ordered;
  for (auto t = ordered ? op.running.begin() : it; t != op.running.end();) {
    auto& running = t->second;
    while (!running.produced.empty()) {
      Block block = std::move(running.produced.front());
      running.produced.pop_front();
      int64_t bytes = BlockBytes(*block);
      running.produced_bytes -= bytes;
      running.input_bytes = 0;  // the input is consumed once output flows
      op.output_bytes += bytes;
      op.output_queue.push_back(std::move(block));
    }
    if (running.done) {
      t = op.running.erase(t);
      if (!ordered) break;
      continue;
    }
    break;
  }
  if (*op.stopped) {
    op.output_queue.clear();
    op.output_bytes = 0;
  }
}

void Execution::PushOutput(size_t i, Block block) {
  auto& op = *ops_[i];
  op.output_bytes += BlockBytes(*block);
  op.output_queue.push_back(std::move(block));
}

void Execution::Forward(size_t i) {
  if (i + 1 >= ops_.size()) return;
  auto& op = *ops_[i];
  auto& next = *ops_[i + 1];
  while (!op.output_queue.empty()) {
    Block block = std::move(op.output_queue.front());
    op.output_queue.pop_front();
    int64_t bytes = BlockBytes(*block);
    op.output_bytes -= bytes;
    if (*next.stopped) continue;
    next.stats.blocks_in += 1;
    next.stats.rows_in += block->num_rows();
    next.stats.bytes_in += bytes;
    if (next.kind == PhysicalOperator::Kind::kLimit) {
      int64_t remaining = next.spec().limit - next.rows_passed;
      if (remaining <= 0) continue;
      if (block->num_rows() > remaining) block = block->Slice(0, remaining);
      next.rows_passed += block->num_rows();
      next.stats.blocks_out += 1;
      next.stats.rows_out += block->num_rows();
      next.stats.bytes_out += BlockBytes(*block);
      PushOutput(i + 1, std::move(block));
      if (next.rows_passed >= next.spec().limit) {
        StopUpstream(i + 1);
        next.inputs_done = true;
      }
      continue;
    }
    next.input_rows += block->num_rows();
    next.input_bytes += bytes;
    next.input_queue.push_back(RefBundle::Of(std::move(block)));
  }
}

void Execution::StopUpstream(size_t limit_op) {
  for (size_t j = 0; j < limit_op; ++j) {
    auto& op = *ops_[j];
    *op.stopped = true;
    op.input_queue.clear();
    op.input_rows = op.input_bytes = 0;
    op.inputs_done = true;
    op.output_queue.clear();
    op.output_bytes = 0;
    for (auto& [id, task] : op.running) {
      task.produced.clear();
      task.produced_bytes = 0;
    }
  }
}

int64_t Execution::OperatorUsage(size_t i) const {
  const auto& op = *ops_[i];
  int64_t bytes = op.TaskBytes() + op.output_bytes;
  if (i + 1 < ops_.size()) bytes += ops_[i + 1]->input_bytes;
  return bytes;
}

int64_t Execution::TotalUsage() const {
  int64_t total = 0;
  for (size_t i = 0; i < ops_.size(); ++i) total += OperatorUsage(i);
  return total;
}

int64_t Execution::EstimateTaskOutput(size_t i) const {
  const auto& op = *ops_[i];
  if (op.finished_tasks > 0 && op.finished_output_bytes > 0) {
    return op.finished_output_bytes / op.finished_tasks;
  }
  if (op.input_queue.empty()) return 0;
  const auto& front = op.input_queue.front();
  if (!front.read_tasks.empty()) {
    int64_t bytes = 0;
    for (const auto& task : front.read_tasks) bytes += task->estimated_bytes();
    return bytes;
  }
  return std::max<int64_t>(front.bytes, op.spec().min_rows_per_bundle > 0 && front.rows > 0
                                            ? front.bytes * op.spec().min_rows_per_bundle / front.rows
                                            : 0);
}

bool Execution::CanLaunch(size_t i, bool force) {
  auto& op = *ops_[i];
  if (op.kind != PhysicalOperator::Kind::kMap || *op.stopped || !op.HasBundleReady()) return false;
  if (cpus_in_use_ + op.TaskCpus() > limits_.cpu + 1e-9 && running_tasks_ > 0) return false;
  if (gpus_in_use_ + op.TaskGpus() > limits_.gpu + 1e-9) return false;
  if (op.spec().compute.kind == ComputeStrategy::Kind::kTasks) {
    if (op.spec().compute.max_size > 0 && op.active_tasks >= op.spec().compute.max_size) return false;
  } else {
    if (!op.FreeActor()) return false;
  }
  if (force) return true;
  // No finished task to size the next one from: run one first (a UDF's output may be far
  // larger than its input), then size the rest from what it produced.
  if (op.finished_tasks == 0 && op.active_tasks > 0) return false;
  if (DownstreamFull(i)) return false;
  // The memory budget: this operator's reservation plus what is free of the shared part.
  const int64_t limit = limits_.memory;
  int64_t estimate = EstimateTaskOutput(i) + op.spec().memory;
  int64_t total = TotalUsage();
  if (total + estimate > limit) return false;
  if (!context_.op_resource_reservation_enabled) return true;
  double ratio = std::clamp(context_.op_resource_reservation_ratio, 0.0, 1.0);
  int64_t map_ops = 0;
  for (const auto& o : ops_) map_ops += o->kind == PhysicalOperator::Kind::kMap;
  int64_t reserved = static_cast<int64_t>(limit * ratio / std::max<int64_t>(1, map_ops));
  int64_t shared = static_cast<int64_t>(limit * (1 - ratio));
  int64_t shared_used_by_others = 0;
  for (size_t j = 0; j < ops_.size(); ++j) {
    if (j == i || ops_[j]->kind != PhysicalOperator::Kind::kMap) continue;
    shared_used_by_others += std::max<int64_t>(0, OperatorUsage(j) - reserved);
  }
  int64_t mine = OperatorUsage(i) + estimate;
  return std::max<int64_t>(0, mine - reserved) <= shared - shared_used_by_others;
}

bool Execution::TryLaunch(bool force) {
  bool launched_any = false;
  bool launched = true;
  while (launched && !cancelled_) {
    launched = false;
    for (size_t k = ops_.size(); k-- > 0;) {
      auto& op = *ops_[k];
      bool ready = op.kind == PhysicalOperator::Kind::kMap && !*op.stopped && op.HasBundleReady();
      if (CanLaunch(k, force)) {
        if (op.backpressure_since >= 0) {
          op.stats.backpressure_s += Now() - op.backpressure_since;
          op.backpressure_since = -1;
        }
        Launch(k);
        launched = launched_any = true;
        if (force) return true;
        break;
      }
      // Held back by the memory budget (not merely waiting for a free CPU slot).
      if (ready && op.backpressure_since < 0 && !force && CanLaunch(k, /*force=*/true)) {
        op.backpressure_since = Now();
      }
    }
  }
  return launched_any;
}

void Execution::Launch(size_t i) {
  auto& op = *ops_[i];
  RefBundle bundle = op.TakeBundle();
  int64_t task_index = op.next_task_index++;
  RunningTask task;
  task.input_bytes = bundle.bytes;
  task.input_rows = bundle.rows;
  ActorState* actor = nullptr;
  if (op.spec().compute.kind == ComputeStrategy::Kind::kActors) {
    actor = op.FreeActor();
    actor->running += 1;
    task.actor = actor;
  }
  op.running.emplace(task_index, std::move(task));
  op.active_tasks += 1;
  running_tasks_ += 1;
  cpus_in_use_ += op.TaskCpus();
  gpus_in_use_ += op.TaskGpus();
  op.stats.tasks += 1;
  if (i == 0) {  // blocks given to a source operator; what a read makes counts when done
    for (const auto& block : bundle.blocks) {
      op.stats.blocks_in += 1;
      op.stats.rows_in += block->num_rows();
      op.stats.bytes_in += BlockBytes(*block);
    }
  }
  pool_->Submit([this, i, task_index, bundle = std::move(bundle), actor,
                 stopped = op.stopped]() mutable {
    RunTask(i, task_index, std::move(bundle), actor, std::move(stopped));
  });
}

void Execution::RunTask(size_t i, int64_t task_index, RefBundle bundle, ActorState* actor,
                        std::shared_ptr<std::atomic<bool>> stopped) {
  auto started = std::chrono::steady_clock::now();
  double cpu_started = ThreadCpuSeconds();
  double udf_seconds = 0;
  int64_t read_blocks = 0, read_rows = 0, read_bytes = 0;
  const auto& transforms = ops_[i]->spec().transforms;
  auto post = [&](Block block) -> arrow::Status {
    // A read with no transforms after it checks here: a long task stops once not needed.
    if (cancelled_ || *stopped) return arrow::Status::Cancelled("stopped");
    Event output;
    output.op = i;
    output.task = task_index;
    output.block = std::move(block);
    Post(std::move(output));
    return arrow::Status::OK();
  };
  auto run = [&]() -> arrow::Status {
    TaskContext task;
    task.task_index = task_index;
    task.actor = actor;
    task.concurrent_calls = ops_[i]->spec().compute.enable_true_multi_threading;
    task.cancelled = &cancelled_;
    task.udf_seconds = &udf_seconds;
    task.sunk = [&](const arrow::RecordBatch& block) {
      Event written;
      written.op = i;
      written.task = task_index;
      written.sunk = true;
      written.sunk_rows = block.num_rows();
      written.sunk_bytes = BlockBytes(block);
      Post(std::move(written));
    };
    std::vector<std::unique_ptr<TransformState>> states;
    for (const auto& transform : transforms) {
      ARROW_ASSIGN_OR_RAISE(auto state, transform->MakeState(task));
      states.push_back(std::move(state));
    }
    BlockShaper shaper(context_.target_min_block_size, context_.target_max_block_size);
    const size_t n = states.size();
    std::vector<Emit> emits(n + 1);
    emits[n] = [&](Block block) { return shaper.Push(std::move(block), post); };
    for (size_t k = n; k-- > 0;) {
      emits[k] = [&, k](Block block) -> arrow::Status {
        if (cancelled_ || *stopped) return arrow::Status::Cancelled("stopped");
        return states[k]->Push(std::move(block), emits[k + 1]);
      };
    }
    if (!bundle.read_tasks.empty()) {
      // Shape what the read produces before the first transform sees it, so a UDF with
      // batch_size=None gets blocks, not one tiny piece per small file.
      BlockShaper read_shaper(context_.target_min_block_size, context_.target_max_block_size);
      Emit counted = [&](Block block) {
        read_blocks += 1;
        read_rows += block->num_rows();
        read_bytes += BlockBytes(*block);
        return emits[0](std::move(block));
      };
      Emit into_first = [&](Block block) { return read_shaper.Push(std::move(block), counted); };
      for (const auto& read_task : bundle.read_tasks) ARROW_RETURN_NOT_OK(read_task->Run(into_first));
      ARROW_RETURN_NOT_OK(read_shaper.Finish(counted));
    }
    for (auto& block : bundle.blocks) ARROW_RETURN_NOT_OK(emits[0](std::move(block)));
    for (size_t k = 0; k < n; ++k) ARROW_RETURN_NOT_OK(states[k]->Finish(emits[k + 1]));
    return shaper.Finish(post);
  };
  arrow::Status status;
  try {
    status = run();
  } catch (const std::exception& e) {
    status = arrow::Status::UnknownError("unexpected exception: ", e.what());
  }
  double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  Event done;
  done.op = i;
  done.task = task_index;
  done.done = true;
  done.status = std::move(status);
  done.wall_s = wall;
  done.cpu_s = ThreadCpuSeconds() - cpu_started;
  done.udf_s = udf_seconds;
  done.read_blocks = read_blocks;
  done.read_rows = read_rows;
  done.read_bytes = read_bytes;
  Post(std::move(done));
}

bool Execution::DownstreamFull(size_t i) const {
  double ratio = context_.downstream_capacity_backpressure_ratio;
  if (ratio <= 0 || i + 1 >= ops_.size()) return false;
  const auto& next = *ops_[i + 1];
  if (next.kind != PhysicalOperator::Kind::kMap) return false;
  double capacity;
  if (next.spec().compute.kind == ComputeStrategy::Kind::kActors) {
    capacity = std::max<double>(1, next.spec().compute.max_size) *
               std::max(1, next.spec().compute.max_concurrency);
  } else if (next.spec().compute.max_size > 0) {
    capacity = next.spec().compute.max_size;
  } else {
    capacity = std::max(1.0, next.spec().num_cpus > 0 ? std::floor(limits_.cpu / next.spec().num_cpus) : limits_.cpu);
  }
  return static_cast<double>(next.input_queue.size()) > ratio * capacity;
}

void Execution::RetireActor(PhysicalOperator& op, size_t index) {
  op.stats.actors_started += op.actors[index]->constructed;
  retired_actors_.push_back(std::move(op.actors[index]));
  op.actors.erase(op.actors.begin() + index);
}

void Execution::ScaleActorPools() {
  const auto& config = context_.autoscaling_config;
  for (auto& op_ptr : ops_) {
    auto& op = *op_ptr;
    if (op.kind != PhysicalOperator::Kind::kMap || op.spec().compute.kind != ComputeStrategy::Kind::kActors) continue;
    const int min_size = std::max(1, op.spec().compute.min_size);
    const int max_size = std::max(min_size, op.spec().compute.max_size);
    if (op.Completed() || *op.stopped) {
      // The pool's work is over: release every idle actor (and with it, its model).
      for (size_t a = op.actors.size(); a-- > 0;) {
        if (op.actors[a]->running == 0) RetireActor(op, a);
      }
      continue;
    }
    if (op.input_queue.empty() && op.actors.empty()) continue;  // not started yet
    while (static_cast<int>(op.actors.size()) < min_size) {
      op.actors.push_back(std::make_unique<ActorState>());
    }
    double actors = static_cast<double>(op.actors.size()) *
                    std::max(1, op.spec().compute.max_tasks_in_flight_per_actor);
    double utilization = (op.active_tasks + static_cast<double>(op.input_queue.size())) / actors;
    bool all_busy = op.FreeActor() == nullptr;
    if (all_busy && utilization >= config.actor_pool_util_upscaling_threshold) {
      int add = std::min(std::max(1, config.actor_pool_max_upscaling_delta),
                         max_size - static_cast<int>(op.actors.size()));
      for (int k = 0; k < add; ++k) op.actors.push_back(std::make_unique<ActorState>());
    } else if (utilization <= config.actor_pool_util_downscaling_threshold &&
               static_cast<int>(op.actors.size()) > min_size) {
      for (size_t a = op.actors.size(); a-- > 0;) {
        if (op.actors[a]->running == 0) {
          RetireActor(op, a);
          break;
        }
      }
    }
    op.stats.peak_actors = std::max<int64_t>(op.stats.peak_actors, op.actors.size());
  }
}

void Execution::NotePeak(size_t i, int64_t extra) {
  ops_[i]->stats.peak_bytes = std::max(ops_[i]->stats.peak_bytes, OperatorUsage(i) + extra);
  peak_bytes_ = std::max(peak_bytes_, TotalUsage() + extra);
}

void Execution::UpdatePeaks() {
  int64_t total = 0;
  for (size_t i = 0; i < ops_.size(); ++i) {
    int64_t usage = OperatorUsage(i);
    ops_[i]->stats.peak_bytes = std::max(ops_[i]->stats.peak_bytes, usage);
    total += usage;
  }
  peak_bytes_ = std::max(peak_bytes_, total);
}

ExecutionStats Execution::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  ExecutionStats stats;
  int64_t estimate = estimated_input_rows_;
  for (const auto& op : ops_) {
    OperatorStats snapshot = op->stats;
    snapshot.active_tasks = op->active_tasks;
    snapshot.queued_bundles = static_cast<int64_t>(op->input_queue.size());
    snapshot.queued_bytes = op->input_bytes;
    snapshot.actors = static_cast<int64_t>(op->actors.size());
    snapshot.actors_started = op->stats.actors_started;
    for (const auto& actor : op->actors) snapshot.actors_started += actor->constructed;
    snapshot.done = op->Completed() || *op->stopped;
    if (op->kind == PhysicalOperator::Kind::kLimit) {
      estimate = std::min(estimate, op->spec().limit);
    } else if (op->finished_rows_in > 0 && !op->Completed()) {
      // Selectivity of finished tasks only: running ones have input but partial output.
      estimate = static_cast<int64_t>(estimate * (double(op->finished_rows_out) / op->finished_rows_in));
    } else if (op->Completed()) {
      estimate = op->stats.rows_out;
    }
    snapshot.estimated_rows_out = std::max(estimate, snapshot.rows_out);
    if (op->Completed()) snapshot.estimated_rows_out = snapshot.rows_out;
    estimate = snapshot.estimated_rows_out;
    stats.operators.push_back(std::move(snapshot));
  }
  stats.wall_s = end_s_ >= 0 ? end_s_ : Now();
  stats.peak_bytes = peak_bytes_;
  stats.held_bytes = TotalUsage();
  stats.memory_limit = limits_.memory;
  stats.finished = finished_;
  return stats;
}

int64_t Execution::accounted_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return TotalUsage();
}

}  // namespace millstream

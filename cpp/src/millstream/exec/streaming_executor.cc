#include "exec/streaming_executor.h"

#include <time.h>

#include <algorithm>
#include <cmath>

#include "runtime/counting_memory_pool.h"
#include "runtime/memory.h"

namespace millstream {

namespace {

bool IsCancellation(const arrow::Status& status) {
  return status.code() == arrow::StatusCode::Cancelled;
}

double ThreadCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/// The thread's CPU clock when its last task ended. The thread CPU clock is a system call
/// (no vDSO), a measurable share of a small block's task: a worker reads it once per task,
/// and a task's CPU time starts where the thread's previous task ended (what the thread
/// did in between, waiting aside, is the scheduling pass that launched this task).
thread_local double t_task_cpu_end = -1;

}  // namespace

Execution::Execution(PhysicalPlan plan, const DataContext& context)
    : context_(context), limits_(ResolveLimits(context)), plan_(std::move(plan)),
      ops_(plan_.operators), policies_(DefaultBackpressurePolicies()),
      forwarded_done_(ops_.size(), false), task_resources_(ops_.size()),
      task_meters_(ops_.size()), scratch_peaks_(ops_.size(), 0),
      start_(std::chrono::steady_clock::now()) {
  MemoryReturn::ExecutionStarted();
}

arrow::Result<std::unique_ptr<Execution>> Execution::Start(PhysicalPlan plan,
                                                           const DataContext& context,
                                                           std::unique_ptr<Backend> backend) {
  ARROW_RETURN_NOT_OK(context.Validate());
  if (plan.operators.empty()) return arrow::Status::Invalid("an empty physical plan");
  std::unique_ptr<Execution> execution(new Execution(std::move(plan), context));
  if (backend) {
    execution->backend_ = std::move(backend);
  } else {
    ARROW_ASSIGN_OR_RAISE(execution->backend_, MakeLocalBackend(execution->limits_.cpu));
  }
  {
    std::unique_lock<std::mutex> lock(execution->mutex_);
    // A satisfied operator (a limit of 0) needs nothing from upstream: run none of it.
    for (size_t i = 0; i < execution->ops_.size(); ++i) {
      if (execution->ops_[i]->InputSatisfied()) execution->StopUpstream(i);
    }
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
  backend_.reset();
  int64_t produced = 0;
  for (const auto& op : ops_) produced += op->stats.bytes_out;
  // The blocks still queued go now; give what was freed back to the system.
  plan_.operators.clear();
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
    for (auto& op : ops_) *op->stop_flag() = true;
  }
  Drive(lock);
}

void Execution::Fail(arrow::Status status) {
  if (error_.ok()) error_ = std::move(status);
  cancelled_ = true;
  for (auto& op : ops_) *op->stop_flag() = true;
  consumer_wake_.notify_all();
}

void Execution::Post(Event event) {
  // The posting worker runs the scheduling pass itself: no hand-off to another thread,
  // and the task it launches next is usually picked up by this same thread.
  std::unique_lock<std::mutex> lock(mutex_);
  events_.push_back(std::move(event));
  Drive(lock);
}

void Execution::Post(std::vector<Event> events) {
  std::unique_lock<std::mutex> lock(mutex_);
  for (auto& event : events) events_.push_back(std::move(event));
  Drive(lock);
}

arrow::Result<Block> Execution::Next(std::chrono::milliseconds timeout, bool* timed_out) {
  std::unique_lock<std::mutex> lock(mutex_);
  auto& last = *ops_.back();
  auto ready = [&] { return ConsumerReady(); };
  if (timed_out) *timed_out = false;
  if (timeout.count() < 0) {
    consumer_wake_.wait(lock, ready);
  } else if (!consumer_wake_.wait_for(lock, timeout, ready)) {
    if (timed_out) *timed_out = true;
    return nullptr;
  }
  if (!error_.ok()) return error_;
  if (cancelled_) return arrow::Status::Cancelled("the execution was cancelled");
  // The consumer gets blocks one at a time; the rest of a bundle waits here.
  while (consumer_blocks_.empty() && last.HasNext()) {
    for (auto& ref : last.TakeNext().blocks) consumer_blocks_.push_back(std::move(ref));
  }
  if (consumer_blocks_.empty()) return nullptr;
  BlockRef ref = std::move(consumer_blocks_.front());
  consumer_blocks_.pop_front();
  Drive(lock);  // room freed: launch what the budget now allows
  return ref.Get();
}

void Execution::Drive(std::unique_lock<std::mutex>& lock) {
  auto events = std::move(events_);
  events_.clear();
  for (auto& event : events) ProcessEvent(event);
  for (size_t i = 0; i < ops_.size(); ++i) ops_[i]->Scale(retired_actors_);
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
  const int64_t total = TotalUsage();
  for (size_t i = 0; i < ops_.size(); ++i) {
    ops_[i]->SetMemoryBudget(limits_.memory - (total - OperatorUsage(i)));
  }
  if (!cancelled_) {
    if (!TryLaunch(false) && running_tasks_ == 0 && !ops_.back()->HasNext() &&
        consumer_blocks_.empty()) {
      TryLaunch(true);  // liveness: nothing runs and the consumer waits
    }
  }
  UpdatePeaks();
  if (ops_.back()->Completed() && !ops_.back()->HasNext() && consumer_blocks_.empty() &&
      !finished_) {
    finished_ = true;
    end_s_ = Now();
  }
  if ((finished_ || cancelled_) && running_tasks_ == 0 && end_s_ < 0) end_s_ = Now();
  // Wakes the consumer (output, end, error) and a destructor waiting for tasks to drain;
  // not for an event that gives neither anything to do.
  if (ConsumerReady() || running_tasks_ == 0) consumer_wake_.notify_all();
}

bool Execution::ConsumerReady() const {
  return !error_.ok() || ops_.back()->HasNext() || !consumer_blocks_.empty() || finished_ ||
         cancelled_;
}

void Execution::ProcessEvent(Event& event) {
  auto& op = *ops_[event.op];
  switch (event.kind) {
    case Event::Kind::kOutput:
      op.OnTaskOutput(event.task, std::move(event.block));
      NotePeak(event.op, 0);  // before it moves on (a limit passes it straight through)
      return;
    case Event::Kind::kSunk:
      op.OnTaskSunk(event.task, event.sunk_rows, event.sunk_bytes);
      NotePeak(event.op, event.sunk_bytes);  // alive in the task until it was written
      return;
    case Event::Kind::kDone:
      break;
  }
  running_tasks_ -= 1;
  if (auto m = task_meters_[event.op].find(event.task); m != task_meters_[event.op].end()) {
    scratch_peaks_[event.op] = std::max(scratch_peaks_[event.op], m->second->peak.load());
    task_meters_[event.op].erase(m);
  }
  cpus_in_use_ -= task_resources_[event.op].cpus;
  gpus_in_use_ -= task_resources_[event.op].gpus;
  auto& result = event.result;
  const auto& status = result.status;
  if (!status.ok() && !(IsCancellation(status) && (op.stopped() || cancelled_))) {
    int64_t tolerated = context_.max_errored_blocks;
    if (tolerated < 0 || errored_tasks_ < tolerated) {
      errored_tasks_ += 1;  // tolerated: drop what the task has not handed on, keep going
      result.discard = true;
    } else {
      Fail(status.WithMessage(op.Describe(), ": ", status.message()));
    }
  }
  op.OnTaskDone(event.task, result);
}

void Execution::Forward(size_t i) {
  auto& op = *ops_[i];
  const int d = op.downstream;
  if (d < 0) return;  // the consumer takes the last operator's output
  auto& next = *ops_[d];
  bool forwarded = false;
  while (op.HasNext()) {
    RefBundle bundle = op.TakeNext();
    if (next.stopped()) continue;
    next.AddInput(op.downstream_input, std::move(bundle));
    forwarded = true;
    if (next.InputSatisfied()) StopUpstream(d);
  }
  // Queued downstream, the output still counts as this operator's, until a task takes it
  // (perhaps in this same pass: an operator that passes blocks straight on held them here).
  if (forwarded) NotePeak(i, 0);
  // Completion flows downstream.
  if (!forwarded_done_[i] && op.Completed() && !op.HasNext()) {
    forwarded_done_[i] = true;
    next.InputDone(op.downstream_input);
  }
  if (auto status = next.status(); !status.ok()) {
    Fail(status.WithMessage(next.Describe(), ": ", status.message()));
  }
}

void Execution::StopUpstream(size_t i) {
  for (int u : ops_[i]->upstream) {
    ops_[u]->Stop();
    StopUpstream(u);
  }
  for (int k = 0; k < ops_[i]->num_inputs(); ++k) ops_[i]->InputDone(k);
}

int64_t Execution::OperatorUsage(size_t i) const {
  const auto& op = *ops_[i];
  int64_t bytes = op.CurrentUsage();
  for (const auto& [task, meter] : task_meters_[i]) bytes += meter->Unaccounted();
  if (op.downstream >= 0) bytes += ops_[op.downstream]->QueuedInputBytes();
  return bytes;
}

int64_t Execution::TotalUsage() const {
  int64_t total = 0;
  for (size_t i = 0; i < ops_.size(); ++i) total += OperatorUsage(i);
  for (const auto& ref : consumer_blocks_) total += ref.bytes();
  return total;
}

bool Execution::CanLaunch(size_t i, bool force) const {
  const auto& op = *ops_[i];
  if (!op.HasTaskReady()) return false;
  const auto need = op.NextTaskResources();
  if (cpus_in_use_ + need.cpus > limits_.cpu + 1e-9 && running_tasks_ > 0) return false;
  if (gpus_in_use_ + need.gpus > limits_.gpu + 1e-9) return false;
  if (force) return true;
  for (const auto& policy : policies_) {
    if (!policy->CanLaunch(*this, i)) return false;
  }
  return true;
}

bool Execution::TryLaunch(bool force) {
  bool launched_any = false;
  bool launched = true;
  while (launched && !cancelled_) {
    launched = false;
    for (size_t k = ops_.size(); k-- > 0;) {
      auto& op = *ops_[k];
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
      // Held back by a policy (not merely waiting for a free CPU slot).
      if (!force && op.backpressure_since < 0 && CanLaunch(k, /*force=*/true)) {
        op.backpressure_since = Now();
      }
    }
  }
  return launched_any;
}

void Execution::Launch(size_t i) {
  auto& op = *ops_[i];
  const auto resources = op.NextTaskResources();
  TaskSpec spec = op.LaunchTask();
  auto meter = std::make_shared<TaskMemoryMeter>();
  task_meters_[i][spec.task_index] = meter;
  task_resources_[i] = resources;
  running_tasks_ += 1;
  cpus_in_use_ += resources.cpus;
  gpus_in_use_ += resources.gpus;
  backend_->Submit([this, i, spec = std::move(spec), stopped = op.stop_flag(),
                    meter = std::move(meter)]() mutable {
    ScopedTaskMeter metered(meter.get());
    RunTask(i, std::move(spec), std::move(stopped), meter.get());
  });
}

void Execution::RunTask(size_t i, TaskSpec spec, std::shared_ptr<std::atomic<bool>> stopped,
                        TaskMemoryMeter* meter) {
  auto started = std::chrono::steady_clock::now();
  const double cpu_started = t_task_cpu_end >= 0 ? t_task_cpu_end : ThreadCpuSeconds();
  const int64_t task_index = spec.task_index;
  TaskRunContext run;
  run.context = &context_;
  run.cancelled = &cancelled_;
  run.stopped = [&] { return cancelled_ || *stopped; };
  // Outputs of the task's final flush, handed on with its end (TaskRunContext::finishing).
  // They count as the task's own bytes until then.
  std::vector<Block> ending;
  auto output_event = [&](Block block) {
    // Counted in the operator's queues from now on, not as the task's own bytes.
    meter->emitted.fetch_add(BlockBytes(*block), std::memory_order_relaxed);
    Event output;
    output.op = i;
    output.task = task_index;
    output.block = std::move(block);
    return output;
  };
  run.emit = [&](Block block) -> arrow::Status {
    // A read with no transforms after it checks here: a long task stops once not needed.
    if (cancelled_ || *stopped) return arrow::Status::Cancelled("stopped");
    if (run.finishing) {
      ending.push_back(std::move(block));
      return arrow::Status::OK();
    }
    Post(output_event(std::move(block)));
    return arrow::Status::OK();
  };
  run.sunk = [&](const arrow::RecordBatch& block) {
    Event written;
    written.kind = Event::Kind::kSunk;
    written.op = i;
    written.task = task_index;
    written.sunk_rows = block.num_rows();
    written.sunk_bytes = BlockBytes(block);
    Post(std::move(written));
  };
  arrow::Status status;
  try {
    status = ops_[i]->RunTask(spec, run);
  } catch (const std::exception& e) {
    status = arrow::Status::UnknownError("unexpected exception: ", e.what());
  }
  spec.inputs = RefBundle();  // the task's input goes before it reports
  Event done;
  done.kind = Event::Kind::kDone;
  done.op = i;
  done.task = task_index;
  done.result.status = std::move(status);
  done.result.wall_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  t_task_cpu_end = ThreadCpuSeconds();
  done.result.cpu_s = t_task_cpu_end - cpu_started;
  done.result.udf_s = run.udf_seconds;
  done.result.read_blocks = run.read_blocks;
  done.result.read_rows = run.read_rows;
  done.result.read_bytes = run.read_bytes;
  std::vector<Event> events;
  events.reserve(ending.size() + 1);
  for (auto& block : ending) events.push_back(output_event(std::move(block)));
  events.push_back(std::move(done));
  Post(std::move(events));
}

void Execution::NotePeak(size_t i, int64_t extra) {
  ops_[i]->stats.peak_bytes = std::max(ops_[i]->stats.peak_bytes, OperatorUsage(i) + extra);
  peak_bytes_ = std::max(peak_bytes_, TotalUsage() + extra);
}

void Execution::UpdatePeaks() const {
  for (size_t i = 0; i < ops_.size(); ++i) {
    ops_[i]->stats.peak_bytes = std::max(ops_[i]->stats.peak_bytes, OperatorUsage(i));
  }
  peak_bytes_ = std::max(peak_bytes_, TotalUsage());
}

ExecutionStats Execution::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  UpdatePeaks();
  ExecutionStats stats;
  std::vector<int64_t> estimates(ops_.size(), 0);
  for (size_t i = 0; i < ops_.size(); ++i) {
    const auto& op = *ops_[i];
    int64_t rows_in = 0;
    for (int u : op.upstream) rows_in += estimates[u];
    estimates[i] = op.EstimateRowsOut(rows_in);
    OperatorStats snapshot = op.stats;
    snapshot.name = op.Describe();
    snapshot.display_name = op.display_name();
    snapshot.active_tasks = op.ActiveTasks();
    snapshot.queued_bundles = op.QueuedInputBundles();
    snapshot.queued_bytes = op.QueuedInputBytes();
    snapshot.actors = op.Actors();
    snapshot.actors_started = op.ActorsStarted();
    snapshot.done = op.Completed() || op.stopped();
    snapshot.estimated_rows_out = estimates[i];
    snapshot.peak_task_scratch_bytes = scratch_peaks_[i];
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
  UpdatePeaks();
  return TotalUsage();
}

}  // namespace millstream

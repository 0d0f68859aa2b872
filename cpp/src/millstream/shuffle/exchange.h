#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <arrow/memory_pool.h>
#include <arrow/result.h>
#include <arrow/status.h>

#include "io/datasource.h"
#include "millstream/block.h"
#include "millstream/dataset.h"
#include "runtime/counting_memory_pool.h"
#include "runtime/reservation.h"
#include "runtime/spill_file.h"

namespace millstream {

/// \brief What an exchange's map and reduce tasks run with. Shared by every task of one
/// exchange; the pointees outlive the exchange's tasks.
struct ExchangeContext {
  /// Grown before bytes are held in memory; when it refuses, the exchange spills what it
  /// was about to hold. Must outlive the exchange (blocks it still holds give their bytes
  /// back when the exchange is destroyed).
  MemoryReservation* reservation = nullptr;
  /// Where spilled runs and pieces go.
  SpillDirectory* spill = nullptr;
  /// When set, tasks stop early and return `Cancelled` (null: never).
  const std::atomic<bool>* cancelled = nullptr;
  /// For compute kernels and blocks read back from spill files (the engine's counting
  /// pool). A CountingMemoryPool here must not grow `reservation` too: stored blocks are
  /// counted there already.
  arrow::MemoryPool* pool = EngineMemoryPool();

  /// `Cancelled` once `cancelled` is set, OK otherwise.
  arrow::Status CheckCancelled() const;
};

/// \brief How an exchange sizes its reduce stage and its output.
struct ExchangeOptions {
  /// Reduce tasks (partitions); 0: chosen from the data size and `memory_limit` so one
  /// partition fits comfortably in memory (and at least `parallelism` when there is
  /// enough data).
  int64_t num_partitions = 0;
  /// Output blocks are cut to at most this many bytes (a single row may be larger).
  int64_t target_max_block_size = 128LL << 20;
  /// The memory the exchange may count on (partition sizing; the reservation's cap is
  /// what bounds what it holds).
  int64_t memory_limit = 1LL << 30;
  /// How many reduce tasks run at once (partition sizing).
  int64_t parallelism = 1;
  /// Seed of the random choices of a shuffling repartition (unset: different every run).
  std::optional<uint64_t> seed;
};


/// \brief The data side of an all-to-all operator: a map stage over the input blocks
/// (tasks, in any order, several at once on worker threads), then, once every input block
/// is mapped, a reduce stage of N tasks (several at once) whose outputs the operator hands
/// on in partition order 0..N-1. Thread-safe.
///
/// Every byte it holds between the stages is grown in `ExchangeContext::reservation` first;
/// what the reservation refuses is written to spill files and read back by the reduce
/// task that needs it. Spill files are deleted once read by their last reader, and all of
/// them when the exchange is destroyed.
class Exchange {
 public:
  virtual ~Exchange() = default;
  /// "Sort", "RandomShuffle", "Repartition", "RandomizeBlockOrder", "Aggregate", "Join".
  virtual std::string name() const = 0;
  /// Map task: `index` is the block's position in the input (0, 1, 2... in input order,
  /// deterministic given the input); called once per input block.
  virtual arrow::Status Map(int64_t index, Block block, ExchangeContext& ctx) = 0;
  /// How many inputs it maps (a join has two: 0 left, 1 right).
  virtual int num_inputs() const { return 1; }
  /// Map task over block `index` of input `input` (indices count per input); a
  /// one-input exchange maps it with Map.
  virtual arrow::Status MapInput(int input, int64_t index, Block block, ExchangeContext& ctx) {
    (void)input;
    return Map(index, std::move(block), ctx);
  }
  /// Once, after every Map returned: plans the reduce stage and returns its number of
  /// tasks (0 when no block was mapped).
  virtual arrow::Result<int64_t> FinishMap(ExchangeContext& ctx) = 0;
  /// Reduce task: emits partition `p`'s output blocks, in order (blocks of at most
  /// `target_max_block_size` bytes; a repartition emits exactly one block), each with the
  /// unified schema of all input blocks. Called once per partition, after FinishMap.
  virtual arrow::Status Reduce(int64_t p, const Emit& emit, ExchangeContext& ctx) = 0;
  /// Spills data it holds in memory until `bytes` are given back to the reservation (or
  /// nothing is left to spill) and returns the bytes given back: for the executor when it
  /// lowers the cap under what the exchange holds. Thread-safe at any time (Map and
  /// Reduce tasks wait while it writes); reduce tasks then read the spilled data back.
  virtual arrow::Result<int64_t> Reclaim(int64_t bytes, ExchangeContext& ctx) = 0;
  /// Bytes held in memory now (what it reserved and has not given back).
  virtual int64_t held_bytes() const = 0;
  /// Bytes written to spill files.
  virtual int64_t spilled_bytes() const = 0;
  /// Partitions (and sub-partitions) re-partitioned in the reduce because they did not
  /// fit a reduce task's share (a grace hash join); 0 for other exchanges.
  virtual int64_t regrouped_partitions() const { return 0; }
  /// (Sub-)partitions joined with their larger side streamed in chunks against the whole
  /// smaller side (a key too frequent to split, or a larger side many times the share).
  virtual int64_t streamed_partitions() const { return 0; }
  /// (Sub-)partitions joined by block nested loops: a build side over the share (a key
  /// hot on both sides) joined chunk by chunk against every chunk of the other side.
  virtual int64_t chunked_partitions() const { return 0; }
};

/// \brief The bytes one reduce task's partition may take under `options`: an eighth of
/// the memory limit per reduce task running at once, at most 64 MiB (see
/// ChoosePartitions, which sizes partitions to it, at least 1 MiB each).
int64_t ReduceShare(const ExchangeOptions& options);

/// \brief Reduce tasks for `total_bytes` of input under `options` (at least 1).
int64_t ChoosePartitions(int64_t total_bytes, int64_t total_rows, const ExchangeOptions& options);

/// \brief Emits `block` cut into slices of at most `max_bytes` each (one block if smaller).
arrow::Status EmitSliced(const Block& block, int64_t max_bytes, const Emit& emit);

}  // namespace millstream

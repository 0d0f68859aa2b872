#pragma once

#include <functional>
#include <memory>

#include "exec/operators/map_operator.h"
#include "exec/physical_operator.h"
#include "shuffle/exchange.h"

namespace millstream {

/// The physical operators that are not maps (map_operator.h has those), one file each.
std::unique_ptr<PhysicalOperator> MakeLimitOperator(int64_t limit);
std::unique_ptr<PhysicalOperator> MakeUnionOperator(int num_inputs);
/// Zips its inputs row by row as they stream in (zero-copy slices side by side).
std::unique_ptr<PhysicalOperator> MakeZipOperator(int num_inputs);
/// Runs `exchange` (sort, shuffle, repartition...): map tasks as input streams in, then
/// the reduce tasks, outputs in partition order; spills under `context.spill_directory`.
arrow::Result<std::unique_ptr<PhysicalOperator>> MakeAllToAllOperator(
    std::string name, std::unique_ptr<Exchange> exchange, const DataContext& context);

/// Builds the operator a broadcast join falls back to (the hash join's exchange).
using FallbackFactory = std::function<arrow::Result<std::unique_ptr<PhysicalOperator>>()>;

/// The most bytes a broadcast join's build side may take, whatever the memory limit
/// (its hash table is held whole, by one operator, for the whole execution).
constexpr int64_t kBroadcastJoinMaxBytes = 64LL << 20;
/// The build side cap for a memory limit: min(1/8 of it, kBroadcastJoinMaxBytes).
int64_t BroadcastJoinCap(int64_t memory_limit);
/// Whether a broadcast join of `type` can build on side `build` (0 left, 1 right): the
/// output of each probe row is known from that row alone (inner, and the outer, semi
/// and anti joins that keep or output the probe side), or the output is the build side's
/// rows chosen by the keys the probe side has (its semi and anti joins).
bool BroadcastJoinSupports(JoinType type, int build);
/// A broadcast hash join building on side `build` (0 left, 1 right): collects it, builds
/// one hash table of it (Arrow's Grouper over the keys, null keys never matching), then
/// streams the other side's blocks through it, each joined on its own (output as the
/// exchange's: TakeJoinedRows). Falls back to `make_fallback`'s operator when the build
/// side turns out over `cap` bytes, has no row, or the probe side queues past 2 * cap
/// before the build side is done. `spec.right_keys` filled in.
std::unique_ptr<PhysicalOperator> MakeBroadcastJoinOperator(std::string name, JoinSpec spec, int build,
                                                            int64_t cap, FallbackFactory make_fallback);

}  // namespace millstream

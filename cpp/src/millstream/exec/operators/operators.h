#pragma once

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

}  // namespace millstream

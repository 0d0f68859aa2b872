#pragma once

#include <memory>

#include "exec/operators/map_operator.h"
#include "exec/physical_operator.h"

namespace millstream {

/// The physical operators that are not maps (map_operator.h has those), one file each.
std::unique_ptr<PhysicalOperator> MakeLimitOperator(int64_t limit);
std::unique_ptr<PhysicalOperator> MakeUnionOperator(int num_inputs);

}  // namespace millstream

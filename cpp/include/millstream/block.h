#pragma once

#include <cstdint>
#include <memory>

#include <arrow/record_batch.h>

namespace millstream {

/// \brief The unit of data: an immutable Arrow record batch.
///
/// Blocks are shared between operators and never mutated; slicing a block is zero-copy.
using Block = std::shared_ptr<arrow::RecordBatch>;

/// \brief The bytes of memory a block references, as pyarrow's `nbytes` counts them
/// (Arrow's ReferencedBufferSize): only the sliced part of its buffers, so ten slices of
/// one batch add up to the batch, not ten times it; a dictionary and the data buffers of
/// a string view column whole.
int64_t BlockBytes(const arrow::RecordBatch& block);

}  // namespace millstream

#pragma once

#include <memory>
#include <string>
#include <vector>

#include "shuffle/exchange.h"

namespace millstream {

/// The same join with the sides swapped (left outer becomes right outer, and so on).
JoinType Mirror(JoinType type);

/// \brief Checks a join before it runs and fills in `spec.right_keys` (the left keys when
/// empty): at least one key, as many right keys as left keys, no key named twice,
/// `num_partitions >= 0`. For each side whose schema is given (null: unknown) the keys
/// must be its columns; with both, key types must match (a dictionary counts as its
/// values) and, without suffixes, the output columns must not collide. Errors name the
/// argument or the column.
arrow::Status ValidateJoin(JoinSpec& spec, const std::shared_ptr<arrow::Schema>& left,
                           const std::shared_ptr<arrow::Schema>& right);

/// \brief The output schema of the join of tables with these schemas (see JoinSpec for
/// the columns and their names; keys decoded, as the exchange decodes them); the same
/// errors as ValidateJoin.
arrow::Result<std::shared_ptr<arrow::Schema>> JoinOutputSchema(const JoinSpec& spec,
                                                               const arrow::Schema& left,
                                                               const arrow::Schema& right);

/// \brief Joins `left` with `right` in memory (one partition of a hash join; the tables'
/// chunks are used as they are): Acero's
/// hash join over the key columns and a row number of each side, the hash table built
/// on the side of fewer bytes (the join type mirrored when that is the left), then each
/// output column taken from its side by row number (so payload columns of any type
/// come through). `*built_left` (when given) says whether the left side was built.
/// `spec.right_keys` must be filled in (ValidateJoin).
arrow::Result<Block> JoinPartition(const std::shared_ptr<arrow::Table>& left,
                                   const std::shared_ptr<arrow::Table>& right, const JoinSpec& spec,
                                   arrow::MemoryPool* pool, bool* built_left = nullptr);
/// \brief JoinPartition of two blocks.
arrow::Result<Block> JoinPartition(const Block& left, const Block& right, const JoinSpec& spec,
                                   arrow::MemoryPool* pool, bool* built_left = nullptr);

/// \brief The join's output rows taken by row number from `left` and `right` (each
/// side's dictionary keys already decoded): `rows[s]` indexes side s, a null entry
/// meaning no row of that side (nulls), a null array none of that side at all; `n`
/// rows. Columns, order and names as JoinOutputSchema. The broadcast join's output.
arrow::Result<Block> TakeJoinedRows(const JoinSpec& spec, const arrow::Table& left, const arrow::Table& right,
                                    std::shared_ptr<arrow::Array> rows[2], int64_t n, arrow::MemoryPool* pool);

/// \brief The exchange of a hash join (two inputs: 0 left, 1 right). MapInput decodes a
/// block's dictionary keys, hash-partitions its rows by key (`key_hash.h`; equal keys of
/// both sides land in the same partition, null keys together) and stores them
/// (spilling past the reservation). FinishMap chooses the partitions: at least
/// `spec.num_partitions`, more when the data would make a partition larger than the
/// memory limit allows one reduce task (ChoosePartitions). Reduce p joins partition p
/// of both sides (JoinPartition). A side with no block at all joins as an empty side
/// with only its keys.
arrow::Result<std::unique_ptr<Exchange>> MakeHashJoinExchange(JoinSpec spec, ExchangeOptions options);

}  // namespace millstream

// Exchanges (sort, random_shuffle, randomize_block_order, repartition) driven directly:
// Map every block (from two threads in most tests), FinishMap, Reduce every partition,
// and the result compared with Arrow's own sort_indices/take on the concatenated input.

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "exec/schema_unify.h"
#include "runtime/counting_memory_pool.h"
#include "runtime/reservation.h"
#include "runtime/spill_file.h"
#include "shuffle/random_shuffle.h"
#include "shuffle/randomize_block_order.h"
#include "shuffle/repartition.h"
#include "shuffle/sort.h"
#include "shuffle/stored_block.h"
#include "test_util.h"

#include <arrow/json/from_string.h>

namespace millstream::testing {
namespace {

namespace cp = arrow::compute;
namespace fs = std::filesystem;

using Partitions = std::vector<std::vector<Block>>;

/// Blocks with columns row (unique id, input order), i (int64 0..49, 10% null), d (double
/// in halves, 5% NaN, 5% null), s (string of 20 values, 5% null), ts (timestamp[ms]), dec
/// (decimal128(10, 2)), dict (dictionary<int8, string>).
std::vector<Block> RandomBlocks(uint64_t seed, int blocks, int64_t rows_per_block) {
  std::mt19937_64 rng(seed);
  auto schema = arrow::schema({arrow::field("row", arrow::int64()), arrow::field("i", arrow::int64()),
                               arrow::field("d", arrow::float64()), arrow::field("s", arrow::utf8()),
                               arrow::field("ts", arrow::timestamp(arrow::TimeUnit::MILLI)),
                               arrow::field("dec", arrow::decimal128(10, 2)),
                               arrow::field("dict", arrow::dictionary(arrow::int8(), arrow::utf8()))});
  std::vector<Block> out;
  int64_t row = 0;
  for (int b = 0; b < blocks; ++b) {
    int64_t n = rows_per_block + static_cast<int64_t>(rng() % 7);
    arrow::Int64Builder rows, ints;
    arrow::DoubleBuilder doubles;
    arrow::StringBuilder strings;
    arrow::TimestampBuilder stamps(arrow::timestamp(arrow::TimeUnit::MILLI), arrow::default_memory_pool());
    arrow::Decimal128Builder decimals(arrow::decimal128(10, 2));
    arrow::StringDictionaryBuilder dict;
    for (int64_t k = 0; k < n; ++k) {
      (void)rows.Append(row++);
      if (rng() % 10 == 0) (void)ints.AppendNull(); else (void)ints.Append(rng() % 50);
      uint64_t r = rng() % 20;
      if (r == 0) (void)doubles.AppendNull();
      else if (r == 1) (void)doubles.Append(std::nan(""));
      else (void)doubles.Append(static_cast<double>(static_cast<int64_t>(rng() % 21) - 10) * 0.5);
      if (rng() % 20 == 0) (void)strings.AppendNull();
      else (void)strings.Append("s" + std::to_string(rng() % 20));
      (void)stamps.Append(1700000000000LL + static_cast<int64_t>(rng() % 1000) * 1000);
      (void)decimals.Append(arrow::Decimal128(static_cast<int64_t>(rng() % 2000) - 1000));
      if (rng() % 20 == 0) (void)dict.AppendNull();
      else (void)dict.Append("v" + std::to_string(rng() % 12));
    }
    std::vector<std::shared_ptr<arrow::Array>> columns(7);
    (void)rows.Finish(&columns[0]);
    (void)ints.Finish(&columns[1]);
    (void)doubles.Finish(&columns[2]);
    (void)strings.Finish(&columns[3]);
    (void)stamps.Finish(&columns[4]);
    (void)decimals.Finish(&columns[5]);
    (void)dict.Finish(&columns[6]);
    out.push_back(arrow::RecordBatch::Make(schema, n, columns));
  }
  return out;
}

/// Blocks of one int64 column "x" of random values.
std::vector<Block> Int64Blocks(uint64_t seed, int blocks, int64_t rows) {
  std::mt19937_64 rng(seed);
  std::vector<Block> out;
  for (int b = 0; b < blocks; ++b) {
    arrow::Int64Builder builder;
    (void)builder.Reserve(rows);
    for (int64_t i = 0; i < rows; ++i) builder.UnsafeAppend(static_cast<int64_t>(rng()));
    out.push_back(arrow::RecordBatch::Make(arrow::schema({arrow::field("x", arrow::int64())}), rows,
                                           {builder.Finish().ValueOrDie()}));
  }
  return out;
}

/// The reference: Arrow's stable sort_indices (nulls at end) on the concatenated input,
/// dictionary key columns decoded to sort by their values.
Block ExpectedSort(const std::vector<Block>& blocks, const std::vector<SortKey>& keys) {
  Block all = ConcatenateBlocks(blocks).ValueOrDie();
  std::vector<cp::SortKey> sort_keys;
  arrow::FieldVector fields;
  std::vector<std::shared_ptr<arrow::Array>> columns;
  for (const auto& key : keys) {
    auto column = all->GetColumnByName(key.column);
    if (column->type_id() == arrow::Type::DICTIONARY) {
      column = cp::Cast(*column, static_cast<const arrow::DictionaryType&>(*column->type()).value_type())
                   .ValueOrDie();
    }
    fields.push_back(arrow::field(key.column, column->type()));
    columns.push_back(column);
    sort_keys.emplace_back(key.column, key.descending ? cp::SortOrder::Descending : cp::SortOrder::Ascending,
                           cp::NullPlacement::AtEnd);
  }
  auto key_batch = arrow::RecordBatch::Make(arrow::schema(fields), all->num_rows(), columns);
  auto indices = cp::SortIndices(arrow::Datum(key_batch), cp::SortOptions(sort_keys)).ValueOrDie();
  return cp::Take(arrow::Datum(all), arrow::Datum(indices)).ValueOrDie().record_batch();
}

/// Maps every block from `threads` threads (thread t takes blocks t, t + threads... in
/// reverse order for odd t), finishes, reduces every partition from `threads` threads.
arrow::Result<Partitions> RunExchange(Exchange& exchange, const std::vector<Block>& input,
                                      ExchangeContext& ctx, int threads = 2) {
  std::vector<arrow::Status> statuses(threads);
  auto parallel = [&](int64_t tasks, const std::function<arrow::Status(int64_t)>& task) {
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        std::vector<int64_t> mine;
        for (int64_t i = t; i < tasks; i += threads) mine.push_back(i);
        if (t % 2 == 1) std::reverse(mine.begin(), mine.end());
        for (int64_t i : mine) {
          auto st = task(i);
          if (!st.ok()) { statuses[t] = st; return; }
        }
      });
    }
    for (auto& thread : pool) thread.join();
    for (auto& st : statuses) ARROW_RETURN_NOT_OK(st);
    return arrow::Status::OK();
  };
  ARROW_RETURN_NOT_OK(parallel(static_cast<int64_t>(input.size()),
                               [&](int64_t i) { return exchange.Map(i, input[i], ctx); }));
  ARROW_ASSIGN_OR_RAISE(int64_t n, exchange.FinishMap(ctx));
  Partitions out(n);
  ARROW_RETURN_NOT_OK(parallel(n, [&](int64_t p) {
    return exchange.Reduce(p, [&out, p](Block b) {
      out[p].push_back(std::move(b));
      return arrow::Status::OK();
    }, ctx);
  }));
  return out;
}

std::shared_ptr<arrow::Array> Json(const std::shared_ptr<arrow::DataType>& type, const std::string& json) {
  return arrow::json::ArrayFromJSONString(type, json).ValueOrDie();
}

std::vector<Block> Flatten(const Partitions& partitions) {
  std::vector<Block> out;
  for (const auto& p : partitions) out.insert(out.end(), p.begin(), p.end());
  return out;
}

Block Concat(const Partitions& partitions) { return ConcatenateBlocks(Flatten(partitions)).ValueOrDie(); }

std::vector<int64_t> Column64(const Block& block, const std::string& name) {
  auto column = std::static_pointer_cast<arrow::Int64Array>(block->GetColumnByName(name));
  return std::vector<int64_t>(column->raw_values(), column->raw_values() + column->length());
}

::testing::AssertionResult SameBatch(const Block& actual, const Block& expected) {
  if (actual->Equals(*expected, arrow::EqualOptions::Defaults().nans_equal(true))) {
    return ::testing::AssertionSuccess();
  }
  std::string diff;
  if (!actual->schema()->Equals(*expected->schema())) {
    diff = "schemas " + actual->schema()->ToString() + " vs " + expected->schema()->ToString();
  } else {
    for (int i = 0; i < actual->num_columns(); ++i) {
      if (!actual->column(i)->Equals(*expected->column(i), arrow::EqualOptions::Defaults().nans_equal(true))) {
        diff += actual->schema()->field(i)->name() + " ";
        if (actual->column(i)->type_id() == arrow::Type::DICTIONARY) {
          auto x = std::static_pointer_cast<arrow::DictionaryArray>(actual->column(i));
          auto y = std::static_pointer_cast<arrow::DictionaryArray>(expected->column(i));
          diff += "(dictionaries equal " + std::to_string(x->dictionary()->Equals(*y->dictionary())) +
                  " indices equal " + std::to_string(x->indices()->Equals(*y->indices())) + " types " +
                  x->type()->ToString() + " " + y->type()->ToString() + " nulls " + std::to_string(x->null_count()) + " " + std::to_string(y->null_count()) + ") ";
        }
      }
    }
  }
  return ::testing::AssertionFailure() << "differ: " << diff << "\ngot\n" << actual->ToString().substr(0, 3000)
                                       << "\nexpected\n" << expected->ToString().substr(0, 3000);
}

// ---- Reservation, pool, spill files ----

TEST(MemoryReservation, Arithmetic) {
  MemoryReservation r(100);
  EXPECT_TRUE(r.TryGrow(60));
  EXPECT_FALSE(r.TryGrow(41));  // 101 > 100: refused, unchanged
  EXPECT_EQ(r.size(), 60);
  EXPECT_TRUE(r.TryGrow(40));
  EXPECT_EQ(r.size(), 100);
  r.Grow(50);  // unconditional
  EXPECT_EQ(r.size(), 150);
  EXPECT_EQ(r.peak(), 150);
  r.Shrink(120);
  EXPECT_EQ(r.size(), 30);
  r.SetCap(20);
  EXPECT_EQ(r.cap(), 20);
  EXPECT_FALSE(r.TryGrow(1));
  r.Shrink(30);
  EXPECT_TRUE(r.TryGrow(20));
  EXPECT_EQ(r.peak(), 150);
}

TEST(MemoryReservation, ConcurrentTryGrowNeverPassesTheCap) {
  MemoryReservation r(1000);
  std::atomic<int64_t> granted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        if (r.TryGrow(7)) {
          granted += 7;
          if (i % 3 == 0) { r.Shrink(7); granted -= 7; }
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(r.size(), granted.load());
  EXPECT_LE(r.peak(), 1000);
}

TEST(CountingMemoryPool, CountsAllocationsIntoTheReservation) {
  MemoryReservation r(1 << 30);
  CountingMemoryPool pool(arrow::default_memory_pool(), &r);
  {
    // Arrow rounds a buffer's capacity up to a multiple of 64 bytes: that is what is held.
    ASSIGN_OK(auto buffer, arrow::AllocateResizableBuffer(1000, &pool));
    EXPECT_EQ(pool.bytes_allocated(), buffer->capacity());
    EXPECT_EQ(r.size(), buffer->capacity());
    ASSERT_OK(buffer->Resize(5000));
    EXPECT_GE(buffer->capacity(), 5000);
    EXPECT_EQ(pool.bytes_allocated(), buffer->capacity());
    EXPECT_EQ(pool.max_memory(), buffer->capacity());
  }
  EXPECT_EQ(pool.bytes_allocated(), 0);
  EXPECT_EQ(r.size(), 0);
  EXPECT_GE(pool.max_memory(), 5000);
  EXPECT_GE(pool.num_allocations(), 2);
}

TEST(TaskMemoryMeter, CountsWhatNoReservationOrOutputHolds) {
  CountingMemoryPool pool(arrow::default_memory_pool());
  MemoryReservation r(1 << 30);
  TaskMemoryMeter meter;
  {
    ScopedTaskMeter scoped(&meter);
    EXPECT_EQ(CurrentTaskMeter(), &meter);
    ASSIGN_OK(auto a, arrow::AllocateBuffer(4096, &pool));
    EXPECT_EQ(meter.Unaccounted(), 4096);
    ASSIGN_OK(auto b, arrow::AllocateBuffer(8192, &pool));
    EXPECT_EQ(meter.Unaccounted(), 4096 + 8192);
    r.Grow(8192);  // b is stored: the reservation counts it
    EXPECT_EQ(meter.Unaccounted(), 4096);
    meter.emitted += 4096;  // a is handed on
    EXPECT_EQ(meter.Unaccounted(), 0);
    EXPECT_EQ(meter.peak.load(), 4096 + 8192);
    r.Shrink(8192);
  }
  EXPECT_EQ(CurrentTaskMeter(), nullptr);
  // Nothing moves a meter outside its scope.
  ASSIGN_OK(auto c, arrow::AllocateBuffer(1024, &pool));
  EXPECT_EQ(meter.allocated.load(), 0);
}

TEST(EngineMemoryPool, IsJemallocWhereArrowHasItAndCounts) {
  arrow::MemoryPool* jemalloc = nullptr;
  const bool has_jemalloc = arrow::jemalloc_memory_pool(&jemalloc).ok();
  const char* choice = std::getenv("MILLSTREAM_MEMORY_POOL");
  const bool default_chosen = choice != nullptr && std::string(choice) == "default";
  EXPECT_EQ(EngineMemoryPool()->backend_name(), has_jemalloc && !default_chosen
                                                    ? "jemalloc"
                                                    : arrow::default_memory_pool()->backend_name());
  const int64_t before = EngineMemoryPool()->bytes_allocated();
  {
    ASSIGN_OK(auto buffer, arrow::AllocateBuffer(1 << 20, EngineMemoryPool()));
    EXPECT_GE(EngineMemoryPool()->bytes_allocated() - before, 1 << 20);
  }
}

TEST(TaskMemoryMeter, SortMapScratchIsSeenAndItsStoredRunIsNot) {
  // A map task sorting a 1M-row block through the engine's pool: its scratch (the sort
  // indices, the sorted copy) shows on the meter while it runs; once the run is stored
  // (grown in the reservation) and the input dropped, nothing is left unaccounted.
  Harness h;
  EXPECT_EQ(h.ctx.pool, EngineMemoryPool());
  ExchangeOptions options;
  options.num_partitions = 1;
  auto exchange = MakeSortExchange({{"x"}}, options).ValueOrDie();
  arrow::Int64Builder builder;
  std::mt19937_64 rng(7);
  const int64_t rows = 1 << 20;
  for (int64_t i = 0; i < rows; ++i) ASSERT_OK(builder.Append(static_cast<int64_t>(rng() >> 1)));
  ASSIGN_OK(auto column, builder.Finish());
  Block block = arrow::RecordBatch::Make(arrow::schema({arrow::field("x", arrow::int64())}), rows, {column});
  TaskMemoryMeter meter;
  {
    ScopedTaskMeter scoped(&meter);
    ASSERT_OK(exchange->Map(0, std::move(block), h.ctx));
  }
  EXPECT_GE(meter.peak.load(), rows * 8);  // at least the sorted copy of the column
  EXPECT_GT(h.reservation.size(), 0);
  EXPECT_LE(meter.Unaccounted(), rows * 8 / 16);  // padding and chunk metadata at most
}

TEST(SpillFile, RoundTripAndCleanup) {
  TempDir base;
  std::string dir_path, file_path, kept_path;
  auto blocks = RandomBlocks(1, 3, 100);
  std::unique_ptr<SpillFile> kept;  // outlives the directory: its end removes the file anyway
  {
    ASSIGN_OK(auto dir, SpillDirectory::Make(base.path()));
    dir_path = dir->path();
    EXPECT_FALSE(fs::exists(dir_path));  // made on the first spill only
    EXPECT_EQ(dir_path.rfind(base.path() + "/" + SpillDirectory::Prefix(::getpid()), 0), 0u);
    {
      ASSIGN_OK(auto file, dir->NewFile());
      file_path = file->path();
      for (const auto& b : blocks) ASSERT_OK(file->Write(*b));
      ASSERT_OK(file->Finish());
      EXPECT_GT(file->bytes(), 0);
      EXPECT_EQ(dir->bytes_spilled(), file->bytes());
      EXPECT_EQ(dir->files(), 1);
      ASSIGN_OK(auto all, file->ReadAll());
      ASSERT_EQ(all.size(), 3u);
      for (int i = 0; i < 3; ++i) EXPECT_TRUE(SameBatch(all[i], blocks[i]));
      ASSIGN_OK(auto middle, file->ReadRange(1, 2));
      ASSERT_EQ(middle.size(), 1u);
      EXPECT_TRUE(SameBatch(middle[0], blocks[1]));
      EXPECT_FALSE(file->ReadRange(2, 4).ok());
      EXPECT_TRUE(fs::exists(file_path));
    }
    EXPECT_FALSE(fs::exists(file_path));  // a file is deleted with its object
    ASSIGN_OK(kept, dir->NewFile());
    ASSERT_OK(kept->Write(*blocks[0]));
    ASSERT_OK(kept->Finish());
    kept_path = kept->path();
    EXPECT_TRUE(fs::exists(kept_path));
  }
  EXPECT_FALSE(fs::exists(kept_path));
  EXPECT_FALSE(fs::exists(dir_path));
}

TEST(SpillFile, CompressedSmallerThanTheBlocks) {
  TempDir base;
  ASSIGN_OK(auto dir, SpillDirectory::Make(base.path()));
  ASSIGN_OK(auto file, dir->NewFile());
  auto block = IdTable(100000)->CombineChunksToBatch().ValueOrDie();
  ASSERT_OK(file->Write(*block));
  ASSERT_OK(file->Finish());
  EXPECT_LT(file->bytes(), BlockBytes(*block));
}

TEST(StoredBlock, SpilledPiecesAreThePiecesInMemoryAndEmptyOnesAreNotWritten) {
  TempDir base;
  ASSIGN_OK(auto dir, SpillDirectory::Make(base.path()));
  auto block = IdTable(10)->CombineChunksToBatch().ValueOrDie();
  // Ten rows in 256 pieces: rows 0-3 in piece 5, 4-9 in piece 200, every other piece empty.
  std::vector<int64_t> offsets(257, 0);
  for (int i = 6; i <= 200; ++i) offsets[i] = 4;
  for (int i = 201; i <= 256; ++i) offsets[i] = 10;
  ExchangeLedger memory_ledger, disk_ledger;
  MemoryReservation roomy(1 << 20), none(0);
  ExchangeContext in_memory{&roomy, dir.get()}, on_disk{&none, dir.get()};
  ASSIGN_OK(auto held, StoredBlock::Make(block, offsets, &memory_ledger, in_memory));
  ASSIGN_OK(auto spilled, StoredBlock::Make(block, offsets, &disk_ledger, on_disk));
  ASSERT_TRUE(held->in_memory());
  ASSERT_FALSE(spilled->in_memory());
  // Two IPC streams, not 256: well under a stream's schema and metadata per empty piece.
  EXPECT_LT(disk_ledger.spilled.load(), 64 * 1024);
  for (auto [begin, end] : std::vector<std::pair<int64_t, int64_t>>{{0, 256}, {3, 6}, {6, 200}, {5, 201}}) {
    for (bool with_empty : {true, false}) {
      ASSIGN_OK(auto want, held->Pieces(begin, end, in_memory, nullptr, with_empty));
      bool from_disk = false;
      ASSIGN_OK(auto got, spilled->Pieces(begin, end, on_disk, &from_disk, with_empty));
      EXPECT_TRUE(from_disk);
      ASSERT_EQ(got.size(), want.size()) << begin << ".." << end << " with_empty " << with_empty;
      for (size_t i = 0; i < want.size(); ++i) EXPECT_TRUE(SameBatch(got[i], want[i])) << begin << ".." << end;
      // By hand: the pieces with rows among them.
      const size_t with_rows = (begin <= 5 && 5 < end) + (begin <= 200 && 200 < end);
      EXPECT_EQ(want.size(), with_empty ? static_cast<size_t>(end - begin) : with_rows);
    }
  }
}

TEST(SpillDirectory, RemovesStaleDirectoriesOfDeadProcesses) {
  TempDir base;
  pid_t child = fork();
  if (child == 0) _exit(0);
  ASSERT_GT(child, 0);
  waitpid(child, nullptr, 0);  // a pid that is no longer alive
  fs::path dead = fs::path(base.path()) / (SpillDirectory::Prefix(child) + "0123456789abcdef");
  fs::path alive = fs::path(base.path()) / (SpillDirectory::Prefix(::getpid()) + "fedcba9876543210");
  fs::path other = fs::path(base.path()) / "millstream-spill-notapid";
  for (const auto& d : {dead, alive, other}) {
    fs::create_directories(d);
    std::ofstream(d / "spill-0.arrow") << "x";
  }
  ASSIGN_OK(auto dir, SpillDirectory::Make(base.path()));
  EXPECT_FALSE(fs::exists(dead));
  EXPECT_TRUE(fs::exists(alive));
  EXPECT_TRUE(fs::exists(other));
}

// ---- Sort ----

void CheckSort(const std::vector<Block>& input, const std::vector<SortKey>& keys,
               ExchangeOptions options, int threads = 2) {
  Harness h;
  auto exchange = MakeSortExchange(keys, options).ValueOrDie();
  EXPECT_EQ(exchange->name(), "Sort");
  auto result = RunExchange(*exchange, input, h.ctx, threads);
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  if (options.num_partitions > 0) EXPECT_EQ(static_cast<int64_t>(result->size()), options.num_partitions);
  EXPECT_TRUE(SameBatch(Concat(*result), ExpectedSort(input, keys)));
  for (const auto& block : Flatten(*result)) {
    EXPECT_LE(BlockBytes(*block), std::max<int64_t>(options.target_max_block_size, 256));
  }
  EXPECT_EQ(exchange->held_bytes(), 0);
  EXPECT_EQ(h.reservation.size(), 0);
}

TEST(SortExchange, OneInt64KeyWithNullsMatchesArrow) {
  ExchangeOptions options;
  options.num_partitions = 7;
  auto input = RandomBlocks(2, 10, 500);
  CheckSort(input, {{"i"}}, options);
  CheckSort(input, {{"i", true}}, options);
}

TEST(SortExchange, DoublesWithNanAndNullsBothDirections) {
  ExchangeOptions options;
  options.num_partitions = 5;
  auto input = RandomBlocks(3, 8, 300);
  CheckSort(input, {{"d"}}, options);
  CheckSort(input, {{"d", true}}, options);
}

TEST(SortExchange, MultiKeyMixedDirectionsStableOnTies) {
  // `row` is not a key: comparing whole rows with Arrow's stable sort checks that rows
  // with equal keys keep their input order.
  ExchangeOptions options;
  options.num_partitions = 6;
  auto input = RandomBlocks(4, 12, 400);
  CheckSort(input, {{"s"}, {"i", true}, {"d"}}, options);
  CheckSort(input, {{"s", true}, {"d", true}}, options);
}

TEST(SortExchange, StringDictionaryTimestampDecimalKeys) {
  ExchangeOptions options;
  options.num_partitions = 4;
  auto input = RandomBlocks(5, 6, 300);
  CheckSort(input, {{"dict"}}, options);
  CheckSort(input, {{"dict", true}, {"row", true}}, options);
  CheckSort(input, {{"ts", true}}, options);
  CheckSort(input, {{"dec"}}, options);
  CheckSort(input, {{"dec", true}, {"s"}}, options);
}

TEST(SortExchange, PartitionsChosenFromDataSize) {
  ExchangeOptions options;
  options.memory_limit = 4 << 20;  // 1 MiB partitions for ~8 MB of keys
  options.parallelism = 2;
  options.target_max_block_size = 256 << 10;
  auto input = Int64Blocks(6, 8, 128 * 1024);
  Harness h;
  auto exchange = MakeSortExchange({{"x"}}, options).ValueOrDie();
  ASSIGN_OK(auto result, RunExchange(*exchange, input, h.ctx));
  EXPECT_GE(result.size(), 8u);
  EXPECT_TRUE(SameBatch(Concat(result), ExpectedSort(input, {{"x"}})));
  for (const auto& block : Flatten(result)) EXPECT_LE(BlockBytes(*block), 256 << 10);
}

TEST(SortExchange, PartitionsStaySmallUnderALargeLimit) {
  // 48 MiB of keys under a 1 TiB limit: partitions of about 16 MiB (several reduce tasks,
  // each emitting its own block), not one partition the limit would allow.
  ExchangeOptions options;
  options.memory_limit = int64_t{1} << 40;
  options.parallelism = 1;
  auto input = Int64Blocks(8, 12, 512 * 1024);
  Harness h;
  auto exchange = MakeSortExchange({{"x"}}, options).ValueOrDie();
  ASSIGN_OK(auto result, RunExchange(*exchange, input, h.ctx));
  EXPECT_GE(result.size(), 3u);
  EXPECT_LE(result.size(), 4u);
  EXPECT_TRUE(SameBatch(Concat(result), ExpectedSort(input, {{"x"}})));
  EXPECT_EQ(h.reservation.size(), 0);
}

TEST(SortExchange, OneKeyMostRowsShareSpreadsOverPartitions) {
  // 90% of the rows have i == 7: partitions split that key's rows by input position.
  auto input = RandomBlocks(17, 10, 1000);
  int64_t total = 0;
  for (auto& block : input) {
    arrow::Int64Builder ints;
    auto old = std::static_pointer_cast<arrow::Int64Array>(block->GetColumnByName("i"));
    for (int64_t r = 0; r < block->num_rows(); ++r) (void)ints.Append(r % 10 == 0 ? old->Value(r) : 7);
    block = block->SetColumn(1, arrow::field("i", arrow::int64()), ints.Finish().ValueOrDie()).ValueOrDie();
    total += block->num_rows();
  }
  ExchangeOptions options;
  options.num_partitions = 4;
  CheckSort(input, {{"i"}}, options);
  CheckSort(input, {{"i", true}}, options);
  Harness h;
  auto exchange = MakeSortExchange({{"i"}}, options).ValueOrDie();
  ASSIGN_OK(auto result, RunExchange(*exchange, input, h.ctx));
  for (const auto& p : result) {
    int64_t rows = 0;
    for (const auto& b : p) rows += b->num_rows();
    EXPECT_LT(rows, total / 2);
  }
}

TEST(SortExchange, SingleThreadAndOnePartition) {
  ExchangeOptions options;
  options.num_partitions = 1;
  auto input = RandomBlocks(7, 5, 100);
  CheckSort(input, {{"s"}, {"i"}}, options, 1);
}

TEST(SortExchange, AllNullKeysKeepInputOrder) {
  auto input = RandomBlocks(8, 4, 50);
  for (auto& block : input) {
    block = block->SetColumn(1, arrow::field("i", arrow::int64()),
                             arrow::MakeArrayOfNull(arrow::int64(), block->num_rows()).ValueOrDie())
                .ValueOrDie();
  }
  ExchangeOptions options;
  options.num_partitions = 3;
  CheckSort(input, {{"i"}}, options);
  Harness h;
  auto exchange = MakeSortExchange({{"i"}}, options).ValueOrDie();
  ASSIGN_OK(auto result, RunExchange(*exchange, input, h.ctx));
  auto rows = Column64(Concat(result), "row");
  EXPECT_TRUE(std::is_sorted(rows.begin(), rows.end()));
}

TEST(SortExchange, NullTypedKeyColumn) {
  auto a = arrow::RecordBatch::Make(
      arrow::schema({arrow::field("k", arrow::null()), arrow::field("v", arrow::int64())}), 3,
      {arrow::MakeArrayOfNull(arrow::null(), 3).ValueOrDie(), Json(arrow::int64(), "[1, 2, 3]")});
  auto b = arrow::RecordBatch::Make(
      arrow::schema({arrow::field("k", arrow::int64()), arrow::field("v", arrow::int64())}), 3,
      {Json(arrow::int64(), "[5, null, 4]"), Json(arrow::int64(), "[4, 5, 6]")});
  ExchangeOptions options;
  options.num_partitions = 2;
  CheckSort(std::vector<Block>{a, a}, {{"k"}}, options);
  CheckSort(std::vector<Block>{a, b, a}, {{"k"}}, options);
  CheckSort(std::vector<Block>{a, b}, {{"k", true}, {"v", true}}, options);
}

TEST(SortExchange, EmptyInputAndZeroRowBlocks) {
  Harness h;
  auto exchange = MakeSortExchange({{"i"}}, {}).ValueOrDie();
  ASSIGN_OK(auto none, RunExchange(*exchange, {}, h.ctx));
  EXPECT_EQ(none.size(), 0u);

  auto empty = RandomBlocks(9, 1, 10)[0]->Slice(0, 0);
  auto exchange2 = MakeSortExchange({{"i"}}, {}).ValueOrDie();
  ASSIGN_OK(auto result, RunExchange(*exchange2, {empty, empty}, h.ctx));
  ASSERT_EQ(result.size(), 1u);
  ASSERT_EQ(result[0].size(), 1u);  // one empty block: the schema survives
  EXPECT_EQ(result[0][0]->num_rows(), 0);
  EXPECT_TRUE(result[0][0]->schema()->Equals(*empty->schema()));

  // Zero-row blocks among others.
  auto input = RandomBlocks(10, 4, 100);
  input.insert(input.begin() + 2, empty);
  input.push_back(empty);
  ExchangeOptions options;
  options.num_partitions = 3;
  CheckSort(input, {{"i"}}, options);
}

TEST(SortExchange, BlocksWithDifferentCompatibleSchemas) {
  auto a = arrow::RecordBatch::Make(
      arrow::schema({arrow::field("k", arrow::int32()), arrow::field("a", arrow::utf8())}), 3,
      {Json(arrow::int32(), "[3, null, 1]"), Json(arrow::utf8(), R"(["x", "y", "z"])")});
  auto b = arrow::RecordBatch::Make(
      arrow::schema({arrow::field("k", arrow::int64()), arrow::field("b", arrow::float64())}), 4,
      {Json(arrow::int64(), "[2, 5000000000, 1, -1]"),
       Json(arrow::float64(), "[0.5, 1.5, 2.5, 3.5]")});
  ExchangeOptions options;
  options.num_partitions = 2;
  CheckSort(std::vector<Block>{a, b, a}, {{"k"}}, options);
  CheckSort(std::vector<Block>{a, b, a}, {{"k", true}}, options);
}

TEST(SortExchange, BlockWithoutTheKeyColumnSortsAsNulls) {
  auto a = arrow::RecordBatch::Make(
      arrow::schema({arrow::field("k", arrow::int64()), arrow::field("v", arrow::utf8())}), 3,
      {Json(arrow::int64(), "[3, null, 1]"), Json(arrow::utf8(), R"(["a", "b", "c"])")});
  auto b = arrow::RecordBatch::Make(arrow::schema({arrow::field("v", arrow::utf8())}), 2,
                                    {Json(arrow::utf8(), R"(["d", "e"])")});
  ExchangeOptions options;
  options.num_partitions = 2;
  CheckSort(std::vector<Block>{b, a, b}, {{"k"}}, options);
  CheckSort(std::vector<Block>{a, b, a}, {{"k", true}, {"v"}}, options);
}

TEST(SortExchange, MissingKeyColumnNamesItAndTheColumns) {
  Harness h;
  auto exchange = MakeSortExchange({{"nope"}}, {}).ValueOrDie();
  ASSERT_OK(exchange->Map(0, RandomBlocks(11, 1, 10)[0], h.ctx));
  auto st = exchange->FinishMap(h.ctx).status();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("'nope'"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("row, i, d, s, ts, dec, dict"), std::string::npos) << st.message();
  EXPECT_FALSE(MakeSortExchange({}, {}).ok());
}

TEST(SortExchange, SpillsUnderATinyCapWithTheSameResult) {
  auto input = RandomBlocks(12, 10, 2000);
  std::vector<SortKey> keys = {{"s"}, {"i", true}};
  ExchangeOptions options;
  options.num_partitions = 5;
  std::string spill_path;
  {
    Harness h(/*cap=*/1);
    auto exchange = MakeSortExchange(keys, options).ValueOrDie();
    ASSIGN_OK(auto result, RunExchange(*exchange, input, h.ctx));
    EXPECT_TRUE(SameBatch(Concat(result), ExpectedSort(input, keys)));
    EXPECT_EQ(h.spill->files(), 10);
    EXPECT_GT(h.spill->bytes_spilled(), 0);
    EXPECT_EQ(exchange->spilled_bytes(), h.spill->bytes_spilled());
    EXPECT_EQ(exchange->held_bytes(), 0);
    EXPECT_EQ(h.reservation.size(), 0);
    spill_path = h.spill->path();
    EXPECT_TRUE(fs::is_empty(spill_path));  // each file deleted once its last reader was done
  }
  EXPECT_FALSE(fs::exists(spill_path));
}

TEST(SortExchange, SomeRunsSpillWhenTheCapIsReached) {
  auto input = Int64Blocks(13, 6, 50000);
  ExchangeOptions options;
  options.num_partitions = 4;
  Harness h(/*cap=*/BlockBytes(*input[0]) * 2 + 1000);
  auto exchange = MakeSortExchange({{"x", true}}, options).ValueOrDie();
  ASSIGN_OK(auto result, RunExchange(*exchange, input, h.ctx, /*threads=*/1));
  EXPECT_TRUE(SameBatch(Concat(result), ExpectedSort(input, {{"x", true}})));
  // Two runs fit, four spilled; a reduce task short of room spills the two as well.
  EXPECT_GE(h.spill->files(), 4);
  // Past the cap only while one reduce task holds its partition read back and merged.
  int64_t largest = 0;
  for (const auto& p : result) largest = std::max(largest, BlockBytes(*ConcatenateBlocks(p).ValueOrDie()));
  EXPECT_LE(h.reservation.peak(), h.reservation.cap() + 2 * largest);
  EXPECT_EQ(h.reservation.size(), 0);
}

TEST(SortExchange, ReclaimSpillsHeldRunsWithTheSameResult) {
  auto input = RandomBlocks(16, 8, 1000);
  std::vector<SortKey> keys = {{"i"}, {"s", true}};
  ExchangeOptions options;
  options.num_partitions = 3;
  Harness h;
  auto exchange = MakeSortExchange(keys, options).ValueOrDie();
  for (size_t i = 0; i < input.size(); ++i) ASSERT_OK(exchange->Map(i, input[i], h.ctx));
  int64_t held = exchange->held_bytes();
  EXPECT_GT(held, 0);
  EXPECT_EQ(h.reservation.size(), held);
  // The executor lowered the cap: half of what is held comes back, in whole runs.
  ASSIGN_OK(int64_t freed, exchange->Reclaim(held / 2, h.ctx));
  EXPECT_GE(freed, held / 2);
  EXPECT_LT(freed, held);
  EXPECT_EQ(exchange->held_bytes(), held - freed);
  EXPECT_EQ(h.reservation.size(), held - freed);
  EXPECT_GT(h.spill->files(), 0);
  ASSIGN_OK(int64_t n, exchange->FinishMap(h.ctx));
  ASSIGN_OK(int64_t more, exchange->Reclaim(int64_t{1} << 40, h.ctx));  // the rest, before reducing
  EXPECT_EQ(more, held - freed);
  std::vector<Block> out;
  for (int64_t p = 0; p < n; ++p) {
    ASSERT_OK(exchange->Reduce(p, [&](Block b) { out.push_back(b); return arrow::Status::OK(); }, h.ctx));
  }
  EXPECT_TRUE(SameBatch(ConcatenateBlocks(out).ValueOrDie(), ExpectedSort(input, keys)));
  EXPECT_EQ(h.reservation.size(), 0);
  EXPECT_TRUE(fs::is_empty(h.spill->path()));
}

TEST(SortExchange, ReclaimFromAnotherThreadWhileTasksRun) {
  auto input = RandomBlocks(18, 12, 800);
  std::vector<SortKey> keys = {{"d", true}, {"s"}};
  ExchangeOptions options;
  options.num_partitions = 4;
  Harness h;
  auto exchange = MakeSortExchange(keys, options).ValueOrDie();
  std::atomic<bool> done{false};
  std::atomic<int64_t> freed{0};
  std::thread reclaimer([&] {
    while (!done) {
      auto got = exchange->Reclaim(int64_t{1} << 40, h.ctx);
      if (got.ok()) freed += *got;
      std::this_thread::yield();
    }
  });
  auto result = RunExchange(*exchange, input, h.ctx);
  done = true;
  reclaimer.join();
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_TRUE(SameBatch(Concat(*result), ExpectedSort(input, keys)));
  EXPECT_EQ(h.reservation.size(), 0);
  EXPECT_EQ(exchange->held_bytes(), 0);
}

// ---- Sort with given boundaries ----

/// The partition a value of the first key goes to under ascending `bounds` (Ray's rule:
/// rows below bounds[0] first, [bounds[i-1], bounds[i]) next...; descending, reversed;
/// null and NaN last either way).
int64_t ExpectedPartition(const std::shared_ptr<arrow::Scalar>& value, const std::vector<double>& bounds,
                          bool descending) {
  int64_t n = static_cast<int64_t>(bounds.size()) + 1;
  if (!value->is_valid) return n - 1;
  double v = value->type->id() == arrow::Type::DOUBLE
                 ? std::static_pointer_cast<arrow::DoubleScalar>(value)->value
                 : static_cast<double>(std::static_pointer_cast<arrow::Int64Scalar>(value)->value);
  if (std::isnan(v)) return n - 1;
  int64_t at_or_below = 0;  // boundaries <= v
  for (double b : bounds) at_or_below += b <= v;
  return descending ? n - 1 - at_or_below : at_or_below;
}

void CheckGivenBoundaries(const std::vector<Block>& input, const std::vector<SortKey>& keys,
                          const std::vector<SortBoundary>& given, const std::vector<double>& bounds,
                          int threads = 2) {
  Harness h;
  ExchangeOptions options;
  options.num_partitions = 3;  // ignored: the boundaries decide
  auto exchange = MakeSortExchange(keys, options, given).ValueOrDie();
  auto result = RunExchange(*exchange, input, h.ctx, threads);
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  ASSERT_EQ(result->size(), bounds.size() + 1);
  EXPECT_TRUE(SameBatch(Concat(*result), ExpectedSort(input, keys)));
  Block all = ConcatenateBlocks(input).ValueOrDie();
  auto column = all->GetColumnByName(keys[0].column);
  std::vector<int64_t> expected_rows(bounds.size() + 1, 0);
  for (int64_t r = 0; r < all->num_rows(); ++r) {
    ++expected_rows[ExpectedPartition(column->GetScalar(r).ValueOrDie(), bounds, keys[0].descending)];
  }
  for (size_t p = 0; p < result->size(); ++p) {
    ASSERT_GE((*result)[p].size(), 1u) << "partition " << p << " has no block";
    int64_t rows = 0;
    for (const auto& block : (*result)[p]) {
      rows += block->num_rows();
      EXPECT_TRUE(block->schema()->Equals(*input[0]->schema()));
      auto values = block->GetColumnByName(keys[0].column);
      for (int64_t r = 0; r < block->num_rows(); ++r) {
        EXPECT_EQ(ExpectedPartition(values->GetScalar(r).ValueOrDie(), bounds, keys[0].descending),
                  static_cast<int64_t>(p));
      }
    }
    EXPECT_EQ(rows, expected_rows[p]) << "partition " << p;
  }
  EXPECT_EQ(h.reservation.size(), 0);
}

TEST(SortExchange, GivenBoundariesSplitTheFirstKey) {
  auto input = RandomBlocks(70, 9, 300);
  // Unordered, a duplicate, an int and floats: deduplicated and ordered.
  std::vector<SortBoundary> given = {SortBoundary::Int(40), SortBoundary::Real(25.5), SortBoundary::Int(10),
                                     SortBoundary::Real(10.0)};
  std::vector<double> bounds = {10, 25.5, 40};
  CheckGivenBoundaries(input, {{"i"}}, given, bounds);
  CheckGivenBoundaries(input, {{"i", true}}, given, bounds);
  CheckGivenBoundaries(input, {{"i"}, {"s", true}}, given, bounds, /*threads=*/1);
  // Doubles with NaN and nulls (last either way) against int boundaries.
  std::vector<SortBoundary> ints = {SortBoundary::Int(-2), SortBoundary::Int(0), SortBoundary::Int(3)};
  CheckGivenBoundaries(input, {{"d"}}, ints, {-2, 0, 3});
  CheckGivenBoundaries(input, {{"d", true}, {"row", true}}, ints, {-2, 0, 3});
}

TEST(SortExchange, GivenBoundariesSpilledTheSame) {
  auto input = RandomBlocks(71, 8, 5000);  // runs of several chunks
  Harness h(1);                            // everything spills
  auto exchange = MakeSortExchange({{"i"}}, {}, {SortBoundary::Int(7), SortBoundary::Int(30)}).ValueOrDie();
  ASSIGN_OK(auto result, RunExchange(*exchange, input, h.ctx));
  EXPECT_GT(exchange->spilled_bytes(), 0);
  ASSERT_EQ(result.size(), 3u);
  EXPECT_TRUE(SameBatch(Concat(result), ExpectedSort(input, {{"i"}})));
  for (const auto& block : result[0]) EXPECT_LE(Column64(block, "i").back(), 6);
}

TEST(SortExchange, GivenBoundariesKeepEmptyPartitions) {
  auto input = RandomBlocks(72, 3, 50);
  Harness h;
  auto exchange = MakeSortExchange({{"i"}}, {}, {SortBoundary::Int(-5), SortBoundary::Int(1000)}).ValueOrDie();
  ASSIGN_OK(auto result, RunExchange(*exchange, input, h.ctx));
  ASSERT_EQ(result.size(), 3u);
  ASSERT_EQ(result[0].size(), 1u);
  EXPECT_EQ(result[0][0]->num_rows(), 0);  // nothing below -5
  EXPECT_TRUE(result[0][0]->schema()->Equals(*input[0]->schema()));
  int64_t middle = 0;
  for (const auto& block : result[1]) middle += block->num_rows();
  ASSERT_EQ(result[2].size(), 1u);
  int64_t nulls = ConcatenateBlocks(input).ValueOrDie()->GetColumnByName("i")->null_count();
  EXPECT_EQ(result[2][0]->num_rows(), nulls);  // only the nulls are at or above 1000
  EXPECT_EQ(middle + nulls, ConcatenateBlocks(input).ValueOrDie()->num_rows());

  // Only zero-row blocks: one empty block per partition.
  auto empty = input[0]->Slice(0, 0);
  auto exchange2 = MakeSortExchange({{"i"}}, {}, {SortBoundary::Int(3)}).ValueOrDie();
  ASSIGN_OK(auto empties, RunExchange(*exchange2, {empty, empty}, h.ctx));
  ASSERT_EQ(empties.size(), 2u);
  for (const auto& p : empties) {
    ASSERT_EQ(p.size(), 1u);
    EXPECT_EQ(p[0]->num_rows(), 0);
  }
  // No input at all: no output.
  auto exchange3 = MakeSortExchange({{"i"}}, {}, {SortBoundary::Int(3)}).ValueOrDie();
  ASSIGN_OK(auto none, RunExchange(*exchange3, {}, h.ctx));
  EXPECT_EQ(none.size(), 0u);
}

TEST(SortExchange, GivenBoundariesNeedANumericFirstKey) {
  Harness h;
  auto exchange = MakeSortExchange({{"s"}}, {}, {SortBoundary::Int(3)}).ValueOrDie();
  auto result = RunExchange(*exchange, RandomBlocks(73, 2, 20), h.ctx);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("'s'"), std::string::npos) << result.status().ToString();
  EXPECT_FALSE(MakeSortExchange({{"i"}}, {}, {SortBoundary::Real(std::nan(""))}).ok());
}

TEST(SortExchange, CancelledStopsTasks) {
  Harness h;
  h.cancelled = true;
  auto exchange = MakeSortExchange({{"i"}}, {}).ValueOrDie();
  EXPECT_TRUE(exchange->Map(0, RandomBlocks(14, 1, 10)[0], h.ctx).IsCancelled());
}

/// Sort throughput of 10M random int64 keys in 10 blocks, maps and reduces on 2 threads.
/// Skipped unless MILLSTREAM_SORT_BENCH=1 (timings are measured, never asserted).
TEST(SortExchange, Benchmark) {
  const char* flag = std::getenv("MILLSTREAM_SORT_BENCH");
  if (flag == nullptr || std::string(flag) != "1") GTEST_SKIP() << "MILLSTREAM_SORT_BENCH=1 runs it";
  auto input = Int64Blocks(15, 10, 1000000);
  ExchangeOptions options;
  options.parallelism = 2;
  Harness h;
  auto exchange = MakeSortExchange({{"x"}}, options).ValueOrDie();
  std::clock_t cpu_start = std::clock();
  auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  Partitions result;
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      for (size_t i = t; i < input.size(); i += 2) EXPECT_TRUE(exchange->Map(i, input[i], h.ctx).ok());
    });
  }
  for (auto& t : threads) t.join();
  threads.clear();
  double map_seconds = elapsed();
  std::clock_t reduce_cpu_start = std::clock();
  ASSIGN_OK(int64_t n, exchange->FinishMap(h.ctx));
  result.resize(n);
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      for (int64_t p = t; p < n; p += 2) {
        EXPECT_TRUE(exchange->Reduce(p, [&result, p](Block b) {
          result[p].push_back(std::move(b));
          return arrow::Status::OK();
        }, h.ctx).ok());
      }
    });
  }
  for (auto& t : threads) t.join();
  double seconds = elapsed();
  double cpu = static_cast<double>(std::clock() - cpu_start) / CLOCKS_PER_SEC;
  double reduce_cpu = static_cast<double>(std::clock() - reduce_cpu_start) / CLOCKS_PER_SEC;
  std::printf("sort of 10M int64 keys in 10 blocks, %zu partitions, 2 threads: %.3f s "
              "(map %.3f s), %.1f M keys/s; %.3f CPU s (reduce %.3f), %.1f M keys per CPU s\n",
              result.size(), seconds, map_seconds, 10.0 / seconds, cpu, reduce_cpu, 10.0 / cpu);
  auto sorted = Concat(result);
  auto x = Column64(sorted, "x");
  EXPECT_TRUE(std::is_sorted(x.begin(), x.end()));
  EXPECT_EQ(x.size(), 10000000u);
}

// ---- Random shuffle ----

std::vector<int64_t> ShuffleRows(const std::vector<Block>& input, std::optional<uint64_t> seed,
                                 ExchangeOptions options = {}, int64_t cap = int64_t{1} << 40,
                                 int64_t* spilled = nullptr) {
  Harness h(cap);
  auto exchange = MakeRandomShuffleExchange(seed, options).ValueOrDie();
  auto result = RunExchange(*exchange, input, h.ctx).ValueOrDie();
  if (spilled != nullptr) *spilled = h.spill->bytes_spilled();
  EXPECT_EQ(h.reservation.size(), 0);
  for (const auto& block : Flatten(result)) {
    EXPECT_LE(BlockBytes(*block), std::max<int64_t>(options.target_max_block_size, 256));
  }
  return Column64(Concat(result), "row");
}

TEST(RandomShuffleExchange, PermutationOfAllRows) {
  auto input = RandomBlocks(20, 10, 300);
  int64_t total = 0;
  for (const auto& b : input) total += b->num_rows();
  auto rows = ShuffleRows(input, 42);
  ASSERT_EQ(static_cast<int64_t>(rows.size()), total);
  auto sorted = rows;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < total; ++i) ASSERT_EQ(sorted[i], i);
  EXPECT_FALSE(std::is_sorted(rows.begin(), rows.end()));
  // Rows leave their blocks: the first 100 come from most of the 10 input blocks.
  std::set<int64_t> blocks;
  for (int i = 0; i < 100; ++i) blocks.insert(rows[i] / 300);
  EXPECT_GE(blocks.size(), 7u);
}

TEST(RandomShuffleExchange, WholeRowsMoveTogether) {
  auto input = RandomBlocks(21, 4, 100);
  Harness h;
  auto exchange = MakeRandomShuffleExchange(7, {}).ValueOrDie();
  ASSIGN_OK(auto result, RunExchange(*exchange, input, h.ctx));
  EXPECT_TRUE(SameBatch(ExpectedSort({Concat(result)}, {{"row"}}), ConcatenateBlocks(input).ValueOrDie()));
}

TEST(RandomShuffleExchange, SameSeedSameOrderOtherwiseDifferent) {
  auto input = RandomBlocks(22, 6, 200);
  ExchangeOptions options;
  options.parallelism = 2;
  auto a = ShuffleRows(input, 1, options), b = ShuffleRows(input, 1, options);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, ShuffleRows(input, 2, options));
  EXPECT_NE(ShuffleRows(input, std::nullopt), ShuffleRows(input, std::nullopt));
}

TEST(RandomShuffleExchange, SameOrderWhateverThePartitionCount) {
  // The order depends on the seed and the input only: not on the memory limit or the
  // threads that size the reduce stage, nor on spilling.
  auto input = RandomBlocks(27, 12, 20000);
  auto run = [&](int64_t memory_limit, int64_t parallelism, int64_t cap, int64_t* partitions) {
    ExchangeOptions options;
    options.memory_limit = memory_limit;
    options.parallelism = parallelism;
    Harness h(cap);
    auto exchange = MakeRandomShuffleExchange(5, options).ValueOrDie();
    for (size_t i = 0; i < input.size(); ++i) EXPECT_TRUE(exchange->Map(i, input[i], h.ctx).ok());
    *partitions = exchange->FinishMap(h.ctx).ValueOrDie();
    std::vector<Block> out;
    for (int64_t p = 0; p < *partitions; ++p) {
      EXPECT_TRUE(exchange->Reduce(p, [&](Block b) { out.push_back(b); return arrow::Status::OK(); }, h.ctx).ok());
    }
    EXPECT_EQ(h.reservation.size(), 0);
    return Column64(ConcatenateBlocks(out).ValueOrDie(), "row");
  };
  int64_t few = 0, many = 0, spilled = 0;
  auto a = run(int64_t{1} << 40, 1, int64_t{1} << 40, &few);
  auto b = run(int64_t{8} << 20, 2, int64_t{1} << 40, &many);
  auto c = run(int64_t{8} << 20, 2, 1, &spilled);
  EXPECT_LT(few, many);
  EXPECT_EQ(a, b);
  EXPECT_EQ(a, c);
  auto sorted = a;
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 0; i < sorted.size(); ++i) ASSERT_EQ(sorted[i], static_cast<int64_t>(i));
}

TEST(RandomShuffleExchange, EveryRowEquallyLikelyAtEveryPlace) {
  // The first row of a few rows in 2 blocks lands at each place about equally often over
  // 1500 seeds (a chi-square bound far above what chance gives).
  auto input = RandomBlocks(28, 2, 1);
  const size_t n = static_cast<size_t>(input[0]->num_rows() + input[1]->num_rows());
  ASSERT_GE(n, 2u);
  std::vector<int64_t> counts(n, 0);
  constexpr int kSeeds = 1500;
  for (uint64_t seed = 0; seed < kSeeds; ++seed) {
    auto rows = ShuffleRows(input, seed);
    ASSERT_EQ(rows.size(), n);
    counts[std::find(rows.begin(), rows.end(), 0) - rows.begin()]++;
  }
  const double expected = static_cast<double>(kSeeds) / n;
  double chi2 = 0;
  for (int64_t c : counts) chi2 += (c - expected) * (c - expected) / expected;
  // At most 13 places (12 degrees of freedom): P(chi2 > 45) < 1e-5.
  EXPECT_LT(chi2, 45.0);
}

TEST(RandomShuffleExchange, SpilledGivesTheSameOrder) {
  auto input = RandomBlocks(23, 8, 500);
  ExchangeOptions options;
  options.num_partitions = 4;
  int64_t spilled = 0;
  auto in_memory = ShuffleRows(input, 9, options);
  auto with_spill = ShuffleRows(input, 9, options, /*cap=*/1, &spilled);
  EXPECT_GT(spilled, 0);
  EXPECT_EQ(in_memory, with_spill);
}

TEST(RandomShuffleExchange, ReclaimBetweenStagesGivesTheSameOrder) {
  auto input = RandomBlocks(25, 6, 400);
  ExchangeOptions options;
  options.num_partitions = 3;
  auto expected = ShuffleRows(input, 11, options);
  Harness h;
  auto exchange = MakeRandomShuffleExchange(11, options).ValueOrDie();
  for (size_t i = 0; i < input.size(); ++i) ASSERT_OK(exchange->Map(i, input[i], h.ctx));
  ASSIGN_OK(int64_t n, exchange->FinishMap(h.ctx));
  std::vector<Block> out;
  for (int64_t p = 0; p < n; ++p) {
    if (p == 1) {
      ASSIGN_OK(int64_t freed, exchange->Reclaim(int64_t{1} << 40, h.ctx));
      EXPECT_GT(freed, 0);
      EXPECT_EQ(exchange->held_bytes(), 0);
    }
    ASSERT_OK(exchange->Reduce(p, [&](Block b) { out.push_back(b); return arrow::Status::OK(); }, h.ctx));
  }
  EXPECT_EQ(Column64(ConcatenateBlocks(out).ValueOrDie(), "row"), expected);
  EXPECT_EQ(h.reservation.size(), 0);
}

TEST(RandomShuffleExchange, ReclaimFromAnotherThreadWhileTasksRun) {
  auto input = RandomBlocks(26, 10, 500);
  ExchangeOptions options;
  options.num_partitions = 5;
  auto expected = ShuffleRows(input, 12, options);
  Harness h;
  auto exchange = MakeRandomShuffleExchange(12, options).ValueOrDie();
  std::atomic<bool> done{false};
  std::thread reclaimer([&] {
    while (!done) {
      (void)exchange->Reclaim(int64_t{1} << 40, h.ctx);
      std::this_thread::yield();
    }
  });
  auto result = RunExchange(*exchange, input, h.ctx);
  done = true;
  reclaimer.join();
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(Column64(Concat(*result), "row"), expected);
  EXPECT_EQ(h.reservation.size(), 0);
}

TEST(RandomShuffleExchange, EmptyInputs) {
  Harness h;
  auto exchange = MakeRandomShuffleExchange(1, {}).ValueOrDie();
  ASSIGN_OK(auto none, RunExchange(*exchange, {}, h.ctx));
  EXPECT_EQ(none.size(), 0u);
  auto empty = RandomBlocks(24, 1, 10)[0]->Slice(0, 0);
  auto exchange2 = MakeRandomShuffleExchange(1, {}).ValueOrDie();
  ASSIGN_OK(auto result, RunExchange(*exchange2, {empty}, h.ctx));
  ASSERT_EQ(Flatten(result).size(), 1u);
  EXPECT_EQ(Flatten(result)[0]->num_rows(), 0);
}

// ---- Randomize block order ----

TEST(RandomizeBlockOrderExchange, PermutesWholeBlocks) {
  auto input = RandomBlocks(30, 20, 10);
  auto run = [&](std::optional<uint64_t> seed) {
    Harness h;
    auto exchange = MakeRandomizeBlockOrderExchange(seed, {}).ValueOrDie();
    EXPECT_EQ(exchange->name(), "RandomizeBlockOrder");
    auto result = RunExchange(*exchange, input, h.ctx).ValueOrDie();
    EXPECT_EQ(result.size(), input.size());
    std::vector<int64_t> order;
    for (const auto& p : result) {
      EXPECT_EQ(p.size(), 1u);
      int64_t first = Column64(p[0], "row")[0];
      auto it = std::find_if(input.begin(), input.end(),
                             [&](const Block& b) { return Column64(b, "row")[0] == first; });
      EXPECT_TRUE(it != input.end());
      EXPECT_TRUE(SameBatch(p[0], *it));
      order.push_back(it - input.begin());
    }
    return order;
  };
  auto order = run(5);
  auto sorted = order;
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 0; i < sorted.size(); ++i) EXPECT_EQ(sorted[i], static_cast<int64_t>(i));
  EXPECT_FALSE(std::is_sorted(order.begin(), order.end()));
  EXPECT_EQ(order, run(5));
  EXPECT_NE(order, run(6));
}

// ---- Repartition ----

TEST(RepartitionExchange, SplitKeepsOrderWithBalancedRowCounts) {
  auto input = RandomBlocks(40, 9, 37);
  input.insert(input.begin() + 3, input[0]->Slice(0, 0));
  for (int64_t n : {1, 4, 7, 25}) {
    Harness h;
    auto exchange = MakeRepartitionExchange(n, false, {}, {}).ValueOrDie();
    ASSIGN_OK(auto result, RunExchange(*exchange, input, h.ctx));
    ASSERT_EQ(static_cast<int64_t>(result.size()), n);
    int64_t total = 0, lo = INT64_MAX, hi = 0;
    for (const auto& p : result) {
      ASSERT_EQ(p.size(), 1u);
      total += p[0]->num_rows();
      lo = std::min(lo, p[0]->num_rows());
      hi = std::max(hi, p[0]->num_rows());
    }
    EXPECT_LE(hi - lo, 1) << n;
    EXPECT_TRUE(SameBatch(Concat(result), ConcatenateBlocks(input).ValueOrDie()));
  }
}

TEST(RepartitionExchange, MoreBlocksThanRowsGivesEmptyBlocks) {
  auto input = RandomBlocks(41, 1, 3);
  int64_t rows = input[0]->num_rows();
  Harness h;
  auto exchange = MakeRepartitionExchange(rows + 4, false, {}, {}).ValueOrDie();
  ASSIGN_OK(auto result, RunExchange(*exchange, input, h.ctx));
  ASSERT_EQ(static_cast<int64_t>(result.size()), rows + 4);
  // One row in each of the first blocks, the empty ones last (Ray's order).
  for (int64_t p = 0; p < rows + 4; ++p) {
    ASSERT_EQ(result[p].size(), 1u);
    EXPECT_EQ(result[p][0]->num_rows(), p < rows ? 1 : 0) << p;
    EXPECT_TRUE(result[p][0]->schema()->Equals(*input[0]->schema()));
  }
  EXPECT_TRUE(SameBatch(Concat(result), input[0]));
}

TEST(RepartitionExchange, KeysWithSortSortsEachBlockByTheKeys) {
  auto input = RandomBlocks(45, 6, 200);
  std::vector<std::string> keys = {"s", "i"};
  Harness h;
  auto plain = MakeRepartitionExchange(5, false, keys, {}).ValueOrDie();
  ASSIGN_OK(auto unsorted, RunExchange(*plain, input, h.ctx));
  auto sorting = MakeRepartitionExchange(5, false, keys, {}, /*sort=*/true).ValueOrDie();
  ASSIGN_OK(auto sorted, RunExchange(*sorting, input, h.ctx));
  ASSERT_EQ(sorted.size(), 5u);
  for (size_t p = 0; p < sorted.size(); ++p) {
    ASSERT_EQ(sorted[p].size(), 1u);
    // The same rows as without sort (hashing does not depend on it), in Arrow's stable
    // ascending order of the keys with nulls at the end.
    EXPECT_TRUE(SameBatch(sorted[p][0], ExpectedSort(unsorted[p], {{"s"}, {"i"}}))) << p;
  }
  EXPECT_FALSE(MakeRepartitionExchange(5, false, {}, {}, /*sort=*/true).ok());
  EXPECT_FALSE(MakeRepartitionExchange(5, true, {}, {}, /*sort=*/true).ok());
}

TEST(RepartitionExchange, KeysColocateEveryKey) {
  auto input = RandomBlocks(42, 10, 200);
  for (std::vector<std::string> keys : std::vector<std::vector<std::string>>{{"i"}, {"s", "i"}, {"dict"}, {"d"}}) {
    Harness h;
    auto exchange = MakeRepartitionExchange(5, false, keys, {}).ValueOrDie();
    ASSIGN_OK(auto result, RunExchange(*exchange, input, h.ctx));
    ASSERT_EQ(result.size(), 5u);
    std::map<std::string, int64_t> home;  // key value -> the block holding it
    int64_t nonempty = 0;
    for (size_t p = 0; p < result.size(); ++p) {
      ASSERT_EQ(result[p].size(), 1u);
      const Block& block = result[p][0];
      nonempty += block->num_rows() > 0;
      for (int64_t r = 0; r < block->num_rows(); ++r) {
        std::string key;
        for (const auto& k : keys) key += block->GetColumnByName(k)->GetScalar(r).ValueOrDie()->ToString() + "|";
        auto [it, inserted] = home.emplace(key, p);
        EXPECT_EQ(it->second, static_cast<int64_t>(p)) << "key " << key;
      }
      auto rows = Column64(block, "row");
      EXPECT_TRUE(std::is_sorted(rows.begin(), rows.end()));  // input order inside a block
    }
    EXPECT_GE(nonempty, 3);
    EXPECT_TRUE(SameBatch(ExpectedSort({Concat(result)}, {{"row"}}), ConcatenateBlocks(input).ValueOrDie()));
  }
}

TEST(RepartitionExchange, KeysColocateAcrossWidenedTypes) {
  auto a = arrow::RecordBatch::Make(arrow::schema({arrow::field("k", arrow::int32())}), 4,
                                    {Json(arrow::int32(), "[1, 2, 3, null]")});
  auto b = arrow::RecordBatch::Make(arrow::schema({arrow::field("k", arrow::float64())}), 4,
                                    {Json(arrow::float64(), "[3.0, 2.0, 1.0, null]")});
  Harness h;
  auto exchange = MakeRepartitionExchange(16, false, {"k"}, {}).ValueOrDie();
  ASSIGN_OK(auto result, RunExchange(*exchange, {a, b}, h.ctx));
  int64_t nonempty = 0;
  for (const auto& p : result) {
    ASSERT_EQ(p.size(), 1u);
    EXPECT_TRUE(p[0]->schema()->field(0)->type()->Equals(arrow::float64()));
    if (p[0]->num_rows() == 0) continue;
    ++nonempty;
    EXPECT_EQ(p[0]->num_rows(), 2);  // both rows of its key
    auto k = p[0]->column(0);
    EXPECT_TRUE(k->RangeEquals(0, 1, 1, k));
  }
  EXPECT_EQ(nonempty, 4);
}

TEST(RepartitionExchange, ShuffleSpreadsRowsReproducibly) {
  auto input = RandomBlocks(43, 6, 300);
  auto run = [&](uint64_t seed, int64_t cap) {
    Harness h(cap);
    ExchangeOptions options;
    options.seed = seed;
    auto exchange = MakeRepartitionExchange(4, true, {}, options).ValueOrDie();
    auto result = RunExchange(*exchange, input, h.ctx).ValueOrDie();
    EXPECT_EQ(result.size(), 4u);
    for (const auto& p : result) {
      EXPECT_EQ(p.size(), 1u);
      EXPECT_GT(p[0]->num_rows(), 300);  // ~450 each
    }
    EXPECT_TRUE(SameBatch(ExpectedSort({Concat(result)}, {{"row"}}), ConcatenateBlocks(input).ValueOrDie()));
    return Column64(Concat(result), "row");
  };
  auto a = run(3, int64_t{1} << 40);
  EXPECT_EQ(a, run(3, 1));  // spilled: the same
  EXPECT_NE(a, run(4, int64_t{1} << 40));
}

TEST(RepartitionExchange, InvalidArguments) {
  EXPECT_FALSE(MakeRepartitionExchange(0, false, {}, {}).ok());
  EXPECT_FALSE(MakeRepartitionExchange(-3, true, {}, {}).ok());
  Harness h;
  auto exchange = MakeRepartitionExchange(3, false, {"missing"}, {}).ValueOrDie();
  auto st = exchange->Map(0, RandomBlocks(44, 1, 5)[0], h.ctx);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("'missing'"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("row, i, d"), std::string::npos) << st.message();
}


// ---- The memory contract: reduce tasks read back within the cap ----

namespace {

/// `blocks` blocks of `rows` rows: "row" numbers them 0, 1, 2... across blocks, "x" is
/// random (so a block is 16 bytes a row).
std::vector<Block> RowAndRandomBlocks(uint64_t seed, int blocks, int64_t rows) {
  std::mt19937_64 rng(seed);
  std::vector<Block> out;
  int64_t next = 0;
  for (int b = 0; b < blocks; ++b) {
    arrow::Int64Builder row, x;
    (void)row.Reserve(rows);
    (void)x.Reserve(rows);
    for (int64_t i = 0; i < rows; ++i) {
      row.UnsafeAppend(next++);
      x.UnsafeAppend(static_cast<int64_t>(rng()));
    }
    out.push_back(arrow::RecordBatch::Make(
        arrow::schema({arrow::field("row", arrow::int64()), arrow::field("x", arrow::int64())}), rows,
        {row.Finish().ValueOrDie(), x.Finish().ValueOrDie()}));
  }
  return out;
}

int64_t TotalBytes(const std::vector<Block>& blocks) {
  int64_t bytes = 0;
  for (const auto& b : blocks) bytes += BlockBytes(*b);
  return bytes;
}

}  // namespace

// An input five times the cap: the map side fills the cap with runs and spills the
// rest; the reduce side then reads spilled runs back. Before, it grew the reservation
// for them past the cap; now it spills runs no reduce has read, or waits, to stay under.
TEST(MemoryContract, SortReadsBackWithinTheCap) {
  // 10 runs of 4 MiB (64 chunks each); a reduce task reserves, before it holds any, its
  // chunks read back and their concatenation (2 x (1 MiB + up to a chunk a run)).
  auto input = RowAndRandomBlocks(71, 10, 262144);
  const int64_t cap = TotalBytes(input) / 5;
  ExchangeOptions options;
  options.num_partitions = 40;
  Harness h(cap);
  auto exchange = MakeSortExchange({{"x"}}, options).ValueOrDie();
  ASSIGN_OK(auto result, RunExchange(*exchange, input, h.ctx, /*threads=*/2));
  EXPECT_TRUE(SameBatch(Concat(result), ExpectedSort(input, {{"x"}})));
  EXPECT_GT(h.spill->bytes_spilled(), 0);
  EXPECT_LE(h.reservation.peak(), cap);
  EXPECT_EQ(h.reservation.size(), 0);
  EXPECT_TRUE(fs::is_empty(h.spill->path()));
}

TEST(MemoryContract, RandomShuffleReadsBackWithinTheCap) {
  auto input = RowAndRandomBlocks(73, 40, 32768);
  const int64_t cap = TotalBytes(input) / 5;
  ExchangeOptions options;
  options.num_partitions = 40;
  auto reference = ShuffleRows(input, 5, options);  // unbounded: nothing spilled
  Harness h(cap);
  auto exchange = MakeRandomShuffleExchange(5, options).ValueOrDie();
  ASSIGN_OK(auto result, RunExchange(*exchange, input, h.ctx, /*threads=*/2));
  EXPECT_GT(h.spill->bytes_spilled(), 0);
  EXPECT_LE(h.reservation.peak(), cap);
  EXPECT_EQ(h.reservation.size(), 0);
  // A permutation of the input's rows (each row whole), in the order the seed gives.
  Block out = Concat(result);
  EXPECT_TRUE(SameBatch(ExpectedSort({out}, {{"row"}}), ConcatenateBlocks(input).ValueOrDie()));
  EXPECT_EQ(Column64(out, "row"), reference);
}

TEST(MemoryContract, ShufflingRepartitionReadsBackWithinTheCap) {
  auto input = RowAndRandomBlocks(74, 40, 32768);
  const int64_t cap = TotalBytes(input) / 5;
  ExchangeOptions options;
  options.seed = 11;
  Harness h(cap);
  auto exchange = MakeRepartitionExchange(40, true, {}, options).ValueOrDie();
  ASSIGN_OK(auto result, RunExchange(*exchange, input, h.ctx, /*threads=*/2));
  EXPECT_EQ(result.size(), 40u);
  EXPECT_GT(h.spill->bytes_spilled(), 0);
  EXPECT_LE(h.reservation.peak(), cap);
  EXPECT_EQ(h.reservation.size(), 0);
  EXPECT_TRUE(SameBatch(ExpectedSort({Concat(result)}, {{"row"}}), ConcatenateBlocks(input).ValueOrDie()));
}

// A partition larger than the whole cap still completes (past the cap, as the only
// holder: waiting could not help), rather than failing or waiting forever.
TEST(MemoryContract, PartitionLargerThanTheCapStillCompletes) {
  auto input = RowAndRandomBlocks(75, 6, 20000);
  ExchangeOptions options;
  options.num_partitions = 2;
  Harness h(/*cap=*/BlockBytes(*input[0]));
  auto exchange = MakeSortExchange({{"x"}}, options).ValueOrDie();
  ASSIGN_OK(auto result, RunExchange(*exchange, input, h.ctx, /*threads=*/2));
  EXPECT_TRUE(SameBatch(Concat(result), ExpectedSort(input, {{"x"}})));
  EXPECT_EQ(h.reservation.size(), 0);
  EXPECT_TRUE(fs::is_empty(h.spill->path()));
}

}  // namespace
}  // namespace millstream::testing

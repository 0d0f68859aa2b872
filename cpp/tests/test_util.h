#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include <arrow/api.h>
#include <arrow/compute/api.h>
#include <arrow/filesystem/api.h>
#include <gtest/gtest.h>

#include "millstream/millstream.h"
#include "runtime/reservation.h"
#include "runtime/spill_file.h"
#include "shuffle/exchange.h"

namespace millstream::testing {

#define ASSERT_OK(expr)                                 \
  do {                                                  \
    auto _st = (expr);                                  \
    ASSERT_TRUE(_st.ok()) << _st.ToString();            \
  } while (0)

#define ASSERT_OK_AND_ASSIGN(lhs, rexpr)                      \
  auto _res_##__LINE__ = (rexpr);                             \
  ASSERT_TRUE(_res_##__LINE__.ok()) << _res_##__LINE__.status().ToString(); \
  lhs = std::move(_res_##__LINE__).ValueUnsafe()

// ASSERT_OK_AND_ASSIGN names its temporary after the literal __LINE__, so it can be used
// once per scope; ASSIGN_OK can be used any number of times.
#define MILLSTREAM_TEST_CONCAT_INNER(a, b) a##b
#define MILLSTREAM_TEST_CONCAT(a, b) MILLSTREAM_TEST_CONCAT_INNER(a, b)
#define MILLSTREAM_TEST_ASSIGN_IMPL(result, lhs, rexpr)      \
  auto result = (rexpr);                                  \
  ASSERT_TRUE(result.ok()) << result.status().ToString(); \
  lhs = std::move(result).ValueUnsafe()
#define ASSIGN_OK(lhs, rexpr) \
  MILLSTREAM_TEST_ASSIGN_IMPL(MILLSTREAM_TEST_CONCAT(_assign_ok_, __COUNTER__), lhs, rexpr)

/// A UDF from a function over batches.
class FnUdf : public BatchUdf {
 public:
  using Fn = std::function<arrow::Result<std::shared_ptr<arrow::Table>>(
      const std::shared_ptr<arrow::RecordBatch>&)>;
  explicit FnUdf(Fn fn) : fn_(std::move(fn)) {}
  arrow::Result<std::shared_ptr<arrow::Table>> Call(
      const std::shared_ptr<arrow::RecordBatch>& batch) override {
    return fn_(batch);
  }

 private:
  Fn fn_;
};

inline BatchUdfFactory Udf(FnUdf::Fn fn) {
  auto udf = std::make_shared<FnUdf>(std::move(fn));
  return [udf]() -> arrow::Result<std::shared_ptr<BatchUdf>> { return udf; };
}

/// A table with int64 column "id" = 0..n-1 and float64 "x" = id * 0.5.
inline std::shared_ptr<arrow::Table> IdTable(int64_t n) {
  arrow::Int64Builder ids;
  arrow::DoubleBuilder xs;
  for (int64_t i = 0; i < n; ++i) {
    (void)ids.Append(i);
    (void)xs.Append(i * 0.5);
  }
  return arrow::Table::Make(
      arrow::schema({arrow::field("id", arrow::int64()), arrow::field("x", arrow::float64())}),
      {ids.Finish().ValueOrDie(), xs.Finish().ValueOrDie()});
}

/// The table sorted by `column` (to compare results ignoring order).
inline std::shared_ptr<arrow::Table> SortedBy(const std::shared_ptr<arrow::Table>& table,
                                              const std::string& column) {
  namespace cp = arrow::compute;
  auto indices = cp::SortIndices(table, cp::SortOptions({cp::SortKey(column)})).ValueOrDie();
  auto sorted = cp::Take(table, indices).ValueOrDie().table();
  return sorted->CombineChunks().ValueOrDie();
}

/// A fresh temporary directory, removed by the destructor.
class TempDir {
 public:
  TempDir() {
    char pattern[] = "/tmp/millstream-test-XXXXXX";
    path_ = mkdtemp(pattern);
  }
  ~TempDir() { (void)arrow::fs::LocalFileSystem().DeleteDir(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

/// An exchange's context with its own reservation (capped at `cap`), spill directory (a
/// fresh temporary one) and cancellation flag, for tests that drive an exchange directly.
struct Harness {
  explicit Harness(int64_t cap = int64_t{1} << 40) : reservation(cap) {
    spill = SpillDirectory::Make(dir.path()).ValueOrDie();
    ctx.reservation = &reservation;
    ctx.spill = spill.get();
    ctx.cancelled = &cancelled;
  }
  TempDir dir;
  MemoryReservation reservation;
  std::shared_ptr<SpillDirectory> spill;
  std::atomic<bool> cancelled{false};
  ExchangeContext ctx;
};

}  // namespace millstream::testing

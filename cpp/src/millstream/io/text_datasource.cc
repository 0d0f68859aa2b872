#include <arrow/api.h>
#include <arrow/util/utf8.h>

#include "io/file_datasource.h"

namespace millstream {
namespace {

/// Bytes of the line break starting at `p` as Python's str.splitlines sees one (\n, \r\n,
/// \r, \v, \f, \x1c-\x1e, U+0085, U+2028, U+2029), or 0.
size_t LineBreak(const uint8_t* p, const uint8_t* end) {
  switch (*p) {
    case '\n': case '\v': case '\f': case 0x1c: case 0x1d: case 0x1e: return 1;
    case '\r': return (p + 1 < end && p[1] == '\n') ? 2 : 1;
    case 0xc2: return (p + 1 < end && p[1] == 0x85) ? 2 : 0;
    case 0xe2: return (p + 2 < end && p[1] == 0x80 && (p[2] == 0xa8 || p[2] == 0xa9)) ? 3 : 0;
    default: return 0;
  }
}

/// Whether a line is only whitespace (Python's str.isspace, or empty).
bool Blank(const uint8_t* p, const uint8_t* end) {
  while (p < end) {
    uint8_t c = *p;
    if (c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f)) {
      ++p;
    } else if (c == 0xc2 && p + 1 < end && (p[1] == 0x85 || p[1] == 0xa0)) {
      p += 2;
    } else if (c == 0xe1 && p + 2 < end && p[1] == 0x9a && p[2] == 0x80) {  // U+1680
      p += 3;
    } else if (c == 0xe2 && p + 2 < end &&
               ((p[1] == 0x80 && (p[2] <= 0x8a || p[2] == 0xa8 || p[2] == 0xa9 || p[2] == 0xaf)) ||
                (p[1] == 0x81 && p[2] == 0x9f))) {  // U+2000-200A, 2028, 2029, 202F, 205F
      p += 3;
    } else if (c == 0xe3 && p + 2 < end && p[1] == 0x80 && p[2] == 0x80) {  // U+3000
      p += 3;
    } else {
      return false;
    }
  }
  return true;
}

/// Byte offset of the first invalid UTF-8 sequence, with the line it is on.
std::string InvalidUtf8Where(const uint8_t* data, int64_t size) {
  int64_t line = 1;
  for (int64_t i = 0; i < size;) {
    int64_t n = (data[i] < 0x80) ? 1 : (data[i] >> 5) == 0x6 ? 2 : (data[i] >> 4) == 0xe ? 3
                                     : (data[i] >> 3) == 0x1e ? 4 : 0;
    if (n == 0 || i + n > size || !arrow::util::ValidateUTF8(data + i, n)) {
      return "byte " + std::to_string(i) + " (line " + std::to_string(line) + ")";
    }
    if (data[i] == '\n') ++line;
    i += n;
  }
  return "an unknown position";
}

/// Appends the lines of [begin, end) to `builder`.
template <typename Builder>
arrow::Status SplitLines(const uint8_t* begin, const uint8_t* end, bool drop_empty_lines,
                         Builder* builder) {
  const uint8_t* line = begin;
  auto add = [&](const uint8_t* line_end) -> arrow::Status {
    if (drop_empty_lines && Blank(line, line_end)) return arrow::Status::OK();
    return builder->Append(line, static_cast<int64_t>(line_end - line));
  };
  for (const uint8_t* p = begin; p < end;) {
    size_t n = LineBreak(p, end);
    if (n == 0) {
      ++p;
      continue;
    }
    ARROW_RETURN_NOT_OK(add(p));
    p += n;
    line = p;
  }
  if (line < end) ARROW_RETURN_NOT_OK(add(end));
  return arrow::Status::OK();
}

}  // namespace

std::shared_ptr<Datasource> MakeTextSource(std::shared_ptr<arrow::fs::FileSystem> fs,
                                           std::vector<FoundFile> files, FileReadOptions options,
                                           bool drop_empty_lines) {
  auto reader = [drop_empty_lines](std::shared_ptr<arrow::io::InputStream> input,
                                   const std::string& path, const Emit& emit) -> arrow::Status {
    ARROW_ASSIGN_OR_RAISE(auto data, ReadAllBytes(*input));
    const uint8_t* begin = data->data();
    const uint8_t* end = begin + data->size();
    if (!arrow::util::ValidateUTF8(begin, data->size())) {
      return arrow::Status::Invalid("not valid UTF-8 (encoding='utf-8') at ",
                                    InvalidUtf8Where(begin, data->size()));
    }
    std::shared_ptr<arrow::Array> column;
    if (data->size() < INT32_MAX) {
      arrow::StringBuilder builder;
      ARROW_RETURN_NOT_OK(SplitLines(begin, end, drop_empty_lines, &builder));
      ARROW_RETURN_NOT_OK(builder.Finish(&column));
    } else {
      arrow::LargeStringBuilder builder;
      ARROW_RETURN_NOT_OK(SplitLines(begin, end, drop_empty_lines, &builder));
      ARROW_RETURN_NOT_OK(builder.Finish(&column));
    }
    if (column->length() == 0) return arrow::Status::OK();
    return emit(arrow::RecordBatch::Make(arrow::schema({arrow::field("text", column->type())}),
                                         column->length(), {column}));
  };
  // About 40 bytes per line, before anything is read.
  return MakeFileSource("ReadText", std::move(fs), std::move(files), std::move(options),
                        std::move(reader), 1.0 / 40);
}

}  // namespace millstream

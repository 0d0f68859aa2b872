// String and binary Arrow columns to numpy object arrays, for the numpy batch format:
// one Python str (or bytes) per distinct value of a column of few values, shared by its
// rows, made straight from the Arrow buffers (no pandas, no Arrow memo table).

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string_view>
#include <vector>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <arrow/api.h>
#include <arrow/c/bridge.h>

#include "py_interop.h"

namespace millstream::python {
namespace {

/// A cell's value with its first 8 bytes as a word: values of up to 8 bytes (most
/// category names) compare and hash without touching their bytes again.
struct Key {
  explicit Key(std::string_view v) : value(v) {
    if (v.size() >= 8) {
      std::memcpy(&prefix, v.data(), 8);
    } else {
      for (size_t k = 0; k < v.size(); ++k) prefix |= uint64_t{static_cast<uint8_t>(v[k])} << (8 * k);
    }
  }
  bool operator==(const Key& other) const {
    return prefix == other.prefix && value.size() == other.value.size() &&
           (value.size() <= 8 || std::memcmp(value.data() + 8, other.value.data() + 8, value.size() - 8) == 0);
  }
  uint64_t Hash() const {
    uint64_t h = (prefix ^ value.size()) * 0x9E3779B97F4A7C15ULL;
    if (value.size() > 8) h ^= std::hash<std::string_view>{}(value.substr(8));
    return h;
  }
  std::string_view value;
  uint64_t prefix = 0;
};

/// The distinct values met so far in one conversion, and their Python objects: an
/// open-addressing table of a fixed size over the Arrow data (alive for the call). The
/// objects are borrowed: the output array holds a reference to each.
class InternTable {
 public:
  /// At most this many distinct values are shared; past them each cell gets its own object.
  static constexpr size_t kMaxEntries = 256;

  /// The object for `key`, or null when it is not in the table.
  PyObject* Find(const Key& key, uint64_t hash) const {
    for (size_t i = Slot(hash);; i = (i + 1) & kMask) {
      const Entry& e = slots_[i];
      if (e.object == nullptr) return nullptr;
      if (e.hash == hash && e.key == key) return e.object;
    }
  }

  /// Adds `key` (not in the table); false when the table is full.
  bool Add(const Key& key, uint64_t hash, PyObject* object) {
    if (entries_ == kMaxEntries) return false;
    size_t i = Slot(hash);
    while (slots_[i].object != nullptr) i = (i + 1) & kMask;
    slots_[i] = Entry{hash, key, object};
    ++entries_;
    return true;
  }

  bool full() const { return entries_ == kMaxEntries; }

 private:
  static constexpr int kBits = 10;
  static constexpr size_t kSlots = size_t{1} << kBits;  // at most a quarter used
  static_assert(kSlots >= 4 * kMaxEntries);
  static constexpr size_t kMask = kSlots - 1;
  static size_t Slot(uint64_t hash) { return static_cast<size_t>(hash >> (64 - kBits)); }
  struct Entry {
    uint64_t hash = 0;
    Key key{std::string_view()};
    PyObject* object = nullptr;
  };
  std::vector<Entry> slots_ = std::vector<Entry>(kSlots);
  size_t entries_ = 0;
};

/// Leading cells whose distinct values decide whether values are shared at all: a column
/// that fills the table within them (mostly distinct values) is converted cell by cell.
constexpr int64_t kSampleCells = 1024;

PyObject* MakeObject(std::string_view value, bool text) {
  return text ? PyUnicode_DecodeUTF8(value.data(), static_cast<Py_ssize_t>(value.size()), "strict")
              : PyBytes_FromStringAndSize(value.data(), static_cast<Py_ssize_t>(value.size()));
}

/// Sets every cell of `out` (unset memory) to a new reference to its object: None for a
/// null, and for the cells after a failed conversion (then raises).
template <typename ArrayType>
void Fill(const ArrayType& array, bool text, PyObject** out) {
  InternTable table;
  bool share = true;
  const bool nulls = array.null_count() > 0;
  const int64_t n = array.length();
  for (int64_t i = 0; i < n; ++i) {
    if (nulls && array.IsNull(i)) {
      Py_INCREF(Py_None);
      out[i] = Py_None;
      continue;
    }
    std::string_view value = array.GetView(i);
    PyObject* object = nullptr;
    if (share) {
      Key key(value);
      uint64_t hash = key.Hash();
      object = table.Find(key, hash);
      if (object != nullptr) {
        Py_INCREF(object);
      } else {
        object = MakeObject(value, text);
        if (object != nullptr && (!table.Add(key, hash, object) || (table.full() && i < kSampleCells))) {
          share = false;
        }
      }
    } else {
      object = MakeObject(value, text);
    }
    if (object == nullptr) {  // not UTF-8
      for (int64_t j = i; j < n; ++j) {
        Py_INCREF(Py_None);
        out[j] = Py_None;
      }
      throw py::error_already_set();
    }
    out[i] = object;
  }
}

/// A numpy object array of the cells of a string or binary array (anything exporting
/// `__arrow_c_array__`): str for string types, bytes for binary types, None for nulls.
py::array StringsToObjects(const py::handle& column) {
  py::tuple capsules = column.attr("__arrow_c_array__")();
  auto* c_schema = static_cast<ArrowSchema*>(PyCapsule_GetPointer(capsules[0].ptr(), "arrow_schema"));
  auto* c_array = static_cast<ArrowArray*>(PyCapsule_GetPointer(capsules[1].ptr(), "arrow_array"));
  if (c_schema == nullptr || c_array == nullptr) throw py::error_already_set();
  auto array = ValueOrRaise(arrow::ImportArray(c_array, c_schema));
  const auto id = array->type_id();
  if (id != arrow::Type::STRING && id != arrow::Type::LARGE_STRING && id != arrow::Type::BINARY &&
      id != arrow::Type::LARGE_BINARY) {
    throw py::type_error("strings_to_objects: a string or binary column, not " +
                         array->type()->ToString());
  }
  // pybind11 makes the array read-only and leaves its cells unset: Fill sets every one.
  py::array out(py::dtype("O"), std::vector<py::ssize_t>{array->length()});
  auto** cells = static_cast<PyObject**>(const_cast<void*>(out.data()));
  switch (id) {
    case arrow::Type::STRING:
      Fill(static_cast<const arrow::StringArray&>(*array), true, cells);
      break;
    case arrow::Type::LARGE_STRING:
      Fill(static_cast<const arrow::LargeStringArray&>(*array), true, cells);
      break;
    case arrow::Type::BINARY:
      Fill(static_cast<const arrow::BinaryArray&>(*array), false, cells);
      break;
    default:  // LARGE_BINARY
      Fill(static_cast<const arrow::LargeBinaryArray&>(*array), false, cells);
  }
  out.attr("setflags")(py::arg("write") = true);
  return out;
}

}  // namespace

void RegisterStrings(py::module_& m) {
  m.def("strings_to_objects", &StringsToObjects, py::arg("column"),
        "A numpy object array of a string or binary pyarrow Array's cells (str or bytes, "
        "None for nulls); a column of few distinct values shares one object per value.");
}

}  // namespace millstream::python

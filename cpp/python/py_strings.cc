// String and binary Arrow columns to numpy object arrays, for the numpy batch format:
// one Python str (or bytes) per distinct value of a column of few values, shared by its
// rows, made straight from the Arrow buffers (no pandas, no Arrow memo table).

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

/// The distinct values met so far in one conversion, and their Python objects: an
/// open-addressing table of a fixed size over the Arrow data (alive for the call). The
/// objects are borrowed: the output array holds a reference to each.
class InternTable {
 public:
  /// At most this many distinct values are shared; past them each cell gets its own object.
  static constexpr size_t kMaxEntries = 256;

  /// The object for `value`, or null when it is not in the table.
  PyObject* Find(std::string_view value, size_t hash) const {
    for (size_t i = hash & kMask;; i = (i + 1) & kMask) {
      const Entry& e = slots_[i];
      if (e.object == nullptr) return nullptr;
      if (e.hash == hash && e.value == value) return e.object;
    }
  }

  /// Adds `value` (not in the table); false when the table is full.
  bool Add(std::string_view value, size_t hash, PyObject* object) {
    if (entries_ == kMaxEntries) return false;
    size_t i = hash & kMask;
    while (slots_[i].object != nullptr) i = (i + 1) & kMask;
    slots_[i] = Entry{hash, value, object};
    ++entries_;
    return true;
  }

  bool full() const { return entries_ == kMaxEntries; }

 private:
  static constexpr size_t kSlots = 4 * kMaxEntries;  // a power of two, at most a quarter used
  static constexpr size_t kMask = kSlots - 1;
  struct Entry {
    size_t hash = 0;
    std::string_view value;
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

/// Fills `out` (None in every cell) with new references to the cells' objects.
template <typename ArrayType>
void Fill(const ArrayType& array, bool text, PyObject** out) {
  InternTable table;
  bool share = true;
  const bool nulls = array.null_count() > 0;
  const int64_t n = array.length();
  for (int64_t i = 0; i < n; ++i) {
    if (nulls && array.IsNull(i)) continue;  // None already
    std::string_view value = array.GetView(i);
    PyObject* object = nullptr;
    if (share) {
      size_t hash = std::hash<std::string_view>{}(value);
      object = table.Find(value, hash);
      if (object != nullptr) {
        Py_INCREF(object);
      } else {
        object = MakeObject(value, text);
        if (object == nullptr) throw py::error_already_set();
        if (!table.Add(value, hash, object) || (table.full() && i < kSampleCells)) share = false;
      }
    } else {
      object = MakeObject(value, text);
      if (object == nullptr) throw py::error_already_set();
    }
    out[i] = object;
    Py_DECREF(Py_None);  // the cell's None, replaced
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
  // numpy's own empty array (None in every cell; pybind11's constructor makes a read-only
  // one). Never destroyed: a static py::object would be released after the interpreter.
  static auto* empty = new py::object(py::module_::import("numpy").attr("empty"));
  py::array out = (*empty)(array->length(), py::arg("dtype") = "O");
  auto** cells = static_cast<PyObject**>(out.mutable_data());
  switch (array->type_id()) {
    case arrow::Type::STRING:
      Fill(static_cast<const arrow::StringArray&>(*array), true, cells);
      break;
    case arrow::Type::LARGE_STRING:
      Fill(static_cast<const arrow::LargeStringArray&>(*array), true, cells);
      break;
    case arrow::Type::BINARY:
      Fill(static_cast<const arrow::BinaryArray&>(*array), false, cells);
      break;
    case arrow::Type::LARGE_BINARY:
      Fill(static_cast<const arrow::LargeBinaryArray&>(*array), false, cells);
      break;
    default:
      throw py::type_error("strings_to_objects: a string or binary column, not " +
                           array->type()->ToString());
  }
  return out;
}

}  // namespace

void RegisterStrings(py::module_& m) {
  m.def("strings_to_objects", &StringsToObjects, py::arg("column"),
        "A numpy object array of a string or binary pyarrow Array's cells (str or bytes, "
        "None for nulls); a column of few distinct values shares one object per value.");
}

}  // namespace millstream::python

// Typed bindings of a write's options: WriteOptions with its Parquet and CSV parts, and
// the FileFormat enum, each with keyword constructors. The Python write
// (Dataset._write, python/millstream/_files.py's `core_write_options`) builds them in
// one place.

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <arrow/api.h>
#include <arrow/c/bridge.h>

#include "millstream/dataset.h"
#include "py_interop.h"

namespace millstream::python {

namespace {

/// A pyarrow.Schema (or anything exporting __arrow_c_schema__) as an arrow::Schema; None: null.
std::shared_ptr<arrow::Schema> SchemaFromPython(const py::object& obj) {
  if (obj.is_none()) return nullptr;
  if (!py::hasattr(obj, "__arrow_c_schema__")) {
    throw py::type_error("schema must be a pyarrow.Schema, got " +
                         py::str(py::type::handle_of(obj).attr("__name__")).cast<std::string>());
  }
  py::object capsule = obj.attr("__arrow_c_schema__")();
  auto* c_schema = static_cast<ArrowSchema*>(PyCapsule_GetPointer(capsule.ptr(), "arrow_schema"));
  if (c_schema == nullptr) throw py::error_already_set();
  return ValueOrRaise(arrow::ImportSchema(c_schema));
}

py::object SchemaOrNone(const std::shared_ptr<arrow::Schema>& schema) {
  return schema ? SchemaToPyArrow(schema) : py::none();
}

}  // namespace

void RegisterOptions(py::module_& m) {
  py::enum_<FileFormat>(m, "FileFormat", "The formats a write produces.")
      .value("PARQUET", FileFormat::kParquet)
      .value("CSV", FileFormat::kCsv)
      .value("JSON", FileFormat::kJson);

  const ParquetWriteOptions parquet;
  py::class_<ParquetWriteOptions>(m, "ParquetWriteOptions",
                                  "Parquet writer settings (pyarrow.parquet.write_table's names).")
      .def(py::init([](std::string compression, std::optional<int> compression_level, int64_t row_group_size,
                       std::optional<bool> use_dictionary, bool write_statistics, std::string version, int64_t data_page_size,
                       py::object schema) {
             ParquetWriteOptions o;
             o.compression = std::move(compression);
             o.compression_level = compression_level;
             o.row_group_size = row_group_size;
             o.use_dictionary = use_dictionary;
             o.write_statistics = write_statistics;
             o.version = std::move(version);
             o.data_page_size = data_page_size;
             o.schema = SchemaFromPython(schema);
             return o;
           }),
           py::kw_only(), py::arg("compression") = parquet.compression,
           py::arg("compression_level") = py::none(), py::arg("row_group_size") = parquet.row_group_size,
           py::arg("use_dictionary") = py::none(),
           py::arg("write_statistics") = parquet.write_statistics, py::arg("version") = parquet.version,
           py::arg("data_page_size") = parquet.data_page_size, py::arg("schema") = py::none())
      .def_readwrite("compression", &ParquetWriteOptions::compression)
      .def_readwrite("compression_level", &ParquetWriteOptions::compression_level)
      .def_readwrite("row_group_size", &ParquetWriteOptions::row_group_size)
      .def_readwrite("use_dictionary", &ParquetWriteOptions::use_dictionary)
      .def_readwrite("write_statistics", &ParquetWriteOptions::write_statistics)
      .def_readwrite("version", &ParquetWriteOptions::version)
      .def_readwrite("data_page_size", &ParquetWriteOptions::data_page_size)
      .def_property(
          "schema", [](const ParquetWriteOptions& o) { return SchemaOrNone(o.schema); },
          [](ParquetWriteOptions& o, py::object schema) { o.schema = SchemaFromPython(schema); });

  const CsvWriteOptions csv;
  py::class_<CsvWriteOptions>(m, "CsvWriteOptions", "CSV writer settings (pyarrow.csv.WriteOptions' names).")
      .def(py::init([](bool include_header, char delimiter, std::string quoting_style,
                       std::string quoting_header, int32_t batch_size) {
             return CsvWriteOptions{include_header, delimiter, std::move(quoting_style),
                                    std::move(quoting_header), batch_size};
           }),
           py::kw_only(), py::arg("include_header") = csv.include_header, py::arg("delimiter") = csv.delimiter,
           py::arg("quoting_style") = csv.quoting_style, py::arg("quoting_header") = csv.quoting_header,
           py::arg("batch_size") = csv.batch_size)
      .def_readwrite("include_header", &CsvWriteOptions::include_header)
      .def_readwrite("delimiter", &CsvWriteOptions::delimiter)
      .def_readwrite("quoting_style", &CsvWriteOptions::quoting_style)
      .def_readwrite("quoting_header", &CsvWriteOptions::quoting_header)
      .def_readwrite("batch_size", &CsvWriteOptions::batch_size);

  const WriteOptions write;
  py::class_<WriteOptions>(m, "WriteOptions",
                           "Options of a write: how rows become files and where they go. "
                           "filename_provider (a Ray FilenameProvider) is taken by the constructor only.")
      .def(py::init([](std::vector<std::string> partition_cols, int64_t min_rows_per_file,
                       int64_t max_rows_per_file, py::object filename_provider, bool filename_template,
                       std::string stream_compression, const ParquetWriteOptions& parquet,
                       const CsvWriteOptions& csv, py::object filesystem,
                       std::vector<std::string> retried_io_errors, int concurrency) {
             WriteOptions o;
             o.partition_cols = std::move(partition_cols);
             o.min_rows_per_file = min_rows_per_file;
             o.max_rows_per_file = max_rows_per_file;
             if (!filename_provider.is_none()) o.filename = MakePythonFilenameFunction(filename_provider);
             o.filename_template = filename_template;
             o.stream_compression = std::move(stream_compression);
             o.parquet = parquet;
             o.csv = csv;
             o.filesystem = FileSystemFromHandle(filesystem);
             o.retried_io_errors = std::move(retried_io_errors);
             o.concurrency = concurrency;
             return o;
           }),
           py::kw_only(), py::arg("partition_cols") = std::vector<std::string>{},
           py::arg("min_rows_per_file") = write.min_rows_per_file,
           py::arg("max_rows_per_file") = write.max_rows_per_file, py::arg("filename_provider") = py::none(),
           py::arg("filename_template") = write.filename_template,
           py::arg("stream_compression") = write.stream_compression,
           py::arg("parquet") = ParquetWriteOptions{}, py::arg("csv") = CsvWriteOptions{},
           py::arg("filesystem") = py::none(), py::arg("retried_io_errors") = std::vector<std::string>{},
           py::arg("concurrency") = write.concurrency)
      .def_readonly("partition_cols", &WriteOptions::partition_cols)
      .def_readonly("min_rows_per_file", &WriteOptions::min_rows_per_file)
      .def_readonly("max_rows_per_file", &WriteOptions::max_rows_per_file)
      .def_property_readonly("has_filename_provider", [](const WriteOptions& o) { return bool(o.filename); })
      .def_readonly("filename_template", &WriteOptions::filename_template)
      .def_readonly("stream_compression", &WriteOptions::stream_compression)
      .def_readonly("parquet", &WriteOptions::parquet)
      .def_readonly("csv", &WriteOptions::csv)
      .def_property_readonly("filesystem", [](const WriteOptions& o) -> py::object {
        if (!o.filesystem) return py::none();
        return py::cast(FileSystemHandle{o.filesystem});
      })
      .def_readonly("retried_io_errors", &WriteOptions::retried_io_errors)
      .def_readonly("concurrency", &WriteOptions::concurrency)
      .def("validate", [](const WriteOptions& o, FileFormat format) { CheckStatus(ValidateWriteOptions(format, o)); },
           py::arg("format"), "Raises naming the first option that cannot be written (before anything is).");
}

}  // namespace millstream::python

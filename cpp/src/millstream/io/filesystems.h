#pragma once

#include <memory>
#include <string>
#include <string_view>

#include <arrow/filesystem/filesystem.h>
#include <arrow/filesystem/gcsfs.h>
#include <arrow/filesystem/s3fs.h>
#include <arrow/result.h>

#include "millstream/dataset.h"

namespace millstream {

/// \brief An S3 filesystem with `options` (Arrow's S3 client; S3 is initialized on first
/// use and finalized by FinalizeFileSystems). Filesystems with equal options are shared.
arrow::Result<std::shared_ptr<arrow::fs::FileSystem>> MakeS3FileSystem(const arrow::fs::S3Options& options);

/// \brief S3 options from the environment, as the AWS tools read it: credentials by the
/// default chain (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, profiles...),
/// region from AWS_REGION / AWS_DEFAULT_REGION (else us-east-1), endpoint from
/// AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL (`http://host:port` sets the scheme too).
/// Initializes S3 first (the AWS SDK must be before any of its objects is made).
arrow::Result<arrow::fs::S3Options> S3OptionsFromEnvironment();

/// \brief GCS options from the environment: Google's default credentials, or, when
/// STORAGE_EMULATOR_HOST is set (`http://host:port`, Google's variable for an emulator),
/// anonymous access to that endpoint.
arrow::fs::GcsOptions GcsOptionsFromEnvironment();

/// \brief A GCS filesystem with `options` (Arrow's GCS client).
arrow::Result<std::shared_ptr<arrow::fs::FileSystem>> MakeGcsFileSystem(const arrow::fs::GcsOptions& options);

/// \brief Where `given` lives. A local path or `file://` URI: the local filesystem and the
/// absolute path; `s3://bucket/key` (Ray's `s3://anonymous@bucket/key` too): S3 and
/// `bucket/key`; `gs://bucket/key` (or `gcs://`): GCS and `bucket/key`. `*fs` set beforehand (a `filesystem=` argument, or an earlier path of the
/// same read) is used for a path without a scheme and must be of the URI's kind. Another
/// scheme (`hdfs://`...) is NotImplemented before any client is made.
arrow::Result<std::string> ResolvePath(const std::string& given, std::shared_ptr<arrow::fs::FileSystem>* fs,
                                       std::string_view operation);

/// \brief The local filesystem, its files' read buffers taken from the engine's pool (so
/// they count against the memory limit, and are freed where the engine frees).
std::shared_ptr<arrow::fs::FileSystem> MakeLocalFileSystem();

/// \brief Whether `fs` is the local filesystem.
bool IsLocal(const arrow::fs::FileSystem& fs);

/// \brief PrepareWriteDirectory on any filesystem: on the local one it is that; on S3 the
/// "directory" is a key prefix: it exists when an object is under it; overwrite deletes
/// the objects under it.
arrow::Result<bool> PrepareWriteDirectoryOn(const std::shared_ptr<arrow::fs::FileSystem>& fs,
                                            const std::string& directory, SaveMode mode,
                                            std::string_view operation);

/// \brief Finalizes S3 if it was initialized (at interpreter exit, before Python is torn
/// down; S3 calls fail afterwards).
void FinalizeFileSystems();

}  // namespace millstream

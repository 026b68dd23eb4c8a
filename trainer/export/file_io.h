// Files the exporter writes: each goes to path + ".tmp" first and is renamed
// into place only once complete, so a failed export leaves no torn file.
#pragma once

#include <cstdio>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace lagserve::trainer {

class AtomicFileWriter {
 public:
  // Opens path + ".tmp" for writing (Internal error naming it on failure).
  static absl::StatusOr<AtomicFileWriter> open(const std::string& path);
  AtomicFileWriter(AtomicFileWriter&&) noexcept;
  AtomicFileWriter& operator=(AtomicFileWriter&&) = delete;
  // Removes the temporary file unless commit() succeeded.
  ~AtomicFileWriter();

  absl::Status write(const void* data, size_t n_bytes);
  // Flushes, closes and renames the temporary file over path.
  absl::Status commit();

 private:
  AtomicFileWriter(std::string path, std::FILE* file);

  std::string path_;
  std::string tmp_path_;
  std::FILE* file_ = nullptr;
  bool committed_ = false;
};

// The whole of `text` into path, atomically as above.
absl::Status write_text_file(const std::string& path, std::string_view text);
// The whole file (NotFound naming it when it cannot be opened).
absl::StatusOr<std::string> read_text_file(const std::string& path);

}  // namespace lagserve::trainer

// AtomicFileWriter and the text-file helpers of the exporter (see file_io.h).
#include "trainer/export/file_io.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

namespace lagserve::trainer {
namespace {

absl::Status io_error(const std::string& path, std::string_view what, int err) {
  return absl::InternalError(fmt::format("{}: {}: {}", path, what, std::strerror(err)));
}

}  // namespace

AtomicFileWriter::AtomicFileWriter(std::string path, std::FILE* file)
    : path_(std::move(path)), tmp_path_(path_ + ".tmp"), file_(file) {}

AtomicFileWriter::AtomicFileWriter(AtomicFileWriter&& other) noexcept
    : path_(std::move(other.path_)),
      tmp_path_(std::move(other.tmp_path_)),
      file_(other.file_),
      committed_(other.committed_) {
  other.file_ = nullptr;
  other.committed_ = true;  // the moved-from object owns nothing to clean up
}

AtomicFileWriter::~AtomicFileWriter() {
  if (file_ != nullptr) std::fclose(file_);
  if (!committed_) std::remove(tmp_path_.c_str());
}

absl::StatusOr<AtomicFileWriter> AtomicFileWriter::open(const std::string& path) {
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) return io_error(tmp, "cannot open for writing", errno);
  return AtomicFileWriter(path, f);
}

absl::Status AtomicFileWriter::write(const void* data, size_t n_bytes) {
  if (file_ == nullptr) return absl::FailedPreconditionError(fmt::format("{}: closed", tmp_path_));
  if (n_bytes > 0 && std::fwrite(data, 1, n_bytes, file_) != n_bytes) {
    return io_error(tmp_path_, "write failed", errno);
  }
  return absl::OkStatus();
}

absl::Status AtomicFileWriter::commit() {
  if (file_ == nullptr) return absl::FailedPreconditionError(fmt::format("{}: closed", tmp_path_));
  std::FILE* f = file_;
  file_ = nullptr;
  const bool flushed = std::fflush(f) == 0;
  const int flush_errno = errno;
  if (std::fclose(f) != 0 || !flushed) {
    return io_error(tmp_path_, "write failed", flushed ? errno : flush_errno);
  }
  if (std::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
    return io_error(path_, fmt::format("cannot rename {} to it", tmp_path_), errno);
  }
  committed_ = true;
  return absl::OkStatus();
}

absl::Status write_text_file(const std::string& path, std::string_view text) {
  absl::StatusOr<AtomicFileWriter> out = AtomicFileWriter::open(path);
  if (!out.ok()) return out.status();
  if (absl::Status st = out->write(text.data(), text.size()); !st.ok()) return st;
  return out->commit();
}

absl::StatusOr<std::string> read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(fmt::format("{}: cannot open", path));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::InternalError(fmt::format("{}: read failed", path));
  return ss.str();
}

}  // namespace lagserve::trainer

// remove_tree: deletes a file or a folder with everything in it (rm -rf).
// NOTE: used instead of std::filesystem::remove_all in code that links
// LibTorch: the PyTorch 2.11 wheel's libtorch_cpu.so exports its own copy of
// std::filesystem (remove_all included), which interposes the system
// libstdc++'s and crashed on a non-empty folder.
#pragma once

#include <ftw.h>
#include <stdio.h>

#include <string>

namespace lagserve {

// True when nothing is left at `path` (also when nothing was there).
inline bool remove_tree(const std::string& path) {
  const auto remove_one = [](const char* p, const struct stat*, int, struct FTW*) {
    return ::remove(p) == 0 ? 0 : -1;
  };
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return true;
  return ::nftw(path.c_str(), remove_one, 16, FTW_DEPTH | FTW_PHYS) == 0;
}

}  // namespace lagserve

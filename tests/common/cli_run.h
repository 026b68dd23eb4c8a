// Runs one of our binaries as a user would (through the shell) and captures
// its exit code, stdout and stderr; shared by the CLI tests.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace lagserve::testing_util {

struct CliRun {
  int exit_code = -1;
  std::string out, err;
};

inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs `binary args` (args shell-quoted by the caller).
inline CliRun run_cli(const std::filesystem::path& binary, const std::string& args) {
  namespace fs = std::filesystem;
  const fs::path tmp = fs::temp_directory_path() / ("lagserve_cli_" + std::to_string(::getpid()));
  const std::string cmd = binary.string() + " " + args + " >" + tmp.string() + ".out 2>" +
                          tmp.string() + ".err";
  const int status = std::system(cmd.c_str());
  CliRun r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = slurp(tmp.string() + ".out");
  r.err = slurp(tmp.string() + ".err");
  fs::remove(tmp.string() + ".out");
  fs::remove(tmp.string() + ".err");
  return r;
}

}  // namespace lagserve::testing_util

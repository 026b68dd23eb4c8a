// lagtrain as a user runs it, on a small random model (tests/golden/models/
// tiny-llama): make-data, a few LRSA steps whose loss goes down, an export that
// lagserve loads and whose policy it applies by default; stop and resume gives
// the loss curve of an uninterrupted run; bad input gives one error line.
#include <cmath>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "engine/common/remove_tree.h"
#include "tests/common/cli_run.h"

namespace lagserve {
namespace {

namespace fs = std::filesystem;
using testing_util::CliRun;
using testing_util::run_cli;
using testing_util::slurp;

const fs::path kSource(LAGSERVE_SOURCE_DIR);
const fs::path kLagtrain = fs::path(LAGSERVE_BINARY_DIR) / "trainer/lagtrain";
const fs::path kLagserve = fs::path(LAGSERVE_BINARY_DIR) / "server/lagserve";
const std::string kTiny = (kSource / "tests/golden/models/tiny-llama").string();
const std::string kPolicy = "sink=4,lag=16,ratio=0.25";

struct LogLines {
  std::vector<double> loss;       // per step, in order
  std::vector<double> eval_loss;  // per evaluation, in order
};

LogLines read_log(const fs::path& out) {
  LogLines l;
  std::istringstream in(slurp(out / "train_log.jsonl"));
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("loss")) l.loss.push_back(j["loss"].get<double>());
    if (j.contains("eval_loss")) l.eval_loss.push_back(j["eval_loss"].get<double>());
  }
  return l;
}

class Lagtrain : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("lagtrain_test_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    const CliRun r = run_cli(kLagtrain, "make-data passkey --length 400 --count 16 --seed 1 --model " +
                                            kTiny + " --out " + (dir_ / "train.jsonl").string());
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  static void TearDownTestSuite() { remove_tree(dir_.string()); }  // not fs::remove_all: see remove_tree.h

  static std::string train_args(const fs::path& out, int steps, const std::string& policy = kPolicy) {
    return "train --model " + kTiny + " --data " + (dir_ / "train.jsonl").string() +
           " --eval-data " + (dir_ / "train.jsonl").string() + " --out " + out.string() +
           " --lagkv " + policy + " --seq-len 512 --batch-size 2 --grad-accum 2 --warmup 2" +
           " --lr 3e-3 --threads 2 --device cpu --no-progress --seed 7 --steps " + std::to_string(steps);
  }
  static fs::path dir_;
};
fs::path Lagtrain::dir_;

TEST_F(Lagtrain, TrainsExportsAndLagserveAppliesThePolicy) {
  const fs::path out = dir_ / "run";
  const CliRun r = run_cli(kLagtrain, train_args(out, 10));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const LogLines log = read_log(out);
  ASSERT_EQ(log.loss.size(), 10u);
  ASSERT_EQ(log.eval_loss.size(), 2u);  // before the first step and at the end
  EXPECT_LT(log.eval_loss[1], log.eval_loss[0] - 0.5) << "the loss did not go down";
  for (const char* f : {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"}) {
    EXPECT_TRUE(fs::exists(out / f)) << f;
  }
  const auto config = nlohmann::json::parse(slurp(out / "config.json"));
  EXPECT_EQ(config["lagkv"]["keep"], 4);
  if (!fs::exists(kLagserve)) GTEST_SKIP() << "lagserve not built (LAGSERVE_SERVER=OFF)";
  // The engine reports the policy it applies; the export's is its default.
  const CliRun g = run_cli(kLagserve, "generate --model " + out.string() +
                                          " --prompt 'The pass key is' --max-tokens 4 --threads 2");
  ASSERT_EQ(g.exit_code, 0) << g.err;
  EXPECT_NE(g.err.find("KV policy sink=4,lag=16,keep=4,score_v_weight=1"), std::string::npos) << g.err;
  const CliRun off = run_cli(kLagserve, "generate --model " + out.string() +
                                            " --prompt 'The pass key is' --max-tokens 4 --threads 2 --lagkv off");
  ASSERT_EQ(off.exit_code, 0) << off.err;
  EXPECT_NE(off.err.find("KV policy off"), std::string::npos) << off.err;
}

TEST_F(Lagtrain, ResumeGivesTheLossCurveOfAnUninterruptedRun) {
  const fs::path whole = dir_ / "whole", split = dir_ / "split";
  ASSERT_EQ(run_cli(kLagtrain, train_args(whole, 6)).exit_code, 0);
  const CliRun first = run_cli(kLagtrain, train_args(split, 6) + " --stop-after 3");
  ASSERT_EQ(first.exit_code, 0) << first.err;
  EXPECT_FALSE(fs::exists(split / "model.safetensors")) << "a stopped run must not export";
  EXPECT_EQ(read_log(split).loss.size(), 3u);
  const CliRun rest = run_cli(kLagtrain, train_args(split, 6) + " --resume");
  ASSERT_EQ(rest.exit_code, 0) << rest.err;
  const LogLines a = read_log(whole), b = read_log(split);
  ASSERT_EQ(a.loss.size(), 6u);
  ASSERT_EQ(b.loss.size(), 6u);
  for (size_t i = 0; i < a.loss.size(); ++i) {
    EXPECT_NEAR(b.loss[i], a.loss[i], 1e-6 * std::abs(a.loss[i])) << "step " << i + 1;
  }
  // Resuming with other options is refused, naming the difference.
  const CliRun other = run_cli(kLagtrain, train_args(split, 6, "sink=4,lag=16,keep=8") + " --resume");
  EXPECT_EQ(other.exit_code, 1);
  EXPECT_NE(other.err.find("other options"), std::string::npos) << other.err;
}

TEST_F(Lagtrain, BadInputGivesOneErrorLine) {
  struct Case { std::string args, needle; };
  const std::string data = (dir_ / "train.jsonl").string();
  const std::vector<Case> cases = {
      {"train --model " + kTiny + " --data /nonexistent.jsonl --out " + (dir_ / "x").string(), "/nonexistent.jsonl"},
      {"train --model " + kTiny + " --data " + data + " --out " + (dir_ / "x").string() + " --lagkv lag=0", "--lagkv"},
      {"train --model " + kTiny + " --data " + data + " --out " + (dir_ / "x").string() + " --seq-len 1", "--seq-len"},
      {"train --model /nonexistent-model --data " + data + " --out " + (dir_ / "x").string(), "nonexistent-model"},
      {"make-data sudoku --model " + kTiny, "sudoku"},
      {"make-data passkey --length 5 --model " + kTiny, "too small"},
  };
  for (const Case& c : cases) {
    const CliRun r = run_cli(kLagtrain, c.args);
    EXPECT_EQ(r.exit_code, 1) << c.args << "\n" << r.err;
    EXPECT_EQ(r.err.rfind("lagtrain: error: ", 0), 0u) << r.err;
    EXPECT_NE(r.err.find(c.needle), std::string::npos) << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
  }
}

}  // namespace
}  // namespace lagserve

// lagtrain as a user runs it, on a small random model (tests/golden/models/
// tiny-llama): make-data, a few LRSA steps whose loss goes down, an export that
// lagserve loads and whose policy it applies by default; stop and resume gives
// the loss curve of an uninterrupted run; two data-parallel processes (Gloo)
// give the loss curve of one with their whole batch; bad input gives one
// error line.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

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
  std::vector<double> grad_norm;  // per step, in order
  std::vector<double> eval_loss;  // per evaluation, in order
};

LogLines read_log(const fs::path& out) {
  LogLines l;
  std::istringstream in(slurp(out / "train_log.jsonl"));
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("loss")) l.loss.push_back(j["loss"].get<double>());
    if (j.contains("grad_norm")) l.grad_norm.push_back(j["grad_norm"].get<double>());
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

  static std::string train_args(const fs::path& out, int steps, const std::string& policy = kPolicy,
                                int batch_size = 2) {
    return "train --model " + kTiny + " --data " + (dir_ / "train.jsonl").string() +
           " --eval-data " + (dir_ / "train.jsonl").string() + " --out " + out.string() +
           " --lagkv " + policy + " --seq-len 512 --batch-size " + std::to_string(batch_size) +
           " --grad-accum 2 --warmup 2 --lr 3e-3 --threads 1 --device cpu --no-progress --seed 7" +
           " --steps " + std::to_string(steps);
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

// A TCP port nothing listens on now (for rank 0's c10d store).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t n = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &n) != 0) {
    ::close(fd);
    return 0;
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

TEST_F(Lagtrain, TwoDataParallelProcessesGiveTheLossOfOneWithTheWholeBatch) {
  const fs::path one = dir_ / "dp_one", two = dir_ / "dp_two", world1 = dir_ / "dp_world1";
  const CliRun r = run_cli(kLagtrain, train_args(one, 4));  // 2 sequences per micro-batch
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // The same run with WORLD_SIZE=1 set: a group of one, the same bits.
  ASSERT_EQ(run_cli("RANK=0 WORLD_SIZE=1 " + kLagtrain.string(), train_args(world1, 4)).exit_code, 0);
  // Two processes of 1 sequence per micro-batch each, through c10d on loopback.
  const int port = free_port();
  ASSERT_GT(port, 0);
  const std::string env = "WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(port);
  const std::string run = kLagtrain.string() + " " + train_args(two, 4, kPolicy, 1);
  const fs::path script = dir_ / "two.sh";
  std::ofstream(script) << "RANK=1 " << env << " " << run << " >" << (dir_ / "rank1.log").string()
                        << " 2>&1 &\npid=$!\nRANK=0 " << env << " " << run
                        << "\nstatus=$?\nwait $pid || exit 9\nexit $status\n";
  const CliRun r0 = run_cli("sh", script.string());
  if (r0.err.find("built without Gloo") != std::string::npos) {
    GTEST_SKIP() << "this lagtrain has no Gloo (its LibTorch's is not linkable)";
  }
  ASSERT_EQ(r0.exit_code, 0) << r0.err << slurp(dir_ / "rank1.log");
  const LogLines a = read_log(one), b = read_log(two), c = read_log(world1);
  ASSERT_EQ(a.loss.size(), 4u);
  ASSERT_EQ(b.loss.size(), 4u);
  EXPECT_EQ(c.loss, a.loss);
  EXPECT_EQ(c.grad_norm, a.grad_norm);
  for (size_t i = 0; i < a.loss.size(); ++i) {
    // Summed in another order (per replica, then across): fp32 rounding only.
    EXPECT_NEAR(b.loss[i], a.loss[i], 1e-5 * std::abs(a.loss[i])) << "step " << i + 1;
    EXPECT_NEAR(b.grad_norm[i], a.grad_norm[i], 1e-4 * std::abs(a.grad_norm[i])) << "step " << i + 1;
  }
  EXPECT_LT(b.loss.back(), b.loss.front() - 1) << "the two processes did not learn";
  // Rank 0 alone exports.
  EXPECT_TRUE(fs::exists(two / "model.safetensors"));
  // A rank outside the world is refused.
  const CliRun bad = run_cli("RANK=2 WORLD_SIZE=2 " + kLagtrain.string(), train_args(dir_ / "dp_bad", 1));
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("RANK=2 with WORLD_SIZE=2"), std::string::npos) << bad.err;
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

// LagPolicy carried by checkpoints: config.json's "lagkv" and GGUF lagkv.*
// keys (GGUF bytes written by a small writer here), round trips and errors.
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "engine/kv/lag_policy.h"
#include "engine/model/gguf.h"

namespace lagserve::kv {
namespace {

LagPolicy policy(int32_t sink, int32_t lag, int32_t keep, float w, std::vector<int32_t> skip) {
  LagPolicy p;
  p.enabled = true;
  p.sink = sink;
  p.lag = lag;
  p.keep = keep;
  p.score_v_weight = w;
  p.skip_layers = std::move(skip);
  return p;
}

std::string config_with(const std::string& lagkv) {
  return R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "lagkv": )" + lagkv +
         "}";
}

// --- config.json ----------------------------------------------------------------

TEST(LagPolicyConfigJson, RoundTrips) {
  std::mt19937 rng(11);
  std::vector<LagPolicy> policies = {policy(16, 128, 32, 1.0f, {}),
                                     policy(0, 1, 1, 0.0f, {0}),
                                     policy(4, 64, 16, 0.1f, {0, 1, 5})};
  for (int i = 0; i < 200; ++i) {
    const int32_t lag = 1 + static_cast<int32_t>(rng() % 512);
    policies.push_back(policy(static_cast<int32_t>(rng() % 64), lag,
                              1 + static_cast<int32_t>(rng() % lag),
                              std::uniform_real_distribution<float>(0.f, 4.f)(rng),
                              {static_cast<int32_t>(rng() % 3), 7}));
  }
  for (const LagPolicy& p : policies) {
    const std::string text = lag_policy_to_config_json(p);
    const auto back = lag_policy_from_config_json(config_with(text));
    ASSERT_TRUE(back.ok()) << text << ": " << back.status();
    ASSERT_TRUE(back->has_value()) << text;
    EXPECT_EQ(**back, p) << text;
  }
  EXPECT_EQ(lag_policy_to_config_json(policy(4, 64, 16, 0.1f, {0, 1, 5})),
            R"({"sink":4,"lag":64,"keep":16,"score_v_weight":0.1,"skip_layers":[0,1,5]})");
  EXPECT_EQ(lag_policy_to_config_json(LagPolicy{}), "false");
}

TEST(LagPolicyConfigJson, AbsentFalseTrueRatioAndDefaults) {
  auto absent = lag_policy_from_config_json(R"({"hidden_size": 64})");
  ASSERT_TRUE(absent.ok());
  EXPECT_FALSE(absent->has_value());
  auto null = lag_policy_from_config_json(config_with("null"));
  ASSERT_TRUE(null.ok());
  EXPECT_FALSE(null->has_value());

  auto off = lag_policy_from_config_json(config_with("false"));
  ASSERT_TRUE(off.ok() && off->has_value());
  EXPECT_FALSE((*off)->enabled);
  auto off2 = lag_policy_from_config_json(config_with(R"({"enabled": false, "lag": 8})"));
  ASSERT_TRUE(off2.ok() && off2->has_value());
  EXPECT_FALSE((*off2)->enabled);

  auto on = lag_policy_from_config_json(config_with("true"));
  ASSERT_TRUE(on.ok() && on->has_value());
  EXPECT_EQ(**on, policy(16, 128, 32, 1.0f, {}));

  auto ratio = lag_policy_from_config_json(
      config_with(R"({"sink": 2, "lag": 16, "ratio": 0.5, "skip_layers": [3, 1]})"));
  ASSERT_TRUE(ratio.ok()) << ratio.status();
  EXPECT_EQ(**ratio, policy(2, 16, 8, 1.0f, {1, 3}));
  auto lag_only = lag_policy_from_config_json(config_with(R"({"lag": 64})"));
  ASSERT_TRUE(lag_only.ok());
  EXPECT_EQ((*lag_only)->keep, 16);
}

TEST(LagPolicyConfigJson, ErrorsNameTheKey) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {config_with(R"({"sinks": 4})"), "sinks"},
      {config_with(R"({"sink": "4"})"), "sink"},
      {config_with(R"({"sink": 1.5})"), "sink"},
      {config_with(R"({"sink": -1})"), "sink"},
      {config_with(R"({"lag": 4294967296})"), "lag"},
      {config_with(R"({"lag": 0})"), "lag"},
      {config_with(R"({"lag": 8, "keep": 9})"), "keep"},
      {config_with(R"({"lag": 8, "keep": 2, "ratio": 0.25})"), "ratio"},
      {config_with(R"({"ratio": 2})"), "ratio"},
      {config_with(R"({"ratio": "half"})"), "ratio"},
      {config_with(R"({"score_v_weight": -1})"), "score_v_weight"},
      {config_with(R"({"score_v_weight": 1e300})"), "score_v_weight"},
      {config_with(R"({"score_v_weight": true})"), "score_v_weight"},
      {config_with(R"({"skip_layers": 3})"), "skip_layers"},
      {config_with(R"({"skip_layers": [1.5]})"), "skip_layers"},
      {config_with(R"({"skip_layers": [-2]})"), "skip_layers"},
      {config_with(R"({"enabled": 1})"), "enabled"},
      {config_with("3"), "lagkv"},
      {config_with(R"("on")"), "lagkv"},
      {R"({"lagkv": {"lag": 8}, )", "JSON"},
      {"[1, 2]", "object"},
  };
  for (const auto& [text, key] : cases) {
    const auto p = lag_policy_from_config_json(text);
    ASSERT_FALSE(p.ok()) << text;
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_NE(p.status().message().find(key), std::string::npos)
        << text << ": " << p.status().message();
  }
}

// --- GGUF ---------------------------------------------------------------------------

// Metadata-only GGUF v3 (no tensors), little-endian as on every host we build on.
class GgufWriter {
 public:
  void add_bool(const std::string& key, bool v) { entry(key, 7), put<uint8_t>(v ? 1 : 0); }
  void add_i32(const std::string& key, int32_t v) { entry(key, 5), put(v); }
  void add_u32(const std::string& key, uint32_t v) { entry(key, 4), put(v); }
  void add_f32(const std::string& key, float v) { entry(key, 6), put(v); }
  void add_string(const std::string& key, const std::string& v) { entry(key, 8), str(v); }
  void add_i32_array(const std::string& key, const std::vector<int32_t>& v) {
    entry(key, 9);
    put<uint32_t>(5);
    put<uint64_t>(v.size());
    for (int32_t x : v) put(x);
  }
  void add_string_array(const std::string& key, const std::vector<std::string>& v) {
    entry(key, 9);
    put<uint32_t>(8);
    put<uint64_t>(v.size());
    for (const std::string& x : v) str(x);
  }

  // Writes the file under the test temp dir and opens it.
  std::unique_ptr<model::GgufFile> open(const std::string& name) const {
    std::string bytes = "GGUF";
    append(bytes, uint32_t{3});
    append(bytes, uint64_t{0});  // tensors
    append(bytes, n_kv_);
    bytes += body_;
    const std::string path = ::testing::TempDir() + "/" + name + ".gguf";
    std::ofstream(path, std::ios::binary) << bytes;
    auto f = model::GgufFile::open(path);
    EXPECT_TRUE(f.ok()) << f.status();
    return f.ok() ? *std::move(f) : nullptr;
  }

 private:
  template <typename T>
  static void append(std::string& out, T v) {
    char b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    out.append(b, sizeof(T));
  }
  template <typename T>
  void put(T v) { append(body_, v); }
  void str(const std::string& s) {
    put<uint64_t>(s.size());
    body_ += s;
  }
  void entry(const std::string& key, uint32_t type) {
    ++n_kv_;
    str(key);
    put(type);
  }
  std::string body_;
  uint64_t n_kv_ = 0;
};

TEST(LagPolicyGguf, RoundTripsTheKeys) {
  for (const LagPolicy& p : {policy(16, 128, 32, 1.0f, {}), policy(0, 1, 1, 0.0f, {0}),
                             policy(4, 64, 16, 0.1f, {0, 1, 5})}) {
    GgufWriter w;
    w.add_string("general.architecture", "llama");
    w.add_bool("lagkv.enabled", true);
    w.add_i32("lagkv.sink", p.sink);
    w.add_u32("lagkv.lag", static_cast<uint32_t>(p.lag));
    w.add_i32("lagkv.keep", p.keep);
    w.add_f32("lagkv.score_v_weight", p.score_v_weight);
    w.add_i32_array("lagkv.skip_layers", p.skip_layers);
    auto f = w.open("lagkv_roundtrip");
    ASSERT_NE(f, nullptr);
    auto back = lag_policy_from_gguf(*f);
    ASSERT_TRUE(back.ok()) << back.status();
    ASSERT_TRUE(back->has_value());
    EXPECT_EQ(**back, p) << p.to_string();
  }
}

TEST(LagPolicyGguf, AbsentDisabledAndDefaults) {
  GgufWriter none;
  none.add_string("general.architecture", "llama");
  auto f = none.open("lagkv_none");
  ASSERT_NE(f, nullptr);
  auto p = lag_policy_from_gguf(*f);
  ASSERT_TRUE(p.ok());
  EXPECT_FALSE(p->has_value());

  GgufWriter off;
  off.add_bool("lagkv.enabled", false);
  off.add_i32("lagkv.lag", 8);
  f = off.open("lagkv_off");
  p = lag_policy_from_gguf(*f);
  ASSERT_TRUE(p.ok() && p->has_value());
  EXPECT_FALSE((*p)->enabled);

  GgufWriter lag_only;  // keys without lagkv.enabled: enabled
  lag_only.add_i32("lagkv.lag", 64);
  f = lag_only.open("lagkv_lag_only");
  p = lag_policy_from_gguf(*f);
  ASSERT_TRUE(p.ok() && p->has_value());
  EXPECT_EQ(**p, policy(16, 64, 16, 1.0f, {}));
}

TEST(LagPolicyGguf, ErrorsNameTheKey) {
  struct Case {
    std::string key;
    void (*write)(GgufWriter&);
  };
  const std::vector<Case> cases = {
      {"lagkv.sink", [](GgufWriter& w) { w.add_string("lagkv.sink", "4"); }},
      {"lagkv.enabled", [](GgufWriter& w) { w.add_i32("lagkv.enabled", 1); }},
      {"lagkv.lag", [](GgufWriter& w) { w.add_u32("lagkv.lag", 3000000000u); }},
      {"lagkv.score_v_weight",
       [](GgufWriter& w) { w.add_string("lagkv.score_v_weight", "1"); }},
      {"lagkv.skip_layers",
       [](GgufWriter& w) { w.add_string_array("lagkv.skip_layers", {"0"}); }},
      {"lagkv.skip_layers", [](GgufWriter& w) { w.add_i32_array("lagkv.skip_layers", {-1}); }},
      {"lagkv.bogus", [](GgufWriter& w) { w.add_i32("lagkv.bogus", 1); }},
      {"keep",
       [](GgufWriter& w) {
         w.add_i32("lagkv.lag", 8);
         w.add_i32("lagkv.keep", 9);
       }},
      {"sink", [](GgufWriter& w) { w.add_i32("lagkv.sink", -1); }},
      {"score_v_weight", [](GgufWriter& w) { w.add_f32("lagkv.score_v_weight", -2.f); }},
  };
  int i = 0;
  for (const Case& c : cases) {
    GgufWriter w;
    c.write(w);
    auto f = w.open("lagkv_error_" + std::to_string(i++));
    ASSERT_NE(f, nullptr);
    const auto p = lag_policy_from_gguf(*f);
    ASSERT_FALSE(p.ok()) << c.key;
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << c.key;
    EXPECT_NE(p.status().message().find(c.key), std::string::npos)
        << c.key << ": " << p.status().message();
  }
}

}  // namespace
}  // namespace lagserve::kv

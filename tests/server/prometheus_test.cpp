// Prometheus registry: the rendered text is parsed back (names, unescaped labels, values)
// and checked against what was recorded, including under 8 threads of increments.
#include "server/prometheus.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace lagserve::server {
namespace {

struct Sample {
  std::string name;
  Labels labels;
  double value = 0.0;
};

struct Exposition {
  std::vector<std::string> help, type;  // "name text" after "# HELP " / "# TYPE "
  std::vector<Sample> samples;          // in rendered order
};

// A strict reader for the subset of format 0.0.4 that render() writes.
Exposition parse(const std::string& text) {
  Exposition exp;
  EXPECT_TRUE(text.empty() || text.back() == '\n') << "text must end in a newline";
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("# HELP ", 0) == 0) {
      exp.help.push_back(line.substr(7));
      continue;
    }
    if (line.rfind("# TYPE ", 0) == 0) {
      exp.type.push_back(line.substr(7));
      continue;
    }
    Sample s;
    size_t i = line.find_first_of("{ ");
    if (i == std::string::npos) {
      ADD_FAILURE() << "no value on line: " << line;
      continue;
    }
    s.name = line.substr(0, i);
    if (line[i] == '{') {
      ++i;
      while (i < line.size() && line[i] != '}') {
        const size_t eq = line.find('=', i);
        if (eq == std::string::npos || eq + 1 >= line.size() || line[eq + 1] != '"') {
          ADD_FAILURE() << "bad label on line: " << line;
          break;
        }
        std::string name = line.substr(i, eq - i), value;
        for (i = eq + 2; i < line.size() && line[i] != '"'; ++i) {
          if (line[i] == '\\' && i + 1 < line.size()) {
            const char c = line[++i];
            value += c == 'n' ? '\n' : c;
          } else {
            value += line[i];
          }
        }
        s.labels.emplace_back(name, value);
        i += 1;                                      // closing quote
        if (i < line.size() && line[i] == ',') ++i;  // next label
      }
      i += 1;  // closing brace
    }
    if (i >= line.size() || line[i] != ' ') {
      ADD_FAILURE() << "no space before value on line: " << line;
      continue;
    }
    const std::string v = line.substr(i + 1);
    s.value = v == "+Inf" ? INFINITY : v == "-Inf" ? -INFINITY : v == "NaN" ? NAN : std::stod(v);
    exp.samples.push_back(s);
  }
  return exp;
}

// The one sample with this name and labels; NaN (and a failure) when there is not exactly one.
double value_of(const Exposition& exp, const std::string& name, const Labels& labels = {}) {
  int found = 0;
  double value = NAN;
  for (const Sample& s : exp.samples) {
    if (s.name == name && s.labels == labels) {
      ++found;
      value = s.value;
    }
  }
  EXPECT_EQ(found, 1) << name;
  return value;
}

bool contains_line(const std::string& text, const std::string& line) {
  return ("\n" + text).find("\n" + line + "\n") != std::string::npos;
}

TEST(Prometheus, CountersAndGaugesWithoutLabels) {
  Registry r;
  Counter& tokens = r.counter("lagserve:prompt_tokens_total", "Prompt tokens processed.");
  tokens.inc();
  tokens.inc(2.5);
  tokens.inc(-4.0);  // ignored: counters only go up
  tokens.inc(NAN);   // ignored
  Counter& requests = r.counter("lagserve:requests_total", "Requests.");
  requests.inc(3);
  Gauge& running = r.gauge("lagserve:num_requests_running", "Running requests.");
  running.set(10);
  running.inc(2);
  running.dec(0.5);
  EXPECT_EQ(tokens.value(), 3.5);
  EXPECT_EQ(running.value(), 11.5);

  const std::string text = r.render();
  const Exposition exp = parse(text);
  EXPECT_EQ(value_of(exp, "lagserve:prompt_tokens_total"), 3.5);
  EXPECT_EQ(value_of(exp, "lagserve:requests_total"), 3.0);
  EXPECT_EQ(value_of(exp, "lagserve:num_requests_running"), 11.5);
  EXPECT_TRUE(contains_line(text, "lagserve:requests_total 3")) << text;  // integral: no ".0"
  EXPECT_TRUE(contains_line(text, "# TYPE lagserve:prompt_tokens_total counter")) << text;
  EXPECT_TRUE(contains_line(text, "# TYPE lagserve:num_requests_running gauge")) << text;
  EXPECT_TRUE(contains_line(text, "# HELP lagserve:requests_total Requests.")) << text;
}

TEST(Prometheus, NumbersAsPrometheusSpellsThem) {
  Registry r;
  r.gauge("a", "h").set(0.1);
  r.gauge("b", "h").set(-7);
  r.gauge("c", "h").set(INFINITY);
  r.gauge("d", "h").set(-INFINITY);
  r.gauge("e", "h").set(NAN);
  r.gauge("f", "h").set(1e6);
  const std::string text = r.render();
  for (const char* line : {"a 0.1", "b -7", "c +Inf", "d -Inf", "e NaN", "f 1000000"}) {
    EXPECT_TRUE(contains_line(text, line)) << line << " in\n" << text;
  }
}

TEST(Prometheus, LabelledSeriesShareOneFamily) {
  Registry r;
  Counter& a = r.counter("lagserve:generation_tokens_total", "Tokens.", {{"model", "a"}});
  Counter& b =
      r.counter("lagserve:generation_tokens_total", "Tokens.", {{"model", "b"}, {"policy", "lag"}});
  a.inc(4);
  b.inc(7);
  // Same series again: the same object, and help given later is ignored.
  Counter& a_again = r.counter("lagserve:generation_tokens_total", "Other.", {{"model", "a"}});
  EXPECT_EQ(&a, &a_again);
  a_again.inc();

  const std::string text = r.render();
  const Exposition exp = parse(text);
  EXPECT_EQ(exp.help, std::vector<std::string>{"lagserve:generation_tokens_total Tokens."});
  EXPECT_EQ(exp.type, std::vector<std::string>{"lagserve:generation_tokens_total counter"});
  ASSERT_EQ(exp.samples.size(), 2u) << text;
  EXPECT_EQ(value_of(exp, "lagserve:generation_tokens_total", {{"model", "a"}}), 5);
  EXPECT_EQ(value_of(exp, "lagserve:generation_tokens_total", {{"model", "b"}, {"policy", "lag"}}),
            7);
  EXPECT_TRUE(contains_line(text, R"(lagserve:generation_tokens_total{model="b",policy="lag"} 7)"))
      << text;
}

TEST(Prometheus, FamiliesRenderInRegistrationOrder) {
  Registry r;
  r.gauge("zeta", "z");
  r.counter("alpha", "a");
  r.gauge("zeta", "z", {{"k", "v"}});  // a new series does not move its family
  r.histogram("mid", "m", {1});
  const Exposition exp = parse(r.render());
  EXPECT_EQ(exp.type, (std::vector<std::string>{"zeta gauge", "alpha counter", "mid histogram"}));
}

TEST(Prometheus, LabelValuesAndHelpAreEscaped) {
  Registry r;
  const std::string nasty = "a\\b\"c\nd";  // backslash, quote, newline
  r.counter("requests_total", "Line one\nback\\slash \"quoted\"", {{"path", nasty}}).inc();
  const std::string text = r.render();
  EXPECT_TRUE(contains_line(text, R"(requests_total{path="a\\b\"c\nd"} 1)")) << text;
  // Help escapes backslash and newline only.
  EXPECT_TRUE(contains_line(text, R"(# HELP requests_total Line one\nback\\slash "quoted")"))
      << text;
  EXPECT_EQ(value_of(parse(text), "requests_total", {{"path", nasty}}), 1);
}

TEST(Prometheus, HistogramBucketsAreCumulativeAndInclusive) {
  Registry r;
  Histogram& h =
      r.histogram("lagserve:time_to_first_token_seconds", "TTFT.", {0.1, 1, 10}, {{"model", "m"}});
  // 0.1, 1 and 10 sit on bucket boundaries: le is inclusive, so each counts in its own bucket.
  const std::vector<double> observations = {0.05, 0.1, 0.5, 1, 5, 10, 50};
  double expected_sum = 0;
  for (double v : observations) {
    h.observe(v);
    expected_sum += v;
  }
  EXPECT_EQ(h.count(), 7u);
  EXPECT_DOUBLE_EQ(h.sum(), expected_sum);

  const std::string text = r.render();
  const Exposition exp = parse(text);
  EXPECT_EQ(exp.type, std::vector<std::string>{"lagserve:time_to_first_token_seconds histogram"});
  const std::string name = "lagserve:time_to_first_token_seconds";
  const std::vector<std::pair<std::string, double>> want = {
      {"0.1", 2}, {"1", 4}, {"10", 6}, {"+Inf", 7}};
  for (const auto& [le, count] : want) {
    EXPECT_EQ(value_of(exp, name + "_bucket", {{"model", "m"}, {"le", le}}), count) << le;
  }
  EXPECT_DOUBLE_EQ(value_of(exp, name + "_sum", {{"model", "m"}}), expected_sum);
  EXPECT_EQ(value_of(exp, name + "_count", {{"model", "m"}}), 7);
  // Buckets in increasing order with +Inf last, then _sum, then _count.
  ASSERT_EQ(exp.samples.size(), 6u) << text;
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_EQ(exp.samples[i].labels[1].second, want[i].first);
  EXPECT_EQ(exp.samples[4].name, name + "_sum");
  EXPECT_EQ(exp.samples[5].name, name + "_count");
}

TEST(Prometheus, HistogramWithoutObservationsOrBounds) {
  Registry r;
  r.histogram("empty", "h", {1, 2, INFINITY});  // a trailing +Inf is implied, not doubled
  r.histogram("only_inf", "h", {}).observe(NAN);
  const Exposition exp = parse(r.render());
  EXPECT_EQ(value_of(exp, "empty_bucket", {{"le", "2"}}), 0);
  EXPECT_EQ(value_of(exp, "empty_bucket", {{"le", "+Inf"}}), 0);
  EXPECT_EQ(value_of(exp, "empty_count"), 0);
  EXPECT_EQ(value_of(exp, "only_inf_bucket", {{"le", "+Inf"}}), 1);
  EXPECT_TRUE(std::isnan(value_of(exp, "only_inf_sum")));
  EXPECT_EQ(value_of(exp, "only_inf_count"), 1);
}

TEST(Prometheus, ConcurrentUpdatesAreExact) {
  constexpr int kThreads = 8, kPerThread = 10000;
  Registry r;
  std::atomic<bool> done{false};
  std::thread renderer([&] {
    while (!done.load()) parse(r.render());  // renders race with every update below
  });
  std::vector<std::thread> workers;
  for (int t = 0; t < kThreads; ++t) {
    workers.emplace_back([&r, t] {
      Counter& total = r.counter("ops_total", "Ops.");
      Gauge& level = r.gauge("level", "Level.");
      Histogram& latency = r.histogram("latency_seconds", "Latency.", {0.5, 1});
      Counter& mine = r.counter("ops_by_thread_total", "Ops.", {{"thread", std::to_string(t)}});
      for (int i = 0; i < kPerThread; ++i) {
        total.inc();
        level.inc(0.5);
        latency.observe(i % 2 == 0 ? 0.25 : 0.75);
        mine.inc();
      }
    });
  }
  for (std::thread& w : workers) w.join();
  done.store(true);
  renderer.join();

  const double n = kThreads * kPerThread;
  const Exposition exp = parse(r.render());
  EXPECT_EQ(value_of(exp, "ops_total"), n);
  EXPECT_EQ(value_of(exp, "level"), n / 2);
  EXPECT_EQ(value_of(exp, "latency_seconds_bucket", {{"le", "0.5"}}), n / 2);
  EXPECT_EQ(value_of(exp, "latency_seconds_bucket", {{"le", "+Inf"}}), n);
  EXPECT_EQ(value_of(exp, "latency_seconds_count"), n);
  EXPECT_EQ(value_of(exp, "latency_seconds_sum"), n / 2);  // 0.25 + 0.75 per pair, exact
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(value_of(exp, "ops_by_thread_total", {{"thread", std::to_string(t)}}), kPerThread);
  }
}

TEST(PrometheusDeathTest, OneNameKeepsOneType) {
  EXPECT_DEATH(
      {
        Registry r;
        r.counter("lagserve:x", "h");
        r.gauge("lagserve:x", "h");
      },
      "metric lagserve:x is a counter, asked for as a gauge");
  EXPECT_DEATH(
      {
        Registry r;
        r.histogram("h", "h", {1, 2});
        r.histogram("h", "h", {1, 3}, {{"k", "v"}});
      },
      "histogram h registered with other buckets");
  EXPECT_DEATH({ Registry().histogram("h", "h", {2, 1}); }, "strictly increase");
  EXPECT_DEATH({ Registry().counter("bad-name", "h"); }, "bad metric name");
  EXPECT_DEATH({ Registry().histogram("h", "h", {1}, {{"le", "1"}}); }, "bad label name 'le'");
}

}  // namespace
}  // namespace lagserve::server

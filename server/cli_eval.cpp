// `lagserve eval`: long-context accuracy under KV compression. Every sample
// (the trainer's synthetic tasks at each length, or a JSONL file) runs under
// every policy through the engine, greedy, all at once as a batch; a sample
// scores when the continuation starts with its answer (eval.h). Writes one
// CSV row per (model, task, length, policy) and a PNG of accuracy against
// compression (eval_plot.h), one panel per length, one line per model.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <random>

#include <fmt/format.h>

#include "engine/runtime/engine.h"
#include "server/cli.h"
#include "server/eval.h"
#include "server/eval_plot.h"
#include "trainer/data/tasks.h"

namespace lagserve::cli {
namespace {

struct Sample {
  std::string task;
  int32_t length = 0;  // asked-for prompt tokens; 0 for a JSONL file
  std::string prompt;
  std::string answer;
};

struct Score {
  int32_t n = 0, correct = 0;
  int64_t prompt_tokens = 0;
};

// The last part of a path without the extension: "models/foo.gguf" -> "foo",
// "data/qa.jsonl" -> "qa"; a folder's name; "default" as is.
std::string base_name(const std::string& path, std::string_view ext) {
  std::string s = path;
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  s = s.substr(s.find_last_of('/') + 1);
  if (s.size() > ext.size() && s.compare(s.size() - ext.size(), ext.size(), ext) == 0) {
    s.resize(s.size() - ext.size());
  }
  return s;
}

// The samples of the run: the same for every model with the same tokenizer
// (each (task, length) draws from its own seeded generator).
absl::StatusOr<std::vector<Sample>> make_samples(const EvalArgs& args, const model::Tokenizer& tok) {
  std::vector<Sample> out;
  if (!args.data.empty()) {
    auto items = read_eval_jsonl(args.data);
    if (!items.ok()) return items.status();
    const std::string task = base_name(args.data, ".jsonl");
    for (EvalItem& it : *items) out.push_back({task, 0, std::move(it.prompt), std::move(it.answer)});
    return out;
  }
  for (size_t ti = 0; ti < args.tasks.size(); ++ti) {
    auto task = trainer::parse_task(args.tasks[ti]);
    if (!task.ok()) return task.status();
    for (const int32_t length : args.lengths) {
      std::mt19937_64 rng(args.seed * 1000003ULL + static_cast<uint64_t>(*task) * 65537ULL +
                          static_cast<uint64_t>(length));
      for (int i = 0; i < args.samples; ++i) {
        auto s = trainer::make_task_sample(*task, length, tok, rng);
        if (!s.ok()) return s.status();
        out.push_back({std::string(trainer::task_name(*task)), length, std::move(s->prompt),
                       std::move(s->answer)});
      }
    }
  }
  return out;
}

// A CSV field, quoted (quotes doubled) when it holds a comma, a quote or a newline.
std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

// "lrsa: [#####.....] 120/720 requests, 42 s, about 126 s left" in place on
// a terminal; every tenth of the run otherwise.
class Progress {
 public:
  Progress(std::string what, int64_t total)
      : what_(std::move(what)), total_(total), tty_(isatty(fileno(stderr)) != 0),
        t0_(std::chrono::steady_clock::now()) {}
  void update(int64_t done) {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    if (!tty_ && done * 10 / total_ == last_tenth_ && done < total_) return;
    last_tenth_ = done * 10 / total_;
    const int filled = static_cast<int>(done * 30 / total_);
    const std::string left = done > 0 ? fmt::format(", about {:.0f} s left", s / done * (total_ - done)) : "";
    fmt::print(stderr, "{}{}: [{}{}] {}/{} requests, {:.0f} s{}{}", tty_ ? "\r" : "", what_,
               std::string(filled, '#'), std::string(30 - filled, '.'), done, total_, s,
               done < total_ ? left : "", tty_ && done < total_ ? "\033[K" : "\n");
  }

 private:
  std::string what_;
  int64_t total_;
  bool tty_;
  int64_t last_tenth_ = -1;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace

int run_eval(const EvalArgs& args) {
  if (args.data.empty() && (args.tasks.empty() || args.lengths.empty())) {
    return fail(absl::InvalidArgumentError("eval needs --task and --length, or --data"));
  }
  if (args.samples < 1) return fail(absl::InvalidArgumentError("--samples must be at least 1"));
  std::vector<EvalPolicy> policies;
  for (const std::string& spec : args.policies) {
    auto p = parse_eval_policy(spec);
    if (!p.ok()) return fail(p.status());
    policies.push_back(*p);
  }
  if (policies.empty()) return fail(absl::InvalidArgumentError("--policy: give at least one"));

  // (model, task, length, policy index) -> score
  std::map<std::tuple<std::string, std::string, int32_t, size_t>, Score> scores;
  std::vector<std::string> labels;
  for (const std::string& model : args.models) {
    labels.push_back(base_name(model, ".gguf"));
    if (std::count(labels.begin(), labels.end(), labels.back()) > 1) {
      return fail(absl::InvalidArgumentError(fmt::format(
          "two models named '{}': the results are told apart by the file or folder name", labels.back())));
    }
  }
  for (size_t mi = 0; mi < args.models.size(); ++mi) {
    const std::string& model = args.models[mi];
    const std::string& label = labels[mi];
    EngineArgs ea = args.engine;
    ea.model = model;
    auto parts = make_engine_parts(ea);
    if (!parts.ok()) return fail(parts.status());
    const model::Model& m = *parts->model;
    auto samples = make_samples(args, *m.tokenizer);
    if (!samples.ok()) return fail(samples.status());

    runtime::Engine engine(*parts->backend, *m.tokenizer, parts->config);
    struct Pending {
      size_t sample, policy;
      std::string text;
    };
    std::vector<Pending> pending;
    for (size_t si = 0; si < samples->size(); ++si) {
      const Sample& s = (*samples)[si];
      const std::vector<int32_t> prompt = m.tokenizer->encode(s.prompt, m.tokenizer->add_bos_default());
      const auto answer_tokens = static_cast<int32_t>(m.tokenizer->encode(" " + s.answer, false).size());
      for (size_t pi = 0; pi < policies.size(); ++pi) {
        runtime::Request r;
        r.id = std::to_string(pending.size());
        r.prompt = prompt;
        r.sampling.temperature = 0;
        r.stop.max_tokens = answer_tokens + 4;  // room for a leading space or quote
        r.lagkv = policies[pi].policy;
        if (absl::Status st = engine.add_request(std::move(r)); !st.ok()) {
          return fail(absl::InvalidArgumentError(fmt::format(
              "{}: {} sample of {} tokens: {}", label, s.task, prompt.size(), std::string(st.message()))));
        }
        pending.push_back({si, pi, ""});
        scores[{label, s.task, s.length, pi}].prompt_tokens += static_cast<int64_t>(prompt.size());
      }
    }
    Progress progress(label, static_cast<int64_t>(pending.size()));
    int64_t done = 0;
    progress.update(0);
    while (engine.has_work()) {
      auto outs = engine.step();
      if (!outs.ok()) return fail(outs.status());
      for (runtime::RequestOutput& o : *outs) {
        Pending& p = pending[std::stoul(o.id)];
        p.text += o.text;
        if (!o.finished()) continue;
        if (!o.error.empty()) return fail(absl::InternalError(fmt::format("{}: {}", label, o.error)));
        const Sample& s = (*samples)[p.sample];
        Score& sc = scores[{label, s.task, s.length, p.policy}];
        ++sc.n;
        sc.correct += answer_matches(p.text, s.answer) ? 1 : 0;
        ++done;
      }
      progress.update(done);
    }
  }

  std::ofstream csv(args.csv);
  if (!csv) return fail(absl::InvalidArgumentError("cannot write " + args.csv));
  csv << "model,task,length,policy,compression,samples,correct,accuracy,mean_prompt_tokens\n";
  for (const auto& [key, sc] : scores) {
    const auto& [label, task, length, pi] = key;
    csv << fmt::format("{},{},{},{},{:g},{},{},{:.4f},{:.1f}\n", csv_field(label), csv_field(task), length,
                       csv_field(policies[pi].name), policies[pi].compression, sc.n, sc.correct,
                       static_cast<double>(sc.correct) / sc.n, static_cast<double>(sc.prompt_tokens) / sc.n);
  }
  csv.close();
  if (!csv) return fail(absl::InvalidArgumentError("cannot write " + args.csv));

  // The plot: per length a panel, per model a line of the accuracy over all
  // tasks at each compression (the first policy of each compression).
  std::map<int32_t, std::map<std::string, std::map<double, Score>>> by_length;
  std::map<double, size_t> first_of;
  for (size_t pi = 0; pi < policies.size(); ++pi) first_of.emplace(policies[pi].compression, pi);
  for (const auto& [key, sc] : scores) {
    const auto& [label, task, length, pi] = key;
    if (first_of.at(policies[pi].compression) != pi) continue;
    Score& agg = by_length[length][label][policies[pi].compression];
    agg.n += sc.n;
    agg.correct += sc.correct;
  }
  std::vector<PlotPanel> panels;
  for (const auto& [length, models] : by_length) {
    PlotPanel panel;
    panel.title = length > 0 ? fmt::format("{} tokens", length) : base_name(args.data, ".jsonl");
    for (const std::string& label : labels) {
      PlotLine line;
      line.label = label;
      for (const auto& [c, sc] : models.at(label)) {
        line.compression.push_back(c);
        line.accuracy.push_back(static_cast<double>(sc.correct) / sc.n);
      }
      panel.lines.push_back(std::move(line));
    }
    panels.push_back(std::move(panel));
  }
  if (!args.plot.empty()) {
    if (absl::Status st = write_accuracy_plot(args.plot, panels); !st.ok()) return fail(st);
  }
  for (const PlotPanel& p : panels) {
    for (const PlotLine& l : p.lines) {
      std::string row = fmt::format("{} at {}:", l.label, p.title);
      for (size_t i = 0; i < l.compression.size(); ++i) {
        row += fmt::format(" {:g}x {:.1f}%", l.compression[i], 100 * l.accuracy[i]);
      }
      fmt::print("{}\n", row);
    }
  }
  fmt::print(stderr, "eval: wrote {}{}\n", args.csv, args.plot.empty() ? "" : " and " + args.plot);
  return 0;
}

}  // namespace lagserve::cli

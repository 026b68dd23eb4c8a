// Checkpoint folders: model.pt (named parameters), optimizer.pt, state.json.
#include "trainer/checkpoint.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/serialize.h>
#include <torch/torch.h>
#include <torch/version.h>

namespace lagserve::trainer {

namespace fs = std::filesystem;

namespace {

// The optimizer's key for a parameter's state (its type changed in LibTorch 2).
auto state_key(const torch::Tensor& p) {
#if TORCH_VERSION_MAJOR >= 2
  return static_cast<void*>(p.unsafeGetTensorImpl());
#else
  return c10::guts::to_string(p.unsafeGetTensorImpl());
#endif
}

// NOTE: AdamW's state is written parameter by parameter (in param-group
// order) rather than with torch::save(optimizer): LibTorch 2's optimizer
// loading crashed on resume (segfault with the PyTorch 2.11 LibTorch), and
// this form reads the same in every version. Learning rates are set by the
// schedule each step, so the groups' options need no saving.
void save_adamw(torch::optim::AdamW& optimizer, const std::string& path) {
  torch::serialize::OutputArchive archive;
  int64_t i = 0;
  for (auto& group : optimizer.param_groups()) {
    for (auto& p : group.params()) {
      const auto it = optimizer.state().find(state_key(p));
      if (it != optimizer.state().end()) {
        const auto& s = static_cast<const torch::optim::AdamWParamState&>(*it->second);
        archive.write(fmt::format("p{}.step", i), torch::tensor(s.step()));
        archive.write(fmt::format("p{}.exp_avg", i), s.exp_avg().cpu());
        archive.write(fmt::format("p{}.exp_avg_sq", i), s.exp_avg_sq().cpu());
      }
      ++i;
    }
  }
  archive.save_to(path);
}

void load_adamw(torch::optim::AdamW& optimizer, const std::string& path) {
  torch::serialize::InputArchive archive;
  archive.load_from(path);
  int64_t i = 0;
  for (auto& group : optimizer.param_groups()) {
    for (auto& p : group.params()) {
      torch::Tensor step, exp_avg, exp_avg_sq;
      if (archive.try_read(fmt::format("p{}.step", i), step)) {
        archive.read(fmt::format("p{}.exp_avg", i), exp_avg);
        archive.read(fmt::format("p{}.exp_avg_sq", i), exp_avg_sq);
        // Owned, detached copies: what the archive returns stays tied to it
        // (on the PyTorch 2.11 LibTorch, keeping them crashed the next save).
        const auto own = [&](const torch::Tensor& t) {
          return t.detach().to(p.device(), p.scalar_type(), /*non_blocking=*/false, /*copy=*/true);
        };
        auto s = std::make_unique<torch::optim::AdamWParamState>();
        s->step(step.item<int64_t>());
        s->exp_avg(own(exp_avg));
        s->exp_avg_sq(own(exp_avg_sq));
        optimizer.state()[state_key(p)] = std::move(s);
      }
      ++i;
    }
  }
}

}  // namespace

absl::Status save_checkpoint(const std::string& dir, torch::nn::Module& model,
                             torch::optim::AdamW& optimizer, const LoopState& state) {
  const fs::path final_dir(dir), tmp_dir(dir + ".tmp");
  std::error_code ec;
  fs::remove_all(tmp_dir, ec);
  fs::create_directories(tmp_dir, ec);
  if (ec) return absl::InternalError(fmt::format("{}: cannot create: {}", tmp_dir.string(), ec.message()));
  try {
    torch::serialize::OutputArchive weights;
    for (const auto& p : model.named_parameters()) weights.write(p.key(), p.value().detach().cpu());
    weights.save_to((tmp_dir / "model.pt").string());
    save_adamw(optimizer, (tmp_dir / "optimizer.pt").string());
  } catch (const c10::Error& e) {
    return absl::InternalError(fmt::format("{}: cannot write the checkpoint: {}", dir, e.what_without_backtrace()));
  }
  nlohmann::json j = {{"step", state.step},
                      {"data_position", state.data_position},
                      {"fingerprint", state.fingerprint}};
  std::ofstream(tmp_dir / "state.json") << j.dump(2) << "\n";
  fs::remove_all(final_dir, ec);
  fs::rename(tmp_dir, final_dir, ec);
  if (ec) return absl::InternalError(fmt::format("{}: cannot rename: {}", dir, ec.message()));
  return absl::OkStatus();
}

absl::StatusOr<LoopState> load_checkpoint(const std::string& dir, torch::nn::Module& model,
                                          torch::optim::AdamW& optimizer) {
  const fs::path d(dir);
  if (!fs::exists(d / "state.json")) {
    return absl::NotFoundError(fmt::format("{}: no checkpoint (state.json missing)", dir));
  }
  LoopState state;
  try {
    std::ifstream in(d / "state.json");
    const auto j = nlohmann::json::parse(in);
    state.step = j.at("step").get<int64_t>();
    state.data_position = j.at("data_position").get<uint64_t>();
    state.fingerprint = j.at("fingerprint").get<std::string>();
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(fmt::format("{}/state.json: {}", dir, e.what()));
  }
  try {
    torch::serialize::InputArchive weights;
    weights.load_from((d / "model.pt").string());
    torch::NoGradGuard no_grad;
    for (auto& p : model.named_parameters()) {
      torch::Tensor t;
      if (!weights.try_read(p.key(), t)) {
        return absl::InvalidArgumentError(fmt::format("{}/model.pt: no tensor '{}'", dir, p.key()));
      }
      if (t.sizes() != p.value().sizes()) {
        return absl::InvalidArgumentError(fmt::format("{}/model.pt: '{}' has another shape", dir, p.key()));
      }
      p.value().copy_(t);
    }
    load_adamw(optimizer, (d / "optimizer.pt").string());
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(fmt::format("{}: cannot read the checkpoint: {}", dir, e.what_without_backtrace()));
  }
  return state;
}

}  // namespace lagserve::trainer

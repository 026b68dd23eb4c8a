// Checkpoint folders: model.pt (named parameters), optimizer.pt, state.json.
#include "trainer/checkpoint.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/serialize.h>
#include <torch/torch.h>

namespace lagserve::trainer {

namespace fs = std::filesystem;

absl::Status save_checkpoint(const std::string& dir, torch::nn::Module& model,
                             torch::optim::Optimizer& optimizer, const LoopState& state) {
  const fs::path final_dir(dir), tmp_dir(dir + ".tmp");
  std::error_code ec;
  fs::remove_all(tmp_dir, ec);
  fs::create_directories(tmp_dir, ec);
  if (ec) return absl::InternalError(fmt::format("{}: cannot create: {}", tmp_dir.string(), ec.message()));
  try {
    torch::serialize::OutputArchive weights;
    for (const auto& p : model.named_parameters()) weights.write(p.key(), p.value().detach().cpu());
    weights.save_to((tmp_dir / "model.pt").string());
    torch::save(optimizer, (tmp_dir / "optimizer.pt").string());
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
                                          torch::optim::Optimizer& optimizer) {
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
    const auto params = model.parameters();
    const torch::Device device = params.empty() ? torch::Device(torch::kCPU) : params[0].device();
    torch::load(optimizer, (d / "optimizer.pt").string(), device);
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(fmt::format("{}: cannot read the checkpoint: {}", dir, e.what_without_backtrace()));
  }
  return state;
}

}  // namespace lagserve::trainer

// Checkpoint folders: model.safetensors (named parameters), optimizer.safetensors
// (AdamW's moments, parameter by parameter) and state.json (loop position and
// AdamW's step counts), written with our safetensors writer and read with the
// engine's reader.
// NOTE: not torch::save / torch::serialize: with the PyTorch 2.11 LibTorch a
// run that had loaded an archive crashed when it saved the next one; plain
// safetensors read the same in every LibTorch version and in any tool.
#include "trainer/checkpoint.h"

#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>
#include <torch/version.h>

#include "engine/common/remove_tree.h"
#include "engine/common/status_macros.h"
#include "engine/model/safetensors.h"
#include "trainer/export/safetensors_writer.h"

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

// Host fp32 copies that the TensorViews point into.
struct HostTensors {
  std::vector<torch::Tensor> keep;
  std::vector<TensorView> views;
  void add(std::string name, const torch::Tensor& t) {
    keep.push_back(t.detach().to(torch::kCPU, torch::kFloat).contiguous());
    const auto& h = keep.back();
    views.push_back({std::move(name), h.sizes().vec(),
                     std::span<const float>(h.data_ptr<float>(), static_cast<size_t>(h.numel()))});
  }
};

// Reads tensor `name` into `dst` (same shape), on dst's device.
absl::Status read_into(const model::SafetensorsModel& st, const std::string& file,
                       const std::string& name, torch::Tensor dst) {
  const model::StTensor* t = st.find(name);
  if (t == nullptr) return absl::InvalidArgumentError(fmt::format("{}: no tensor '{}'", file, name));
  if (t->shape != dst.sizes().vec()) {
    return absl::InvalidArgumentError(fmt::format("{}: '{}' has another shape", file, name));
  }
  auto host = torch::empty(dst.sizes(), torch::kFloat);
  model::st_to_f32(*t, host.data_ptr<float>());
  torch::NoGradGuard no_grad;
  dst.copy_(host);
  return absl::OkStatus();
}

}  // namespace

absl::Status save_checkpoint(const std::string& dir, torch::nn::Module& model,
                             torch::optim::AdamW& optimizer, const LoopState& state) {
  const fs::path final_dir(dir), tmp_dir(dir + ".tmp");
  std::error_code ec;
  remove_tree(tmp_dir.string());
  fs::create_directories(tmp_dir, ec);
  if (ec) return absl::InternalError(fmt::format("{}: cannot create: {}", tmp_dir.string(), ec.message()));

  HostTensors weights, moments;
  for (const auto& p : model.named_parameters()) weights.add(p.key(), p.value());
  nlohmann::json steps = nlohmann::json::object();  // AdamW step count per parameter index
  int64_t i = 0;
  for (auto& group : optimizer.param_groups()) {
    for (auto& p : group.params()) {
      const auto it = optimizer.state().find(state_key(p));
      if (it != optimizer.state().end()) {
        const auto& s = static_cast<const torch::optim::AdamWParamState&>(*it->second);
        moments.add(fmt::format("p{}.exp_avg", i), s.exp_avg());
        moments.add(fmt::format("p{}.exp_avg_sq", i), s.exp_avg_sq());
        steps[std::to_string(i)] = s.step();
      }
      ++i;
    }
  }
  LAGSERVE_RETURN_IF_ERROR(
      write_safetensors((tmp_dir / "model.safetensors").string(), weights.views, SaveDtype::F32));
  LAGSERVE_RETURN_IF_ERROR(
      write_safetensors((tmp_dir / "optimizer.safetensors").string(), moments.views, SaveDtype::F32));
  const nlohmann::json j = {{"step", state.step},
                            {"data_position", state.data_position},
                            {"fingerprint", state.fingerprint},
                            {"adamw_steps", steps}};
  std::ofstream(tmp_dir / "state.json") << j.dump(2) << "\n";
  if (!remove_tree(final_dir.string())) {
    return absl::InternalError(fmt::format("{}: cannot replace the old checkpoint", dir));
  }
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
  nlohmann::json steps;
  try {
    std::ifstream in(d / "state.json");
    const auto j = nlohmann::json::parse(in);
    state.step = j.at("step").get<int64_t>();
    state.data_position = j.at("data_position").get<uint64_t>();
    state.fingerprint = j.at("fingerprint").get<std::string>();
    steps = j.at("adamw_steps");
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(fmt::format("{}/state.json: {}", dir, e.what()));
  }
  const std::string model_file = (d / "model.safetensors").string();
  const std::string opt_file = (d / "optimizer.safetensors").string();
  LAGSERVE_ASSIGN_OR_RETURN(auto weights, model::SafetensorsModel::open_file(model_file));
  for (auto& p : model.named_parameters()) {
    LAGSERVE_RETURN_IF_ERROR(read_into(*weights, model_file, p.key(), p.value()));
  }
  LAGSERVE_ASSIGN_OR_RETURN(auto moments, model::SafetensorsModel::open_file(opt_file));
  int64_t i = 0;
  for (auto& group : optimizer.param_groups()) {
    for (auto& p : group.params()) {
      if (steps.contains(std::to_string(i))) {
        auto s = std::make_unique<torch::optim::AdamWParamState>();
        s->step(steps[std::to_string(i)].get<int64_t>());
        s->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        s->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        LAGSERVE_RETURN_IF_ERROR(read_into(*moments, opt_file, fmt::format("p{}.exp_avg", i), s->exp_avg()));
        LAGSERVE_RETURN_IF_ERROR(read_into(*moments, opt_file, fmt::format("p{}.exp_avg_sq", i), s->exp_avg_sq()));
        optimizer.state()[state_key(p)] = std::move(s);
      }
      ++i;
    }
  }
  return state;
}

}  // namespace lagserve::trainer

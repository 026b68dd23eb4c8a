#include "engine/backend/cuda/device_sampler.h"

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "kernels/cuda/sampling.h"

namespace lagserve::backend::cuda {
namespace {

namespace kc = lagserve::kernels::cuda;

constexpr float kGreedyTemperature = 1e-5f;  // as runtime::Sampler and the sampling kernel

bool plain_greedy(const DeviceSampling& d) {
  return d.temperature < kGreedyTemperature && d.repetition_penalty == 1.0f && d.presence_penalty == 0.0f &&
         d.frequency_penalty == 0.0f && d.bias_ids.empty() && d.banned.empty();
}

}  // namespace

void DeviceSampler::enqueue(std::span<const DeviceSampling* const> by_row, float* logits,
                            int32_t vocab, cudaStream_t stream) {
  const int64_t n_rows = static_cast<int64_t>(by_row.size());
  tokens_.reserve(n_rows);
  tokens_host_.reserve(n_rows);
  const auto download = [&] {
    LAGSERVE_CUDA_CHECK(cudaMemcpyAsync(tokens_host_.get(), tokens_.get(), n_rows * sizeof(int32_t),
                                        cudaMemcpyDeviceToHost, stream));
  };
  if (std::all_of(by_row.begin(), by_row.end(), [](const DeviceSampling* d) { return d == nullptr || plain_greedy(*d); })) {
    argmax_keys_.reserve(n_rows);
    kc::sampling_argmax(logits, static_cast<int32_t>(n_rows), vocab, argmax_keys_.get(), tokens_.get(), stream);
    download();
    return;
  }

  // Per row: parameters and uniform; per list: CSR offsets over the rows and
  // the entries. Rows nobody samples are greedy with empty lists.
  std::vector<kc::SamplingRowParams> params(n_rows);
  std::vector<float> u(n_rows, 0.f);
  struct Csr {
    std::vector<int32_t> offsets, ids, counts;
    std::vector<float> values;
  } prompt, output, bias, banned;
  for (Csr* c : {&prompt, &output, &bias, &banned}) c->offsets.assign(n_rows + 1, 0);
  for (int64_t r = 0; r < n_rows; ++r) {
    kc::SamplingRowParams& p = params[r];
    p.temperature = 0.f;
    if (const DeviceSampling* d = by_row[r]) {
      p.temperature = d->temperature;
      p.top_k = d->top_k;
      p.top_p = d->top_p;
      p.min_p = d->min_p;
      p.repetition_penalty = d->repetition_penalty;
      p.presence_penalty = d->presence_penalty;
      p.frequency_penalty = d->frequency_penalty;
      u[r] = d->u;
      prompt.ids.insert(prompt.ids.end(), d->prompt_tokens.begin(), d->prompt_tokens.end());
      output.ids.insert(output.ids.end(), d->output_ids.begin(), d->output_ids.end());
      output.counts.insert(output.counts.end(), d->output_counts.begin(), d->output_counts.end());
      bias.ids.insert(bias.ids.end(), d->bias_ids.begin(), d->bias_ids.end());
      bias.values.insert(bias.values.end(), d->bias_values.begin(), d->bias_values.end());
      banned.ids.insert(banned.ids.end(), d->banned.begin(), d->banned.end());
    }
    for (Csr* c : {&prompt, &output, &bias, &banned}) c->offsets[r + 1] = static_cast<int32_t>(c->ids.size());
  }

  // One staging buffer of 16-byte aligned parts, one upload.
  std::vector<std::pair<const void*, size_t>> parts;
  auto add = [&](const auto& v) {
    parts.emplace_back(v.data(), v.size() * sizeof(v[0]));
    return parts.size() - 1;
  };
  const size_t i_params = add(params), i_u = add(u);
  const size_t i_po = add(prompt.offsets), i_pi = add(prompt.ids);
  const size_t i_oo = add(output.offsets), i_oi = add(output.ids), i_oc = add(output.counts);
  const size_t i_bo = add(bias.offsets), i_bi = add(bias.ids), i_bv = add(bias.values);
  const size_t i_no = add(banned.offsets), i_ni = add(banned.ids);
  std::vector<size_t> at(parts.size());
  size_t total = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    at[i] = total;
    total += (parts[i].second + 15) / 16 * 16;
  }
  total = std::max<size_t>(total, 16);
  inputs_host_.reserve(total);
  inputs_.reserve(total);
  for (size_t i = 0; i < parts.size(); ++i) {
    if (parts[i].second > 0) std::memcpy(inputs_host_.get() + at[i], parts[i].first, parts[i].second);
  }
  LAGSERVE_CUDA_CHECK(cudaMemcpyAsync(inputs_.get(), inputs_host_.get(), total, cudaMemcpyHostToDevice, stream));
  const unsigned char* dev = inputs_.get();
  auto ints = [&](size_t i) { return reinterpret_cast<const int32_t*>(dev + at[i]); };
  kc::SamplingTokenLists lists;
  lists.prompt_offsets = ints(i_po);
  lists.prompt_ids = ints(i_pi);
  lists.output_offsets = ints(i_oo);
  lists.output_ids = ints(i_oi);
  lists.output_counts = ints(i_oc);
  lists.bias_offsets = ints(i_bo);
  lists.bias_ids = ints(i_bi);
  lists.bias_values = reinterpret_cast<const float*>(dev + at[i_bv]);
  lists.banned_offsets = ints(i_no);
  lists.banned_ids = ints(i_ni);
  kc::sampling_sample(logits, static_cast<int32_t>(n_rows), vocab,
                      reinterpret_cast<const kc::SamplingRowParams*>(dev + at[i_params]), lists,
                      reinterpret_cast<const float*>(dev + at[i_u]), logits, tokens_.get(), stream);
  download();
}

}  // namespace lagserve::backend::cuda

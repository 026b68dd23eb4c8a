// LagKV selection with LibTorch ops, vectorised over batch, KV heads and scored
// partitions (see lag_select_torch.h; the reference is engine/kv/lag_policy.cpp).
#include "trainer/lag_select_torch.h"

#include <algorithm>

#include <torch/torch.h>

#include "engine/common/check.h"

namespace lagserve::trainer {

namespace {

// x: [B, KVH, n + 1, L, D] fp32, the span of the n scored partitions and the
// one after the last. Returns softmax over the L rows of the Bessel-corrected
// std over channels of cur normalised by ref's per-channel range:
// [B, KVH, n, L], cur = partitions 0..n-1, ref = partitions 1..n.
torch::Tensor score_one(const torch::Tensor& x, int64_t n) {
  const torch::Tensor cur = x.narrow(2, 0, n);
  const torch::Tensor ref = x.narrow(2, 1, n);
  const torch::Tensor mn = ref.amin(/*dim=*/{3}, /*keepdim=*/true);  // [B, KVH, n, 1, D]
  const torch::Tensor mx = ref.amax(/*dim=*/{3}, /*keepdim=*/true);
  torch::Tensor nrm = (cur - mn).div_((mx - mn).clamp_min_(1e-6));  // [B, KVH, n, L, D]
  // Two-pass std over channels, Bessel-corrected (ATen's own std is several
  // times slower on a short last dimension).
  const int64_t D = x.size(-1);
  nrm.sub_(nrm.mean(at::IntArrayRef{-1}, /*keepdim=*/true));
  const torch::Tensor s = nrm.mul_(nrm).sum(at::IntArrayRef{-1}).div_(D - 1).sqrt_();
  return torch::softmax(s, /*dim=*/-1);
}

}  // namespace

torch::Tensor lag_selected_positions(const torch::Tensor& k, const torch::Tensor& v,
                                     const kv::LagPolicy& P) {
  LAGSERVE_CHECK(P.enabled, "lag_selected_positions needs an enabled policy");
  LAGSERVE_CHECK(P.lag >= 1 && P.keep >= 1 && P.keep <= P.lag && P.sink >= 0,
                 "lag_selected_positions: bad policy {}", P.to_string());
  LAGSERVE_CHECK(k.dim() == 4 && k.sizes() == v.sizes(),
                 "lag_selected_positions needs k and v of one shape [B, KVH, T, D]");
  LAGSERVE_CHECK(k.device() == v.device(), "lag_selected_positions: k and v on two devices");
  torch::NoGradGuard no_grad;
  const int64_t B = k.size(0), KVH = k.size(1), T = k.size(2), D = k.size(3);
  LAGSERVE_CHECK(D >= 2, "lag_selected_positions needs D={} >= 2", D);
  const int64_t S = P.sink, L = P.lag, keep = P.keep;
  const int64_t n = std::max<int64_t>(0, P.complete_partitions(static_cast<int32_t>(T)) - 1);
  const auto idx_opts = torch::TensorOptions().dtype(torch::kLong).device(k.device());
  if (n == 0) return torch::empty({B, KVH, 0}, idx_opts);

  // The span [S, S + (n+1)L) in fp32, one partition per slice of dim 2.
  const auto span = [&](const torch::Tensor& x) {
    return x.detach().narrow(2, S, (n + 1) * L).to(torch::kFloat).reshape({B, KVH, n + 1, L, D});
  };
  const torch::Tensor score_k = score_one(span(k), n);
  const torch::Tensor score_v = score_one(span(v), n);
  const torch::Tensor score = score_k + score_v * static_cast<double>(P.score_v_weight);

  // Highest first; a stable sort keeps equal scores in position order.
  const torch::Tensor order =
      std::get<1>(torch::sort(score, /*stable=*/true, /*dim=*/-1, /*descending=*/true));
  const torch::Tensor top =
      std::get<0>(torch::sort(order.narrow(-1, 0, keep), /*dim=*/-1, /*descending=*/false));
  const torch::Tensor begin = torch::arange(n, idx_opts).mul_(L).add_(S).view({1, 1, n, 1});
  return (top + begin).reshape({B, KVH, n * keep});
}

}  // namespace lagserve::trainer

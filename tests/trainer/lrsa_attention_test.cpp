// LRSA attention pieces: the block-sparse layout against the visibility
// function (every visible key exactly once, nothing else), the attention
// against a dense masked reference, and its gradients against central finite
// differences (double precision).
#include <algorithm>
#include <cmath>
#include <random>
#include <set>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "engine/kv/lag_policy.h"
#include "trainer/lrsa_attention.h"

namespace lagserve::trainer {
namespace {

kv::LagPolicy random_policy(std::mt19937& rng) {
  kv::LagPolicyFields f;
  f.sink = static_cast<int32_t>(rng() % 7);
  f.lag = 1 + static_cast<int32_t>(rng() % 9);
  f.keep = 1 + static_cast<int32_t>(rng() % *f.lag);
  auto P = kv::LagPolicy::from_fields(f);
  EXPECT_TRUE(P.ok()) << P.status();
  return *P;
}

// Random Selected sets, in the prefix-list form lag_prefix_lists returns.
std::vector<int32_t> random_prefix_list(const kv::LagPolicy& P, int64_t T, std::mt19937& rng,
                                        std::set<int32_t>& selected) {
  std::vector<int32_t> list;
  for (int32_t j = 0; j < std::min<int64_t>(P.sink, T); ++j) list.push_back(j);
  const int32_t n_scored = std::max(0, P.complete_partitions(static_cast<int32_t>(T)) - 1);
  for (int32_t p = 0; p < n_scored; ++p) {
    std::vector<int32_t> offs(P.lag);
    for (int32_t i = 0; i < P.lag; ++i) offs[i] = i;
    std::shuffle(offs.begin(), offs.end(), rng);
    offs.resize(P.keep);
    std::sort(offs.begin(), offs.end());
    for (int32_t o : offs) {
      list.push_back(P.partition_begin(p) + o);
      selected.insert(P.partition_begin(p) + o);
    }
  }
  return list;
}

TEST(LrsaLayout, EveryVisibleKeyExactlyOnce) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    const kv::LagPolicy P = random_policy(rng);
    const int64_t T = 1 + static_cast<int64_t>(rng() % 80);
    const int64_t max_groups = 1 + static_cast<int64_t>(rng() % 5);
    std::set<int32_t> selected;
    const std::vector<int32_t> list = random_prefix_list(P, T, rng, selected);
    const LrsaLayout lay = lrsa_layout(P, T, max_groups);
    SCOPED_TRACE(P.to_string() + " T=" + std::to_string(T) + " groups<=" + std::to_string(max_groups));
    ASSERT_LE(static_cast<int64_t>(lay.groups.size()), max_groups);
    for (int64_t t = 0; t < T; ++t) {
      const int64_t slot = lay.slot_of_pos[t];
      ASSERT_EQ(lay.query_pos[slot], t);
      const int64_t b = slot / lay.rows, row = slot % lay.rows;
      const LrsaBlockGroup* group = nullptr;
      for (const auto& g : lay.groups) {
        if (b >= g.first_block && b < g.first_block + g.n_blocks) group = &g;
      }
      ASSERT_NE(group, nullptr);
      std::vector<int> seen(T, 0);
      const uint8_t* vis = &group->visible[((b - group->first_block) * lay.rows + row) * group->keys];
      for (int64_t s = 0; s < group->keys; ++s) {
        if (vis[s]) ++seen[lrsa_key_position(lay, list, *group, b, s)];
      }
      for (int64_t j = 0; j < T; ++j) {
        const bool want = kv::lag_visible(P, static_cast<int32_t>(t), static_cast<int32_t>(j),
                                          selected.count(static_cast<int32_t>(j)) > 0);
        ASSERT_EQ(seen[j], want ? 1 : 0) << "query " << t << " key " << j;
      }
    }
  }
}

// Dense reference: softmax over the keys lag_visible allows, in double.
torch::Tensor dense_lrsa(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                         const kv::LagPolicy& P) {
  const auto lists = lag_prefix_lists(k, v, P);
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3), KVH = k.size(1);
  auto out = torch::zeros_like(q);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      const int64_t kh = h / (H / KVH);
      std::set<int32_t> sel(lists[b][kh].begin(), lists[b][kh].end());
      std::vector<uint8_t> visible(T * T);
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t j = 0; j < T; ++j) {
          visible[t * T + j] = kv::lag_visible(P, t, j, sel.count(j) > 0);
        }
      }
      const auto mask = torch::from_blob(visible.data(), {T, T}, torch::kUInt8).to(torch::kBool);
      auto s = torch::matmul(q[b][h], k[b][kh].t()) / std::sqrt(static_cast<double>(D));
      s = s.masked_fill(mask.logical_not(), -INFINITY);
      out[b][h] = torch::matmul(torch::softmax(s, -1), v[b][kh]);
    }
  }
  return out;
}

TEST(LrsaAttention, EqualsDenseMaskedReference) {
  std::mt19937 rng(11);
  torch::manual_seed(3);
  for (int trial = 0; trial < 20; ++trial) {
    const kv::LagPolicy P = random_policy(rng);
    const int64_t T = 1 + static_cast<int64_t>(rng() % 60), KVH = 1 + rng() % 2, G = 1 + rng() % 3;
    SCOPED_TRACE(P.to_string() + " T=" + std::to_string(T));
    const auto opt = torch::dtype(torch::kDouble);
    const auto q = torch::randn({2, KVH * G, T, 8}, opt), k = torch::randn({2, KVH, T, 8}, opt),
               v = torch::randn({2, KVH, T, 8}, opt);
    const auto got = lrsa_attention(q, k, v, P, 0, nullptr);
    const auto want = dense_lrsa(q, k, v, P);
    EXPECT_LT((got - want).abs().max().item<double>(), 1e-12);
  }
}

TEST(LrsaAttention, GradientsMatchFiniteDifferences) {
  const kv::LagPolicy P = *kv::LagPolicy::parse("sink=2,lag=4,keep=2,score_v_weight=0.5");
  torch::manual_seed(5);
  const auto opt = torch::dtype(torch::kDouble);
  const int64_t T = 23;  // five partitions, the last one partial
  auto q = torch::randn({1, 4, T, 6}, opt).requires_grad_(true);
  auto k = torch::randn({1, 2, T, 6}, opt).requires_grad_(true);
  auto v = torch::randn({1, 2, T, 6}, opt).requires_grad_(true);
  const auto weight = torch::randn({1, 4, T, 6}, opt);
  const auto loss_of = [&](const torch::Tensor& qq, const torch::Tensor& kk, const torch::Tensor& vv) {
    return (lrsa_attention(qq, kk, vv, P, 0, nullptr) * weight).sum();
  };
  loss_of(q, k, v).backward();
  const auto selection = lag_prefix_lists(k, v, P);
  const double eps = 1e-6;
  std::mt19937 rng(1);
  int checked = 0;
  for (auto* t : {&q, &k, &v}) {
    const auto grad = t->grad().clone();
    for (int i = 0; i < 40; ++i) {
      const int64_t idx = static_cast<int64_t>(rng() % t->numel());
      torch::NoGradGuard no_grad;
      auto plus = t->detach().clone(), minus = t->detach().clone();
      plus.view(-1)[idx] += eps;
      minus.view(-1)[idx] -= eps;
      const auto args = [&](const torch::Tensor& x) {
        return std::array<torch::Tensor, 3>{t == &q ? x : q.detach(), t == &k ? x : k.detach(),
                                            t == &v ? x : v.detach()};
      };
      auto ap = args(plus), am = args(minus);
      // The selection is a step function; a perturbation must not flip it.
      ASSERT_EQ(lag_prefix_lists(ap[1], ap[2], P), selection);
      ASSERT_EQ(lag_prefix_lists(am[1], am[2], P), selection);
      const double numeric = (loss_of(ap[0], ap[1], ap[2]).item<double>() -
                              loss_of(am[0], am[1], am[2]).item<double>()) / (2 * eps);
      const double analytic = grad.view(-1)[idx].item<double>();
      EXPECT_NEAR(analytic, numeric, 1e-6 * std::max(1.0, std::abs(numeric))) << "element " << idx;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 120);
}

}  // namespace
}  // namespace lagserve::trainer

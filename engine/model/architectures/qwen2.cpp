// Qwen2 / Qwen2.5: a Llama with biases on the Q, K and V projections; its
// GGUF files keep the Hugging Face row order (NeoX RoPE).
#include "engine/model/architectures/architecture.h"

namespace lagserve::model {

const ArchitectureSpec& qwen2_architecture() {
  static const ArchitectureSpec spec{"qwen2", /*qkv_bias=*/true, /*gguf_qk_permuted=*/false};
  return spec;
}

}  // namespace lagserve::model

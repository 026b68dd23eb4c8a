// What distinguishes one supported architecture from another when loading.
// One file per architecture; the forward pass reads only ModelConfig.
#pragma once

#include "engine/model/model_config.h"

namespace lagserve::model {

struct ArchitectureSpec {
  const char* name;
  bool qkv_bias;  // Q, K and V projections carry biases
  // llama.cpp's converter permutes the Q and K rows of this architecture for
  // its interleaved RoPE; the loader undoes it (our RoPE is NeoX style).
  bool gguf_qk_permuted;
};

const ArchitectureSpec& llama_architecture();
const ArchitectureSpec& qwen2_architecture();

inline const ArchitectureSpec& architecture_spec(Arch arch) {
  return arch == Arch::Qwen2 ? qwen2_architecture() : llama_architecture();
}

}  // namespace lagserve::model

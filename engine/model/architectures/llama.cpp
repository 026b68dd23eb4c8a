// Llama family: SmolLM2, Llama 2/3, TinyLlama, Mistral without sliding window.
// No biases; RMSNorm; SwiGLU; GQA; optional Llama-3 RoPE scaling (config).
#include "engine/model/architectures/architecture.h"

namespace lagserve::model {

const ArchitectureSpec& llama_architecture() {
  static const ArchitectureSpec spec{"llama", /*qkv_bias=*/false, /*gguf_qk_permuted=*/true};
  return spec;
}

}  // namespace lagserve::model

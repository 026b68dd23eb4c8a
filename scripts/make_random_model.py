#!/usr/bin/env python3
"""Writes a Hugging Face model folder with random weights of a given shape.

The default shape is Qwen2.5-1.5B's (28 layers, hidden 1536, 12 heads, 2 KV
heads, FFN 8960, vocab 151936, tied embeddings, QKV bias), so that benchmark
figures compare with published ones and with transformers on the same folder.
The folder has config.json, model.safetensors (bf16) and a byte-level BPE
tokenizer.json of 256 byte tokens plus the ChatML specials (no merges): enough
for lagserve and transformers to load it and round-trip text.

  python3 scripts/make_random_model.py /tmp/qwen2.5-1.5b-shape
  python3 scripts/make_random_model.py /tmp/tiny --layers 2 --hidden 128 \
      --heads 4 --kv-heads 2 --ffn 256 --vocab 1000

Needs torch, safetensors and tokenizers (the GPU machine has them).
"""
import argparse
import json
import os

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers


def byte_tokenizer(specials):
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(specials)
    return tok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=28)
    ap.add_argument("--hidden", type=int, default=1536)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--ffn", type=int, default=8960)
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("--max-positions", type=int, default=32768)
    ap.add_argument("--rope-theta", type=float, default=1000000.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    if a.hidden % a.heads or a.heads % a.kv_heads:
        ap.error("hidden must divide by heads, and heads by kv-heads")
    head_dim = a.hidden // a.heads
    os.makedirs(a.out, exist_ok=True)
    g = torch.Generator(device=a.device).manual_seed(a.seed)

    def rand(*shape, std=0.02):
        return (torch.randn(*shape, generator=g, device=a.device, dtype=torch.float32) * std).to(torch.bfloat16).cpu()

    def ones(n):
        return torch.ones(n, dtype=torch.bfloat16)

    t = {"model.embed_tokens.weight": rand(a.vocab, a.hidden), "model.norm.weight": ones(a.hidden)}
    kv = a.kv_heads * head_dim
    for i in range(a.layers):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = ones(a.hidden)
        t[p + "post_attention_layernorm.weight"] = ones(a.hidden)
        t[p + "self_attn.q_proj.weight"] = rand(a.hidden, a.hidden)
        t[p + "self_attn.q_proj.bias"] = rand(a.hidden)
        t[p + "self_attn.k_proj.weight"] = rand(kv, a.hidden)
        t[p + "self_attn.k_proj.bias"] = rand(kv)
        t[p + "self_attn.v_proj.weight"] = rand(kv, a.hidden)
        t[p + "self_attn.v_proj.bias"] = rand(kv)
        t[p + "self_attn.o_proj.weight"] = rand(a.hidden, a.hidden)
        t[p + "mlp.gate_proj.weight"] = rand(a.ffn, a.hidden)
        t[p + "mlp.up_proj.weight"] = rand(a.ffn, a.hidden)
        t[p + "mlp.down_proj.weight"] = rand(a.hidden, a.ffn)
    save_file(t, os.path.join(a.out, "model.safetensors"), metadata={"format": "pt"})

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = byte_tokenizer(specials)
    tok.save(os.path.join(a.out, "tokenizer.json"))
    eos = tok.token_to_id("<|im_end|>")
    config = {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": a.hidden,
        "intermediate_size": a.ffn,
        "num_hidden_layers": a.layers,
        "num_attention_heads": a.heads,
        "num_key_value_heads": a.kv_heads,
        "vocab_size": a.vocab,
        "max_position_embeddings": a.max_positions,
        "rope_theta": a.rope_theta,
        "rms_norm_eps": 1e-6,
        "hidden_act": "silu",
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "bos_token_id": tok.token_to_id("<|endoftext|>"),
        "eos_token_id": eos,
        "use_sliding_window": False,
    }
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(a.out, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>",
                   "bos_token": None, "model_max_length": a.max_positions}, f, indent=2)
    n = sum(x.numel() for x in t.values())
    print(f"wrote {a.out}: {n / 1e9:.3f} B parameters, {a.layers} layers, hidden {a.hidden}, "
          f"heads {a.heads}/{a.kv_heads}, FFN {a.ffn}, vocab {a.vocab} (tied)")


if __name__ == "__main__":
    main()

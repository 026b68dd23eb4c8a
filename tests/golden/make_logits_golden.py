#!/usr/bin/env python3
"""Writes reference logits for tests/engine/backend/cpu_forward_golden_test.cpp.

The reference is Hugging Face transformers (an implementation independent of
ours) in fp32 on the CPU:
  * the default model: transformers reads the same GGUF file we read
    (dequantizing Q4_1/Q8_0 to fp32, undoing llama.cpp's Q/K permutation);
  * two tiny random models written here as Hugging Face folders (safetensors):
    a Llama with Llama-3 RoPE scaling and untied head, and a Qwen2 (QKV bias)
    with sharded bf16 weights; the tiny Llama is also written as a GGUF with
    gguf-py, with Q/K permuted the way llama.cpp's converter does.

Run (needs torch, transformers, tokenizers, gguf; the model from
scripts/fetch_model.py):
    python3 tests/golden/make_logits_golden.py [--model PATH]
Output: tests/golden/logits/*.json + *.bin (raw little-endian float32) and
tests/golden/models/{tiny-llama,tiny-qwen2,tiny-llama.gguf}.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "logits")
MODELS = os.path.join(HERE, "models")
SUBSET = 128      # vocab entries kept for every position
TOPK = 16         # top logits kept for every position
FULL_EVERY = 256  # full rows kept every this many positions (and the last)
N_GREEDY = 32

PROMPTS = [
    ("hello", "Hello, my name is"),
    ("chat", "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
             "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"),
    ("code", "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"),
    ("unicode", "Les élèves étudient l'histoire. 東京は日本の首都です。 Emoji: 🎉🚀 — numbers 3.14159 and 2718."),
]


def long_prompt():
    # Over 1,000 tokens of varied, natural-ish text.
    parts = []
    topics = ["the ocean", "mountains", "computers", "cooking", "music", "history", "rivers",
              "astronomy", "gardens", "trains", "libraries", "weather"]
    for i in range(40):
        t = topics[i % len(topics)]
        parts.append(f"Paragraph {i + 1}. People have long written about {t}, and each "
                     f"generation adds its own view: some see {t} as a source of wonder, others "
                     f"as a subject for careful study. ")
    parts.append("\nIn summary, the most interesting topic above is")
    return "".join(parts)


def write_case(name, model, ids, vocab, rng, subset_ids, tok=None):
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float().numpy()  # [T, V]
        greedy = model.generate(torch.tensor([ids]), max_new_tokens=N_GREEDY, do_sample=False,
                                min_new_tokens=N_GREEDY, eos_token_id=None,
                                pad_token_id=0)[0, len(ids):].tolist()
    T = logits.shape[0]
    top = np.argsort(-logits, axis=1, kind="stable")[:, :TOPK]
    full_pos = sorted(set(list(range(0, T, FULL_EVERY)) + [T - 1]))
    blob = [logits[:, subset_ids].astype("<f4").ravel(),
            np.take_along_axis(logits, top, axis=1).astype("<f4").ravel(),
            logits[full_pos].astype("<f4").ravel()]
    meta = {
        "name": name, "vocab": int(vocab), "ids": [int(i) for i in ids],
        "greedy": [int(i) for i in greedy],
        # The continuation as text, up to the first end-of-turn token.
        "greedy_text": tok.decode(greedy[:greedy.index(tok.eos_token_id)] if tok.eos_token_id in greedy
                                  else greedy, skip_special_tokens=True) if tok else None,
        "argmax": [int(i) for i in logits.argmax(axis=1)],
        "top2_gap": [float(g) for g in np.sort(logits, axis=1)[:, -1] - np.sort(logits, axis=1)[:, -2]],
        "subset_ids": [int(i) for i in subset_ids],
        "topk_ids": top.astype(int).tolist(),
        "full_positions": full_pos,
        "layout": "float32 LE: subset logits [T, n_subset], topk logits [T, topk], full rows [n_full, vocab]",
    }
    with open(os.path.join(OUT, name + ".json"), "w") as f:
        json.dump(meta, f)
    np.concatenate(blob).tofile(os.path.join(OUT, name + ".bin"))
    print(f"{name}: {T} positions, greedy {greedy[:8]}...", file=sys.stderr)


def default_model(path, rng):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    d, f = os.path.dirname(path), os.path.basename(path)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
    vocab = model.config.vocab_size
    subset_ids = np.sort(rng.choice(vocab, SUBSET, replace=False))
    for name, text in PROMPTS + [("long", long_prompt())]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        write_case("smollm2_" + name, model, ids, vocab, rng, subset_ids, tok)


def tiny_tokenizer(vocab_size):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    text = [long_prompt(), PROMPTS[2][1]] * 4
    tok.train_from_iterator(text, trainer)
    return tok


def save_tokenizer(tok, d):
    tok.save(os.path.join(d, "tokenizer.json"))
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": None, "eos_token": "<|endoftext|>", "add_bos_token": False,
                   "chat_template": "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"}, f)


def tiny_models(rng):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM
    vocab = 320
    tok = tiny_tokenizer(300)
    torch.manual_seed(1234)
    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                  rms_norm_eps=1e-5, bos_token_id=0, eos_token_id=0)
    llama = LlamaForCausalLM(LlamaConfig(**common, tie_word_embeddings=False, rope_theta=500000.0,
                                         rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                                       "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                       "original_max_position_embeddings": 64})).eval()
    qwen = Qwen2ForCausalLM(Qwen2Config(**common, tie_word_embeddings=True, rope_theta=10000.0)).eval()
    with torch.no_grad():  # random init leaves biases zero; make them matter
        for layer in qwen.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0, 0.5)
        for m in (llama, qwen):  # larger weights so that logits are not all near-ties
            for p in m.parameters():
                p.mul_(4.0)
    ids = rng.integers(3, 300, size=100).tolist()
    subset = np.arange(vocab)
    ld = os.path.join(MODELS, "tiny-llama")
    qd = os.path.join(MODELS, "tiny-qwen2")
    os.makedirs(ld, exist_ok=True)
    os.makedirs(qd, exist_ok=True)
    llama.save_pretrained(ld, safe_serialization=True)
    save_tokenizer(tok, ld)
    qwen.to(torch.bfloat16).save_pretrained(qd, safe_serialization=True, max_shard_size="100KB")
    save_tokenizer(tok, qd)
    # Reload the bf16 weights in fp32 so the reference sees exactly the stored values.
    qwen = Qwen2ForCausalLM.from_pretrained(qd, dtype=torch.float32).eval()
    write_case("tiny_llama", llama, ids, vocab, rng, subset)
    write_case("tiny_qwen2", qwen, ids, vocab, rng, subset)
    write_tiny_llama_gguf(llama, tok, os.path.join(MODELS, "tiny-llama.gguf"))
    write_case("tiny_llama_gguf", llama, ids, vocab, rng, subset)


def write_tiny_llama_gguf(model, tok, path):
    """The tiny Llama as GGUF (F16 matrices), permuted as llama.cpp's converter does."""
    import gguf
    c = model.config
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    theta = c.rope_parameters["rope_theta"]
    w.add_rope_freq_base(theta)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_vocab_size(c.vocab_size)
    w.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    vocab = tok.get_vocab()
    tokens = [""] * c.vocab_size
    types = [gguf.TokenType.UNUSED] * c.vocab_size
    for t, i in vocab.items():
        tokens[i] = t
        types[i] = gguf.TokenType.NORMAL
    for i in range(c.vocab_size):
        if not tokens[i]:
            tokens[i] = f"[PAD{i}]"
    for t in ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]:
        types[vocab[t]] = gguf.TokenType.CONTROL
    merges = json.loads(tok.to_str())["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_eos_token_id(vocab["<|endoftext|>"])
    w.add_add_bos_token(False)
    # Llama-3 scaling travels as per-frequency divisors (rope_freqs.weight).
    hd = c.hidden_size // c.num_attention_heads
    base = 1.0 / (theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
    scaled = model.model.rotary_emb.inv_freq.double().numpy()
    w.add_tensor("rope_freqs.weight", (base / scaled).astype(np.float32))

    def permute(x, n_head):
        x = x.numpy()
        return x.reshape(n_head, 2, x.shape[0] // n_head // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)

    sd = {k: v.float() for k, v in model.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"].numpy().astype(np.float16))
    w.add_tensor("output_norm.weight", sd["model.norm.weight"].numpy())
    w.add_tensor("output.weight", sd["lm_head.weight"].numpy().astype(np.float16))
    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}."
        b = f"blk.{i}."
        w.add_tensor(b + "attn_norm.weight", sd[p + "input_layernorm.weight"].numpy())
        w.add_tensor(b + "attn_q.weight", permute(sd[p + "self_attn.q_proj.weight"], c.num_attention_heads).astype(np.float16))
        w.add_tensor(b + "attn_k.weight", permute(sd[p + "self_attn.k_proj.weight"], c.num_key_value_heads).astype(np.float16))
        w.add_tensor(b + "attn_v.weight", sd[p + "self_attn.v_proj.weight"].numpy().astype(np.float16))
        w.add_tensor(b + "attn_output.weight", sd[p + "self_attn.o_proj.weight"].numpy().astype(np.float16))
        w.add_tensor(b + "ffn_norm.weight", sd[p + "post_attention_layernorm.weight"].numpy())
        w.add_tensor(b + "ffn_gate.weight", sd[p + "mlp.gate_proj.weight"].numpy().astype(np.float16))
        w.add_tensor(b + "ffn_up.weight", sd[p + "mlp.up_proj.weight"].numpy().astype(np.float16))
        w.add_tensor(b + "ffn_down.weight", sd[p + "mlp.down_proj.weight"].numpy().astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    # Reference logits for the GGUF come from the same model with F16-rounded matrices.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.copy_(p.half().float())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.expanduser("~/.cache/lagserve/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    args = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    torch.backends.cuda.matmul.allow_tf32 = False
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20261129)
    tiny_models(rng)
    default_model(args.model, rng)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into tests/fuzz/corpus/<target>/.

Seeds are cut from the golden models (tests/golden/models) so that every
target starts past its format's first checks. Run from anywhere:
    python3 tests/fuzz/make_corpus.py
The output is committed; rerun only when a format or a target changes.
"""
import json
import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "tests/golden/models"
OUT = ROOT / "tests/fuzz/corpus"

# --- GGUF --------------------------------------------------------------------
SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "B", 10: "Q", 11: "q", 12: "d"}


class Gguf:
    """The parsed sections of a GGUF file, kept as values to write back."""

    def __init__(self, data):
        self.data, self.pos = data, 0
        self.magic, self.version = self.rd("I"), self.rd("I")
        n_tensors, n_kv = self.rd("Q"), self.rd("Q")
        self.kv = []
        for _ in range(n_kv):
            key = self.rstr()
            vtype = self.rd("I")
            self.kv.append((key, vtype, self.rval(vtype)))
        self.tensors = []
        for _ in range(n_tensors):
            name = self.rstr()
            dims = [self.rd("Q") for _ in range(self.rd("I"))]
            self.tensors.append((name, dims, self.rd("I"), self.rd("Q")))

    def rd(self, fmt):
        v = struct.unpack_from("<" + fmt, self.data, self.pos)[0]
        self.pos += struct.calcsize("<" + fmt)
        return v

    def rstr(self):
        n = self.rd("Q")
        s = self.data[self.pos:self.pos + n]
        self.pos += n
        return s

    def rval(self, t):
        if t in SCALAR:
            return self.rd(SCALAR[t])
        if t == 8:
            return self.rstr()
        et, n = self.rd("I"), self.rd("Q")
        return (et, [self.rval(et) for _ in range(n)])


def wstr(s):
    return struct.pack("<Q", len(s)) + s


def wval(t, v):
    if t in SCALAR:
        return struct.pack("<" + SCALAR[t], v)
    if t == 8:
        return wstr(v)
    et, values = v
    return struct.pack("<IQ", et, len(values)) + b"".join(wval(et, e) for e in values)


def gguf_bytes(kv, tensors, align=32):
    """tensors: (name, dims, ggml_type, data bytes); offsets are laid out here."""
    out = struct.pack("<IIQQ", 0x46554747, 3, len(tensors), len(kv))
    out += b"".join(wstr(k) + struct.pack("<I", t) + wval(t, v) for k, t, v in kv)
    offset, infos, blobs = 0, b"", b""
    for name, dims, gtype, blob in tensors:
        infos += wstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        infos += struct.pack("<IQ", gtype, offset)
        pad = (-len(blob)) % align
        blobs += blob + b"\0" * pad
        offset += len(blob) + pad
    out += infos
    out += b"\0" * ((-len(out)) % align)
    return out + blobs


F32, F16, Q8_0 = 0, 1, 8


def tensor_blob(gtype, dims, value=0.02):
    n = 1
    for d in dims:
        n *= d
    if gtype == F32:
        return struct.pack("<f", 1.0) * n
    if gtype == F16:
        return struct.pack("<e", value) * n
    # Q8_0: blocks of 32 (fp16 scale, 32 int8)
    return (struct.pack("<e", value / 8) + bytes([8] * 32)) * (n // 32)


def small_llama_gguf(src, gtype2d):
    """tiny-llama's metadata and tokenizer with d_model 32, 1 layer."""
    d, heads, kv_heads, ff, vocab, head_dim = 32, 4, 2, 32, 320, 8
    sizes = {b"llama.block_count": 1, b"llama.embedding_length": d,
             b"llama.feed_forward_length": ff, b"llama.attention.head_count": heads,
             b"llama.attention.head_count_kv": kv_heads, b"llama.rope.dimension_count": head_dim}
    kv = [(k, t, sizes.get(k, v)) for k, t, v in src.kv]
    def w(name, rows, cols):
        return (name, [cols, rows], gtype2d, tensor_blob(gtype2d, [cols, rows]))
    def norm(name, n):
        return (name, [n], F32, tensor_blob(F32, [n]))
    tensors = [norm(b"rope_freqs.weight", head_dim // 2), w(b"token_embd.weight", vocab, d),
               norm(b"output_norm.weight", d),
               norm(b"blk.0.attn_norm.weight", d), w(b"blk.0.attn_q.weight", heads * head_dim, d),
               w(b"blk.0.attn_k.weight", kv_heads * head_dim, d),
               w(b"blk.0.attn_v.weight", kv_heads * head_dim, d),
               w(b"blk.0.attn_output.weight", d, heads * head_dim), norm(b"blk.0.ffn_norm.weight", d),
               w(b"blk.0.ffn_gate.weight", ff, d), w(b"blk.0.ffn_up.weight", ff, d),
               w(b"blk.0.ffn_down.weight", d, ff)]
    return gguf_bytes(kv, tensors)


def write(target, name, data):
    d = OUT / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def gguf_seeds():
    raw = (MODELS / "tiny-llama.gguf").read_bytes()
    src = Gguf(raw)
    write("gguf", "header", raw[:24])
    write("gguf", "metadata_no_tensors", gguf_bytes(src.kv, []))
    write("gguf", "small_llama_q8_0", small_llama_gguf(src, Q8_0))
    write("gguf", "small_llama_f16", small_llama_gguf(src, F16))
    qwen_kv = [(k.replace(b"llama.", b"qwen2."), t, b"qwen2" if k == b"general.architecture" else v)
               for k, t, v in src.kv]
    write("gguf", "metadata_qwen2", gguf_bytes(qwen_kv, []))
    lagkv = src.kv + [(b"lagkv.sink", 4, 4), (b"lagkv.lag", 4, 16), (b"lagkv.keep", 4, 4),
                      (b"lagkv.skip_layers", 9, (5, [0]))]
    write("gguf", "metadata_lagkv", gguf_bytes(lagkv, []))


# --- safetensors -------------------------------------------------------------
def safetensors_seeds():
    raw = (MODELS / "tiny-llama/model.safetensors").read_bytes()
    n = struct.unpack_from("<Q", raw, 0)[0]
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    # Keep the 1-D tensors (norms) and re-pack them: a small, valid file.
    small, blob = {"__metadata__": {"format": "pt"}}, b""
    for name, e in header.items():
        if name == "__metadata__" or len(e["shape"]) != 1:
            continue
        b, end = e["data_offsets"]
        small[name] = {"dtype": e["dtype"], "shape": e["shape"],
                       "data_offsets": [len(blob), len(blob) + end - b]}
        blob += data[b:end]
    for dtype, size in (("F16", 2), ("BF16", 2)):
        small[f"extra.{dtype}"] = {"dtype": dtype, "shape": [2, 2],
                                   "data_offsets": [len(blob), len(blob) + 4 * size]}
        blob += b"\x00\x3c" * 4
    text = json.dumps(small).encode()
    write("safetensors", "file_norms", b"\0" + struct.pack("<Q", len(text)) + text + blob)
    write("safetensors", "file_empty_header", b"\0" + struct.pack("<Q", 2) + b"{}")
    index = (MODELS / "tiny-qwen2/model.safetensors.index.json").read_bytes()
    write("safetensors", "index_qwen2", b"\1" + index)
    write("safetensors", "index_one_shard",
          b"\1" + json.dumps({"metadata": {}, "weight_map": {
              "model.norm.weight": "model-00002-of-00002.safetensors"}}).encode())


# --- text formats ------------------------------------------------------------
def text_seeds():
    for name in ("tiny-llama", "tiny-qwen2"):
        write("model_config", name, (MODELS / name / "config.json").read_bytes())
    cfg = json.loads((MODELS / "tiny-qwen2/config.json").read_bytes())
    cfg["rope_scaling"] = {"type": "linear", "factor": 2.0}
    write("model_config", "rope_linear", json.dumps(cfg))

    for i, text in enumerate([
            "Hello world", "The quick brown fox jumps over the lazy dog. 12345",
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", "  spaces\t\ttabs\n\n",
            "héllo wörld — 日本語 🙂", "\xff\xfe broken \xc3 utf8".encode("latin-1").decode("latin-1")]):
        for flags in (0, 3):
            write("tokenizer", f"text{i}_{flags}", bytes([flags]) + text.encode("utf-8", "surrogateescape"))

    chatml = json.loads((MODELS / "tiny-qwen2/tokenizer_config.json").read_bytes())["chat_template"]
    llama = json.loads((MODELS / "tiny-llama/tokenizer_config.json").read_bytes())["chat_template"]
    conversation = b"\0system:You are terse.\0user:Hi there\0assistant:Hello!\0user:  How are you?  "
    write("chat_template", "chatml", b"\x04" + chatml.encode() + conversation)
    write("chat_template", "llama3", b"\x04" + llama.encode() + conversation)
    write("chat_template", "override_llama3", b"\x0e" + b"{{ unknown }}" + b"\0user:hi")
    write("chat_template", "chatml_default_system",
          b"\x04" + chatml.replace("{% for", "{% if messages[0]['role'] != 'system' %}"
                                   "{{ '<|im_start|>system\\nYou are a helpful AI assistant named "
                                   "SmolLM, trained by Hugging Face<|im_end|>\\n' }}{% endif %}{% for",
                                   1).encode() + b"\0user:hi")

    requests = [
        (0, {"prompt": "Hello", "max_tokens": 8}),
        (0, {"prompt": ["a", "b"], "n": 2, "temperature": 0.7, "top_p": 0.9, "seed": 1,
             "logprobs": 2, "stop": ["\n"], "stream": True, "stream_options": {"include_usage": True}}),
        (0, {"prompt": [1, 2, 3], "max_tokens": 4, "lagkv": {"sink": 4, "lag": 16, "ratio": 0.25}}),
        (1, {"messages": [{"role": "system", "content": "Be brief."},
                          {"role": "user", "content": "Hi"}], "max_tokens": 16, "lagkv": False}),
        (1, {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
             "logprobs": True, "top_logprobs": 3, "stop_token_ids": [2], "model": "m"}),
    ]
    for i, (chat, body) in enumerate(requests):
        write("openai_request", f"request{i}", bytes([chat]) + json.dumps(body).encode())

    for i, spec in enumerate(["off", "on", "sink=16,lag=128,keep=32", "lag=64,ratio=0.5,w=0.5",
                              " sink = 0 , lag = 1 , skip_layers = 0;1;5 ", "score_v_weight=1e-3,keep=1"]):
        write("lag_policy", f"spec{i}", b"\0" + spec.encode())
    for i, value in enumerate(["false", "true", '{"sink": 4, "lag": 16, "keep": 4, "skip_layers": [0, 2]}',
                               '{"enabled": true, "ratio": 0.25, "score_v_weight": 0.5}']):
        write("lag_policy", f"json{i}", b"\1" + ('{"lagkv": %s}' % value).encode())


if __name__ == "__main__":
    gguf_seeds()
    safetensors_seeds()
    text_seeds()
    for d in sorted(OUT.iterdir()):
        print(d.name, len(list(d.iterdir())), sum(f.stat().st_size for f in d.iterdir()))

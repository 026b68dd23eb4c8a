#!/usr/bin/env python3
"""Writes golden data for tests/engine/model/ggml_type_test.cpp.

For each ggml type the engine dequantizes, makes a few random but valid blocks
(random bytes, with the fp16 scale fields set to small finite values) and
dequantizes them with the gguf Python package, an implementation independent
of ours. Output in tests/golden/dequant/: <TYPE>.bin (quantized bytes),
<TYPE>.f32 (expected little-endian fp32) and manifest.json.

Run: python3 tests/golden/make_dequant_golden.py   (needs `pip install gguf numpy`)
"""
import importlib.metadata
import json
import os

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize

SEED = 20240601
N_BLOCKS = 4        # per quantized type
N_FLOAT = 256       # elements for the float types
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dequant")

# Byte offsets of the fp16 scale fields inside one block (from ggml's structs).
SCALE_OFFSETS = {
    T.Q4_0: [0],        # d
    T.Q4_1: [0, 2],     # d, m
    T.Q8_0: [0],        # d
    T.Q4_K: [0, 2],     # d, dmin
    T.Q5_K: [0, 2],     # d, dmin
    T.Q6_K: [208],      # d is last: ql[128] qh[64] scales[16] d
}


def random_fp16_scales(rng, n):
    """Small finite fp16 values of both signs, some of them subnormal."""
    v = rng.normal(0.0, 0.05, n).astype(np.float16)
    v[:: 7] = np.float16(rng.uniform(1e-7, 5e-5))  # fp16 subnormals
    return v


def quant_blocks(rng, qtype):
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    data = rng.integers(0, 256, size=(N_BLOCKS, block_bytes), dtype=np.uint8)
    for off in SCALE_OFFSETS[qtype]:
        scales = random_fp16_scales(rng, N_BLOCKS)
        data[:, off:off + 2] = scales.view(np.uint8).reshape(N_BLOCKS, 2)
    return data.reshape(-1), N_BLOCKS * block_elems


def float_values(rng, qtype):
    if qtype == T.F32:
        v = rng.normal(0.0, 10.0, N_FLOAT).astype(np.float32)
        v[:4] = [0.0, -0.0, 1e-40, np.finfo(np.float32).max]  # incl. a subnormal
        return v.view(np.uint8), N_FLOAT
    bits = rng.integers(0, 1 << 16, size=N_FLOAT, dtype=np.uint32).astype(np.uint16)
    if qtype == T.F16:
        exp = (bits >> 10) & 0x1F
        bits[exp == 0x1F] &= 0xBFFF  # no inf/NaN from random bits
        bits[:6] = [0x0000, 0x8000, 0x0001, 0x83FF, 0x7BFF, 0x7C00]  # 0, -0, subnormals, max, inf
    else:  # BF16
        exp = (bits >> 7) & 0xFF
        bits[exp == 0xFF] &= 0xBFFF
        bits[:5] = [0x0000, 0x8000, 0x0001, 0x7F7F, 0xFF80]  # 0, -0, subnormal, max, -inf
    return bits.view(np.uint8), N_FLOAT


def main():
    rng = np.random.default_rng(SEED)
    os.makedirs(OUT, exist_ok=True)
    entries = []
    for qtype in [T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q4_K, T.Q5_K, T.Q6_K]:
        if qtype in SCALE_OFFSETS:
            raw, n = quant_blocks(rng, qtype)
        else:
            raw, n = float_values(rng, qtype)
        expected = np.asarray(dequantize(raw, qtype), dtype=np.float32).reshape(-1)
        assert expected.size == n and np.all(~np.isnan(expected)), qtype.name
        raw.tofile(os.path.join(OUT, f"{qtype.name}.bin"))
        expected.astype("<f4").tofile(os.path.join(OUT, f"{qtype.name}.f32"))
        entries.append({"name": qtype.name, "ggml_type": int(qtype), "n_elements": int(n),
                        "quant": f"{qtype.name}.bin", "expected": f"{qtype.name}.f32"})
    manifest = {"generator": "tests/golden/make_dequant_golden.py",
                "gguf_version": importlib.metadata.version("gguf"),
                "seed": SEED, "types": entries}
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    print(f"wrote {len(entries)} types to {OUT}")


if __name__ == "__main__":
    main()

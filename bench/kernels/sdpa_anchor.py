"""Torch anchors for the attention kernels, measured on the GPU they are compared on.

(a) prefill: scaled_dot_product_attention, causal, flash backend, B=1,
    12 query heads / 2 kv heads (GQA), d=128, bf16; TFLOP/s counted as
    bench_prefill_attention does (4 * T^2 / 2 * heads * d).
(b) decode: B sequences, one query token each over T cached keys, same heads;
    effective TB/s of reading K and V once (B * T * 2 * kv_heads * d * 2 bytes).
(c) HBM copy: a 4 GiB device-to-device copy, bytes read + written per second
    (the roofline the decode benchmark divides by; --hbm-tbs there).

    python bench/kernels/sdpa_anchor.py --seq 32768 --batch 32
"""

import argparse
import statistics

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def time_ms(fn, iters: int = 20, warmup: int = 3) -> float:
    """Median milliseconds of fn over `iters` CUDA-event-timed calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start = torch.cuda.Event(enable_timing=True)
        stop = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def gqa_attention(q, k, v, causal: bool):
    """A no-argument SDPA call with GQA: enable_gqa if this torch and backend take
    it, else the kv heads repeated up front (outside the timed call)."""
    try:
        F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
        return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
    except (TypeError, RuntimeError):  # torch < 2.5, or the backend lacks GQA
        group = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq", type=int, default=32768)
    ap.add_argument("--batch", type=int, default=32, help="decode sequences")
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("sdpa_anchor: no CUDA device")
    T, H, HKV, D, B = args.seq, args.heads, args.kv_heads, args.head_dim, args.batch
    dev, dt = "cuda", torch.bfloat16
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}")

    # (a) prefill: q [1, H, T, D], k/v [1, HKV, T, D].
    q = torch.randn(1, H, T, D, device=dev, dtype=dt)
    k = torch.randn(1, HKV, T, D, device=dev, dtype=dt)
    v = torch.randn(1, HKV, T, D, device=dev, dtype=dt)
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        ms = time_ms(gqa_attention(q, k, v, causal=True), args.iters)
    flops = 4.0 * T * T / 2 * H * D
    print(f"sdpa flash prefill T={T} heads={H}/{HKV} d={D}: {ms:.2f} ms, "
          f"{flops / (ms * 1e-3) / 1e12:.0f} TFLOP/s")
    del q, k, v

    # (b) decode: q [B, H, 1, D] over k/v [B, HKV, T, D]; flash, else whatever SDPA picks.
    q = torch.randn(B, H, 1, D, device=dev, dtype=dt)
    k = torch.randn(B, HKV, T, D, device=dev, dtype=dt)
    v = torch.randn(B, HKV, T, D, device=dev, dtype=dt)
    backend = "flash"
    try:
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            ms = time_ms(gqa_attention(q, k, v, causal=False), args.iters)
    except RuntimeError:
        backend = "default"
        ms = time_ms(gqa_attention(q, k, v, causal=False), args.iters)
    kv_bytes = B * T * 2 * HKV * D * 2
    print(f"sdpa {backend} decode B={B} T={T} heads={H}/{HKV} d={D}: {ms * 1e3:.0f} us, "
          f"{kv_bytes / (ms * 1e-3) / 1e12:.2f} TB/s (K and V read once)")
    del q, k, v

    # (c) HBM copy.
    src = torch.empty(1 << 31, device=dev, dtype=torch.int16)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), args.iters)
    print(f"hbm copy: {2 * src.numel() * 2 / (ms * 1e-3) / 1e12:.2f} TB/s")


if __name__ == "__main__":
    main()

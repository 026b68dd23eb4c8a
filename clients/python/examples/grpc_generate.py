# lagserve's gRPC API from Python with LagServeClient: models, tokenize, a streamed chat, a plain completion.
# Run: pip install clients/python && python clients/python/examples/grpc_generate.py [127.0.0.1:50051]
import os
import sys

from lagserve_client import LagServeClient

target = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("LAGSERVE_GRPC_TARGET", "127.0.0.1:50051")
with LagServeClient(target, api_key=os.environ.get("LAGSERVE_API_KEY"), timeout=120) as client:
    print("health:", client.health())
    for m in client.list_models():
        print(f"model {m.id}: max_model_len={m.max_model_len} lagkv={m.lagkv}")

    ids = client.tokenize("Hello, world!")
    print("tokens:", ids, "->", repr(client.detokenize(ids)))

    # A streamed chat reply under an explicit LagKV policy (a dict, a LagKv message or "sink=16,lag=128,ratio=0.25").
    for response in client.generate(
        messages=[{"role": "user", "content": "Name three prime numbers."}],
        max_tokens=64,
        temperature=0,
        lagkv={"sink": 16, "lag": 128, "ratio": 0.25},
    ):
        print(response.text, end="", flush=True)
        if response.HasField("usage"):
            print(f"\n[{response.usage.completion_tokens} tokens]")

    # Two sampled choices of a plain prompt, each as one string.
    for i, text in enumerate(client.complete(prompt="Once upon a time", n=2, max_tokens=24, temperature=0.8, seed=7)):
        print(f"choice {i}: {text!r}")

# Streams a chat reply from lagserve with the `openai` SDK, passing lagserve's per-request LagKV policy via extra_body.
# Run: python clients/python/examples/openai_stream.py   (server: build/server/lagserve serve --model default --port 8000)
import os

from openai import OpenAI

client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key=os.environ.get("LAGSERVE_API_KEY", "none"))
model = client.models.list().data[0].id

stream = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Write a haiku about caches."}],
    max_tokens=128,
    temperature=0.7,
    seed=1234,
    stream=True,
    stream_options={"include_usage": True},
    # lagserve's extension: keep 16 sink tokens, compress the KV cache in partitions of 128 tokens,
    # keeping a quarter of each. {"lagkv": False} asks for full attention instead.
    extra_body={"lagkv": {"sink": 16, "lag": 128, "ratio": 0.25}},
)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        print(chunk.choices[0].delta.content, end="", flush=True)
    if chunk.usage:  # the last chunk, with include_usage
        print(f"\n[{chunk.usage.completion_tokens} tokens]")

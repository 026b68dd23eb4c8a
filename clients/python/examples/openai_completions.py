# Plain (legacy) completions from lagserve with the `openai` SDK: a text prompt, then a token-id prompt, streamed.
# Run: python clients/python/examples/openai_completions.py   (server: build/server/lagserve serve --model default --port 8000)
import os

from openai import OpenAI

client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key=os.environ.get("LAGSERVE_API_KEY", "none"))
model = client.models.list().data[0].id

completion = client.completions.create(model=model, prompt="The three primary colors are", max_tokens=32, temperature=0)
print(repr(completion.choices[0].text), completion.choices[0].finish_reason)

# Token ids (arbitrary ones here) are used as they are, no BOS added; ignore_eos and lagkv are lagserve/vLLM extensions.
stream = client.completions.create(
    model=model,
    prompt=[504, 2365, 314],
    max_tokens=32,
    temperature=0,
    stream=True,
    extra_body={"ignore_eos": True, "lagkv": False},
)
for chunk in stream:
    if chunk.choices:
        print(chunk.choices[0].text, end="", flush=True)
print()

# Chat with lagserve through its OpenAI-compatible HTTP API, using the official `openai` SDK unchanged.
# Run: python clients/python/examples/openai_chat.py   (server: build/server/lagserve serve --model default --port 8000)
import os

from openai import OpenAI

client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key=os.environ.get("LAGSERVE_API_KEY", "none"))
model = client.models.list().data[0].id

response = client.chat.completions.create(
    model=model,
    messages=[
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "What is the capital of France?"},
    ],
    max_tokens=64,
    temperature=0,
)
print(response.choices[0].message.content)
print(f"[{response.usage.prompt_tokens} prompt + {response.usage.completion_tokens} completion tokens, "
      f"finish_reason={response.choices[0].finish_reason}]")

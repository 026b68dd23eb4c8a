"""The real `openai` SDK against `lagserve serve`: chat and completions,
streaming and not, n, stop strings, seeds, logprobs, usage, the lagkv extra.

Run: build/venv/bin/python -m pytest tests/server/python/test_openai.py
"""
import math

import openai
import pytest

PROMPT = "The capital of France is"
CHAT = [{"role": "user", "content": "Name three colors."}]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.http_url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def model(client):
    models = client.models.list().data
    assert len(models) == 1
    return models[0].id


def test_models_list_names_the_served_model(client, model):
    assert model.startswith("SmolLM2-135M-Instruct")
    assert client.models.retrieve(model).id == model


def tokenize(server, text):
    status, body = server.request("POST", "/tokenize", {"prompt": text})
    assert status == 200, body
    return body["tokens"]


COUNTERS = ["lagserve:prompt_tokens_total", "lagserve:generation_tokens_total",
            "lagserve:time_to_first_token_seconds_count", "lagserve:e2e_request_latency_seconds_count",
            "lagserve:request_queue_time_seconds_count", "lagserve:inter_token_latency_seconds_count"]


def test_completion_greedy_matches_its_own_stream(client, model, server):
    before = {name: server.metric(name) for name in COUNTERS}
    length_before = server.metric("lagserve:request_success_total", finished_reason="length")
    full = client.completions.create(model=model, prompt=PROMPT, max_tokens=12, temperature=0)
    delta = {name: server.metric(name) - before[name] for name in COUNTERS}
    assert delta == {"lagserve:prompt_tokens_total": full.usage.prompt_tokens,
                     "lagserve:generation_tokens_total": 12,
                     "lagserve:time_to_first_token_seconds_count": 1,
                     "lagserve:e2e_request_latency_seconds_count": 1,
                     "lagserve:request_queue_time_seconds_count": 1,
                     "lagserve:inter_token_latency_seconds_count": 11}
    assert server.metric("lagserve:request_success_total", finished_reason="length") == length_before + 1
    choice = full.choices[0]
    assert choice.finish_reason == "length"
    assert full.usage.completion_tokens == 12
    assert full.usage.prompt_tokens == len(tokenize(server, PROMPT))
    assert full.usage.total_tokens == full.usage.prompt_tokens + 12
    assert "Paris" in choice.text
    stream = client.completions.create(model=model, prompt=PROMPT, max_tokens=12, temperature=0,
                                       stream=True)
    assert "".join(c.choices[0].text for c in stream if c.choices) == choice.text


def test_chat_completion_and_stream_with_usage(client, model):
    full = client.chat.completions.create(model=model, messages=CHAT, max_tokens=20,
                                          temperature=0)
    msg = full.choices[0].message
    assert msg.role == "assistant" and msg.content
    assert full.id.startswith("chatcmpl-") and full.model == model and full.created > 0
    chunks = list(client.chat.completions.create(
        model=model, messages=CHAT, max_tokens=20, temperature=0, stream=True,
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == msg.content
    assert chunks[0].choices[0].delta.role == "assistant"
    # usage only in the last chunk, which has no choices
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == full.usage.prompt_tokens
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [full.choices[0].finish_reason]


def test_n_choices_are_independent_samples(client, model):
    r = client.completions.create(model=model, prompt="Once upon a time", max_tokens=16, n=3,
                                  temperature=1.0, seed=7, extra_body={"ignore_eos": True})
    assert sorted(c.index for c in r.choices) == [0, 1, 2]
    texts = [c.text for c in r.choices]
    assert len(set(texts)) > 1  # three draws from a 49k vocabulary at T=1 do not all agree
    assert r.usage.completion_tokens == 3 * 16
    assert all(c.finish_reason == "length" for c in r.choices)
    # streaming with n=3: every index appears, each finishes once
    seen = {}
    for c in client.completions.create(model=model, prompt="Once upon a time", max_tokens=8, n=3,
                                       temperature=1.0, seed=7, stream=True):
        for ch in c.choices:
            seen.setdefault(ch.index, []).append(ch.finish_reason)
    assert sorted(seen) == [0, 1, 2]
    assert all(sum(f is not None for f in fs) == 1 for fs in seen.values())


def test_seed_reproduces_and_differs(client, model):
    def draw(seed):
        return client.completions.create(model=model, prompt="My favourite animal is",
                                         max_tokens=24, temperature=1.0, top_p=0.95,
                                         seed=seed).choices[0].text
    a, b, c = draw(1234), draw(1234), draw(99)
    assert a == b
    assert a != c


def test_stop_string_cuts_the_text(client, model):
    base = client.completions.create(model=model, prompt="1, 2, 3, 4,", max_tokens=20,
                                     temperature=0).choices[0].text
    assert " 7" in base  # the greedy continuation counts on
    r = client.completions.create(model=model, prompt="1, 2, 3, 4,", max_tokens=20, temperature=0,
                                  stop=[" 7"])
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].text == base[:base.index(" 7")]


def test_logprobs_are_normalised_and_rank_the_choice(client, model):
    r = client.chat.completions.create(model=model, messages=CHAT, max_tokens=6, temperature=0,
                                       logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for tok in content:
        assert tok.logprob <= 0
        tops = [t.logprob for t in tok.top_logprobs]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True)
        assert math.isclose(tok.logprob, tops[0], abs_tol=1e-5)  # greedy picks the top token
        assert sum(math.exp(t) for t in tops) <= 1.0 + 1e-4
    c = client.completions.create(model=model, prompt=PROMPT, max_tokens=4, temperature=0,
                                  logprobs=2)
    lp = c.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 4
    assert "".join(lp.tokens) == c.choices[0].text
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(4)]
    # streamed, the offsets go on counting across chunks
    offsets = []
    for chunk in client.completions.create(model=model, prompt=PROMPT, max_tokens=4,
                                           temperature=0, logprobs=2, stream=True):
        for ch in chunk.choices:
            offsets += ch.logprobs.text_offset if ch.logprobs else []
    assert offsets == lp.text_offset


def test_prompt_forms_token_ids_and_batches(client, model, server):
    ids = tokenize(server, PROMPT)
    by_text = client.completions.create(model=model, prompt=PROMPT, max_tokens=8, temperature=0)
    by_ids = client.completions.create(model=model, prompt=ids, max_tokens=8, temperature=0)
    assert by_ids.choices[0].text == by_text.choices[0].text
    batch = client.completions.create(model=model, prompt=[PROMPT, "Hello"], max_tokens=8,
                                      temperature=0, n=2)
    assert [c.index for c in sorted(batch.choices, key=lambda c: c.index)] == [0, 1, 2, 3]
    by_index = {c.index: c.text for c in batch.choices}
    assert by_index[0] == by_index[1] == by_text.choices[0].text


def test_lagkv_extra_body_is_applied(client, model, server):
    # A prompt long enough to compress under a small policy; the eviction
    # counter moves only when the request's policy is on.
    prompt = " ".join(f"item{i}" for i in range(300))
    before = server.metric("lagserve:kv_tokens_evicted_total")
    r = client.completions.create(model=model, prompt=prompt, max_tokens=4, temperature=0,
                                  extra_body={"lagkv": False})
    assert r.usage.completion_tokens == 4
    assert server.metric("lagserve:kv_tokens_evicted_total") == before
    r = client.completions.create(model=model, prompt=prompt, max_tokens=4, temperature=0,
                                  extra_body={"lagkv": {"sink": 4, "lag": 32, "ratio": 0.25}})
    assert r.usage.completion_tokens == 4
    evicted = server.metric("lagserve:kv_tokens_evicted_total") - before
    n = r.usage.prompt_tokens + 3  # tokens computed: the prompt and all but the last output
    m = (n - 4) // 32  # complete partitions; all but the newest are compressed to 8
    assert evicted >= (m - 1) * (32 - 8) - 32
    assert evicted > 0
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=model, prompt=PROMPT, max_tokens=4,
                                  extra_body={"lagkv": {"sink": 4, "lag": 32, "ratio": 3}})
    assert "lagkv" in str(e.value)


def test_vllm_extras(client, model, server):
    ids = tokenize(server, " Paris")
    paris = ids[-1]
    r = client.completions.create(model=model, prompt=PROMPT, max_tokens=4, temperature=0,
                                  logit_bias={str(paris): -100})
    assert not r.choices[0].text.startswith(" Paris")
    r = client.completions.create(model=model, prompt=PROMPT, max_tokens=6, temperature=0,
                                  extra_body={"stop_token_ids": [paris]})
    assert r.choices[0].finish_reason == "stop" and r.choices[0].text == ""
    assert r.choices[0].model_extra["stop_reason"] == paris  # vLLM: the stop id itself
    # end of turn (EOS): finish "stop", stop_reason null
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}],
                                       max_tokens=200, temperature=0)
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].model_extra["stop_reason"] is None
    r = client.chat.completions.create(model=model, messages=CHAT, max_tokens=40, temperature=0,
                                       extra_body={"ignore_eos": True, "min_tokens": 40,
                                                   "top_k": 5, "min_p": 0.05,
                                                   "repetition_penalty": 1.1})
    assert r.usage.completion_tokens == 40 and r.choices[0].finish_reason == "length"
    r = client.completions.create(model=model, prompt=PROMPT, max_tokens=2,
                                  extra_body={"request_id": "my-call-17"})
    assert r.id == "my-call-17"

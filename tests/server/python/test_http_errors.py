"""Malformed and hostile HTTP requests get the right status and an OpenAI-style
error body ({"error": {"message", "type", "param", "code"}}) naming the field,
and the server goes on answering: after every case a greedy 4-token completion
is unchanged, and after the whole set so is a greedy 8-token one. Servers with
other flags cover the API key (401), the body limit (413) and the queue (429).

Run: build/venv/bin/python -m pytest -q tests/server/python/test_http_errors.py
"""
import concurrent.futures
import http.client
import json
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import Server

PROMPT = "The capital of France is"
CONTEXT = 8192  # the default model's context (SmolLM2-135M-Instruct)
VOCAB = 49152
COMPLETIONS = "/v1/completions"
CHAT = "/v1/chat/completions"
ANY = object()  # the field is not checked


def greedy(srv, max_tokens):
    status, body = srv.request("POST", COMPLETIONS,
                               {"prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0})
    assert status == 200, body
    assert body["usage"]["completion_tokens"] == max_tokens, body
    return body["choices"][0]["text"]


def assert_error(status, body, want_status, want_type, want_param=ANY, want_code=ANY):
    """The status, and an error body with a message, a type, and param / code when given
    (a tuple of params: any of them)."""
    assert status == want_status, body
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), body
    err = body["error"]
    assert set(err) >= {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"], err
    if want_type is not ANY:
        assert err["type"] == want_type, err
    if want_param is not ANY:
        allowed = want_param if isinstance(want_param, tuple) else (want_param,)
        assert err["param"] in allowed, err
    if want_code is not ANY:
        assert err["code"] == want_code, err


@pytest.fixture(scope="module")
def reference(server):
    """Greedy texts before any bad request: {max_tokens: text}."""
    return {4: greedy(server, 4), 8: greedy(server, 8)}


def bad(case_id, body=None, *, path=COMPLETIONS, method="POST", raw=None, status=400,
        type="invalid_request_error", param=ANY, code=ANY):
    return pytest.param(method, path, body, raw, status, type, param, code, id=case_id)


def c(**fields):
    """A completions body: a short valid request with `fields` on top."""
    return {"prompt": PROMPT, "max_tokens": 2, **fields}


def chat(messages, **fields):
    return {"messages": messages, "max_tokens": 2, **fields}


USER = [{"role": "user", "content": "Hi"}]
BIG_PROMPT = [100] * 9000

CASES = [
    # --- the body is not a JSON object ---
    bad("invalid_json", raw=b"{prompt: 'x'}", param=None),
    bad("truncated_json", raw=b'{"prompt": "The capital", "max_tok', param=None),
    bad("json_array", raw=b'[{"prompt": "x", "max_tokens": 2}]', param=None),
    bad("json_null", raw=b"null", param=None),
    bad("json_string", raw=b'"The capital of France is"', param=None),
    bad("empty_body", raw=b"", param=None),
    bad("nan_literal", raw=b'{"prompt": "x", "max_tokens": 2, "temperature": NaN}', param=None),
    bad("invalid_utf8", raw=b'{"prompt": "\xff\xfe", "max_tokens": 2}', param=None),
    bad("lone_surrogate", raw=b'{"prompt": "\\ud800", "max_tokens": 2}', param=None),
    bad("trailing_garbage", raw=b'{"prompt": "x", "max_tokens": 2} {}', param=None),
    # nlohmann reports these as out_of_range, not parse_error: still a 400
    bad("number_overflow", raw=b'{"prompt": "x", "max_tokens": 2, "temperature": 1e400}'),
    bad("chat_number_overflow", path=CHAT,
        raw=b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": -1e400}'),
    bad("chat_invalid_json", path=CHAT, raw=b'{"messages": [', param=None),
    # --- prompt ---
    bad("prompt_missing", {"max_tokens": 2}, param="prompt"),
    bad("prompt_number", c(prompt=42), param="prompt"),
    bad("prompt_empty_string", c(prompt=""), param="prompt"),
    bad("prompt_empty_list", c(prompt=[]), param="prompt"),
    bad("prompt_object", c(prompt={"text": "x"}), param="prompt"),
    bad("prompt_mixed_ids_and_text", c(prompt=[1, "a"]), param="prompt"),
    bad("prompt_float_id", c(prompt=[1, 2.5]), param="prompt"),
    bad("prompt_empty_inner_list", c(prompt=[[1, 2], []]), param="prompt"),
    bad("prompt_nested_too_deep", c(prompt=[[[1]]]), param="prompt"),
    bad("prompt_id_too_large", c(prompt=[1, 10**6]), param="prompt"),
    bad("prompt_id_negative", c(prompt=[1, -1]), param="prompt"),
    bad("prompt_id_vocab_size", c(prompt=[VOCAB]), param="prompt"),
    bad("prompt_id_2_64", c(prompt=[2**64 - 1]), param="prompt"),
    bad("prompt_longer_than_context", c(prompt=BIG_PROMPT, max_tokens=1), param="prompt"),
    bad("prompt_fills_context", c(prompt=[100] * CONTEXT, max_tokens=1), param="prompt"),
    bad("prompts_more_than_queue", c(prompt=["a"] * 300), param="prompt"),
    # --- max_tokens ---
    bad("max_tokens_string", c(max_tokens="8"), param="max_tokens"),
    bad("max_tokens_float", c(max_tokens=2.5), param="max_tokens"),
    bad("max_tokens_bool", c(max_tokens=True), param="max_tokens"),
    bad("max_tokens_negative", c(max_tokens=-1), param="max_tokens"),
    bad("max_tokens_zero", c(max_tokens=0), param="max_tokens"),
    bad("max_tokens_1e9", c(max_tokens=10**9), param="max_tokens"),
    bad("max_tokens_2_70", c(max_tokens=2**70), param="max_tokens"),
    bad("max_tokens_2_64", c(max_tokens=2**64 - 1), param="max_tokens"),
    # 100 prompt tokens + 8093 = 8193: one more than the context
    bad("max_tokens_cannot_fit", c(prompt=[100] * 100, max_tokens=CONTEXT - 99), param="max_tokens"),
    bad("max_completion_tokens_zero", c(max_completion_tokens=0), param="max_completion_tokens"),
    bad("chat_max_tokens_cannot_fit", chat(USER, max_tokens=CONTEXT), path=CHAT, param="max_tokens"),
    # --- sampling ---
    bad("temperature_string", c(temperature="0.5"), param="temperature"),
    bad("temperature_negative", c(temperature=-1), param="temperature"),
    bad("temperature_huge", c(temperature=1e31), param="temperature"),
    bad("top_p_zero", c(top_p=0), param="top_p"),
    bad("top_p_above_one", c(top_p=1.5), param="top_p"),
    bad("top_k_negative", c(top_k=-5), param="top_k"),
    bad("top_k_string", c(top_k="5"), param="top_k"),
    bad("min_p_two", c(min_p=2), param="min_p"),
    bad("presence_penalty_five", c(presence_penalty=5), param="presence_penalty"),
    bad("frequency_penalty_minus_three", c(frequency_penalty=-3), param="frequency_penalty"),
    bad("repetition_penalty_zero", c(repetition_penalty=0), param="repetition_penalty"),
    bad("seed_string", c(seed="42"), param="seed"),
    bad("seed_2_64", c(seed=2**64), param="seed"),
    bad("logit_bias_list", c(logit_bias=[[1, 5]]), param="logit_bias"),
    bad("logit_bias_key_abc", c(logit_bias={"abc": 1}), param="logit_bias"),
    bad("logit_bias_key_negative", c(logit_bias={"-1": 1}), param="logit_bias"),
    bad("logit_bias_key_vocab_size", c(logit_bias={str(VOCAB): 1}), param="logit_bias"),
    bad("logit_bias_value_200", c(logit_bias={"5": 200}), param="logit_bias"),
    bad("logit_bias_value_string", c(logit_bias={"5": "up"}), param="logit_bias"),
    bad("logprobs_50", c(logprobs=50), param="logprobs"),
    bad("logprobs_negative", c(logprobs=-1), param="logprobs"),
    bad("logprobs_bool_on_completions", c(logprobs=True), param="logprobs"),
    bad("n_float", c(n=1.5), param="n"),
    bad("n_zero", c(n=0), param="n"),
    bad("n_1000", c(n=1000), param="n"),
    bad("best_of_not_n", c(best_of=3), param="best_of"),
    # --- stop and the vLLM extras ---
    bad("stop_number", c(stop=5), param="stop"),
    bad("stop_empty_string", c(stop=[""]), param="stop"),
    bad("stop_list_with_number", c(stop=["a", 1]), param="stop"),
    bad("stop_65_strings", c(stop=[f"s{i}" for i in range(65)]), param="stop"),
    bad("stop_token_ids_string", c(stop_token_ids="1"), param="stop_token_ids"),
    bad("stop_token_ids_outside_vocab", c(stop_token_ids=[10**6]), param="stop_token_ids"),
    bad("min_tokens_above_max_tokens", c(min_tokens=10), param="min_tokens"),
    bad("min_tokens_negative", c(min_tokens=-1), param="min_tokens"),
    bad("ignore_eos_string", c(ignore_eos="yes"), param="ignore_eos"),
    bad("skip_special_tokens_number", c(skip_special_tokens=1), param="skip_special_tokens"),
    bad("echo_unsupported", c(echo=True), param="echo"),
    bad("suffix_unsupported", c(suffix="!"), param="suffix"),
    bad("user_number", c(user=5), param="user"),
    # --- stream and stream_options ---
    bad("stream_yes", c(stream="yes"), param="stream"),
    bad("stream_with_bad_temperature_is_json", c(stream=True, temperature=-1), param="temperature"),
    bad("stream_options_string", c(stream=True, stream_options="usage"), param="stream_options"),
    bad("stream_options_unknown_key", c(stream=True, stream_options={"foo": True}),
        param="stream_options"),
    # a field inside an object we define is named under it, never as a bare key
    bad("stream_options_include_usage_string",
        c(stream=True, stream_options={"include_usage": "yes"}),
        param=("stream_options", "stream_options.include_usage")),
    # --- lagkv ---
    bad("lagkv_unknown_key", c(lagkv={"window": 4}), param="lagkv"),
    bad("lagkv_string", c(lagkv="on"), param="lagkv"),
    bad("lagkv_number", c(lagkv=1), param="lagkv"),
    bad("lagkv_ratio_zero", c(lagkv={"ratio": 0}), param="lagkv"),
    bad("lagkv_ratio_two", c(lagkv={"ratio": 2}), param="lagkv"),
    bad("lagkv_keep_above_lag", c(lagkv={"lag": 2, "keep": 5}), param="lagkv"),
    bad("lagkv_keep_and_ratio", c(lagkv={"keep": 2, "ratio": 0.5}), param="lagkv"),
    bad("lagkv_score_v_weight_negative", c(lagkv={"score_v_weight": -1}), param="lagkv"),
    # fields inside lagkv are named under it
    bad("lagkv_lag_zero", c(lagkv={"lag": 0}), param=("lagkv", "lagkv.lag")),
    bad("lagkv_sink_negative", c(lagkv={"sink": -1}), param=("lagkv", "lagkv.sink")),
    bad("lagkv_ratio_string", c(lagkv={"ratio": "half"}), param=("lagkv", "lagkv.ratio")),
    # --- model ---
    bad("model_unknown", c(model="gpt-4o"), status=404, param="model", code="model_not_found"),
    bad("chat_model_unknown", chat(USER, model="gpt-4o"), path=CHAT, status=404, param="model",
        code="model_not_found"),
    bad("model_number", c(model=5), param="model"),
    # --- chat messages ---
    bad("messages_missing", {"max_tokens": 2}, path=CHAT, param="messages"),
    bad("messages_empty", chat([]), path=CHAT, param="messages"),
    bad("messages_string", chat("Hi"), path=CHAT, param="messages"),
    bad("message_not_object", chat(["Hi"]), path=CHAT, param="messages[0]"),
    bad("message_missing_role", chat([{"content": "Hi"}]), path=CHAT, param="messages[0].role"),
    bad("message_role_wizard", chat([{"role": "wizard", "content": "Hi"}]), path=CHAT,
        param="messages[0].role"),
    bad("message_role_number", chat([{"role": 1, "content": "Hi"}]), path=CHAT,
        param="messages[0].role"),
    bad("second_message_bad_role", chat(USER + [{"role": "tool", "content": "x"}]), path=CHAT,
        param="messages[1].role"),
    bad("message_unknown_field", chat([{"role": "user", "content": "Hi", "mood": "sunny"}]),
        path=CHAT, param="messages[0]"),
    bad("message_missing_content", chat([{"role": "user"}]), path=CHAT,
        param="messages[0].content"),
    bad("message_content_number", chat([{"role": "user", "content": 42}]), path=CHAT,
        param="messages[0].content"),
    bad("message_image_part", chat([{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://example.com/cat.png"}}]}]),
        path=CHAT, param="messages[0].content"),
    bad("message_part_not_object", chat([{"role": "user", "content": ["Hi"]}]), path=CHAT,
        param="messages[0].content"),
    bad("message_part_unknown_key", chat([{"role": "user", "content": [
        {"type": "text", "text": "Hi", "cache_control": {}}]}]), path=CHAT,
        param="messages[0].content"),
    # a bad part names the content, not the part's own key ("type")
    bad("message_part_type_number", chat([{"role": "user", "content": [{"type": 5}]}]),
        path=CHAT, param="messages[0].content"),
    # name is a string in OpenAI's API
    bad("message_name_number", chat([{"role": "user", "content": "Hi", "name": 5}]), path=CHAT,
        param=("messages[0]", "messages[0].name")),
    bad("chat_top_logprobs_without_logprobs", chat(USER, top_logprobs=2), path=CHAT,
        param="top_logprobs"),
    bad("chat_top_logprobs_50", chat(USER, logprobs=True, top_logprobs=50), path=CHAT,
        param="top_logprobs"),
    bad("chat_logprobs_number", chat(USER, logprobs=5), path=CHAT, param="logprobs"),
    bad("chat_tools", chat(USER, tools=[{"type": "function", "function": {"name": "f"}}]),
        path=CHAT, param="tools"),
    bad("chat_response_format_json", chat(USER, response_format={"type": "json_object"}),
        path=CHAT, param="response_format"),
    # a non-string type names response_format (not a raw nlohmann type_error)
    bad("chat_response_format_type_number", chat(USER, response_format={"type": 5}), path=CHAT,
        param="response_format"),
    bad("chat_stream_bad_role_is_json", chat([{"role": "wizard", "content": "Hi"}], stream=True),
        path=CHAT, param="messages[0].role"),
    # --- routes ---
    bad("unknown_path", method="GET", path="/v1/nope", status=404, type="not_found_error"),
    bad("unknown_path_post", c(), path="/v1/engines/x/completions", status=404,
        type="not_found_error"),
    bad("put_chat_completions", chat(USER), method="PUT", path=CHAT, status=404,
        type="not_found_error"),
    bad("delete_health", method="DELETE", path="/health", status=404, type="not_found_error"),
    bad("models_unknown", method="GET", path="/v1/models/gpt-4o", status=404, param="model",
        code="model_not_found"),
    # --- /tokenize and /detokenize ---
    bad("tokenize_no_prompt", {}, path="/tokenize", param="prompt"),
    bad("tokenize_prompt_number", {"prompt": 5}, path="/tokenize", param="prompt"),
    bad("tokenize_invalid_json", path="/tokenize", raw=b"{", param=None),
    bad("tokenize_json_array", path="/tokenize", raw=b"[]", param=None),
    bad("tokenize_number_overflow", path="/tokenize", raw=b'{"prompt": "x", "n": 1e400}'),
    bad("tokenize_bad_message", {"messages": [{"role": "wizard", "content": "x"}]},
        path="/tokenize", param="messages[0].role"),
    bad("tokenize_model_unknown", {"prompt": "x", "model": "gpt-4o"}, path="/tokenize",
        status=404, code="model_not_found"),
    bad("tokenize_add_special_tokens_string", {"prompt": "x", "add_special_tokens": "yes"},
        path="/tokenize"),
    bad("detokenize_id_too_large", {"tokens": [1, 10**6]}, path="/detokenize", param="tokens"),
    bad("detokenize_id_vocab_size", {"tokens": [VOCAB]}, path="/detokenize", param="tokens"),
    bad("detokenize_id_negative", {"tokens": [-1]}, path="/detokenize", param="tokens"),
    bad("detokenize_id_2_64", {"tokens": [2**64 - 1]}, path="/detokenize", param="tokens"),
    bad("detokenize_id_string", {"tokens": ["a"]}, path="/detokenize", param="tokens"),
    bad("detokenize_missing_tokens", {}, path="/detokenize", param="tokens"),
    bad("detokenize_tokens_string", {"tokens": "1 2"}, path="/detokenize", param="tokens"),
    bad("detokenize_invalid_json", path="/detokenize", raw=b"{tokens", param=None),
]


@pytest.mark.parametrize("method,path,body,raw,status,type_,param,code", CASES)
def test_bad_request(server, reference, method, path, body, raw, status, type_, param, code):
    got_status, got = server.request(method, path, body=body, raw=raw, timeout=60)
    assert_error(got_status, got, status, type_, param, code)
    assert greedy(server, 4) == reference[4]


def test_wrong_method_on_completions(server, reference):
    status, body = server.request("GET", COMPLETIONS)
    assert_error(status, body, status, "not_found_error" if status == 404 else ANY)
    assert status in (404, 405)
    assert greedy(server, 4) == reference[4]


def deep_array(depth):
    return "[" * depth + "]" * depth


# Hostile but valid: each must be answered normally.
HOSTILE_OK = [
    pytest.param(COMPLETIONS, c(prompt="a\u0000b"), id="nul_in_prompt"),
    pytest.param(COMPLETIONS, c(prompt="\U0001F600 \u202e rtl \ufeff"), id="emoji_bidi_bom"),
    pytest.param(COMPLETIONS, c(unknown_field={"x": [1, 2, 3]}), id="unknown_top_level_field"),
    pytest.param(COMPLETIONS, c(junk="a" * 100_000), id="100kb_body"),
    pytest.param(COMPLETIONS, c(logit_bias={"5": -100, "6": 100}), id="logit_bias_limits"),
    pytest.param(COMPLETIONS, c(stop=["\ud83d\ude00"]), id="stop_emoji"),
    pytest.param(CHAT, chat([{"role": "developer", "content": ""},
                             {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                             {"role": "assistant", "content": None}]), id="chat_edge_forms"),
]


@pytest.mark.parametrize("path,body", HOSTILE_OK)
def test_hostile_but_valid(server, reference, path, body):
    status, got = server.request("POST", path, body)
    assert status == 200, got
    assert got["usage"]["completion_tokens"] >= 1, got
    assert greedy(server, 4) == reference[4]


def test_deeply_nested_json_does_not_crash(server, reference):
    # 100k levels in an ignored field (parsed, then dropped), and in the prompt
    raw = ('{"prompt": "x", "max_tokens": 2, "junk": ' + deep_array(100_000) + "}").encode()
    status, got = server.request("POST", COMPLETIONS, raw=raw)
    assert status == 200, got
    raw = ('{"prompt": ' + deep_array(100_000) + ', "max_tokens": 2}').encode()
    status, got = server.request("POST", COMPLETIONS, raw=raw)
    assert_error(status, got, 400, "invalid_request_error", "prompt")
    assert greedy(server, 4) == reference[4]


def test_half_sent_request_does_not_block_others(server, reference):
    # a client that sends headers promising a body and then goes quiet
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"pro")
        assert greedy(server, 4) == reference[4]
    finally:
        sock.close()


def test_normal_request_unchanged_after_all(server, reference):
    """Runs last in this file: the same greedy text as before any bad request."""
    assert greedy(server, 8) == reference[8]
    assert server.metric("lagserve:num_requests_running") == 0


# --- servers with other flags ------------------------------------------------------



def test_api_key(short_lived):
    srv = short_lived("--api-key", "sekrit")
    wrong = [None, "Bearer wrong", "Bearer sekri", "Bearer sekrit2", "sekrit", "Basic sekrit",
             "Bearer  sekrit", "bearer sekrit", "Bearer"]
    for auth in wrong:
        headers = {"Authorization": auth} if auth else {}
        for method, path, body in [("POST", COMPLETIONS, c()), ("GET", "/v1/models", None),
                                   ("GET", "/metrics", None), ("GET", "/v1/nope", None),
                                   ("POST", "/tokenize", {"prompt": "x"})]:
            status, got = srv.request(method, path, body=body, headers=headers)
            assert_error(status, got, 401, "authentication_error", None, "invalid_api_key")
    status, got = srv.request("GET", "/health")
    assert status == 200, got
    ok = {"Authorization": "Bearer sekrit"}
    status, got = srv.request("POST", COMPLETIONS, c(temperature=0), headers=ok)
    assert status == 200 and got["choices"][0]["text"], got
    status, got = srv.request("GET", "/v1/models", headers=ok)
    assert status == 200, got
    # with the right key the errors are the usual ones
    status, got = srv.request("POST", COMPLETIONS, c(temperature=-1), headers=ok)
    assert_error(status, got, 400, "invalid_request_error", "temperature")


def test_body_limit(short_lived):
    srv = short_lived("--max-body-mb", "1")
    status, got = srv.request("POST", COMPLETIONS, c(junk="a" * (2 << 20)))
    assert_error(status, got, 413, "invalid_request_error", None, "body_too_large")
    status, got = srv.request("POST", CHAT, chat([{"role": "user", "content": "a" * (2 << 20)}]))
    assert_error(status, got, 413, "invalid_request_error", None, "body_too_large")
    # just under the limit is read and answered
    status, got = srv.request("POST", COMPLETIONS, c(junk="a" * ((1 << 20) - 100)))
    assert status == 200, got
    assert srv.request("GET", "/health")[0] == 200


def open_stream(srv, body, path=COMPLETIONS):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    return conn, conn.getresponse()


def test_queue_full_gets_429(short_lived):
    srv = short_lived("--max-queued-requests", "1", "--max-seqs", "1")
    long_body = {"prompt": "Tell me a very long story.", "max_tokens": 512, "temperature": 0,
                 "ignore_eos": True, "stream": True}
    open_conns = []
    try:
        conn, resp = open_stream(srv, long_body)  # runs (one sequence at a time)
        open_conns.append(conn)
        assert resp.status == 200
        assert resp.readline().startswith(b"data: ")  # a token came: it is running
        conn, resp = open_stream(srv, long_body)  # admitted, waits: the queue is now full
        open_conns.append(conn)
        assert resp.status == 200

        def one_more(i):
            body = dict(long_body, prompt=f"Another story {i}.")
            path = CHAT if i % 2 else COMPLETIONS
            if path == CHAT:
                body = chat([{"role": "user", "content": body["prompt"]}], stream=True,
                            max_tokens=512)
            conn, resp = open_stream(srv, body, path)
            try:
                text = resp.read().decode() if resp.status != 200 else ""
                return resp.status, json.loads(text) if text else None
            finally:
                conn.close()

        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            burst = list(pool.map(one_more, range(4)))
        statuses = [s for s, _ in burst]
        assert 429 in statuses, burst
        assert set(statuses) <= {200, 429}, burst
        for status, got in burst:
            if status == 429:
                assert_error(status, got, 429, "rate_limit_error", None, "queue_full")
    finally:
        for conn in open_conns:
            conn.close()
    # the dropped streams are cancelled and the server serves again
    assert srv.wait_metric("lagserve:num_requests_running", lambda v: v == 0) == 0
    assert srv.wait_metric("lagserve:num_requests_waiting", lambda v: v == 0) == 0
    status, got = srv.request("POST", COMPLETIONS, c(temperature=0))
    assert status == 200, got


def test_abandoned_blocking_request_is_cancelled(short_lived):
    """A client that gives up on a non-streamed completion frees its sequence, as a
    dropped stream does."""
    srv = short_lived("--max-seqs", "1")
    body = {"prompt": "Tell me a very long story.", "max_tokens": 4000, "temperature": 0,
            "ignore_eos": True}
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    conn.request("POST", COMPLETIONS, json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    assert srv.wait_metric("lagserve:num_requests_running", lambda v: v == 1) == 1
    assert resp.read(1) == b" "  # the server's keep-alive whitespace while it works
    resp.close()
    conn.close()  # the client gives up
    assert srv.wait_metric("lagserve:num_requests_running", lambda v: v == 0, timeout=10) == 0
    status, got = srv.request("POST", COMPLETIONS, c(temperature=0), timeout=30)
    assert status == 200, got


def test_sigterm_cancels_a_blocking_request_after_the_drain_timeout(short_lived):
    """SIGTERM with --drain-timeout 0 while a non-streamed completion that would take
    minutes runs: the request is cancelled and the process exits at once."""
    srv = short_lived("--max-seqs", "1")
    body = {"prompt": "Tell me a very long story.", "max_tokens": 4000, "temperature": 0,
            "ignore_eos": True}

    def blocking_call():
        try:
            srv.request("POST", COMPLETIONS, body, timeout=120)
        except OSError:  # the server went away: expected here
            pass

    client = threading.Thread(target=blocking_call, daemon=True)
    client.start()
    assert srv.wait_metric("lagserve:num_requests_running", lambda v: v == 1) == 1
    srv.proc.send_signal(signal.SIGTERM)
    start = time.time()
    try:
        code = srv.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        code = None
        srv.proc.kill()
    assert code == 0, f"still running {time.time() - start:.0f} s after SIGTERM:\n{srv.log_text()}"

"""gRPC API tests (lagserve.v1.LagServe and grpc.health.v1) against the real server binary.

Run: pytest tests/server/python/test_grpc.py   (the `server` fixture of conftest.py starts
build/server/lagserve; needs `pip install clients/python pytest`). Skipped when that
binary was built without gRPC (-DLAGSERVE_GRPC=OFF).
"""

import json
import re
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field

import pytest

from conftest import has_grpc

if not has_grpc():
    pytest.skip("this lagserve was built without gRPC (lagserve --version)",
                allow_module_level=True)

import grpc  # noqa: E402 - after the skip: where the binary has no gRPC, these may be missing too
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from lagserve_client.lagserve.v1 import lagserve_pb2 as pb  # noqa: E402
from lagserve_client.lagserve.v1 import lagserve_pb2_grpc as pb_grpc  # noqa: E402

TIMEOUT_S = 120  # per call: a 2-thread CPU server on a shared CI machine is slow


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.grpc_target) as ch:
        grpc.channel_ready_future(ch).result(timeout=30)
        yield ch


@pytest.fixture(scope="module")
def stub(channel):
    return pb_grpc.LagServeStub(channel)


@pytest.fixture(scope="module")
def prompt_ids(stub):
    ids = list(stub.Tokenize(pb.TokenizeRequest(text="The capital of France is"), timeout=30).token_ids)
    assert len(ids) >= 3
    return ids


# --- helpers ------------------------------------------------------------------------------------


@dataclass
class Streamed:
    """A Generate stream, read to the end and checked for shape on the way."""

    text: dict = field(default_factory=lambda: defaultdict(str))  # choice -> text
    ids: dict = field(default_factory=lambda: defaultdict(list))  # choice -> token ids
    finish: dict = field(default_factory=dict)  # choice -> FinishReason
    usage: object = None
    request_ids: set = field(default_factory=set)


def collect(responses) -> Streamed:
    out = Streamed()
    for r in responses:
        out.request_ids.add(r.request_id)
        assert out.usage is None, "a message came after the usage message"
        if r.HasField("usage"):
            out.usage = r.usage
            continue
        assert r.index not in out.finish, f"choice {r.index} went on after finishing"
        out.text[r.index] += r.text
        out.ids[r.index].extend(r.token_ids)
        if r.finish_reason != pb.FINISH_REASON_UNSPECIFIED:
            out.finish[r.index] = r.finish_reason
    assert out.usage is not None, "the stream ended without a usage message"
    assert len(out.request_ids) == 1, out.request_ids
    return out


def greedy(prompt_ids, max_tokens=16, **kw):
    return pb.GenerateRequest(
        token_ids=pb.TokenIds(ids=prompt_ids),
        temperature=0.0,
        max_tokens=max_tokens,
        ignore_eos=True,
        **kw,
    )


def http_get(url):
    with urllib.request.urlopen(url, timeout=30) as resp:
        return resp.read().decode()


def http_post_json(url, body):
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def metric(http_url, name, **labels):
    """Sum of the samples of `name` whose labels include `labels`, from GET /metrics."""
    total, found = 0.0, False
    for line in http_get(f"{http_url}/metrics").splitlines():
        m = _SAMPLE.match(line)
        if line.startswith("#") or not m or m.group(1) != name:
            continue
        got = dict(_LABEL.findall(m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
            found = True
    assert found, f"{name}{labels} is not in /metrics"
    return total


def wait_until(what, predicate, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for: {what}"
        time.sleep(0.1)


def running(server):
    return metric(server.http_url, "lagserve:num_requests_running")


# --- Generate -----------------------------------------------------------------------------------


def test_generate_greedy_token_prompt(stub, prompt_ids):
    out = collect(stub.Generate(greedy(prompt_ids), timeout=TIMEOUT_S))
    assert list(out.ids) == [0]
    assert len(out.ids[0]) == 16
    assert out.finish == {0: pb.FINISH_REASON_LENGTH}
    assert out.usage.prompt_tokens == len(prompt_ids)
    assert out.usage.completion_tokens == 16
    assert out.usage.total_tokens == len(prompt_ids) + 16
    (request_id,) = out.request_ids
    assert request_id.startswith("grpc")


def test_generate_n2_choices_equal_greedy(stub, prompt_ids):
    one = collect(stub.Generate(greedy(prompt_ids), timeout=TIMEOUT_S))
    two = collect(stub.Generate(greedy(prompt_ids, n=2), timeout=TIMEOUT_S))
    assert sorted(two.ids) == [0, 1]
    assert two.ids[0] == two.ids[1] == one.ids[0]
    assert two.text[0] == two.text[1] == one.text[0]
    assert two.finish == {0: pb.FINISH_REASON_LENGTH, 1: pb.FINISH_REASON_LENGTH}
    assert two.usage.completion_tokens == 32
    assert two.usage.prompt_tokens == len(prompt_ids)  # one prompt, counted once


def test_generate_chat_prompt(stub):
    chat = pb.ChatMessages(messages=[pb.ChatMessage(role="user", content="Say hello.")])
    req = pb.GenerateRequest(chat=chat, temperature=0.0, max_tokens=16, ignore_eos=True)
    out = collect(stub.Generate(req, timeout=TIMEOUT_S))
    assert len(out.ids[0]) == 16
    assert out.text[0].strip()
    assert out.usage.prompt_tokens > 0


def test_generate_cancel_mid_stream(server, stub, prompt_ids):
    aborted_before = metric(
        server.http_url, "lagserve:request_success_total", finished_reason="abort"
    )
    call = stub.Generate(greedy(prompt_ids, max_tokens=2000), timeout=TIMEOUT_S)
    first = next(call)
    assert first.token_ids
    call.cancel()
    with pytest.raises(grpc.RpcError) as err:
        for _ in call:
            pass
    assert err.value.code() == grpc.StatusCode.CANCELLED

    out = collect(stub.Generate(greedy(prompt_ids, max_tokens=4), timeout=TIMEOUT_S))
    assert len(out.ids[0]) == 4

    def aborted_and_idle():
        aborted = metric(server.http_url, "lagserve:request_success_total", finished_reason="abort")
        return aborted >= aborted_before + 1 and running(server) == 0

    wait_until("an abort counted and no request running", aborted_and_idle)


def test_generate_deadline_exceeded(server, stub, prompt_ids):
    with pytest.raises(grpc.RpcError) as err:
        for _ in stub.Generate(greedy(prompt_ids, max_tokens=2000), timeout=0.5):
            pass
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_until("no request running", lambda: running(server) == 0)


# --- Health, Tokenize, Detokenize, ListModels ---------------------------------------------------


@pytest.mark.parametrize("service", ["", "lagserve.v1.LagServe"])
def test_health_serving(channel, service):
    health = health_pb2_grpc.HealthStub(channel)
    resp = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=30)
    assert resp.status == health_pb2.HealthCheckResponse.SERVING


def test_tokenize_detokenize_round_trip(server, stub):
    text = "Hello world, how are you?"
    tok = stub.Tokenize(pb.TokenizeRequest(text=text), timeout=30)
    assert tok.count == len(tok.token_ids) > 0
    assert tok.max_model_len > 0
    http_ids = http_post_json(f"{server.http_url}/tokenize", {"prompt": text})["tokens"]
    assert list(tok.token_ids) == http_ids

    detok = stub.Detokenize(pb.DetokenizeRequest(token_ids=tok.token_ids), timeout=30)
    assert detok.text.endswith(text)  # after the BOS text, if the model adds one
    plain = stub.Tokenize(pb.TokenizeRequest(text=text, add_special_tokens=False), timeout=30)
    detok = stub.Detokenize(pb.DetokenizeRequest(token_ids=plain.token_ids), timeout=30)
    assert detok.text == text


def test_list_models_matches_http(server, stub):
    resp = stub.ListModels(pb.ListModelsRequest(), timeout=30)
    assert len(resp.models) == 1
    http_models = json.loads(http_get(f"{server.http_url}/v1/models"))
    assert resp.models[0].id == http_models["data"][0]["id"]
    assert resp.models[0].max_model_len > 0
    assert resp.models[0].lagkv


# --- Bad input ----------------------------------------------------------------------------------


def status_of(stub, request):
    with pytest.raises(grpc.RpcError) as err:
        for _ in stub.Generate(request, timeout=TIMEOUT_S):
            pass
    return err.value.code(), err.value.details()


def test_generate_without_prompt(stub):
    code, details = status_of(stub, pb.GenerateRequest(max_tokens=4))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "prompt" in details


def test_generate_max_tokens_past_context(stub, prompt_ids):
    code, _ = status_of(stub, greedy(prompt_ids, max_tokens=10**6))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_generate_negative_temperature(stub, prompt_ids):
    req = greedy(prompt_ids)
    req.temperature = -1.0
    code, details = status_of(stub, req)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "temperature" in details


def test_generate_token_outside_vocabulary(stub, prompt_ids):
    code, _ = status_of(stub, greedy(prompt_ids + [10**9]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_generate_unknown_model(stub, prompt_ids):
    code, details = status_of(stub, greedy(prompt_ids, model="nope"))
    assert code == grpc.StatusCode.NOT_FOUND
    assert "nope" in details


def test_api_key_guards_every_method_but_health():
    from conftest import Server

    srv = Server("--api-key", "sekrit", "--drain-timeout", "0")
    try:
        with grpc.insecure_channel(srv.grpc_target) as ch:
            grpc.channel_ready_future(ch).result(timeout=30)
            stub = pb_grpc.LagServeStub(ch)
            for metadata in [None, (("authorization", "Bearer wrong"),),
                             (("authorization", "sekrit"),)]:
                with pytest.raises(grpc.RpcError) as e:
                    stub.ListModels(pb.ListModelsRequest(), metadata=metadata, timeout=30)
                assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
                with pytest.raises(grpc.RpcError) as e:
                    list(stub.Generate(pb.GenerateRequest(text="Hi", max_tokens=2),
                                       metadata=metadata, timeout=30))
                assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
            ok = (("authorization", "Bearer sekrit"),)
            assert len(stub.ListModels(pb.ListModelsRequest(), metadata=ok, timeout=30).models) == 1
            msgs = list(stub.Generate(pb.GenerateRequest(text="Hi", max_tokens=2, ignore_eos=True),
                                      metadata=ok, timeout=60))
            assert msgs[-1].usage.completion_tokens == 2
            health = health_pb2_grpc.HealthStub(ch)
            assert health.Check(health_pb2.HealthCheckRequest(service=""), timeout=30).status == \
                health_pb2.HealthCheckResponse.SERVING
    finally:
        assert srv.stop() == 0

# LagServeClient: a thin, synchronous wrapper over lagserve's gRPC stub (lagserve.v1.LagServe + grpc.health.v1).
# Use: with LagServeClient("127.0.0.1:50051") as c: print(c.complete(prompt="Hello", max_tokens=16)[0])
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .lagserve.v1 import lagserve_pb2 as pb
from .lagserve.v1 import lagserve_pb2_grpc as pb_grpc

def parse_lagkv(spec: pb.LagKv | Mapping[str, Any] | str | bool) -> pb.LagKv:
    """Turns a policy spec into a LagKv message.

    Accepts a LagKv (returned as is); "off" / False (full attention); "on" / "default" / True (the
    server's default policy); "sink=16,lag=128,ratio=0.25" (any subset of the keys; the rest take the
    server's defaults); or a dict with the same keys. Raises ValueError on anything else.
    """
    if isinstance(spec, pb.LagKv):
        return spec
    if isinstance(spec, bool):
        return pb.LagKv(enabled=spec)
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text in ("off", "false", "none"):
            return pb.LagKv(enabled=False)
        if text in ("on", "true", "default", ""):
            return pb.LagKv(enabled=True)
        fields: dict[str, str] = {}
        for part in text.split(","):
            key, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"lagkv: expected key=value, got {part!r} in {spec!r}")
            fields[key.strip()] = value.strip()
        spec = fields
    if isinstance(spec, Mapping):
        unknown = set(spec) - {"enabled", "sink", "lag", "ratio"}
        if unknown:
            raise ValueError(f"lagkv: unknown keys {sorted(unknown)}; use sink, lag, ratio (or 'off')")
        try:
            msg = pb.LagKv(enabled=bool(spec.get("enabled", True)))
            if spec.get("sink") is not None:
                msg.sink = int(spec["sink"])
            if spec.get("lag") is not None:
                msg.lag = int(spec["lag"])
            if spec.get("ratio") is not None:
                msg.ratio = float(spec["ratio"])
        except (TypeError, ValueError) as e:
            raise ValueError(f"lagkv: bad value in {dict(spec)!r}: {e}") from None
        if msg.HasField("ratio") and not 0.0 < msg.ratio <= 1.0:
            raise ValueError(f"lagkv: ratio must be in (0, 1], got {msg.ratio}")
        return msg
    raise ValueError(f"lagkv: cannot use {spec!r}")


def _chat_messages(messages: Iterable[Mapping[str, str] | pb.ChatMessage]) -> pb.ChatMessages:
    out = pb.ChatMessages()
    for m in messages:
        if isinstance(m, pb.ChatMessage):
            out.messages.append(m)
        else:
            out.messages.add(role=m["role"], content=m["content"])
    return out


def build_generate_request(
    prompt: str | None = None,
    *,
    token_ids: Iterable[int] | None = None,
    messages: Iterable[Mapping[str, str] | pb.ChatMessage] | None = None,
    lagkv: Any = None,
    stop: str | Iterable[str] | None = None,
    **fields: Any,
) -> pb.GenerateRequest:
    """Builds a GenerateRequest from exactly one of prompt / token_ids / messages plus GenerateRequest fields.

    Fields given as None stay unset (the server's default applies). Unknown field names raise ValueError.
    """
    given = [x is not None for x in (prompt, token_ids, messages)]
    if sum(given) != 1:
        raise ValueError("give exactly one of prompt=, token_ids=, messages=")
    kwargs = {k: v for k, v in fields.items() if v is not None}
    if prompt is not None:
        kwargs["text"] = prompt
    elif token_ids is not None:
        kwargs["token_ids"] = pb.TokenIds(ids=list(token_ids))
    else:
        kwargs["chat"] = _chat_messages(messages)
    if stop is not None:
        kwargs["stop"] = [stop] if isinstance(stop, str) else list(stop)
    if lagkv is not None:
        kwargs["lagkv"] = parse_lagkv(lagkv)
    return pb.GenerateRequest(**kwargs)


class LagServeClient:
    """A gRPC connection to one lagserve server.

    api_key, when given, is sent on every call as metadata `authorization: Bearer KEY`.
    timeout (seconds) is the default deadline of every call; None means no deadline.
    Errors surface as grpc.RpcError (e.code(), e.details()).
    """

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        api_key: str | None = None,
        timeout: float | None = None,
        *,
        channel: grpc.Channel | None = None,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self._owns_channel = channel is None
        self._channel = channel if channel is not None else grpc.insecure_channel(target)
        self._stub = pb_grpc.LagServeStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()

    def close(self) -> None:
        if self._owns_channel:
            self._channel.close()

    def __enter__(self) -> LagServeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call_options(self, timeout: float | None) -> dict[str, Any]:
        return {"timeout": self.timeout if timeout is None else timeout, "metadata": self._metadata}

    def generate(
        self,
        prompt: str | None = None,
        *,
        token_ids: Iterable[int] | None = None,
        messages: Iterable[Mapping[str, str] | pb.ChatMessage] | None = None,
        timeout: float | None = None,
        **fields: Any,
    ) -> Iterator[pb.GenerateResponse]:
        """Streams GenerateResponse messages. Other kwargs are GenerateRequest fields (max_tokens,
        temperature, seed, n, stop, lagkv, ...). Closing the iterator early cancels the request."""
        request = build_generate_request(prompt, token_ids=token_ids, messages=messages, **fields)
        call = self._stub.Generate(request, **self._call_options(timeout))
        try:
            yield from call
        finally:
            call.cancel()  # a no-op once the stream has ended; aborts the request when the caller stops early

    def complete(self, prompt: str | None = None, **kwargs: Any) -> list[str]:
        """Runs generate() to the end and returns the whole text of each choice, in choice order."""
        texts: dict[int, list[str]] = {}
        for response in self.generate(prompt, **kwargs):
            texts.setdefault(response.index, []).append(response.text)
        n = max(int(kwargs.get("n") or 1), max(texts, default=-1) + 1)
        return ["".join(texts.get(i, [])) for i in range(n)]

    def tokenize(
        self, text: str, *, add_special_tokens: bool | None = None, model: str = "", timeout: float | None = None
    ) -> list[int]:
        request = pb.TokenizeRequest(model=model, text=text)
        if add_special_tokens is not None:
            request.add_special_tokens = add_special_tokens
        return list(self._stub.Tokenize(request, **self._call_options(timeout)).token_ids)

    def detokenize(self, token_ids: Iterable[int], *, model: str = "", timeout: float | None = None) -> str:
        request = pb.DetokenizeRequest(model=model, token_ids=list(token_ids))
        return self._stub.Detokenize(request, **self._call_options(timeout)).text

    def list_models(self, *, timeout: float | None = None) -> list[pb.Model]:
        return list(self._stub.ListModels(pb.ListModelsRequest(), **self._call_options(timeout)).models)

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The grpc.health.v1 status of `service` ("" = the whole server): "SERVING", "NOT_SERVING", ..."""
        response = self._health.Check(health_pb2.HealthCheckRequest(service=service), **self._call_options(timeout))
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

# Tests LagServeClient and the CLI against an in-process fake lagserve gRPC server (no real server needed).
# Run: python -m unittest discover -s clients/python/tests   (with lagserve-client installed, or from clients/python)
import contextlib
import io
import unittest
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from lagserve_client import LagServeClient, cli, pb
from lagserve_client.lagserve.v1 import lagserve_pb2_grpc as pb_grpc


class FakeLagServe(pb_grpc.LagServeServicer):
    """Echoes each prompt back word by word, once per choice; records what it was sent."""

    def __init__(self):
        self.requests = []
        self.metadata = []

    def Generate(self, request, context):
        self.requests.append(request)
        self.metadata.append(dict(context.invocation_metadata()))
        if request.WhichOneof("prompt") == "text" and request.text == "fail":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "prompt says fail")
        words = {
            "text": lambda: request.text.split(),
            "token_ids": lambda: [str(i) for i in request.token_ids.ids],
            "chat": lambda: [m.content for m in request.chat.messages],
        }[request.WhichOneof("prompt")]()
        words = words[: request.max_tokens] if request.HasField("max_tokens") else words
        n = request.n or 1
        for index in range(n):
            for i, word in enumerate(words):
                last = i == len(words) - 1
                yield pb.GenerateResponse(
                    request_id="r1",
                    index=index,
                    text=word + ("" if last else " "),
                    token_ids=[i],
                    finish_reason=pb.FINISH_REASON_LENGTH if last else pb.FINISH_REASON_UNSPECIFIED,
                )
        n_out = n * len(words)
        yield pb.GenerateResponse(request_id="r1", usage=pb.Usage(prompt_tokens=3, completion_tokens=n_out, total_tokens=3 + n_out))

    def Tokenize(self, request, context):
        ids = [len(w) for w in request.text.split()]
        return pb.TokenizeResponse(token_ids=ids, count=len(ids), max_model_len=2048)

    def Detokenize(self, request, context):
        return pb.DetokenizeResponse(text=",".join(str(i) for i in request.token_ids))

    def ListModels(self, request, context):
        return pb.ListModelsResponse(models=[pb.Model(id="fake", max_model_len=2048, lagkv="off")])


class ClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.fake = FakeLagServe()
        cls.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pb_grpc.add_LagServeServicer_to_server(cls.fake, cls.server)
        health_servicer = health.HealthServicer()
        health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, cls.server)
        port = cls.server.add_insecure_port("127.0.0.1:0")
        cls.server.start()
        cls.target = f"127.0.0.1:{port}"

    @classmethod
    def tearDownClass(cls):
        cls.server.stop(None)

    def test_generate_streams_and_sends_fields(self):
        with LagServeClient(self.target, api_key="sekret", timeout=10) as c:
            out = list(c.generate(prompt="a b c", max_tokens=2, temperature=0, seed=5, lagkv="sink=4,lag=8,ratio=0.5"))
        self.assertEqual([r.text for r in out[:-1]], ["a ", "b"])
        self.assertEqual(out[-1].usage.completion_tokens, 2)
        req = self.fake.requests[-1]
        self.assertEqual((req.max_tokens, req.temperature, req.seed), (2, 0.0, 5))
        self.assertEqual((req.lagkv.enabled, req.lagkv.sink, req.lagkv.lag, req.lagkv.ratio), (True, 4, 8, 0.5))
        self.assertFalse(req.HasField("top_p"))
        self.assertEqual(self.fake.metadata[-1].get("authorization"), "Bearer sekret")

    def test_complete_joins_each_choice(self):
        with LagServeClient(self.target) as c:
            self.assertEqual(c.complete(token_ids=[7, 8], n=2), ["7 8", "7 8"])
            self.assertEqual(c.complete(messages=[{"role": "user", "content": "hi"}]), ["hi"])
        self.assertNotIn("authorization", self.fake.metadata[-1])

    def test_unary_calls(self):
        with LagServeClient(self.target) as c:
            self.assertEqual(c.tokenize("ab cde"), [2, 3])
            self.assertEqual(c.detokenize([1, 2]), "1,2")
            self.assertEqual([m.id for m in c.list_models()], ["fake"])
            self.assertEqual(c.health(), "SERVING")

    def test_errors_are_rpc_errors(self):
        with LagServeClient(self.target) as c, self.assertRaises(grpc.RpcError) as e:
            list(c.generate(prompt="fail"))
        self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)

    def test_cli_chat_and_error(self):
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            rc = cli.main(["chat", "--target", self.target, "--system", "be brief", "--prompt", "hello", "--lagkv", "off"])
        self.assertEqual((rc, stdout.getvalue()), (0, "be brief hello\n"))
        self.assertFalse(self.fake.requests[-1].lagkv.enabled)
        self.assertTrue(self.fake.requests[-1].HasField("lagkv"))

        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            rc = cli.main(["complete", "--target", self.target, "--prompt", "fail"])
        self.assertEqual(rc, 1)
        self.assertIn("INVALID_ARGUMENT: prompt says fail", stderr.getvalue())

    def test_cli_unreachable_server(self):
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            rc = cli.main(["health", "--target", "127.0.0.1:1", "--timeout", "2"])
        self.assertEqual(rc, 1)
        self.assertEqual(len(stderr.getvalue().strip().splitlines()), 1)


if __name__ == "__main__":
    unittest.main()

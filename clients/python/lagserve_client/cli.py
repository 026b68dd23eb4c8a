# lagserve-client: command line for lagserve's gRPC API (chat, complete, tokenize, health).
# Run: lagserve-client chat --prompt "Hi" [--target 127.0.0.1:50051]   (or: python -m lagserve_client.cli --help)
from __future__ import annotations

import argparse
import json
import os
import sys

import grpc

from .client import LagServeClient, parse_lagkv


def _lagkv_arg(text: str):
    try:
        return parse_lagkv(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _build_parser() -> argparse.ArgumentParser:
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument(
        "--target",
        default=os.environ.get("LAGSERVE_GRPC_TARGET", "127.0.0.1:50051"),
        help="server host:port (env LAGSERVE_GRPC_TARGET; default %(default)s)",
    )
    connection.add_argument(
        "--api-key", default=os.environ.get("LAGSERVE_API_KEY"), help="sent as 'authorization: Bearer KEY' (env LAGSERVE_API_KEY)"
    )
    connection.add_argument("--timeout", type=float, default=None, help="deadline of the call in seconds")

    sampling = argparse.ArgumentParser(add_help=False)
    sampling.add_argument("--max-tokens", type=int, default=None, help="tokens to generate (server default if unset)")
    sampling.add_argument("--temperature", type=float, default=None, help="0 = greedy (server default 1.0)")
    sampling.add_argument("--seed", type=int, default=None)
    sampling.add_argument(
        "--lagkv", type=_lagkv_arg, default=None, metavar="SPEC", help="'off' or e.g. 'sink=16,lag=128,ratio=0.25' (server default if unset)"
    )
    sampling.add_argument("--model", default="", help="model id (default: the served model)")
    sampling.add_argument("--usage", action="store_true", help="print token usage to stderr at the end")

    parser = argparse.ArgumentParser(prog="lagserve-client", description="Client for lagserve's gRPC API.")
    commands = parser.add_subparsers(dest="command", required=True)

    chat = commands.add_parser("chat", parents=[connection, sampling], help="chat: stream the reply to --prompt")
    chat.add_argument("--system", default=None, help="system message")
    chat.add_argument("--prompt", required=True, help="user message")

    complete = commands.add_parser("complete", parents=[connection, sampling], help="complete a plain prompt, streamed")
    complete.add_argument("--prompt", default=None, help="prompt text (default: read stdin)")

    tokenize = commands.add_parser("tokenize", parents=[connection], help="print the token ids of TEXT as JSON")
    tokenize.add_argument("text")
    tokenize.add_argument("--no-special", action="store_true", help="do not add special tokens (BOS)")

    health = commands.add_parser("health", parents=[connection], help="grpc.health.v1 check; exit 0 if SERVING")
    health.add_argument("--service", default="", help="service name ('' = the whole server)")
    return parser


def _stream(client: LagServeClient, args: argparse.Namespace, **prompt) -> None:
    usage = None
    for response in client.generate(
        **prompt,
        model=args.model,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        seed=args.seed,
        lagkv=args.lagkv,
        timeout=args.timeout,
    ):
        sys.stdout.write(response.text)
        sys.stdout.flush()
        if response.HasField("usage"):
            usage = response.usage
    sys.stdout.write("\n")
    if args.usage and usage is not None:
        print(
            f"prompt_tokens={usage.prompt_tokens} completion_tokens={usage.completion_tokens} total_tokens={usage.total_tokens}",
            file=sys.stderr,
        )


def _run(args: argparse.Namespace) -> int:
    with LagServeClient(args.target, api_key=args.api_key) as client:
        if args.command == "chat":
            messages = ([{"role": "system", "content": args.system}] if args.system else []) + [
                {"role": "user", "content": args.prompt}
            ]
            _stream(client, args, messages=messages)
        elif args.command == "complete":
            prompt = args.prompt if args.prompt is not None else sys.stdin.read()
            _stream(client, args, prompt=prompt)
        elif args.command == "tokenize":
            ids = client.tokenize(args.text, add_special_tokens=False if args.no_special else None, timeout=args.timeout)
            print(json.dumps(ids))
        elif args.command == "health":
            status = client.health(args.service, timeout=args.timeout)
            print(status)
            return 0 if status == "SERVING" else 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        return _run(args)
    except grpc.RpcError as e:
        sys.stdout.flush()
        details = (e.details() or "").replace("\n", " ")
        print(f"lagserve-client: {e.code().name}: {details} (target {args.target})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

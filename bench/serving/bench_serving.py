#!/usr/bin/env python3
# Serving load generator for lagserve's /v1/completions: the figures of `vllm bench serve` (TTFT, TPOT, ITL, E2EL, throughput), same definitions.
# Run: python3 bench/serving/bench_serving.py --num-prompts 64 --input-len 512 --output-len 128 [--request-rate 4] [--max-concurrency 8]  (--self-test: check the math)
from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import resource
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime

try:
    import httpx
except ImportError:  # NOTE: openai >= 3 depends on httpx2, httpx's successor with the same API.
    try:
        import httpx2 as httpx
    except ImportError:
        httpx = None

REQUEST_TIMEOUT_S = 6 * 60 * 60  # vLLM's AIOHTTP_TIMEOUT


# ---------------------------------------------------------------- workload


def parse_lagkv(spec: str | None):
    """'off' -> False (full attention); 'sink=16,lag=128,ratio=0.25' -> that object; None -> not sent."""
    if spec is None:
        return None
    if spec.strip().lower() == "off":
        return False
    out = {}
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in ("sink", "lag", "ratio"):
            raise ValueError(f"--lagkv: expected 'off' or sink=..,lag=..,ratio=.., got {spec!r}")
        out[key] = float(value) if key == "ratio" else int(value)
    return out


def make_prompts(num_prompts: int, input_len: int, vocab_low: int, vocab_high: int, seed: int) -> list[list[int]]:
    """num_prompts lists of input_len token ids, uniform in [vocab_low, vocab_high)."""
    rng = random.Random(seed)
    return [[rng.randrange(vocab_low, vocab_high) for _ in range(input_len)] for _ in range(num_prompts)]


def arrival_gaps(n: int, request_rate: float, burstiness: float, seed: int) -> list[float]:
    """Seconds to wait after each request before the next, as vLLM: gamma(shape=burstiness, mean 1/rate);
    burstiness 1 is a Poisson process (exponential gaps); rate inf sends everything at once."""
    if math.isinf(request_rate):
        return [0.0] * n
    rng = random.Random(seed + 1)
    theta = 1.0 / (request_rate * burstiness)
    return [rng.gammavariate(burstiness, theta) for _ in range(n)]


# ---------------------------------------------------------------- one request


@dataclass
class RequestOutput:
    prompt_len: int
    success: bool = False
    ttft: float = 0.0  # s, request sent -> first chunk carrying tokens
    itl: list[float] = field(default_factory=list)  # s, gaps between consecutive token-carrying chunks
    latency: float = 0.0  # s, request sent -> last token-carrying chunk (vLLM's E2EL)
    start_time: float = 0.0  # perf_counter at send
    output_tokens: int = 0  # usage.completion_tokens, else the number of token chunks
    usage_prompt_tokens: int | None = None
    error: str = ""


class StreamTimer:
    """Times one SSE stream of OpenAI completion chunks. feed() takes each line with its arrival time."""

    def __init__(self, output: RequestOutput, start: float) -> None:
        self.out = output
        self.start = start
        self.last = start
        self.n_token_chunks = 0
        self.completion_tokens: int | None = None
        self.done = False

    def feed(self, line: str, now: float) -> None:
        line = line.strip()
        if not line.startswith("data:"):
            return  # blank separators, comments, event: lines
        payload = line[len("data:") :].strip()
        if payload == "[DONE]":
            self.done = True
            return
        chunk = json.loads(payload)
        if chunk.get("error"):
            raise RuntimeError(f"error in stream: {chunk['error']}")
        choices = chunk.get("choices") or []
        # NOTE: vLLM counts every chunk with choices. We skip an empty-text chunk that only carries a
        # finish_reason, since it holds no token; an empty-text chunk without one (text held back
        # mid-UTF-8) still counts.
        if choices and not (choices[0].get("text") == "" and choices[0].get("finish_reason")):
            if self.n_token_chunks == 0:
                self.out.ttft = now - self.start
            else:
                self.out.itl.append(now - self.last)
            self.last = now
            self.n_token_chunks += 1
        usage = chunk.get("usage")
        if usage:
            self.completion_tokens = usage.get("completion_tokens")
            self.out.usage_prompt_tokens = usage.get("prompt_tokens")

    def finish(self) -> RequestOutput:
        out = self.out
        out.latency = self.last - self.start
        out.output_tokens = self.completion_tokens if self.completion_tokens is not None else self.n_token_chunks
        out.success = self.n_token_chunks > 0
        if not out.success:
            out.error = "no chunk carried a token, so there is no TTFT"
        return out


async def send_request(client, url: str, payload: dict, headers: dict, prompt_len: int) -> RequestOutput:
    output = RequestOutput(prompt_len=prompt_len)
    start = time.perf_counter()
    output.start_time = start
    timer = StreamTimer(output, start)
    try:
        async with client.stream("POST", url, json=payload, headers=headers) as response:
            if response.status_code != 200:
                body = (await response.aread()).decode(errors="replace")
                output.error = f"HTTP {response.status_code}: {body[:300]}"
                return output
            async for line in response.aiter_lines():
                timer.feed(line, time.perf_counter())
        return timer.finish()
    except Exception as e:  # any failure is a failed request, as in vLLM; the run goes on
        output.success = False
        output.error = f"{type(e).__name__}: {e}"
        return output


# ---------------------------------------------------------------- metrics


def percentile(values: list[float], p: float) -> float:
    """numpy.percentile's default ('linear'): rank p/100 * (n-1), interpolated. 0 for no values, as vLLM."""
    if not values:
        return 0.0
    xs = sorted(values)
    rank = p / 100.0 * (len(xs) - 1)
    lo = math.floor(rank)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (rank - lo)


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def std(values: list[float]) -> float:
    """Population standard deviation (numpy.std, ddof=0)."""
    if not values:
        return 0.0
    m = mean(values)
    return math.sqrt(sum((x - m) ** 2 for x in values) / len(values))


def peak_rates(outputs: list[RequestOutput]) -> tuple[float, int]:
    """vLLM's peaks: the most token chunks landing in one 1-second bucket from the first send, and the
    most requests in flight during one bucket."""
    ok = [o for o in outputs if o.success]
    if not ok:
        return 0.0, 0
    t0 = min(o.start_time for o in ok)
    n_buckets = int(math.ceil(max(o.start_time + o.latency for o in ok) - t0)) + 1
    tokens = [0] * n_buckets
    concurrent = [0] * n_buckets
    for o in ok:
        t = o.start_time + o.ttft
        times = [t]
        for gap in o.itl:
            t += gap
            times.append(t)
        for t in times:
            bucket = int(t - t0)
            if 0 <= bucket < n_buckets:
                tokens[bucket] += 1
        for second in range(int(o.start_time - t0), int(o.start_time + o.latency - t0) + 1):
            concurrent[second] += 1
    return float(max(tokens)), max(concurrent)


def calculate_metrics(outputs: list[RequestOutput], duration_s: float, percentiles: list[float]) -> dict:
    """The figures of vllm/benchmarks/serve.py::calculate_metrics; latencies in ms."""
    ok = [o for o in outputs if o.success]
    total_input = sum(o.prompt_len for o in ok)
    total_output = sum(o.output_tokens for o in ok)
    series = {
        "ttft": [o.ttft for o in ok],
        # TPOT only for requests with more than one output token: (E2EL - TTFT) / (tokens - 1).
        "tpot": [(o.latency - o.ttft) / (o.output_tokens - 1) for o in ok if o.output_tokens > 1],
        "itl": [gap for o in ok for gap in o.itl],
        "e2el": [o.latency for o in ok],
    }
    peak_tokens_per_s, peak_concurrent = peak_rates(outputs)
    m = {
        "duration": duration_s,
        "completed": len(ok),
        "failed": len(outputs) - len(ok),
        "total_input_tokens": total_input,
        "total_output_tokens": total_output,
        "request_throughput": len(ok) / duration_s,
        "output_throughput": total_output / duration_s,
        "total_token_throughput": (total_input + total_output) / duration_s,
        "max_output_tokens_per_s": peak_tokens_per_s,
        "max_concurrent_requests": peak_concurrent,
    }
    for name, xs in series.items():
        ms = [x * 1000.0 for x in xs]
        m[f"mean_{name}_ms"] = mean(ms)
        m[f"median_{name}_ms"] = percentile(ms, 50)
        m[f"std_{name}_ms"] = std(ms)
        for p in percentiles:
            m[f"p{p:g}_{name}_ms"] = percentile(ms, p)
    return m


METRIC_HEADERS = {
    "ttft": ("TTFT", "Time to First Token"),
    "tpot": ("TPOT", "Time per Output Token (excl. 1st token)"),
    "itl": ("ITL", "Inter-token Latency"),
    "e2el": ("E2EL", "End-to-end Latency"),
}


def format_summary(m: dict, max_concurrency: int | None, request_rate: float, percentiles: list[float], metrics: list[str]) -> str:
    lines = ["{s:{c}^{n}}".format(s=" Serving Benchmark Result ", n=50, c="=")]
    row = lambda label, value, fmt="": lines.append("{:<40} {:<10{}}".format(label, value, fmt))  # noqa: E731
    row("Successful requests:", m["completed"])
    row("Failed requests:", m["failed"])
    if max_concurrency is not None:
        row("Maximum request concurrency:", max_concurrency)
    if not math.isinf(request_rate):
        row("Request rate configured (RPS):", request_rate, ".2f")
    row("Benchmark duration (s):", m["duration"], ".2f")
    row("Total input tokens:", m["total_input_tokens"])
    row("Total generated tokens:", m["total_output_tokens"])
    row("Request throughput (req/s):", m["request_throughput"], ".2f")
    row("Output token throughput (tok/s):", m["output_throughput"], ".2f")
    row("Peak output token throughput (tok/s):", m["max_output_tokens_per_s"], ".2f")
    row("Peak concurrent requests:", m["max_concurrent_requests"], ".2f")
    row("Total Token throughput (tok/s):", m["total_token_throughput"], ".2f")
    for key in metrics:
        name, header = METRIC_HEADERS[key]
        lines.append("{s:{c}^{n}}".format(s=header, n=50, c="-"))
        row(f"Mean {name} (ms):", m[f"mean_{key}_ms"], ".2f")
        row(f"Median {name} (ms):", m[f"median_{key}_ms"], ".2f")
        row(f"Std {name} (ms):", m[f"std_{key}_ms"], ".2f")
        for p in percentiles:
            row(f"P{p:g} {name} (ms):", m[f"p{p:g}_{key}_ms"], ".2f")
    lines.append("=" * 50)
    return "\n".join(lines)


# ---------------------------------------------------------------- the run


async def fetch_model(client, base_url: str, headers: dict) -> str:
    response = await client.get(f"{base_url}/v1/models", headers=headers)
    response.raise_for_status()
    return response.json()["data"][0]["id"]


async def run_requests(client, url, headers, payloads, prompt_lens, gaps, max_concurrency, progress) -> list[RequestOutput]:
    semaphore = asyncio.Semaphore(max_concurrency) if max_concurrency else None
    n_done = 0

    async def one(payload, prompt_len):
        nonlocal n_done
        if semaphore is None:
            out = await send_request(client, url, payload, headers, prompt_len)
        else:
            async with semaphore:
                out = await send_request(client, url, payload, headers, prompt_len)
        n_done += 1
        if progress:
            print(f"\r{n_done}/{len(payloads)} requests done", end="", file=sys.stderr, flush=True)
        return out

    tasks = []
    for payload, prompt_len, gap in zip(payloads, prompt_lens, gaps):
        tasks.append(asyncio.create_task(one(payload, prompt_len)))
        if gap > 0:
            await asyncio.sleep(gap)
    outputs = await asyncio.gather(*tasks)
    if progress:
        print(file=sys.stderr)
    return outputs


def build_payloads(args, model: str, prompts: list[list[int]]) -> list[dict]:
    lagkv = parse_lagkv(args.lagkv)
    payloads = []
    for ids in prompts:
        payload = {
            "model": model,
            "prompt": ids,
            "max_tokens": args.output_len,
            "temperature": 0,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if lagkv is not None:
            payload["lagkv"] = lagkv
        payloads.append(payload)
    return payloads


async def benchmark(args) -> dict:
    base_url = args.base_url.rstrip("/")
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    # Unlimited connections unless capped, as vLLM's aiohttp connector: a client-side pool queue
    # would be counted as server latency.
    limits = httpx.Limits(max_connections=args.max_concurrency, max_keepalive_connections=args.max_concurrency)
    async with httpx.AsyncClient(timeout=httpx.Timeout(args.request_timeout), limits=limits) as client:
        model = args.model or await fetch_model(client, base_url, headers)
        url = f"{base_url}/v1/completions"
        prompts = make_prompts(args.num_prompts + args.warmup, args.input_len, args.vocab_low, args.vocab_high, args.seed)
        payloads = build_payloads(args, model, prompts)
        warmup_payloads, payloads = payloads[: args.warmup], payloads[args.warmup :]

        if warmup_payloads:
            print(f"Warming up with {len(warmup_payloads)} request(s)...")
            outs = await run_requests(client, url, headers, warmup_payloads, [args.input_len] * args.warmup, [0.0] * args.warmup, args.max_concurrency, False)
            if not any(o.success for o in outs):
                raise RuntimeError(f"every warm-up request failed; first error: {outs[0].error}")

        print(f"Model: {model}  endpoint: {url}")
        print(f"Traffic request rate: {args.request_rate}")
        print(f"Burstiness factor: {args.burstiness}" + (" (Poisson process)" if args.burstiness == 1.0 else ""))
        print(f"Maximum request concurrency: {args.max_concurrency}")
        gaps = arrival_gaps(len(payloads), args.request_rate, args.burstiness, args.seed)
        start = time.perf_counter()
        outputs = await run_requests(client, url, headers, payloads, [args.input_len] * len(payloads), gaps, args.max_concurrency, sys.stderr.isatty())
        duration = time.perf_counter() - start

    errors = [o.error for o in outputs if not o.success]
    for e in errors[:5]:
        print(f"failed request: {e}", file=sys.stderr)
    mismatched = {o.usage_prompt_tokens for o in outputs if o.usage_prompt_tokens not in (None, o.prompt_len)}
    if mismatched:
        print(f"note: the server counted {sorted(mismatched)} prompt tokens for {args.input_len}-token prompts", file=sys.stderr)

    metrics = calculate_metrics(outputs, duration, args.metric_percentiles)
    print(format_summary(metrics, args.max_concurrency, args.request_rate, args.metric_percentiles, args.percentile_metrics))
    return {
        "date": datetime.now().strftime("%Y%m%d-%H%M%S"),
        "backend": "lagserve-openai-completions",
        "base_url": base_url,
        "model_id": model,
        "num_prompts": args.num_prompts,
        "input_len": args.input_len,
        "output_len": args.output_len,
        "request_rate": args.request_rate if not math.isinf(args.request_rate) else "inf",
        "burstiness": args.burstiness,
        "max_concurrency": args.max_concurrency,
        "lagkv": parse_lagkv(args.lagkv),
        "seed": args.seed,
        "warmup": args.warmup,
        **metrics,
        "output_lens": [o.output_tokens for o in outputs],
        "ttfts": [o.ttft for o in outputs],
        "itls": [o.itl for o in outputs],
        "e2els": [o.latency for o in outputs],
        "errors": errors,
    }


# ---------------------------------------------------------------- self-test


def self_test() -> None:
    close = lambda a, b: abs(a - b) < 1e-9  # noqa: E731
    # numpy.percentile([1, 2, 3, 4, 10], p) for p = 0, 50, 90, 99, 100: 1, 3, 7.6, 9.76, 10.
    xs = [10.0, 1.0, 3.0, 2.0, 4.0]
    for p, want in [(0, 1.0), (50, 3.0), (90, 7.6), (99, 9.76), (100, 10.0)]:
        assert close(percentile(xs, p), want), (p, percentile(xs, p), want)
    assert percentile([], 99) == 0.0 and percentile([5.0], 99) == 5.0
    assert close(mean(xs), 4.0) and close(std(xs), math.sqrt(10.0))  # numpy.std(xs) = sqrt(10)

    # The stream timer on a fake stream: chunks at t = 0.5, 0.6, 0.8, 1.1 s, a finish-only chunk and a
    # usage chunk that must not count as tokens, then [DONE].
    out = RequestOutput(prompt_len=4)
    timer = StreamTimer(out, start=0.0)
    chunk = lambda text, finish=None, usage=None, choices=True: "data: " + json.dumps(  # noqa: E731
        {"id": "c", "object": "text_completion", "created": 0, "model": "m",
         "choices": [{"index": 0, "text": text, "finish_reason": finish}] if choices else [], "usage": usage})
    for line, t in [(chunk("a"), 0.5), ("", 0.5), (chunk("b"), 0.6), (chunk(""), 0.8), (chunk("d", "length"), 1.1),
                    (chunk("", "length"), 1.2), (chunk("", usage={"prompt_tokens": 4, "completion_tokens": 5}, choices=False), 1.3),
                    ("data: [DONE]", 1.4)]:
        timer.feed(line, t)
    out = timer.finish()
    assert out.success and timer.done and out.output_tokens == 5 and out.usage_prompt_tokens == 4
    assert close(out.ttft, 0.5) and close(out.latency, 1.1), (out.ttft, out.latency)
    assert all(close(a, b) for a, b in zip(out.itl, [0.1, 0.2, 0.3])) and len(out.itl) == 3
    no_usage = StreamTimer(RequestOutput(prompt_len=4), 0.0)
    no_usage.feed(chunk("x"), 0.2)
    no_usage.feed(chunk("y"), 0.3)
    assert no_usage.finish().output_tokens == 2  # falls back to the chunk count

    # Metrics on three requests: two good, one failed; B has one output token so no TPOT.
    a = RequestOutput(prompt_len=4, success=True, ttft=0.5, itl=[0.1, 0.2, 0.3], latency=1.1, start_time=0.0, output_tokens=5)
    b = RequestOutput(prompt_len=4, success=True, ttft=0.2, itl=[], latency=0.2, start_time=1.0, output_tokens=1)
    c = RequestOutput(prompt_len=4, success=False, start_time=0.5, error="HTTP 500")
    m = calculate_metrics([a, b, c], duration_s=2.0, percentiles=[99])
    assert (m["completed"], m["failed"], m["total_input_tokens"], m["total_output_tokens"]) == (2, 1, 8, 6)
    assert close(m["request_throughput"], 1.0) and close(m["output_throughput"], 3.0) and close(m["total_token_throughput"], 7.0)
    assert close(m["mean_ttft_ms"], 350.0) and close(m["median_ttft_ms"], 350.0) and close(m["std_ttft_ms"], 150.0)
    assert close(m["p99_ttft_ms"], 200.0 + 300.0 * 0.99)
    assert close(m["mean_tpot_ms"], (1.1 - 0.5) / 4 * 1000) and close(m["p99_tpot_ms"], 150.0)  # one TPOT sample
    assert close(m["mean_itl_ms"], 200.0) and close(m["median_itl_ms"], 200.0) and close(m["p99_itl_ms"], 298.0)
    assert close(m["mean_e2el_ms"], 650.0) and close(m["p99_e2el_ms"], 200.0 + 900.0 * 0.99)
    # Token times: A at 0.5, 0.6, 0.8, 1.1 and B at 1.2 -> buckets [3, 2, 0]; A spans seconds 0-1, B 1.
    assert m["max_output_tokens_per_s"] == 3.0 and m["max_concurrent_requests"] == 2, (m["max_output_tokens_per_s"], m["max_concurrent_requests"])
    assert calculate_metrics([c], 1.0, [99])["mean_ttft_ms"] == 0.0

    # Workload: deterministic, in range, right shape; arrival gaps average 1/rate.
    p1, p2 = make_prompts(3, 7, 100, 49000, 0), make_prompts(3, 7, 100, 49000, 0)
    assert p1 == p2 and len(p1) == 3 and all(len(p) == 7 and all(100 <= t < 49000 for t in p) for p in p1)
    gaps = arrival_gaps(20000, 4.0, 1.0, 0)
    assert abs(mean(gaps) - 0.25) < 0.01 and arrival_gaps(3, math.inf, 1.0, 0) == [0.0] * 3
    assert parse_lagkv("off") is False and parse_lagkv(None) is None
    assert parse_lagkv("sink=16,lag=128,ratio=0.25") == {"sink": 16, "lag": 128, "ratio": 0.25}
    print(format_summary(m, 8, 4.0, [99], list(METRIC_HEADERS)))
    print("self-test: 1 passed, 0 failed")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Load generator for lagserve's OpenAI-compatible /v1/completions (vllm bench serve's figures).")
    p.add_argument("--base-url", default="http://127.0.0.1:8000")
    p.add_argument("--model", default=None, help="default: the first of GET /v1/models")
    p.add_argument("--api-key", default=None, help="sent as 'Authorization: Bearer KEY'")
    p.add_argument("--num-prompts", type=int, default=100)
    p.add_argument("--input-len", type=int, default=512, help="prompt tokens per request")
    p.add_argument("--output-len", type=int, default=128, help="max_tokens per request (ignore_eos, so exact)")
    p.add_argument("--request-rate", type=float, default=math.inf, help="requests/s, Poisson arrivals; inf = all at once (default)")
    p.add_argument("--burstiness", type=float, default=1.0, help="gamma shape of the arrival gaps; 1 = Poisson")
    p.add_argument("--max-concurrency", type=int, default=None, help="most requests in flight (default: unlimited)")
    p.add_argument("--lagkv", default=None, help="'off' or sink=16,lag=128,ratio=0.25 (default: not sent, the server's policy)")
    p.add_argument("--vocab-low", type=int, default=100, help="prompt token ids are uniform in [low, high)")
    p.add_argument("--vocab-high", type=int, default=49000, help="default keeps clear of special tokens for SmolLM2 (vocabulary 49152)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warmup", type=int, default=0, help="requests sent first and not counted")
    p.add_argument("--metric-percentiles", default="99", help="comma-separated percentiles to report")
    p.add_argument("--percentile-metrics", default="ttft,tpot,itl,e2el", help="which of ttft,tpot,itl,e2el to print")
    p.add_argument("--request-timeout", type=float, default=REQUEST_TIMEOUT_S, help="seconds per request")
    p.add_argument("--result-json", default=None, metavar="PATH", help="write the figures, per-request data and the config here")
    p.add_argument("--self-test", action="store_true", help="check the metric functions on synthetic data and exit")
    args = p.parse_args(argv)
    args.metric_percentiles = [float(x) for x in args.metric_percentiles.split(",") if x.strip()]
    args.percentile_metrics = [x.strip() for x in args.percentile_metrics.split(",") if x.strip()]
    if unknown := set(args.percentile_metrics) - set(METRIC_HEADERS):
        p.error(f"--percentile-metrics: unknown {sorted(unknown)}")
    try:
        parse_lagkv(args.lagkv)
    except ValueError as e:
        p.error(str(e))
    if not 0 <= args.vocab_low < args.vocab_high:
        p.error("--vocab-low must be < --vocab-high")
    if args.request_rate <= 0 or args.burstiness <= 0:
        p.error("--request-rate and --burstiness must be > 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.self_test:
        self_test()
        return 0
    if httpx is None:
        print("bench_serving.py needs httpx: pip install httpx", file=sys.stderr)
        return 1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # one socket per in-flight request
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass
    try:
        result = asyncio.run(benchmark(args))
    except (httpx.HTTPError, RuntimeError, KeyError, IndexError) as e:
        print(f"bench_serving.py: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    if args.result_json:
        with open(args.result_json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.result_json}")
    return 0 if result["failed"] == 0 else 2


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Bounded soak of `lagserve serve` (issue 7, item 4).

Starts the server on loopback, warms it up, then keeps it saturated for
--minutes with a mix of: streamed and blocking completions and chat calls,
clients that disconnect mid-stream, malformed and invalid requests, and
requests with different `lagkv` settings. Meanwhile it samples the server's
RSS. Then it checks:

- the server is alive and every valid request completed (finish_reason
  length or stop; nothing else);
- a fixed sample of greedy requests, sent again and again during the soak,
  always equals the same request run alone before it;
- at idle every KV block is free (lagserve:kv_cache_usage_perc == 0) and
  nothing is running or waiting;
- RSS after the soak is within 10% of RSS after the warm-up.

Writes soak.json (counts, errors, RSS samples) and soak_rss.svg to --out.

  build/venv/bin/python bench/soak/soak.py --minutes 10 --out docs/soak
"""
import argparse
import concurrent.futures
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


class Client:
    def __init__(self, port):
        self.port = port

    def call(self, path, body=None, raw=None, method="POST", timeout=300):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, text = r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode()
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def stream(self, path, body, stop_after=None, timeout=300):
        """Streams a call; returns (status, finish_reasons, text) or None when it
        disconnected on purpose after `stop_after` events."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            resp = conn.getresponse()
            if resp.status != 200:
                return resp.status, [], resp.read().decode()
            finishes, text, n = [], "", 0
            for line in resp:
                line = line.decode().strip()
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if "error" in event:
                    return 500, [], json.dumps(event)
                n += 1
                for ch in event.get("choices", []):
                    text += ch.get("text") or (ch.get("delta") or {}).get("content") or ""
                    if ch.get("finish_reason"):
                        finishes.append(ch["finish_reason"])
                if stop_after is not None and n >= stop_after:
                    return None
            return 200, finishes, text
        finally:
            conn.close()

    def metric(self, name):
        _, text = self.call("/metrics", method="GET")
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total += float(line.rsplit(" ", 1)[1])
        return total


PROMPTS = ["Write a haiku about the sea.", "List five prime numbers.", "What is the capital of Italy?",
           "Explain what a hash table is.", "Tell me a short story about a robot.",
           "Translate 'good morning' into French.", "Give three tips for sleeping well."]
POLICIES = [None, False, {"sink": 4, "lag": 16, "ratio": 0.25},
            {"sink": 16, "lag": 32, "keep": 4}]
MALFORMED = [b"{", b"not json", b'{"prompt": 5, "max_tokens": "x"}', b'{"max_tokens": -1, "prompt": "a"}',
             b'{"prompt": "a", "temperature": 1e400}', b'{"messages": [{"role": "nobody"}]}',
             b'{"prompt": "a", "lagkv": {"lag": 0}}', b"[" * 100000]


def sample_requests():
    """The greedy requests whose outputs must not change under load."""
    out = []
    for i, p in enumerate(PROMPTS[:4]):
        body = {"prompt": p, "max_tokens": 24, "temperature": 0}
        if i % 2:
            body["lagkv"] = POLICIES[2]
        out.append(body)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=str(REPO / "build" / "server" / "lagserve"))
    ap.add_argument("--model", default="default")
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--clients", type=int, default=12)
    ap.add_argument("--out", default=str(REPO / "docs" / "soak"))
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    port, grpc_port = free_port(), free_port()
    log = open(out_dir / "server.log", "w")
    proc = subprocess.Popen([a.binary, "serve", "--model", a.model, "--port", str(port),
                             "--grpc-port", str(grpc_port), "--max-seqs", "16"],
                            stdout=log, stderr=subprocess.STDOUT)
    cl = Client(port)
    for _ in range(1200):
        try:
            if cl.call("/health", method="GET", timeout=2)[0] == 200:
                break
        except OSError:
            pass
        time.sleep(0.1)
    else:
        sys.exit("the server did not become ready")

    samples = sample_requests()
    reference = []
    for body in samples:
        status, got = cl.call("/v1/completions", body)
        assert status == 200, got
        reference.append(got["choices"][0]["text"])
    # Warm-up: a minute's worth of the same mix, shorter.
    counts = {k: 0 for k in ["blocking", "stream", "chat", "disconnect", "cancelled_blocking",
                             "malformed", "sample", "lagkv"]}
    errors = []
    lock = threading.Lock()

    def record(kind, problem=None):
        with lock:
            counts[kind] += 1
            if problem:
                errors.append(f"{kind}: {problem}")

    def one(r):
        kind = r.choice(["blocking", "stream", "chat", "disconnect", "cancelled_blocking",
                         "malformed", "sample"])
        prompt = r.choice(PROMPTS)
        policy = r.choice(POLICIES)
        body = {"prompt": prompt, "max_tokens": r.randint(8, 96), "temperature": r.choice([0, 0.8]),
                "seed": r.randint(0, 1000)}
        if policy is not None and kind not in ("malformed", "sample"):
            body["lagkv"] = policy
            record("lagkv")
        if kind == "blocking":
            status, got = cl.call("/v1/completions", body)
            if status != 200 or got["choices"][0]["finish_reason"] not in ("length", "stop"):
                return record(kind, f"{status} {str(got)[:200]}")
        elif kind == "stream":
            status, fin, text = cl.stream("/v1/completions", dict(body, stream=True))
            if status != 200 or fin[-1:] not in (["length"], ["stop"]):
                return record(kind, f"{status} {fin} {text[:200]}")
        elif kind == "chat":
            chat = {"messages": [{"role": "user", "content": prompt}], "max_tokens": body["max_tokens"],
                    "stream": r.random() < 0.5}
            if "lagkv" in body:
                chat["lagkv"] = body["lagkv"]
            if chat["stream"]:
                status, fin, text = cl.stream("/v1/chat/completions", chat)
                if status != 200 or fin[-1:] not in (["length"], ["stop"]):
                    return record(kind, f"{status} {fin} {text[:200]}")
            else:
                status, got = cl.call("/v1/chat/completions", chat)
                if status != 200 or got["choices"][0]["finish_reason"] not in ("length", "stop"):
                    return record(kind, f"{status} {str(got)[:200]}")
        elif kind == "disconnect":
            cl.stream("/v1/completions", dict(body, stream=True, max_tokens=200, ignore_eos=True),
                      stop_after=r.randint(1, 10))
        elif kind == "cancelled_blocking":
            # A blocking call whose client gives up before the answer.
            try:
                cl.call("/v1/completions", dict(body, max_tokens=400, ignore_eos=True), timeout=r.uniform(0.5, 3))
            except (OSError, TimeoutError):
                pass
        elif kind == "malformed":
            status, got = cl.call(r.choice(["/v1/completions", "/v1/chat/completions"]), raw=r.choice(MALFORMED))
            if status not in (400, 413):
                return record(kind, f"{status} {str(got)[:200]}")
        elif kind == "sample":
            i = r.randrange(len(samples))
            status, got = cl.call("/v1/completions", samples[i])
            if status != 200 or got["choices"][0]["text"] != reference[i]:
                return record(kind, f"sample {i} differs: {str(got)[:300]}")
        record(kind)

    def run_for(seconds, seed):
        deadline = time.time() + seconds

        def worker(k):
            r = random.Random(seed * 1000 + k)
            while time.time() < deadline:
                try:
                    one(r)
                except Exception as e:  # a client-side surprise is a finding too
                    with lock:
                        errors.append(f"client exception: {e!r}")

        with concurrent.futures.ThreadPoolExecutor(max_workers=a.clients) as pool:
            list(pool.map(worker, range(a.clients)))

    def wait_idle():
        for _ in range(600):
            if cl.metric("lagserve:num_requests_running") == 0 and cl.metric("lagserve:num_requests_waiting") == 0:
                return True
            time.sleep(0.1)
        return False

    rss = []
    t_start = time.time()
    stop_sampling = threading.Event()

    def sampler():
        while not stop_sampling.is_set():
            rss.append((round(time.time() - t_start, 1), round(rss_mib(proc.pid), 1)))
            stop_sampling.wait(5)

    threading.Thread(target=sampler, daemon=True).start()
    run_for(60, a.seed)
    wait_idle()
    rss_warm = rss_mib(proc.pid)
    t_warm = time.time() - t_start
    for k in counts:
        counts[k] = 0
    errors.clear()
    run_for(a.minutes * 60, a.seed + 1)
    idle = wait_idle()
    time.sleep(1)
    rss_end = rss_mib(proc.pid)
    stop_sampling.set()
    kv_usage = cl.metric("lagserve:kv_cache_usage_perc")
    alive = proc.poll() is None
    final = [cl.call("/v1/completions", b)[1]["choices"][0]["text"] for b in samples] if alive else []
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=120)
    result = {
        "minutes": a.minutes, "clients": a.clients, "counts": counts, "errors": errors[:50],
        "n_errors": len(errors), "alive_at_end": alive, "exit_code": code, "idle": idle,
        "kv_cache_usage_at_idle": kv_usage, "samples_equal_after": final == reference,
        "rss_mib_after_warmup": round(rss_warm, 1), "rss_mib_after_soak": round(rss_end, 1),
        "rss_growth": round(rss_end / rss_warm - 1, 4), "warmup_end_s": round(t_warm, 1), "rss": rss,
    }
    ok = (alive and code == 0 and idle and kv_usage == 0 and not errors and final == reference
          and rss_end <= 1.10 * rss_warm)
    result["pass"] = ok
    (out_dir / "soak.json").write_text(json.dumps(result, indent=1))
    write_svg(out_dir / "soak_rss.svg", rss, t_warm)
    print(json.dumps({k: v for k, v in result.items() if k != "rss"}, indent=1))
    sys.exit(0 if ok else 1)


def write_svg(path, rss, t_warm):
    """RSS over time as a small standalone SVG (no plotting library needed)."""
    if not rss:
        return
    w, h, pad = 640, 240, 40
    t_max = max(t for t, _ in rss) or 1
    r_max = max(r for _, r in rss) * 1.1 or 1
    pts = " ".join(f"{pad + t / t_max * (w - 2 * pad):.1f},{h - pad - r / r_max * (h - 2 * pad):.1f}" for t, r in rss)
    xw = pad + t_warm / t_max * (w - 2 * pad)
    path.write_text(f'''<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">
<rect width="{w}" height="{h}" fill="white"/>
<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="black"/>
<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="black"/>
<line x1="{xw:.1f}" y1="{pad}" x2="{xw:.1f}" y2="{h - pad}" stroke="gray" stroke-dasharray="4"/>
<text x="{xw + 4:.1f}" y="{pad + 10}" fill="gray">end of warm-up</text>
<polyline fill="none" stroke="steelblue" stroke-width="2" points="{pts}"/>
<text x="{w / 2}" y="{h - 8}" text-anchor="middle">seconds</text>
<text x="8" y="{pad - 10}">RSS (MiB), max {r_max / 1.1:.0f}</text>
<text x="{w - pad}" y="{h - pad + 14}" text-anchor="end">{t_max:.0f}</text>
<text x="{pad - 4}" y="{h - pad}" text-anchor="end">0</text>
</svg>
''')


if __name__ == "__main__":
    main()

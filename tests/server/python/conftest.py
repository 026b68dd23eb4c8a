"""Fixtures for the server integration tests: start the real lagserve binary
on free loopback ports and wait until /health says ready.

Run: build/venv/bin/python -m pytest tests/server/python   (ctest runs each file)
Environment: LAGSERVE_BINARY (default build/server/lagserve), LAGSERVE_TEST_MODEL
(default "default", the cached SmolLM2-135M-Instruct GGUF), LAGSERVE_TEST_DEVICE
(cpu or cuda, passed as --device; unset: the server's default, auto).
A binary built without gRPC (`lagserve --version` says so) serves with
--grpc-port -1, and the gRPC tests skip.
"""
import functools
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
BINARY = os.environ.get("LAGSERVE_BINARY", str(REPO / "build" / "server" / "lagserve"))
MODEL = os.environ.get("LAGSERVE_TEST_MODEL", "default")
DEVICE = os.environ.get("LAGSERVE_TEST_DEVICE")
# On a GPU the default model decodes a hundred times faster than on the CPU:
# tests that need a request still running a while later ask for more tokens.
FAST_DEVICE = DEVICE not in (None, "cpu")


@functools.cache
def built_features():
    """What `serve` has in the binary under test: {"http", "grpc"}, from
    `lagserve --version`, which prints "lagserve (features: http grpc)"."""
    out = subprocess.run([BINARY, "--version"], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    m = re.search(r"features: ([^)]*)\)", out)
    assert m, f"{BINARY} --version printed {out!r}"
    return frozenset(m.group(1).split())


def has_grpc():
    return "grpc" in built_features()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One running `lagserve serve`; stop() sends SIGTERM and returns the exit code."""

    def __init__(self, *extra_args, env=None, wait=True):
        self.port = free_port()
        self.grpc_port = free_port() if has_grpc() else -1  # -1: no gRPC listener
        self.http_url = f"http://127.0.0.1:{self.port}"
        self.grpc_target = f"127.0.0.1:{self.grpc_port}" if self.grpc_port >= 0 else None
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"lagserve-test-{self.port}.log"
        args = [BINARY, "serve", "--model", MODEL, "--port", str(self.port),
                "--grpc-port", str(self.grpc_port), "--threads", "2",
                *(["--device", DEVICE] if DEVICE else []), *extra_args]
        env = {**os.environ, **(env or {})}
        if DEVICE == "cuda":
            # NOTE: otherwise the KV cache takes what --gpu-memory-utilization leaves
            # of the whole GPU, and a second server (a test's, beside the session's)
            # finds no room. --kv-cache-mb among extra_args still wins.
            env.setdefault("LAGSERVE_KV_CACHE_MB", "1024")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"lagserve exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                with urllib.request.urlopen(self.http_url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError("lagserve did not become ready:\n" + self.log_text())

    def log_text(self):
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.log.close()

    # --- small HTTP helpers (the SDK tests use the openai package instead) ---
    def request(self, method, path, body=None, headers=None, raw=None, timeout=120):
        """Returns (status, parsed JSON or text)."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.http_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, text = r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode()
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def metrics(self):
        """Prometheus text -> {'name{labels}': value} (labels as written)."""
        _, text = self.request("GET", "/metrics")
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, value = line.rsplit(" ", 1)
                values[key] = float(value)
        return values

    def metric(self, name, **labels):
        """Sum of the series of `name` whose labels include `labels`."""
        total = 0.0
        for key, value in self.metrics().items():
            m = re.fullmatch(r"([^{]+)(?:\{(.*)\})?", key)
            if m.group(1) != name:
                continue
            have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            if all(have.get(k) == v for k, v in labels.items()):
                total += value
        return total

    def wait_metric(self, name, predicate, timeout=30, **labels):
        deadline = time.time() + timeout
        while True:
            value = self.metric(name, **labels)
            if predicate(value) or time.time() > deadline:
                return value
            time.sleep(0.05)


@pytest.fixture(scope="session")
def server():
    s = Server()
    yield s
    code = s.stop()
    assert code == 0, s.log_text()


@pytest.fixture
def short_lived():
    """Starts servers with extra flags (and no drain wait); stops them after the test."""
    servers = []

    def start(*args):
        s = Server(*args, "--drain-timeout", "0")
        servers.append(s)
        return s

    yield start
    for s in servers:
        try:
            s.stop(timeout=5)
        except subprocess.TimeoutExpired:  # a shutdown bug must not hang the suite
            s.proc.kill()
            s.proc.wait()

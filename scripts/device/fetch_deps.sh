#!/usr/bin/env bash
# Run HERE (the Debian machine) before a device call: downloads what the GPU
# machine lacks (../shared/GPU.md) into two folders that .git/info/exclude
# ignores and device calls carry:
# - .device-deps/: Debian packages, unpacked there by the build scripts:
#   Abseil and PCRE2 headers (every build); cpp-httplib (the HTTP-only `serve`
#   of build_cuda.sh), a shared library whose header includes OpenSSL's,
#   zlib's and brotli's headers (its .pc asks for them), and the brotli runtime;
# - .device-wheels/: the Python packages of the server's HTTP tests
#   (serve_run.sh): the openai SDK and pytest at tests/requirements.txt's
#   versions with everything they need, for CPython 3.12 on x86-64 Linux (the
#   GPU machine's python3). Apart, so that .device-deps still fits one call
#   beside half of the default model (cuda_run.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
# Worktrees share the main checkout's info/exclude.
EXCLUDE="$(git rev-parse --git-common-dir)/info/exclude"
mkdir -p "$(dirname "$EXCLUDE")"
for dir in /.device-deps/ /.device-wheels/; do
  grep -qx "$dir" "$EXCLUDE" 2>/dev/null || echo "$dir" >> "$EXCLUDE"
done
rm -rf .device-deps/root  # unpacked there by the build scripts; must not travel from here
mkdir -p .device-deps
(cd .device-deps && rm -f ./*.deb && apt-get download \
  libabsl-dev libabsl20220623 libpcre2-dev libpcre2-8-0 \
  libcpp-httplib-dev libcpp-httplib0.11 libssl-dev zlib1g-dev libbrotli-dev libbrotli1)
for deb in .device-deps/*%3a*.deb; do  # an epoch's ':' comes as %3a; plain names travel best
  if [ -e "$deb" ]; then mv "$deb" "${deb//%3a/-}"; fi
done

# One version of each package, or pip install stops there.
rm -rf .device-wheels
pins=$(grep -E '^(openai|pytest)==' tests/requirements.txt)
python3 -m pip download -q --disable-pip-version-check --only-binary=:all: \
  --python-version 3.12 --implementation cp --abi cp312 \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .device-wheels $pins

ls .device-deps .device-wheels
du -sh .device-deps .device-wheels

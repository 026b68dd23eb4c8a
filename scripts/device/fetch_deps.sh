#!/usr/bin/env bash
# Run HERE (the Debian machine) before a device call: downloads the Debian
# packages that the GPU machine lacks (Abseil, PCRE2 headers; see
# ../shared/GPU.md) into .device-deps/, which .git/info/exclude must ignore and
# the device call must carry.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.device-deps/' .git/info/exclude || echo '/.device-deps/' >> .git/info/exclude
mkdir -p .device-deps
cd .device-deps
apt-get download libabsl-dev libabsl20220623 libpcre2-dev libpcre2-8-0
ls -la

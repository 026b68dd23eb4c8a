# shellcheck shell=bash
# Sourced ON THE GPU MACHINE, from the repository root, with .device-prebuilt
# carried (scripts/device/prebuild.sh made it here): unpacks the binaries to
# /tmp/lagserve-prebuilt, links the source path they were built from to this
# checkout (their tests read tests/golden there), and exports B (for
# cuda_run.sh and profile_step.sh's BENCH) and LD_LIBRARY_PATH.
PB=/tmp/lagserve-prebuilt
rm -rf "$PB" && mkdir -p "$PB" && tar -C "$PB" -xJf .device-prebuilt/pb.tar.xz || return 1
src=$(cat "$PB/SOURCE_DIR")
if [ "$src" != "$PWD" ] && [ ! -e "$src" ]; then
  mkdir -p "$(dirname "$src")" && ln -s "$PWD" "$src"
fi
nccl=$(find /usr /opt -name 'libnccl.so.2' -print -quit 2>/dev/null)
export LD_LIBRARY_PATH="$PB/lib:/usr/local/cuda/lib64${nccl:+:$(dirname "$nccl")}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export B="$PB"
echo "prebuilt binaries of commit $(cat "$PB/COMMIT"), from $src"
for bin in "$PB"/tests/* "$PB"/bench/*; do
  missing=$(ldd "$bin" | grep "not found")
  [ -z "$missing" ] || echo "prebuilt_env.sh: $bin lacks: $missing" >&2
done

#!/usr/bin/env bash
# Puts Triton's perf_analyzer 2.51.0 (Triton 24.10) and the two libraries it
# loads into DEST (default ~/.cache/keras-robust/perf_analyzer), from package
# registries only: the binary from the tritonclient 2.51.0 wheel (never
# installed), libcudart.so.12 from the nvidia-cuda-runtime-cu12 wheel (linked,
# unused on CPU) and libb64.so.0d from Debian's libb64-0d. Needs glibc >= 2.34;
# later perf_analyzer builds need glibc 2.38. Run it as
#     LD_LIBRARY_PATH=DEST DEST/perf_analyzer --help
# (benchmarks/perf_analyzer.py does, and calls this script when DEST is empty).
set -euo pipefail
dest=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/keras-robust/perf_analyzer}
mkdir -p "$dest"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary :all: --platform manylinux1_x86_64 \
    tritonclient==2.51.0 -d "$tmp"
unzip -q -j -o "$tmp"/tritonclient-2.51.0-*.whl 'tritonclient-2.51.0.data/data/bin/perf_analyzer' -d "$dest"
python3 -m pip download --quiet --no-deps --only-binary :all: nvidia-cuda-runtime-cu12 -d "$tmp"
unzip -q -j -o "$tmp"/nvidia_cuda_runtime_cu12-*.whl 'nvidia/cuda_runtime/lib/libcudart.so.12' -d "$dest"
if ! (cd "$tmp" && apt-get download libb64-0d >/dev/null 2>&1); then
    apt-get update -q >/dev/null && (cd "$tmp" && apt-get download libb64-0d >/dev/null)
fi
dpkg -x "$tmp"/libb64-0d_*.deb "$tmp/b64"
cp "$tmp"/b64/usr/lib/x86_64-linux-gnu/libb64.so.0d "$dest"/
chmod +x "$dest/perf_analyzer"
LD_LIBRARY_PATH="$dest" "$dest/perf_analyzer" --version >/dev/null  # it runs here
echo "$dest/perf_analyzer"

#!/usr/bin/env bash
# Compile every csrc/ translation unit without linking, so a broken kernel cannot land on machines
# that have nvcc but no GPU (and a CPU-only torch, whose headers are enough to compile the binding).
#   .cu files: nvcc for sm_80 (Ampere mma.sp) and sm_90a (Hopper wgmma), as setup.py builds them.
#   binding.cpp: g++ -fsyntax-only (C++20, as torch>=2.10 headers expect) against torch and Python headers.
# Usage: bash csrc/check_compile.sh [python]   (python defaults to `python`; exits 0 with a note if nvcc is absent)
set -euo pipefail
cd "$(dirname "$0")"
PY=${1:-python}
if ! command -v nvcc >/dev/null 2>&1; then
  echo "check_compile: nvcc not found, CUDA sources not compiled"
  exit 0
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
ver=$("$PY" -c "import re;print(re.search(r'\"(.+)\"', open('../sparsekit/_version.py').read()).group(1))")
for cu in *.cu; do
  for arch in 80 90a; do
    nvcc -std=c++17 -O3 -c "$cu" -o "$out/${cu%.cu}.sm_$arch.o" -gencode "arch=compute_$arch,code=sm_$arch"
    echo "check_compile: $cu sm_$arch ok"
  done
done
inc=$("$PY" - <<'PY'
import sysconfig
from torch.utils.cpp_extension import include_paths
print(" ".join(f"-I{p}" for p in include_paths() + [sysconfig.get_paths()["include"]]))
PY
)
cuda_home=${CUDA_HOME:-$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")}
[ -f "$cuda_home/include/cuda_runtime_api.h" ] || cuda_home=/usr/local/cuda
# CPU wheels of torch ship c10/cuda headers but not the one header CMake generates for CUDA builds;
# a throw-away copy (the same single define) lets them compile here.
mkdir -p "$out/shim/c10/cuda/impl"
[ -n "$("$PY" -c "import torch,os;print(os.path.isfile(os.path.join(os.path.dirname(torch.__file__),'include/c10/cuda/impl/cuda_cmake_macros.h')) or '')")" ] ||
  echo '#define C10_CUDA_BUILD_SHARED_LIBS' > "$out/shim/c10/cuda/impl/cuda_cmake_macros.h"
# shellcheck disable=SC2086
g++ -I"$out/shim" -std=c++20 -fsyntax-only $inc -I"$cuda_home/include" -DTORCH_EXTENSION_NAME=_C -DSPARSEKIT_VERSION="$ver" binding.cpp
echo "check_compile: binding.cpp ok"

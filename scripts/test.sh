#!/usr/bin/env bash
# The whole test suite on a CPU machine, from nothing: set-up, pytest (slow end-to-end tests on the
# real default model included), the Triton kernels under TRITON_INTERPRET=1, and a compile of csrc/
# for sm_80 and sm_90a when nvcc is present. Extra arguments go to the main pytest run.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
python -m pytest "$@"
echo "== Triton kernels under the CPU interpreter"
TRITON_INTERPRET=1 python -m pytest -m triton -q
echo "== CUDA sources"
bash csrc/check_compile.sh "$(command -v python)"

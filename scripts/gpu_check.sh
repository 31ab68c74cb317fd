#!/usr/bin/env bash
# Everything only a GPU machine can show, in one call (device tool: `bash scripts/gpu_check.sh`):
# build sparsekit._C with ninja for this GPU, run the GPU / extension / Triton tests on the device,
# then the rest of the fast suite with CUDA visible, then the packed GEMM benchmark
# (bench/kernels/bench_packed_gemm.py; BENCH_ARGS="--quick" for a short run). Copy
# $OUT/packed_gemm.json to bench/results/kernels/ to commit it; then the whole-model speed of
# bench/experiments/model_speed.py, with the default kernels (CUDA sparse tensor cores when built) and with
# Triton (MODEL_ARGS="--decode 64 --repeats 3" for a short run). Results (junit XML, build log, environment)
# go to $OUT (default ./gpu-out). The GPU image has torch, triton and transformers preinstalled and
# no network, so nothing is pip-installed from an index; the default model's package is not there,
# so tests marked slow are left out.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
python - > "$OUT/env.json" <<'PY'
import json, torch, platform
info = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "capability": torch.cuda.get_device_capability(0) if torch.cuda.is_available() else None}
for mod in ("triton", "transformers"):
    try:
        info[mod] = __import__(mod).__version__
    except Exception as exc:
        info[mod] = f"missing: {exc}"
print(json.dumps(info, indent=2))
PY
cat "$OUT/env.json"
echo "== build sparsekit._C"
SPARSEKIT_BUILD_EXT=1 python setup.py build_ext --inplace > "$OUT/build.log" 2>&1
build=$?
tail -5 "$OUT/build.log"
[ $build -eq 0 ] || { echo "extension build failed (see build.log)"; exit $build; }
echo "== GPU, extension and Triton tests"
python -m pytest tests -m "gpu or cuda_ext or triton" -q -rs --junitxml="$OUT/gpu-tests.xml"
gpu=$?
echo "== fast suite with CUDA visible"
python -m pytest tests -m "not slow" -q -rs --junitxml="$OUT/fast-tests.xml"
fast=$?
echo "== packed GEMM benchmark (random weights, Llama shapes)"
python bench/kernels/bench_packed_gemm.py ${BENCH_ARGS:-} --out "$OUT/packed_gemm.json"
bench=$?
echo "== whole-model speed: Llama-3-8B shapes, dense vs 2:4 vs int4 vs int4 + 2:4 (random weights)"
python bench/experiments/model_speed.py ${MODEL_ARGS:-} --out "$OUT"
model=$?
echo "== the same with the Triton kernels (the CUDA ones above when sparsekit._C built)"
python bench/experiments/model_speed.py ${MODEL_ARGS:-} --backend triton --out "$OUT"
model=$(( model || $? ))
exit $(( gpu || fast || bench || model ))

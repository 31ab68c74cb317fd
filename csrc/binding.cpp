// sparsekit._C: the one binding file. It checks shapes, dtypes and devices, turns violations into
// readable Python errors, allocates outputs and calls the launchers in *.cu. No kernel logic here.
// c10/cuda (not ATen/cuda/CUDAContext.h): it needs only the CUDA runtime headers, so the binding
// also compiles on CPU-only machines (csrc/check_compile.sh) whose toolkit lacks cuBLAS/cuSPARSE.
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include "probe.h"

// setup.py passes -DSPARSEKIT_VERSION=x.y.z unquoted (quotes do not survive ninja's shell).
#define SPARSEKIT_STR_(x) #x
#define SPARSEKIT_STR(x) SPARSEKIT_STR_(x)
#ifdef SPARSEKIT_VERSION
#define SPARSEKIT_VERSION_STRING SPARSEKIT_STR(SPARSEKIT_VERSION)
#else
#define SPARSEKIT_VERSION_STRING "unknown"
#endif

namespace {

#define SPARSEKIT_CUDA_CHECK(expr)                                                        \
  do {                                                                                    \
    cudaError_t err_ = (expr);                                                            \
    TORCH_CHECK(err_ == cudaSuccess, "sparsekit._C: CUDA error: ", cudaGetErrorString(err_)); \
  } while (0)

std::string version() { return SPARSEKIT_VERSION_STRING; }

int64_t compiled_arch(int64_t device) {
  const int64_t count = c10::cuda::device_count();
  TORCH_CHECK(device >= 0 && device < count, "compiled_arch: device index ", device, " is out of range; ", count,
              " CUDA device(s) are visible");
  const c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
  auto out = torch::full({1}, -1, torch::dtype(torch::kInt32).device(torch::kCUDA, device));
  SPARSEKIT_CUDA_CHECK(
      sparsekit_launch_arch_probe(out.data_ptr<int>(), c10::cuda::getCurrentCUDAStream().stream()));
  return out.item<int64_t>();
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "sparsekit CUDA kernels (see csrc/)";
  m.def("version", &version, "sparsekit version this extension was built from");
  m.def("compiled_arch", &compiled_arch, pybind11::arg("device"),
        "__CUDA_ARCH__ of the kernel image that runs on `device` (e.g. 800, 900)");
}

// sparsekit._C: the one binding file. It checks shapes, dtypes and devices, turns violations into
// readable Python errors, allocates outputs and calls the launchers in *.cu. No kernel logic here.
// c10/cuda (not ATen/cuda/CUDAContext.h): it needs only the CUDA runtime headers, so the binding
// also compiles on CPU-only machines (csrc/check_compile.sh) whose toolkit lacks cuBLAS/cuSPARSE.
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include "probe.h"
#include "sparse24_gemm.h"

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

// ------------------------------------------------------------------ 2:4 sparse tensor-core GEMMs

void check_cuda_tensor(const torch::Tensor& t, const char* op, const char* name, const torch::Tensor& x) {
  TORCH_CHECK(t.is_cuda(), op, ": ", name, " must be a CUDA tensor, got one on ", t.device());
  TORCH_CHECK(t.device() == x.device(), op, ": ", name, " is on ", t.device(), " but the input is on ", x.device());
  TORCH_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous (it is read in the packed order)");
}

void check_shape(const torch::Tensor& t, const char* op, const char* name, at::IntArrayRef want) {
  TORCH_CHECK(t.sizes() == want, op, ": ", name, " must have shape ", want, " for this input and weight, got ",
              t.sizes());
}

// Validates what both kernels share and returns the launch arguments filled with x, meta, bias, out.
sparsekit::Sparse24GemmArgs common_args(const char* op, const torch::Tensor& x, int64_t n, const torch::Tensor& meta,
                                        const c10::optional<torch::Tensor>& bias,
                                        const c10::optional<torch::Tensor>& out_arg, torch::Tensor& out,
                                        int64_t splits) {
  TORCH_CHECK(x.is_cuda(), op, ": the input must be a CUDA tensor, got one on ", x.device());
  TORCH_CHECK(x.dim() == 2, op, ": the input must be 2-D [tokens, in_features], got ", x.sizes());
  TORCH_CHECK(x.scalar_type() == torch::kFloat16 || x.scalar_type() == torch::kBFloat16, op,
              ": activations must be float16 or bfloat16 (the sparse tensor cores' input types), got ",
              x.scalar_type());
  TORCH_CHECK(x.is_contiguous(), op, ": the input must be contiguous");
  TORCH_CHECK(reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0, op,
              ": the input must be 16-byte aligned (rows are copied with 16-byte cp.async)");
  const int64_t m = x.size(0), k = x.size(1);
  TORCH_CHECK(m >= 1, op, ": the input has no rows");
  TORCH_CHECK(k % 64 == 0, op, ": in_features must be a multiple of 64 (the kernel's k-tile), got ", k);
  TORCH_CHECK(n % 16 == 0 && n >= 16, op, ": out_features must be a positive multiple of 16 (the mma m16 tile), got ",
              n);
  TORCH_CHECK(m * n < (int64_t(1) << 31) && m * k < (int64_t(1) << 31), op, ": the problem is too large for 32-bit indices");
  TORCH_CHECK(splits >= 1 && splits <= k / 64, op, ": splits must be in [1, in_features / 64 = ", k / 64, "], got ",
              splits);
  check_cuda_tensor(meta, op, "meta", x);
  TORCH_CHECK(meta.scalar_type() == torch::kInt32, op, ": meta must be int32, got ", meta.scalar_type());
  check_shape(meta, op, "meta", {n / 16, k / 32, 16});
  sparsekit::Sparse24GemmArgs args;
  if (bias.has_value()) {
    check_cuda_tensor(*bias, op, "bias", x);
    TORCH_CHECK(bias->scalar_type() == x.scalar_type(), op, ": bias must have the input's dtype ", x.scalar_type(),
                ", got ", bias->scalar_type());
    check_shape(*bias, op, "bias", {n});
    args.bias = bias->data_ptr();
  }
  if (out_arg.has_value()) {
    check_cuda_tensor(*out_arg, op, "out", x);
    TORCH_CHECK(out_arg->scalar_type() == x.scalar_type(), op, ": out must have the input's dtype ", x.scalar_type(),
                ", got ", out_arg->scalar_type());
    check_shape(*out_arg, op, "out", {m, n});
    out = *out_arg;
  } else {
    out = torch::empty({m, n}, x.options());
  }
  args.x = x.data_ptr();
  args.meta = reinterpret_cast<const uint32_t*>(meta.data_ptr<int32_t>());
  args.out = out.data_ptr();
  args.m = static_cast<int>(m);
  args.n = static_cast<int>(n);
  args.k = static_cast<int>(k);
  args.splits = static_cast<int>(splits);
  args.dtype = x.scalar_type() == torch::kFloat16 ? sparsekit::ActDtype::kFloat16 : sparsekit::ActDtype::kBFloat16;
  return args;
}

void launch(const char* op, sparsekit::Sparse24GemmArgs& args, const torch::Tensor& x, int64_t block_m) {
  TORCH_CHECK(block_m == 8 || block_m == 16 || block_m == 32 || block_m == 64 || block_m == 128, op,
              ": block_m must be one of 8, 16, 32, 64, 128, got ", block_m);
  const c10::cuda::CUDAGuard guard(x.device());
  torch::Tensor workspace;
  if (args.splits > 1) {
    workspace = torch::empty({args.splits, args.m, args.n}, x.options().dtype(torch::kFloat32));
    args.workspace = workspace.data_ptr<float>();
  }
  // the workspace stays alive until the launches are queued; the caching allocator reuses it only
  // after work queued later on this stream, so the reduce kernel reads it safely
  SPARSEKIT_CUDA_CHECK(sparsekit::launch_sparse24_gemm(args, static_cast<int>(block_m),
                                                       c10::cuda::getCurrentCUDAStream().stream()));
}

torch::Tensor sparse24_gemm(const torch::Tensor& x, const torch::Tensor& values, const torch::Tensor& meta,
                            const c10::optional<torch::Tensor>& bias, int64_t splits, int64_t block_m,
                            const c10::optional<torch::Tensor>& out_arg) {
  const char* op = "sparse24_gemm";
  TORCH_CHECK(values.dim() == 4, op, ": values must be [out/16, in/32, 32, 8] (sparsekit.pack.mma_sp), got ",
              values.sizes());
  const int64_t n = values.size(0) * 16;
  torch::Tensor out;
  auto args = common_args(op, x, n, meta, bias, out_arg, out, splits);  // the input first: its errors are likeliest
  check_cuda_tensor(values, op, "values", x);
  TORCH_CHECK(values.scalar_type() == x.scalar_type(), op, ": values are ", values.scalar_type(),
              " but the input is ", x.scalar_type(), "; the tensor cores multiply equal types");
  check_shape(values, op, "values", {n / 16, x.size(1) / 32, 32, 8});
  TORCH_CHECK(reinterpret_cast<uintptr_t>(values.data_ptr()) % 16 == 0, op,
              ": values must be 16-byte aligned (each lane loads its fragment with one 16-byte load)");
  args.values = values.data_ptr();
  launch(op, args, x, block_m);
  return out;
}

torch::Tensor int4_sparse24_gemm(const torch::Tensor& x, const torch::Tensor& codes, const torch::Tensor& meta,
                                 const torch::Tensor& scales, int64_t group_size,
                                 const c10::optional<torch::Tensor>& bias, int64_t splits, int64_t block_m,
                                 const c10::optional<torch::Tensor>& out_arg) {
  const char* op = "int4_sparse24_gemm";
  TORCH_CHECK(codes.dim() == 3, op, ": codes must be [out/16, in/32, 32] int32 (sparsekit.pack.mma_sp), got ",
              codes.sizes());
  const int64_t n = codes.size(0) * 16;
  torch::Tensor out;
  auto args = common_args(op, x, n, meta, bias, out_arg, out, splits);
  check_cuda_tensor(codes, op, "codes", x);
  TORCH_CHECK(codes.scalar_type() == torch::kInt32, op, ": codes must be int32, got ", codes.scalar_type());
  const int64_t k = x.size(1);
  check_shape(codes, op, "codes", {n / 16, k / 32, 32});
  TORCH_CHECK(group_size >= 32 && group_size % 32 == 0, op,
              ": group_size must be a positive multiple of 32 (one scale per mma k32 step), got ", group_size);
  check_cuda_tensor(scales, op, "scales", x);
  TORCH_CHECK(scales.scalar_type() == torch::kFloat16, op, ": scales must be float16, got ", scales.scalar_type());
  check_shape(scales, op, "scales", {n, (k + group_size - 1) / group_size});
  args.codes = reinterpret_cast<const uint32_t*>(codes.data_ptr<int32_t>());
  args.scales = reinterpret_cast<const uint16_t*>(scales.data_ptr<at::Half>());
  args.group_size = static_cast<int>(group_size);
  launch(op, args, x, block_m);
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "sparsekit CUDA kernels (see csrc/)";
  m.def("version", &version, "sparsekit version this extension was built from");
  m.def("compiled_arch", &compiled_arch, pybind11::arg("device"),
        "__CUDA_ARCH__ of the kernel image that runs on `device` (e.g. 800, 900)");
  m.def("sparse24_gemm", &sparse24_gemm, pybind11::arg("x"), pybind11::arg("values"), pybind11::arg("meta"),
        pybind11::arg("bias") = pybind11::none(), pybind11::arg("splits") = 1, pybind11::arg("block_m") = 16,
        pybind11::arg("out") = pybind11::none(),
        "x [M, K] @ W^T for a 2:4 fp16/bf16 weight in mma.sp order (sparse tensor cores)");
  m.def("int4_sparse24_gemm", &int4_sparse24_gemm, pybind11::arg("x"), pybind11::arg("codes"),
        pybind11::arg("meta"), pybind11::arg("scales"), pybind11::arg("group_size"),
        pybind11::arg("bias") = pybind11::none(), pybind11::arg("splits") = 1, pybind11::arg("block_m") = 16,
        pybind11::arg("out") = pybind11::none(),
        "x [M, K] @ W^T for a 2:4 int4 weight (symmetric, fp16 group scales) in mma.sp order");
}

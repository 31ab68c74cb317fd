// Launchers of the 2:4 sparse-tensor-core GEMMs (sparse24_gemm.cu). Plain C++ types only, so that the
// binding compiles without CUDA device headers.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace sparsekit {

enum class ActDtype : int { kFloat16 = 0, kBFloat16 = 1 };

// Y[M, N] = X[M, K] . W^T (+ bias) with W 2:4-sparse, stored in the mma.sp fragment order written by
// sparsekit/pack/mma_sp.py: either the kept fp16/bf16 values (`values`) or their int4 codes (`codes`)
// with fp16 group scales (`scales`, [N, ceil(K / group_size)]).
struct Sparse24GemmArgs {
  const void* x = nullptr;         // [M, K] fp16/bf16, row-major, rows 16-byte aligned
  const void* values = nullptr;    // [N/16, K/32, 32, 8] kept values (fp path), same dtype as x
  const uint32_t* codes = nullptr; // [N/16, K/32, 32] eight int4 codes per lane (int4 path)
  const uint32_t* meta = nullptr;  // [N/16, K/32, 16] mma.sp metadata words
  const uint16_t* scales = nullptr;  // [N, G] fp16 bits (int4 path)
  const void* bias = nullptr;      // [N], dtype of x, or null
  void* out = nullptr;             // [M, N], dtype of x
  float* workspace = nullptr;      // [splits, M, N] fp32 partial sums when splits > 1
  int m = 0, n = 0, k = 0;
  int group_size = 0;              // int4 path: inputs per scale (multiple of 32)
  int splits = 1;                  // split-K factor (1 <= splits <= K / 64)
  ActDtype dtype = ActDtype::kFloat16;
};

// block_m: tokens per thread block, one of 8, 16, 32, 64, 128.
cudaError_t launch_sparse24_gemm(const Sparse24GemmArgs& args, int block_m, cudaStream_t stream);

}  // namespace sparsekit

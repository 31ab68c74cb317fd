// 2:4 sparse GEMM on the sparse tensor cores: Y[M, N] = X[M, K] . W^T (+ bias), W 2:4-sparse, stored
// either as fp16/bf16 kept values or as int4 codes of the kept values with fp16 group scales.
//
// Why W is the *A* operand: `mma.sp` only accepts a sparse A (m16 x k32, two of every four entries
// kept along k). So each warp computes a transposed tile D^T[16 output features x 8 tokens] per
// instruction: W rows are the m16 side, tokens the n8 side. At decode (M = 1..16) that wastes part of
// the n8 side, but the kernel is bound by streaming W, which is what the 2:4 (+ int4) layout shrinks:
// 9 bits/weight for fp16 values, 3.125 for int4 g128, vs 16 dense.
//
// Data flow, per thread block (4 warps, 64 output features x BM tokens, k-tiles of 64 inputs):
//   * X tiles [BM x 64] go to shared memory with 16-byte cp.async, kStages deep, because all four warps
//     read the same tokens; rows are padded by 16 bytes so that the 8 token rows a warp reads per
//     instruction fall in different banks.
//   * W is read exactly once, so it bypasses shared memory and L1: each lane loads its own fragment
//     (16 bytes of values, or one 32-bit word of eight int4 codes) straight into registers, one k-tile
//     ahead of its use for fp values and four for int4 codes at decode (`kWAhead`: equal bytes in flight), with
//     ld.global.nc.L1::no_allocate (streamed data must not evict X from L1).
//     The fragment order was fixed at pack time (sparsekit/pack/mma_sp.py), so no shuffles are needed.
//   * int4 codes become fp16/bf16 in registers: OR-ing a nibble into the mantissa of 1024.0 (fp16) or
//     128.0 (bf16) gives 1024 + q exactly; one subtraction removes the bias and the +8 code offset.
//   * split-K over grid.z lets M = 1 fill every SM: partial sums go to an fp32 workspace and a second
//     kernel adds them in a fixed order (deterministic) with the bias.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "sparse24_gemm.h"

namespace sparsekit {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kBlockN = 16 * kWarps;  // output features per block: one m16 tile per warp
constexpr int kBlockK = 64;           // inputs per k-tile: two k32 mma steps
constexpr int kPadK = 8;              // 16 bytes of padding per shared-memory X row (bank spread)

// ---------------------------------------------------------------- memory helpers

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int src_bytes = valid ? 16 : 0;  // 0: the 16 bytes are zero-filled (rows past M)
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem), "r"(src_bytes));
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }

template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

__device__ __forceinline__ uint4 ld_stream_v4(const void* p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
}

__device__ __forceinline__ uint32_t ld_stream(const void* p) {
  uint32_t r;
  asm volatile("ld.global.nc.L1::no_allocate.u32 %0, [%1];\n" : "=r"(r) : "l"(p));
  return r;
}

// ---------------------------------------------------------------- element types

template <typename T>
struct Elem;

template <>
struct Elem<__half> {
  using T2 = __half2;
  static __device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
  static __device__ __forceinline__ __half from_float(float v) { return __float2half_rn(v); }
  // Two int4 codes (nibbles at bits 0-3 and 16-19 of `q`) times `scale`, as an fp16 pair.
  static __device__ __forceinline__ uint32_t dequant_pair(uint32_t q, float scale) {
    const uint32_t biased = (q & 0x000F000Fu) | 0x64006400u;  // 1024 + nibble, exact in fp16
    const uint32_t offset = 0x64086408u;                       // 1024 + 8 (codes are stored + 8)
    const __half2 v = __hsub2(*reinterpret_cast<const __half2*>(&biased), *reinterpret_cast<const __half2*>(&offset));
    // one rounding: an integer in [-8, 7] times an fp16 scale is exact before the product is rounded
    const __half2 r = __hmul2(v, __float2half2_rn(scale));
    return *reinterpret_cast<const uint32_t*>(&r);
  }
};

template <>
struct Elem<__nv_bfloat16> {
  using T2 = __nv_bfloat162;
  static __device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
  static __device__ __forceinline__ __nv_bfloat16 from_float(float v) { return __float2bfloat16_rn(v); }
  static __device__ __forceinline__ uint32_t dequant_pair(uint32_t q, float scale) {
    const uint32_t biased = (q & 0x000F000Fu) | 0x43004300u;  // 128 + nibble, exact in bf16 (7-bit mantissa)
    const __nv_bfloat162 v = *reinterpret_cast<const __nv_bfloat162*>(&biased);
    // the fp16 scale has 3 more mantissa bits than bf16: multiply in fp32 and round once
    const float lo = (__low2float(v) - 136.0f) * scale;
    const float hi = (__high2float(v) - 136.0f) * scale;
    const __nv_bfloat162 r = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&r);
  }
};

// ---------------------------------------------------------------- the sparse tensor-core instruction

// D (16x8, fp32) += A (16x32, 2:4, compressed to 16x16 in `a`) . B (32x8). Metadata from lanes 0 and 1 of
// each quad (sparsity selector 0); pack-time indices are ascending, as ::ordered_metadata requires.
template <typename T>
__device__ __forceinline__ void mma_sp_16832(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[4],
                                             uint32_t meta);

template <>
__device__ __forceinline__ void mma_sp_16832<__half>(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[4],
                                                     uint32_t meta) {
  asm volatile(
      "mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.f16.f16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9, %10, %11}, {%0, %1, %2, %3}, %12, 0x0;\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]), "r"(meta));
}

template <>
__device__ __forceinline__ void mma_sp_16832<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4],
                                                            const uint32_t (&b)[4], uint32_t meta) {
  asm volatile(
      "mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.bf16.bf16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9, %10, %11}, {%0, %1, %2, %3}, %12, 0x0;\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]), "r"(meta));
}

// One lane's share of the W fragment of a 16 x 32 tile (both mma k32 steps of a k-tile are loaded together).
struct WFrag {
  uint32_t a[4];  // fp path: the 8 kept values; int4 path: a[0] holds the 8 codes
  uint32_t meta;
  float s_lo, s_hi;  // int4 path: the group scales of rows g and g + 8 (loaded with the codes, off the mma path)
};

// k-tiles of W each warp keeps in flight at decode. Streaming W is the whole cost at M = 1, and the memory
// pipe stays full only when bandwidth x latency bytes are outstanding per SM (~25 KB on an H100/H200:
// ~3.3 TB/s / 132 SMs x ~1 us). The fp path loads ~1.3 KB per warp per k-tile (16-byte values + a metadata
// word per lane); the int4 path only ~384 B (a 4-byte code word + metadata, + scales), so one k-tile ahead
// leaves it at ~6 KB per SM (16 warps): a quarter of what the pipe needs. Four k-tiles ahead puts it on
// par with the fp path, for 3 x 8 more registers per lane (codes, metadata and two scales of 2 steps).
// From 64 tokens per block on, each W fragment feeds 8+ mmas and the block is no longer bound by the
// stream, so the registers go to occupancy instead (164 vs 126 per lane at 128 tokens, sm_90a ptxas).
template <bool kInt4, int kNT>
constexpr int kWAhead = kInt4 && kNT <= 4 ? 4 : 1;

template <bool kInt4>
__device__ __forceinline__ void load_w(WFrag (&w)[2], const Sparse24GemmArgs& p, int ntile, int kt, int lane) {
  const int k32_tiles = p.k / 32;
#pragma unroll
  for (int s = 0; s < 2; ++s) {
    const long tile = static_cast<long>(ntile) * k32_tiles + kt * 2 + s;
    if constexpr (kInt4) {
      w[s].a[0] = ld_stream(p.codes + tile * 32 + lane);
      // group_size % 32 == 0: a k32 step never straddles two scale groups
      const int groups = (p.k + p.group_size - 1) / p.group_size;
      const int gi = (kt * kBlockK + s * 32) / p.group_size;
      const long row = static_cast<long>(ntile) * 16 + (lane >> 2);
      w[s].s_lo = __half2float(__ushort_as_half(__ldg(p.scales + row * groups + gi)));
      w[s].s_hi = __half2float(__ushort_as_half(__ldg(p.scales + (row + 8) * groups + gi)));
    } else {
      const uint4 v = ld_stream_v4(static_cast<const uint16_t*>(p.values) + (tile * 32 + lane) * 8);
      w[s].a[0] = v.x;
      w[s].a[1] = v.y;
      w[s].a[2] = v.z;
      w[s].a[3] = v.w;
    }
    // lanes 4g and 4g+1 hold the metadata of rows g and g+8 (words 2g, 2g+1); the others pass a copy
    w[s].meta = ld_stream(p.meta + tile * 16 + (lane >> 2) * 2 + (lane & 1));
  }
}

template <typename T, bool kInt4, int kNT>
__global__ void __launch_bounds__(kThreads) sparse24_gemm_kernel(const Sparse24GemmArgs p) {
  constexpr int kBlockM = 8 * kNT;
  constexpr int kStages = kBlockM <= 64 ? 3 : 2;  // BM = 128: two stages keep X under 48 KB of static smem
  constexpr int kRow = kBlockK + kPadK;
  __shared__ __align__(16) T xs[kStages][kBlockM][kRow];

  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int g = lane >> 2;  // groupID: the A row / B column (token) this lane serves
  const int t = lane & 3;   // threadID_in_group
  const int ntile = blockIdx.x * kWarps + warp;
  const bool active = ntile * 16 < p.n;  // a warp past N still loads X and meets every barrier
  const int m0 = blockIdx.y * kBlockM;

  const int k_tiles = p.k / kBlockK;
  const int kt_begin = static_cast<int>((static_cast<long>(k_tiles) * blockIdx.z) / p.splits);
  const int kt_end = static_cast<int>((static_cast<long>(k_tiles) * (blockIdx.z + 1)) / p.splits);

  const T* x = static_cast<const T*>(p.x);
  auto load_x = [&](int stage, int kt) {
    // kBlockM rows x 8 chunks of 16 bytes
    for (int c = threadIdx.x; c < kBlockM * 8; c += kThreads) {
      const int r = c >> 3, col = (c & 7) * 8;
      const bool valid = m0 + r < p.m;
      const T* src = valid ? x + static_cast<long>(m0 + r) * p.k + kt * kBlockK + col : x;
      cp_async16(&xs[stage][r][col], src, valid);
    }
  };

  float acc[kNT][4];
#pragma unroll
  for (int i = 0; i < kNT; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.0f;

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (kt_begin + s < kt_end) load_x(s, kt_begin + s);
    cp_async_commit();  // commit even when empty: the group count stays uniform for wait_group
  }
  // wq[0] is the k-tile in use, wq[1..] the ones in flight (a shift register: static indices keep it in
  // registers); wnew is issued before the mmas of tile kt so that its latency overlaps them
  constexpr int kAhead = kWAhead<kInt4, kNT>;
  WFrag wq[kAhead][2] = {}, wnew[2] = {};
#pragma unroll
  for (int i = 0; i < kAhead; ++i)
    if (active && kt_begin + i < kt_end) load_w<kInt4>(wq[i], p, ntile, kt_begin + i, lane);

  for (int kt = kt_begin; kt < kt_end; ++kt) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // X tile kt is visible to all warps; the stage refilled next was consumed at kt - 1
    const int next = kt + kStages - 1;
    if (next < kt_end) load_x((next - kt_begin) % kStages, next);
    cp_async_commit();
    if (active && kt + kAhead < kt_end) load_w<kInt4>(wnew, p, ntile, kt + kAhead, lane);

    if (active) {
      const int stage = (kt - kt_begin) % kStages;
#pragma unroll
      for (int s = 0; s < 2; ++s) {
        uint32_t a[4];
        const WFrag& w = wq[0][s];
        if constexpr (kInt4) {
          const uint32_t q = w.a[0];
          // pair j of the fragment sits in nibbles j and j + 4; pairs 0, 2 are row g, pairs 1, 3 row g + 8
          a[0] = Elem<T>::dequant_pair(q, w.s_lo);
          a[1] = Elem<T>::dequant_pair(q >> 4, w.s_hi);
          a[2] = Elem<T>::dequant_pair(q >> 8, w.s_lo);
          a[3] = Elem<T>::dequant_pair(q >> 12, w.s_hi);
        } else {
          a[0] = w.a[0];
          a[1] = w.a[1];
          a[2] = w.a[2];
          a[3] = w.a[3];
        }
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt) {
          // B fragment: token nt*8 + g, inputs 2t, 2t+1 (+8, +16, +24) of this k32 step
          const uint32_t* xrow = reinterpret_cast<const uint32_t*>(&xs[stage][nt * 8 + g][s * 32]);
          const uint32_t b[4] = {xrow[t], xrow[t + 4], xrow[t + 8], xrow[t + 12]};
          mma_sp_16832<T>(acc[nt], a, b, wq[0][s].meta);
        }
      }
#pragma unroll
      for (int i = 0; i + 1 < kAhead; ++i) {
#pragma unroll
        for (int s = 0; s < 2; ++s) wq[i][s] = wq[i + 1][s];
      }
#pragma unroll
      for (int s = 0; s < 2; ++s) wq[kAhead - 1][s] = wnew[s];
    }
  }
  cp_async_wait<0>();
  if (!active) return;

  // D fragment: c0, c1 = feature g, tokens 2t, 2t+1; c2, c3 = feature g + 8, same tokens
  const int f0 = ntile * 16 + g;
  const T* bias = static_cast<const T*>(p.bias);
#pragma unroll
  for (int nt = 0; nt < kNT; ++nt) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int token = m0 + nt * 8 + 2 * t + (i & 1);
      const int feature = f0 + (i >> 1) * 8;
      if (token >= p.m) continue;
      if (p.splits > 1) {
        p.workspace[(static_cast<long>(blockIdx.z) * p.m + token) * p.n + feature] = acc[nt][i];
      } else {
        const float b = bias ? Elem<T>::to_float(bias[feature]) : 0.0f;
        static_cast<T*>(p.out)[static_cast<long>(token) * p.n + feature] = Elem<T>::from_float(acc[nt][i] + b);
      }
    }
  }
}

// Sums the split-K partials in split order (deterministic) and adds the bias.
template <typename T>
__global__ void splitk_reduce_kernel(const Sparse24GemmArgs p) {
  const long total = static_cast<long>(p.m) * p.n;
  const T* bias = static_cast<const T*>(p.bias);
  for (long i = blockIdx.x * static_cast<long>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<long>(gridDim.x) * blockDim.x) {
    float sum = bias ? Elem<T>::to_float(bias[i % p.n]) : 0.0f;
    for (int s = 0; s < p.splits; ++s) sum += p.workspace[s * total + i];
    static_cast<T*>(p.out)[i] = Elem<T>::from_float(sum);
  }
}

template <typename T, bool kInt4>
cudaError_t launch_typed(const Sparse24GemmArgs& p, int block_m, cudaStream_t stream) {
  const dim3 grid((p.n + kBlockN - 1) / kBlockN, (p.m + block_m - 1) / block_m, p.splits);
  switch (block_m) {
    case 8: sparse24_gemm_kernel<T, kInt4, 1><<<grid, kThreads, 0, stream>>>(p); break;
    case 16: sparse24_gemm_kernel<T, kInt4, 2><<<grid, kThreads, 0, stream>>>(p); break;
    case 32: sparse24_gemm_kernel<T, kInt4, 4><<<grid, kThreads, 0, stream>>>(p); break;
    case 64: sparse24_gemm_kernel<T, kInt4, 8><<<grid, kThreads, 0, stream>>>(p); break;
    case 128: sparse24_gemm_kernel<T, kInt4, 16><<<grid, kThreads, 0, stream>>>(p); break;
    default: return cudaErrorInvalidValue;
  }
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess || p.splits == 1) return err;
  const long total = static_cast<long>(p.m) * p.n;
  const int blocks = static_cast<int>((total + 255) / 256 < 4096 ? (total + 255) / 256 : 4096);
  splitk_reduce_kernel<T><<<blocks, 256, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_sparse24_gemm(const Sparse24GemmArgs& p, int block_m, cudaStream_t stream) {
  const bool int4 = p.codes != nullptr;
  if (p.dtype == ActDtype::kFloat16)
    return int4 ? launch_typed<__half, true>(p, block_m, stream) : launch_typed<__half, false>(p, block_m, stream);
  return int4 ? launch_typed<__nv_bfloat16, true>(p, block_m, stream)
              : launch_typed<__nv_bfloat16, false>(p, block_m, stream);
}

}  // namespace sparsekit

// CPU kernels of the packed layouts: y[M, N] = x[M, K] . W^T (+ bias), W in a sparsekit.pack layout.
//
// Plain C++ only (no torch headers): the SIMD translation units are compiled with target attributes
// of their own, and torch's inline functions must not be compiled under them (one definition rule).
// The byte layouts are those of sparsekit/pack/layouts.py, read as stored: no conversion at load, except
// int4 + 2:4 under the a8 kernels, which read a copy in an order of their own (`Int4Semi24Tiles` for VNNI,
// `Int4Semi24TilesAvx2` for AVX2, below).
//
// One scalar reference decoder per layout (`weight_at`, below) serves the portable path and the tails
// that a SIMD chunk does not cover; each SIMD path decodes 16 consecutive weights at a time (AVX-512: one
// zmm, AVX2: two ymm).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>
#include <new>

namespace sparsekit {
namespace cpu {

enum class Kind : int { kSemi24 = 0, kInt4 = 1, kInt4Semi24 = 2, kMXFP4 = 3, kInt8 = 4 };
enum class ValueType : int { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2 };

// One packed weight [N, K], rows contiguous (the layouts' tensors are contiguous [N, ...]).
struct Packed {
  Kind kind = Kind::kInt4;
  int64_t n = 0, k = 0;
  const void* values = nullptr;     // semi24: [N, K/2] kept values of `value_type`
  const uint8_t* codes = nullptr;   // int4 / mxfp4: [N, K/2] nibbles; int4_semi24: [N, K/4]; int8: [N, K] (int8)
  const uint8_t* meta = nullptr;    // 2:4 positions [N, K/8], a nibble per group of 4
  const uint16_t* scales = nullptr; // int4 / int4_semi24: [N, G] fp16 bits; int8: [N] fp16 bits
  const uint8_t* zeros = nullptr;   // int4 / int4_semi24 asymmetric: [N, G] (null: symmetric, code + 8)
  const uint8_t* e8m0 = nullptr;    // mxfp4: [N, K/32] biased exponents
  int64_t group = 0;                // int4 / int4_semi24: inputs per scale (the last group may be short)
  ValueType value_type = ValueType::kFloat32;
  // Software prefetch of the weight streams in the decode loops (`prefetch_ahead`), set by the binding per CPU
  int64_t prefetch_distance = 2048;  // bytes ahead of the read
  bool prefetch_l2 = false;          // into L2 (prefetcht1) instead of L1 (prefetcht0)
  // int4 + 2:4, a8 kernels only: the same weight as `Int4Semi24Tiles` (VNNI, R = 16 rows a tile, 192 bytes a block)
  // or `Int4Semi24TilesAvx2` (R = 8, 96 bytes a block); the binding builds and caches it
  const uint8_t* tiles = nullptr;         // [ceil(N/R), K/32, block bytes]
  const uint16_t* tile_scales = nullptr;  // [ceil(N/R), G, R] fp16 bits
  const uint8_t* tile_zeros = nullptr;    // [ceil(N/R), G, R] (null: symmetric)

  int64_t groups() const { return group > 0 ? (k + group - 1) / group : 1; }
};

// ------------------------------------------------------------------ scalar conversions (exact)

inline float bits_to_float(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

inline float bf16_to_float(uint16_t h) { return bits_to_float(static_cast<uint32_t>(h) << 16); }

// the bf16 bits of a value that bf16 holds exactly (small integers, E2M1 values): its top 16 bits
inline uint16_t float_to_bf16_exact(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return static_cast<uint16_t>(b >> 16);
}

inline float fp16_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu, man = h & 0x3FFu;
  if (exp == 0x1Fu) return bits_to_float(sign | 0x7F800000u | (man << 13));  // inf / nan
  if (exp != 0) return bits_to_float(sign | ((exp + 112u) << 23) | (man << 13));
  // subnormal: man x 2^-24, exact in fp32
  const float v = static_cast<float>(man) * 5.9604644775390625e-8f;
  return sign ? -v : v;
}

// OCP MX E8M0: 2^(u - 127); u = 0 is the fp32 subnormal 2^-127, u = 255 is NaN
inline float e8m0_to_float(uint8_t u) {
  if (u == 255) return bits_to_float(0x7FC00000u);
  if (u == 0) return bits_to_float(0x00400000u);
  return bits_to_float(static_cast<uint32_t>(u) << 23);
}

// E2M1 code (sign in bit 3): 0, 0.5, 1, 1.5, 2, 3, 4, 6 and their negatives
inline float e2m1_to_float(uint32_t c) {
  static const float kMag[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  return (c & 8u) ? -kMag[c & 7u] : kMag[c & 7u];
}

inline uint32_t nibble(const uint8_t* bytes, int64_t i) { return (bytes[i >> 1] >> ((i & 1) * 4)) & 0xFu; }

inline float value_at(const Packed& p, int64_t idx) {
  switch (p.value_type) {
    case ValueType::kFloat32: return static_cast<const float*>(p.values)[idx];
    case ValueType::kBFloat16: return bf16_to_float(static_cast<const uint16_t*>(p.values)[idx]);
    default: return fp16_to_float(static_cast<const uint16_t*>(p.values)[idx]);
  }
}

// ------------------------------------------------------------------ the scalar reference decoder

// W[n, k] as the layout encodes it (fp32), the same values as `Layout.unpack()`.
inline float weight_at(const Packed& p, int64_t n, int64_t k) {
  switch (p.kind) {
    case Kind::kSemi24: {
      const int64_t g = k >> 2;  // group of 4 inputs
      const uint32_t nib = nibble(p.meta + n * (p.k / 8), g);
      const int64_t pos = k & 3, base = n * (p.k / 2) + 2 * g;
      if ((nib & 3u) == pos) return value_at(p, base);
      if (((nib >> 2) & 3u) == pos) return value_at(p, base + 1);
      return 0.0f;
    }
    case Kind::kInt4: {
      const int64_t gi = k / p.group, G = p.groups();
      const float zero = p.zeros ? static_cast<float>(p.zeros[n * G + gi]) : 8.0f;
      return (static_cast<float>(nibble(p.codes + n * (p.k / 2), k)) - zero) * fp16_to_float(p.scales[n * G + gi]);
    }
    case Kind::kInt4Semi24: {
      const int64_t g = k >> 2;
      const uint32_t nib = nibble(p.meta + n * (p.k / 8), g);
      const int64_t pos = k & 3;
      int64_t slot;
      if ((nib & 3u) == pos) slot = 2 * g;
      else if (((nib >> 2) & 3u) == pos) slot = 2 * g + 1;
      else return 0.0f;
      const int64_t gi = k / p.group, G = p.groups();
      const float zero = p.zeros ? static_cast<float>(p.zeros[n * G + gi]) : 8.0f;
      return (static_cast<float>(nibble(p.codes + n * (p.k / 4), slot)) - zero) * fp16_to_float(p.scales[n * G + gi]);
    }
    case Kind::kMXFP4:
      return e2m1_to_float(nibble(p.codes + n * (p.k / 2), k)) * e8m0_to_float(p.e8m0[n * (p.k / 32) + k / 32]);
    case Kind::kInt8:
      return static_cast<float>(reinterpret_cast<const int8_t*>(p.codes)[n * p.k + k]) * fp16_to_float(p.scales[n]);
  }
  return 0.0f;
}

// ------------------------------------------------------------------ kernels

// Decode streams each packed row once at a few instructions per 16-64 bytes. Out-of-order execution alone keeps
// only the misses of the loads in its reorder window in flight (~1 KB of packed weight: 10-13 GB/s at DRAM
// latency), and the hardware prefetchers do not run far enough ahead of such a loop, so every decode loop asks
// for each cache line of each weight stream `prefetch_distance` bytes before it reads it. Into L1 where the core
// has enough L1 miss buffers for that distance; into L2 where it has not (measured per CPU: see the binding).
//
// prefetch_line: the line at `at` itself, into the plan's cache level (for a loop that knows where the stream
// it reads next starts)
inline void prefetch_line(const Packed& p, const void* at) {
  if (p.prefetch_l2) {
    __builtin_prefetch(at, 0, 2);  // prefetcht1 on x86
  } else {
    __builtin_prefetch(at, 0, 3);  // prefetcht0
  }
}
inline void prefetch_ahead(const Packed& p, const void* ptr) {
  prefetch_line(p, static_cast<const char*>(ptr) + p.prefetch_distance);
}

// The same into L1 whatever the CPU: for a loop that is bound by its instructions, not by memory, where a line
// waiting in L2 stalls the loop and the misses in flight are few anyway (int4 + 2:4 with fp32 activations: ~6
// GB/s on one Zen 4 core, 8% slower with its lines prefetched into L2).
inline void prefetch_ahead_l1(const Packed& p, const void* ptr) {
  __builtin_prefetch(static_cast<const char*>(ptr) + p.prefetch_distance, 0, 3);
}

// a tile's activations above this many bytes are read from L2, not L1 (Zen 4 and Intel cores since Ice Lake have
// 32-48 KB of L1 data; the weight stream passes through it too). Above it the 2:4 bf16 kernels read rows in blocks
// that share each activation load, except at one token, where the kernel on fp32 activations reads one row at a
// time over segments of the rows (kept_bf16_segments); below it one row a step
constexpr int64_t kSharedActsBytes = 24 * 1024;

// The 2:4 bf16 kernels' prefetch at input k0 of a row (its values and positions) when R rows are read a step: a
// line of values per step, a line of positions per 8. With R > 1, the same inputs R rows on: the row this stream
// reads next (bytes ahead would run past the row's end into rows the other streams are reading); a lone row by the
// plan's distance.
template <int R>
inline void prefetch_kept_bf16(const Packed& p, const uint16_t* values, const uint8_t* meta, int64_t k0) {
  const int64_t K = p.k;
  if (R > 1) {
    prefetch_line(p, values + R * (K / 2) + k0 / 2);
    if ((k0 & 511) == 0) prefetch_line(p, meta + R * (K / 8) + k0 / 8);
  } else {
    prefetch_ahead(p, values + k0 / 2);
    if ((k0 & 511) == 0) prefetch_ahead(p, meta + k0 / 8);
  }
}

// out[m, n] = sum_k x[m, k] W[n, k] (+ bias[n]) for rows n0 <= n < n1, every m < M; x and out fp32,
// row-major with leading dimensions K and N. Thread-safe over disjoint row ranges.
using RowsFn = void (*)(const Packed& p, const float* x, int64_t m, float* out, const float* bias, int64_t n0,
                        int64_t n1);

// W[n0:n1, :] as fp32 into `dst` ([n1 - n0, K], row-major): the prefill path multiplies tiles of it with BLAS.
using DequantFn = void (*)(const Packed& p, float* dst, int64_t n0, int64_t n1);

void rows_scalar(const Packed& p, const float* x, int64_t m, float* out, const float* bias, int64_t n0, int64_t n1);
void dequant_scalar(const Packed& p, float* dst, int64_t n0, int64_t n1);

// A dense weight [N, K], rows contiguous, as torch stores it: fp32, or bf16 as its raw 16 bits (gemv_dense.cpp: the
// op sparsekit::dense_linear, not a packed layout).
template <class W>
struct DenseOf {
  const W* w = nullptr;
  int64_t n = 0, k = 0;
};
using Dense = DenseOf<float>;
using DenseBf16 = DenseOf<uint16_t>;
// out[t, n] = sum_k x[t, k] W[n, k] (+ bias[n]) for rows n0 <= n < n1 and every t < m (x [m, K] fp32, out [m, N] fp32:
// a bf16 weight's products and sum are fp32, as the fp32 reference of its exact fp32 values); the scalar reference,
// and AVX2 + FMA where the CPU has it and this compiler built it (`dense_avx2_compiled`).
void dense_rows_scalar(const Dense& d, const float* x, int64_t m, float* out, const float* bias, int64_t n0,
                       int64_t n1);
void dense_rows_scalar(const DenseBf16& d, const float* x, int64_t m, float* out, const float* bias, int64_t n0,
                       int64_t n1);
bool dense_avx2_compiled();
void dense_rows_avx2(const Dense& d, const float* x, int64_t m, float* out, const float* bias, int64_t n0,
                     int64_t n1);
void dense_rows_avx2(const DenseBf16& d, const float* x, int64_t m, float* out, const float* bias, int64_t n0,
                     int64_t n1);

// Cache-line aligned storage. With a std::vector's 16-byte alignment a process's activation buffer lay at a random
// offset within a line, and where it straddled lines every zmm load of it took two L1 accesses: fresh processes
// ran multi-token calls at one speed or ~40% slower (Zen 4, 4096 x 14336: int4 + 2:4 at 4 tokens 7.7-8.1 or
// 11.1-11.4 ms; int4 on bf16 activations at 16 tokens 11.8-12.0 or 17.1-18.5; aligned: 7.8-8.3 and 11.5-12.9)
template <class T>
struct LineAligned {
  using value_type = T;
  LineAligned() = default;
  template <class U>
  LineAligned(const LineAligned<U>&) {}
  T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(64))); }
  void deallocate(T* p, std::size_t n) { ::operator delete(p, n * sizeof(T), std::align_val_t(64)); }
  template <class U>
  bool operator==(const LineAligned<U>&) const { return true; }
  template <class U>
  bool operator!=(const LineAligned<U>&) const { return false; }
};
template <class T>
using LineVector = std::vector<T, LineAligned<T>>;

// The activations of one call for the nibble layouts (int4, MXFP4) of the AVX2 path: split into even and odd
// inputs, so that code byte j (input 2j low nibble, 2j + 1 high) meets even[j] and odd[j] with no interleave, and
// summed per group of `group` inputs (input order, as the reference sums) for the kernels that fold the int4 zero
// point out of their loops. Baseline code (gemm_scalar.cpp). (The AVX-512 path's nibble kernels take the codes
// 128 inputs at a time instead: F32Acts, BfActs below.)
struct Split {
  std::vector<float> even, odd, sums;  // [m, K/2], [m, K/2], [m, G]
};

// The group sums loop per group: a loop per input with an integer division in it took as long as the decode of
// a SmolLM2 projection's rows (int4 g128 at one thread: 256 x 2048 28 -> 24 us a call, 576 x 1536 43 -> 40 us).
void split_activations(const Packed& p, const float* x, int64_t m, int64_t group, Split& sp);

// AVX-512 (F, BW, VL, DQ, VBMI, VBMI2): only called where the CPU has them (runtime check in the binding) and
// where this compiler built them (GCC on x86-64: `avx512_compiled`).
bool avx512_compiled();
void rows_avx512(const Packed& p, const float* x, int64_t m, float* out, const float* bias, int64_t n0, int64_t n1);
void dequant_avx512(const Packed& p, float* dst, int64_t n0, int64_t n1);

// The AVX-512 nibble kernels (int4, MXFP4: gemm_lookup_fp32.cpp, gemm_nibble_bf16.cpp) take a row's codes 128
// inputs (64 bytes, one zmm) at a time as stored; lane l of a chunk holds its inputs 8l .. 8l + 7, so a lane never
// meets two groups where a group is a multiple of 8 inputs or spans the row (MXFP4: 32).
constexpr int64_t kNibbleChunk = 128;
inline bool nibble_chunks_fit(const Packed& p) {
  if (p.k % 32) return false;
  if (p.kind == Kind::kMXFP4) return true;
  return p.kind == Kind::kInt4 && (p.group >= p.k || p.group % 8 == 0);
}

// AVX-512 F for int4 and MXFP4 at decode with fp32 activations (gemm_lookup_fp32.cpp): each weight looked up as the
// fp32 value the reference decodes ((code - zero) x scale, e2m1 x 2^e) and FMAed with the activations, 4 rows by
// up to 4 tokens a tile. The activations of one call, prepared once and shared by every thread: [m][C][8 phases][16]
// (C = ceil(K / 128) chunks, zero past K; phase j, lane l is input 128c + 8l + j: nibble j of the chunk's dword l).
struct F32Acts {
  LineVector<float> x;
  int64_t chunks = 0;
};
void prepare_nibble_f32(const Packed& p, const float* x, int64_t m, F32Acts& a);
void rows_nibble_f32(const Packed& p, const F32Acts& a, int64_t m, float* out, const float* bias, int64_t n0,
                     int64_t n1);
// The same for int4 + 2:4 (gemm_lookup_fp32.cpp): the kept weights looked up, the kept inputs gathered from x as it
// is (vpermt2ps, 32 inputs at a time), 4 rows by up to 4 tokens; where in_features % 32 == 0 and a group is a
// multiple of 32 inputs or spans the row
bool int4_semi24_f32_fits(const Packed& p);
void rows_int4_semi24_f32(const Packed& p, const float* x, int64_t m, float* out, const float* bias, int64_t n0,
                          int64_t n1);

// AVX2 + FMA + F16C (gemm_avx2.cpp): the same kernels at 8 lanes, for x86-64 CPUs without AVX-512; only called
// where the CPU has them (runtime check in the binding) and where this compiler built them (`avx2_compiled`).
bool avx2_compiled();
void rows_avx2(const Packed& p, const float* x, int64_t m, float* out, const float* bias, int64_t n0, int64_t n1);
void dequant_avx2(const Packed& p, float* dst, int64_t n0, int64_t n1);

// AVX-512 BF16 (gemm_avx512_bf16.cpp): 2:4 with bf16 values times bf16 activations (x: [m, K] bf16 bits), one
// vdpbf16ps per 32 kept weights and token; the products are exact, so the result is the fp32 kernel's on the same
// inputs (summed in another order). Only called where the CPU has the AVX-512 path and AVX512_BF16 and this
// compiler built it (`bf16_dot_compiled`).
bool bf16_dot_compiled();
void rows_semi24_bf16_dot(const Packed& p, const uint16_t* x, int64_t m, float* out, const float* bias, int64_t n0,
                          int64_t n1);

// AVX-512 BF16 for int4 and MXFP4 at decode (gemm_nibble_bf16.cpp): the codes as stored, looked up as bf16 values,
// times the fp32 activations written as sums of bf16 parts (hi + mid + lo, exact), one vdpbf16ps per 32 weights,
// token and part: exact products, summed in fp32. The activations of one call, prepared once and shared by every
// thread: [m][C][4 phases][kParts][32] bf16 bits (C = ceil(K / 128) chunks of 128 inputs, zero past K; phase j,
// word i is input 128c + 4i + j), `parts` the number a call needs (1 for a bf16 model's activations), and for
// asymmetric int4 the sums of each lane's 8 inputs ([m][C][16]).
struct BfActs {
  static constexpr int kParts = 3;
  static constexpr int64_t kChunk = kNibbleChunk;
  LineVector<uint16_t> x;
  LineVector<float> lane_sums;
  int64_t chunks = 0;
  int parts = 1;
};
// (where the kernel serves the layout: nibble_chunks_fit)
// false where an activation is not finite or |x| >= 2^127 (the fp32 kernel serves those calls)
bool prepare_nibble_bf16(const Packed& p, const float* x, int64_t m, BfActs& a);
void rows_nibble_bf16(const Packed& p, const BfActs& a, int64_t m, float* out, const float* bias, int64_t n0,
                      int64_t n1);
// The same for int4 + 2:4 (gemm_avx512_bf16.cpp), 64 inputs a step: its activations in input order,
// [m][ceil(K / 64)][kParts][64] (no lane sums); false for non-finite or huge activations (as above)
bool int4_semi24_bf16_fits(const Packed& p);
bool prepare_kept_bf16(const Packed& p, const float* x, int64_t m, BfActs& a);
void rows_int4_semi24_bf16(const Packed& p, const BfActs& a, int64_t m, float* out, const float* bias, int64_t n0,
                           int64_t n1);

// ------------------------------------------------------------------ int8 activations (the "a8" variant)
//
// llama.cpp's way of keeping up with memory: quantize the activations to int8 per block of 32 inputs
// (symmetric, absmax: d = max|x| / 127, q = rint(x * (127 / max|x|))) and multiply the weight codes
// with integer dot instructions (AVX-512 VNNI vpdpbusd: 64 u8 x s8 products a cycle into int32 lanes; on
// CPUs without it, AVX2 vpmaddubsw + vpmaddwd)
// instead of converting every weight to fp32. The weights are used exactly as stored; the only rounding
// added is that of x, so the result equals the exact kernel run on `d * q` (see quantize_block32).

constexpr int64_t kActBlock = 32;

// One row of activations into int8 blocks: q[0, k) and d[0, ceil(k / 32)); the one definition of the
// variant's rounding (the prefill path and the tests' emulation use the same arithmetic).
void quantize_block32(const float* x, int64_t k, int8_t* q, float* d);

// The activations of one call, quantized and arranged for the layout's kernel (built once, shared by
// every thread). Buffers run to `kpad` (K rounded up to 128, plus 128) so that full-width loads near
// the end of a row stay inside them; padding holds x = 0.
struct QActs {
  int64_t m = 0, k = 0, kpad = 0, blocks = 0;
  std::vector<float> d;         // [m, kpad / 32] block scales
  std::vector<uint8_t> even;    // int4, MXFP4 (AVX2): [m, kpad / 2] q of inputs 0, 2, 4, ... (s8);
                                // MXFP4 (VNNI): q + 128 (u8)
  std::vector<uint8_t> odd;     // the same for inputs 1, 3, 5, ...
  std::vector<uint8_t> natural; // int4 + 2:4 (both paths) and int8 (VNNI): [m, kpad] q + 128 (u8), input order;
                                // int8 (AVX2): [m, kpad] q (s8), input order
  std::vector<float> lanes;     // int4, MXFP4: [m, kpad / 8] the d of each 4-byte lane of even / odd
  std::vector<float> gsum;      // int4: [m, G] sum over the group's blocks of d * sum q
};

// int4 + 2:4 for the VNNI a8 kernel: 16 rows interleaved, so that one zmm holds 4 kept codes of each of 16 rows
// for the same 8 inputs, and each int32 lane of vpdpbusd is one row's sum. The lanes then keep summing over the 4
// steps of an activation block (one scale for all 16 rows) and over the blocks of a weight group (one scale a
// row), where a row-at-a-time kernel converts and scales a vector every 128 inputs, and the 8 activations a step
// are one broadcast qword that vpshufb gathers from, where a row-at-a-time gather needs vpermi2b over 128. On
// Zen 4, in L2: 1.45 ns per 128 inputs of a row against 2.62 for the row-at-a-time kernel (ad hoc).
//
// A tile (16 rows; the last one padded with rows that weigh 0) is K/32 blocks of 192 bytes, in input order:
//   bytes   0-127: codes, two steps (8 inputs each) per 64 bytes: byte i of pair h holds the code of row i / 4,
//                  kept slot i % 4 of the step's 8 inputs, step 2h in the low nibble and step 2h + 1 in the high;
//   bytes 128-191: positions, 16 bytes a step: row r's byte (the stored metadata byte of those 8 inputs: slot j's
//                  position within its group of 4 in bits 2j, 2j + 1) at byte 8 (q % 2) + 2 (q / 2) + r % 2,
//                  q = r / 2, so that a 128-bit broadcast puts it in qword q, where vpmultishiftqb reads it.
// Scales (and zero points) per tile and group, 16 rows each. Built from the stored layout by a pure
// reordering (`repack_int4_semi24_tiles`); the checkpoint keeps the stored one.
struct Int4Semi24Tiles {
  static constexpr int64_t kRows = 16, kBlockBytes = 192;
  static int64_t tiles(int64_t n) { return (n + kRows - 1) / kRows; }
  static int64_t stream_bytes(int64_t n, int64_t k) { return tiles(n) * (k / kActBlock) * kBlockBytes; }
};

// p: an int4 + 2:4 weight with K % 32 == 0; stream [stream_bytes], scales / zeros [tiles * G * 16] (zeros only
// when p.zeros). Writes tiles [tile0, tile1) (the binding splits the tiles over threads).
void repack_int4_semi24_tiles(const Packed& p, uint8_t* stream, uint16_t* scales, uint8_t* zeros, int64_t tile0,
                              int64_t tile1);

// int4 + 2:4 for the AVX2 a8 kernel: the VNNI tiles' idea with AVX2's instructions. 8 rows interleaved, so that
// one ymm holds 4 kept codes of each of 8 rows for the same 8 inputs (a dword a row, the dword index the row);
// the step's 8 activations are one broadcast qword (q + 128, u8), from which vpshufb gathers each byte's kept
// activation (index: its 2-bit position, + 4 for the step's second group of 4 inputs). vpmaddubsw then pairs a
// row's two kept values of one group, the int16 sums add up over the block's 4 steps (|255 (c - z)| x 2 x 4 <=
// 30600: exact), and one vpmaddwd per block gives each row's int32 sum: the conversion and scaling that the
// row-at-a-time gather paid per 64 inputs of a row come once per block of 32 inputs for 8 rows. Measured against
// that gather (`GatherA8` until this layout: 15 vector instructions per 64 inputs of a row, against ~9 here):
// docs/cpu-kernels.md, "Zen 3: int4 + 2:4 a8 in tiles of 8 rows".
//
// A tile (8 rows; the last one padded with rows that weigh 0) is K/32 blocks of 96 bytes, in input order. In each
// 32-byte vector, byte i belongs to row i / 4 and kept slot i % 4 of a step's 8 inputs (slots 0, 1: the first
// group of 4 inputs, its first and second kept value; slots 2, 3: the second group's):
//   bytes  0-63: codes, two steps per 32 bytes: step 2h in the low nibble of byte i of vector h, step 2h + 1 in
//                the high nibble (one AND, or a shift and an AND, per step);
//   bytes 64-95: positions: byte i holds slot i's 2-bit position in each of the block's 4 steps, step s in bits
//                2s, 2s + 1, so that an AND with 0x33 leaves steps 0 and 2 in bits 0-1 and 4-5 of every byte, and
//                a 16-bit shift by 4 brings step 2 down with bit 7 clear (vpshufb reads bits 0-3 and 7); the same
//                after a shift by 2 for steps 1 and 3.
// Scales (and zero points) per tile and group, 8 rows each.
struct Int4Semi24TilesAvx2 {
  static constexpr int64_t kRows = 8, kBlockBytes = 96;
  static int64_t tiles(int64_t n) { return (n + kRows - 1) / kRows; }
  static int64_t stream_bytes(int64_t n, int64_t k) { return tiles(n) * (k / kActBlock) * kBlockBytes; }
};

// The same contract as repack_int4_semi24_tiles, for `Int4Semi24TilesAvx2` (scales / zeros [tiles * G * 8]).
void repack_int4_semi24_tiles_avx2(const Packed& p, uint8_t* stream, uint16_t* scales, uint8_t* zeros,
                                   int64_t tile0, int64_t tile1);

// Which a8 kernels will run: MXFP4's and int8's activations are biased for one and not the other (see
// acts_int8.cpp), and int4 + 2:4 reads its weight in a tile order of each's own (above).
enum class A8Path : int { kVnni = 0, kAvx2 = 1 };

void quantize_acts(const Packed& p, const float* x, int64_t m, QActs& qa, A8Path path);

// x replaced by d * q (what the a8 kernels compute with): the prefill path, and the scalar path (CPUs with
// neither VNNI nor AVX2), run the exact kernels on it.
void fake_quant_acts(const float* x, int64_t m, int64_t k, float* out);

// The AVX-512 VNNI + VBMI kernels: int4 (group % 32 == 0), int4 + 2:4 (group % 32 == 0; reads p.tiles, whole
// tiles of 16 rows: give it ranges on tile bounds, or a cut tile is computed again for its rows), MXFP4, int8;
// K % 32 == 0.
bool a8_compiled();
bool a8_fits(const Packed& p);
using A8RowsFn = void (*)(const Packed& p, const QActs& qa, int64_t m, float* out, const float* bias, int64_t n0,
                          int64_t n1);
void rows_a8(const Packed& p, const QActs& qa, int64_t m, float* out, const float* bias, int64_t n0, int64_t n1);

// The same kernels with AVX2 (vpmaddubsw, vpmaddwd; gemm_avx2.cpp) for CPUs without AVX-512 VNNI, on the same
// QActs (int8 weights: q unbiased) and under the same a8_fits(); int4 + 2:4 reads p.tiles in the AVX2 order, whole
// tiles of 8 rows; built where avx2_compiled() is true.
void rows_a8_avx2(const Packed& p, const QActs& qa, int64_t m, float* out, const float* bias, int64_t n0,
                  int64_t n1);

}  // namespace cpu
}  // namespace sparsekit

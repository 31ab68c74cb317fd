// What the two a8 kernel files (gemm_avx512_vnni.cpp, gemm_avx2_a8.cpp) share: plain C++, no intrinsics.
//
// Everything here has internal linkage (an anonymous namespace). Each of those files compiles under its own
// `#pragma GCC target`, so an inline function with external linkage would be emitted once per file with
// different instructions, and the linker keeps one of them for both: the AVX-512 copy could then run on a
// CPU that has only AVX2. Internal linkage gives each file its own copy, built for its own target.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "packed_cpu.h"

namespace sparsekit {
namespace cpu {
namespace {

// 2 x E2M1 for each 4-bit code: integers in [-12, 12], so the integer dot instructions take the MXFP4
// codes as signed bytes through a 16-entry byte table (vpshufb); the kernels halve the sum at the end.
inline void mxfp4_x2_table(int8_t* table16) {
  for (uint32_t i = 0; i < 16; ++i) table16[i] = static_cast<int8_t>(2.0f * e2m1_to_float(i));
}

// The weight group of each 32-input activation block of a row (a8_fits: a block never straddles two groups),
// plus `extra` entries past the last block that repeat the last group: a kernel may read the group of a block
// just past K (the empty half of a row's last chunk) without a bounds test.
inline void block_groups(const Packed& p, std::vector<int32_t>& of, int64_t extra) {
  const int64_t blocks = (p.k + kActBlock - 1) / kActBlock, G = p.groups();
  of.resize(blocks + extra);
  for (int64_t b = 0; b < blocks + extra; ++b)
    of[b] = static_cast<int32_t>(G == 1 ? 0 : std::min<int64_t>(G - 1, b * kActBlock / p.group));
}

// The input-order activation bytes (QActs::natural) and block scales of tokens t0 .. t0 + MT - 1: the int4 + 2:4
// and int8 kernels' operands.
template <int MT>
struct NaturalA8 {
  const uint8_t* x[MT];
  const float* d[MT];
  NaturalA8(const QActs& qa, int64_t t0) {
    for (int t = 0; t < MT; ++t) {
      x[t] = &qa.natural[(t0 + t) * qa.kpad];
      d[t] = &qa.d[(t0 + t) * qa.blocks];
    }
  }
};

// Tokens in tiles of up to 4: the row is read once per tile; T<MT>::run(p, qa, t0, out, bias, n0, n1)
// computes tokens t0 .. t0 + MT - 1 (a class template, as a function template cannot be a template argument).
template <template <int> class T>
void a8_rows(const Packed& p, const QActs& qa, int64_t m, float* out, const float* bias, int64_t n0, int64_t n1) {
  for (int64_t t0 = 0; t0 < m; t0 += 4) {
    switch (std::min<int64_t>(4, m - t0)) {
      case 1: T<1>::run(p, qa, t0, out, bias, n0, n1); break;
      case 2: T<2>::run(p, qa, t0, out, bias, n0, n1); break;
      case 3: T<3>::run(p, qa, t0, out, bias, n0, n1); break;
      default: T<4>::run(p, qa, t0, out, bias, n0, n1); break;
    }
  }
}

}  // namespace
}  // namespace cpu
}  // namespace sparsekit

// Name<MT>::run calls fn<MT>: the tile functions as the class templates that a8_rows takes
#define SPARSEKIT_A8_TILE(Name, fn)                                                                               \
  template <int MT>                                                                                               \
  struct Name {                                                                                                   \
    static void run(const Packed& p, const QActs& qa, int64_t t0, float* out, const float* bias, int64_t n0,      \
                    int64_t n1) {                                                                                 \
      fn<MT>(p, qa, t0, out, bias, n0, n1);                                                                       \
    }                                                                                                             \
  };

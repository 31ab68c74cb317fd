// What the AVX2 kernel files (gemm_avx2.cpp, gemv_dense.cpp) share: small intrinsics helpers. Include it after the
// file's `#pragma GCC target("avx2,fma...")` and <immintrin.h>.
//
// Internal linkage (an anonymous namespace), for the reason a8_common.h gives: each including file compiles it under
// its own target, and an inline function with external linkage would be emitted once per file and one copy kept.
#pragma once

#include <immintrin.h>

namespace sparsekit {
namespace cpu {
namespace {

// The sum of a ymm's 8 lanes: called from large templated loops, so always inlined (outlined, the vector would go
// through memory).
inline __attribute__((always_inline)) float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

}  // namespace
}  // namespace cpu
}  // namespace sparsekit
